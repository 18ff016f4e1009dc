//! Finding the line of a key in the pool file's text, for error messages.

use std::collections::HashMap;

pub(super) fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Finds the line of a key in TOML source text, so messages can point at it. It follows
/// table headers (`[a.b]`, `[[member]]` counted as `member[0]`, `member[1]`, ...) and
/// dotted keys; it is a best effort, falling back to the enclosing table's line.
pub(super) struct Locator {
    lines: HashMap<String, usize>,
}

impl Locator {
    pub fn new(text: &str) -> Locator {
        let mut lines = HashMap::new();
        let mut current = String::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(inner) = line.strip_prefix("[[") {
                let name = normalize_key(inner.split("]]").next().unwrap_or(""));
                let n = counts.entry(name.clone()).or_insert(0);
                current = format!("{name}[{n}]");
                *n += 1;
                lines.entry(current.clone()).or_insert(lineno);
                continue;
            }
            if let Some(inner) = line.strip_prefix('[') {
                let name = normalize_key(inner.split(']').next().unwrap_or(""));
                // A sub-table of the latest element of an array of tables: [member.vars].
                let first = name.split('.').next().unwrap_or("").to_string();
                current = match counts.get(&first) {
                    Some(n) if *n > 0 => format!("{first}[{}]{}", n - 1, &name[first.len()..]),
                    _ => name,
                };
                lines.entry(current.clone()).or_insert(lineno);
                continue;
            }
            let Some((key, _)) = line.split_once('=') else {
                continue;
            };
            if !key
                .chars()
                .all(|c| c.is_alphanumeric() || "_-.\"' ".contains(c))
            {
                continue;
            }
            let key = normalize_key(key);
            if key.is_empty() {
                continue;
            }
            let full = if current.is_empty() {
                key
            } else {
                format!("{current}.{key}")
            };
            lines.entry(full).or_insert(lineno);
        }
        Locator { lines }
    }

    /// The line of `key`, or of the nearest enclosing table or key that has one.
    pub fn line(&self, key: &str) -> Option<usize> {
        let mut k = key;
        loop {
            if let Some(l) = self.lines.get(k) {
                return Some(*l);
            }
            match k.rfind(['.', '[']) {
                Some(pos) => k = &k[..pos],
                None => return None,
            }
        }
    }
}

fn normalize_key(k: &str) -> String {
    k.split('.')
        .map(|part| part.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
}
