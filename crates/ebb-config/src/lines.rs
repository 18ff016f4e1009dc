//! Where each key of a pool file is, so that every error can name its line.
//!
//! `toml` 0.8 gives values without positions; rather than thread spans through every
//! type, we index the source once: each `key = value` line is recorded under its dotted
//! path (`member[2].lb_name`, `runbook.step[0].run`), and each table header under its own.
//! Lookups fall back to the nearest enclosing key, so a problem inside an inline table is
//! reported on the line of that table.

use std::collections::HashMap;

/// Line numbers (1-based) of the keys and table headers of one TOML document.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        let mut lines = HashMap::new();
        let mut prefix = String::new();
        let mut counters: HashMap<String, usize> = HashMap::new();
        let mut in_multiline: Option<&str> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if let Some(delim) = in_multiline {
                if line.contains(delim) {
                    in_multiline = None;
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(inner) = line.strip_prefix("[[") {
                let name = inner.split("]]").next().unwrap_or("").trim().to_string();
                let n = counters.entry(name.clone()).or_insert(0);
                prefix = format!("{name}[{n}]");
                *n += 1;
                lines.entry(prefix.clone()).or_insert(line_no);
                continue;
            }
            if let Some(inner) = line.strip_prefix('[') {
                let name = inner.split(']').next().unwrap_or("").trim().to_string();
                // A sub-table of the latest array element, e.g. [member.vars] after [[member]].
                prefix = resolve_against_arrays(&name, &counters);
                lines.entry(prefix.clone()).or_insert(line_no);
                continue;
            }
            if let Some(eq) = line.find('=') {
                let key = line[..eq].trim().trim_matches('"');
                if key.is_empty() {
                    continue;
                }
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                lines.entry(path).or_insert(line_no);
                let value = line[eq + 1..].trim();
                for delim in ["\"\"\"", "'''"] {
                    if value.starts_with(delim) && value[3..].find(delim).is_none() {
                        in_multiline = Some(delim);
                    }
                }
            }
        }
        LineIndex { lines }
    }

    /// The line of `path` or of its nearest enclosing key; 0 when unknown.
    pub fn line(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return *l;
            }
            match p.rfind(['.', '[']) {
                Some(cut) => p = &p[..cut],
                None => return 0,
            }
        }
    }
}

fn resolve_against_arrays(name: &str, counters: &HashMap<String, usize>) -> String {
    // `[runbook.drain]` stays as is; `[member.vars]` after two `[[member]]` is `member[1].vars`.
    let mut best: Option<(&str, usize)> = None;
    for (arr, n) in counters {
        if name.starts_with(arr.as_str())
            && name[arr.len()..].starts_with('.')
            && best.is_none_or(|(b, _)| arr.len() > b.len())
        {
            best = Some((arr.as_str(), *n));
        }
    }
    match best {
        Some((arr, n)) if n > 0 => format!("{arr}[{}]{}", n - 1, &name[arr.len()..]),
        _ => name.to_string(),
    }
}

/// Converts a byte offset into a 1-based line number.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_tables_and_arrays() {
        let text = "[pool]\nname = \"x\"\n\n[[member]]\nname = \"a\"\n[[member]]\nname = \"b\"\nhttp = { url = \"u\" }\n[member.vars]\nk = 1\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.line("pool.name"), 2);
        assert_eq!(idx.line("member[0].name"), 5);
        assert_eq!(idx.line("member[1].name"), 7);
        assert_eq!(idx.line("member[1].http.url"), 8);
        assert_eq!(idx.line("member[1].vars.k"), 10);
        assert_eq!(idx.line("member[1].nothing"), 6);
        assert_eq!(idx.line("nope"), 0);
    }
}
