//! Reading one table of the pool file against its declared keys.

use crate::duration::parse_duration;
use crate::error::Context;
use crate::key::{Key, Kind};
use std::collections::BTreeMap;
use std::time::Duration;

/// One table being read: typed getters that record problems in the [`Context`] with the
/// key's path, and [`Section::finish`] to report keys that were not declared.
pub struct Section<'a> {
    table: &'a toml::Table,
    path: String,
    keys: Vec<Key>,
    label: Option<String>,
    anchor: Option<String>,
}

impl<'a> Section<'a> {
    /// Reads `table`, found at `path` (`""` for the top level, `member[2]`), which accepts
    /// `keys`.
    pub fn new(table: &'a toml::Table, path: impl Into<String>, keys: &[Key]) -> Self {
        Section {
            table,
            path: path.into(),
            keys: keys.to_vec(),
            label: None,
            anchor: None,
        }
    }

    /// Also accepts `keys` (a plug-in's keys in a member's table).
    pub fn with_keys(mut self, keys: &[Key]) -> Self {
        self.keys.extend_from_slice(keys);
        self
    }

    /// Names the owner of the section in "unknown key" messages (`the haproxy driver`).
    pub fn owned_by(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Reports problems with the section as a whole on the line of key `k` (the
    /// `driver` of a `[balancer]`), not of the table's header.
    pub fn anchored_at(mut self, k: &str) -> Self {
        self.anchor = Some(self.key(k));
        self
    }

    /// The table being read.
    pub fn table(&self) -> &'a toml::Table {
        self.table
    }

    /// The section's own path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The declared keys.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The full path of key `k`.
    pub fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    /// The raw value of `k`, marking it as read.
    pub fn get(&mut self, k: &str) -> Option<&'a toml::Value> {
        debug_assert!(
            self.keys.iter().any(|d| d.name == k),
            "key \"{k}\" of [{}] is read but not declared",
            self.path
        );
        self.table.get(k)
    }

    /// Whether `k` is present, whatever its type.
    pub fn has(&self, k: &str) -> bool {
        self.table.contains_key(k)
    }

    /// Records a problem with the section as a whole (a missing key, a conflict).
    pub fn missing(&self, cx: &mut Context, message: impl Into<String>) {
        match &self.anchor {
            Some(a) => cx.err_on(&self.path, a, message),
            None => cx.err(&self.path, message),
        }
    }

    /// Records a problem with key `k`.
    pub fn error(&self, cx: &mut Context, k: &str, message: impl Into<String>) {
        cx.err(&self.key(k), message);
    }

    /// A string.
    pub fn str(&mut self, cx: &mut Context, k: &str) -> Option<String> {
        match self.get(k)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.error(
                    cx,
                    k,
                    format!("expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A string that must be present and not blank; `what` says what it is for.
    pub fn req_str(&mut self, cx: &mut Context, k: &str, what: &str) -> Option<String> {
        let v = self.str(cx, k);
        if v.is_none() && !self.table.contains_key(k) {
            self.missing(cx, format!("missing key \"{k}\": {what}"));
        }
        if let Some(s) = &v {
            if s.trim().is_empty() {
                self.error(cx, k, format!("must not be empty: {what}"));
                return None;
            }
        }
        v
    }

    /// `true` or `false`.
    pub fn bool(&mut self, cx: &mut Context, k: &str, default: bool) -> bool {
        match self.get(k) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                let m = format!("expected true or false, found {}", type_name(other));
                self.error(cx, k, m);
                default
            }
        }
    }

    /// A whole number, 0 or more.
    pub fn uint(&mut self, cx: &mut Context, k: &str, default: u64) -> u64 {
        match self.get(k) {
            None => default,
            Some(toml::Value::Integer(i)) if *i >= 0 => *i as u64,
            Some(toml::Value::Integer(i)) => {
                self.error(cx, k, format!("expected a number 0 or more, found {i}"));
                default
            }
            Some(other) => {
                let m = format!("expected a whole number, found {}", type_name(other));
                self.error(cx, k, m);
                default
            }
        }
    }

    /// A number (`2`, `2.5`, `-1`), finite.
    pub fn number(&mut self, cx: &mut Context, k: &str) -> Option<f64> {
        match self.get(k)? {
            toml::Value::Integer(i) => Some(*i as f64),
            toml::Value::Float(f) if f.is_finite() => Some(*f),
            other => {
                let m = format!("expected a number, found {}", display_value(other));
                self.error(cx, k, m);
                None
            }
        }
    }

    /// A whole number within `range`.
    pub fn int_in(
        &mut self,
        cx: &mut Context,
        k: &str,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> i64 {
        match self.get(k) {
            None => default,
            Some(toml::Value::Integer(i)) if range.contains(i) => *i,
            Some(other) => {
                let m = format!(
                    "expected a whole number from {} to {}, found {}",
                    range.start(),
                    range.end(),
                    display_value(other)
                );
                self.error(cx, k, m);
                default
            }
        }
    }

    /// A duration string (`"1m30s"`). Zero is an error unless the key is declared
    /// [`Kind::DurationOrZero`].
    pub fn duration(&mut self, cx: &mut Context, k: &str, default: Duration) -> Duration {
        self.opt_duration(cx, k).unwrap_or(default)
    }

    /// A duration string, `None` when absent or wrong (the problem is recorded).
    pub fn opt_duration(&mut self, cx: &mut Context, k: &str) -> Option<Duration> {
        let zero_ok = self
            .keys
            .iter()
            .any(|d| d.name == k && d.kind == Kind::DurationOrZero);
        match self.get(k)? {
            toml::Value::String(s) => match parse_duration(s) {
                Ok(d) if d.is_zero() && !zero_ok => {
                    self.error(cx, k, format!("must be more than 0, found \"{s}\""));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    self.error(cx, k, e);
                    None
                }
            },
            other => {
                let m = format!(
                    "expected a duration string such as \"90s\" or \"1m30s\", found {}",
                    type_name(other)
                );
                self.error(cx, k, m);
                None
            }
        }
    }

    /// One of the named options.
    pub fn choice<T: Copy>(
        &mut self,
        cx: &mut Context,
        k: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = self.str(cx, k) else {
            return default;
        };
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                let m = format!("expected one of {}, found \"{s}\"", names.join(", "));
                self.error(cx, k, m);
                default
            }
        }
    }

    /// A sub-table.
    pub fn sub(&mut self, cx: &mut Context, k: &str) -> Option<&'a toml::Table> {
        match self.get(k)? {
            toml::Value::Table(t) => Some(t),
            other => {
                self.error(
                    cx,
                    k,
                    format!("expected a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An array of tables (`[[k]]`).
    pub fn tables(&mut self, cx: &mut Context, k: &str) -> Vec<&'a toml::Table> {
        match self.get(k) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        toml::Value::Table(t) => out.push(t),
                        other => cx.err(
                            &format!("{}[{i}]", self.key(k)),
                            format!("expected a table ([[{k}]]), found {}", type_name(other)),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                let m = format!(
                    "expected an array of tables ([[{k}]]), found {}",
                    type_name(other)
                );
                self.error(cx, k, m);
                Vec::new()
            }
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, cx: &mut Context, k: &str) -> Option<Vec<String>> {
        let items = match self.get(k)? {
            toml::Value::Array(items) => items,
            other => {
                let m = format!("expected a list of strings, found {}", type_name(other));
                self.error(cx, k, m);
                return None;
            }
        };
        let mut out = Vec::new();
        for item in items {
            match item {
                toml::Value::String(s) => out.push(s.clone()),
                other => {
                    let m = format!(
                        "expected a list of strings, found {} in it",
                        type_name(other)
                    );
                    self.error(cx, k, m);
                    return None;
                }
            }
        }
        Some(out)
    }

    /// A table of strings (`matchers = { name = "value" }`).
    pub fn string_map(&mut self, cx: &mut Context, k: &str) -> BTreeMap<String, String> {
        let key = self.key(k);
        let mut out = BTreeMap::new();
        for (name, v) in self.sub(cx, k).into_iter().flatten() {
            match v.as_str() {
                Some(s) => {
                    out.insert(name.clone(), s.to_string());
                }
                None => cx.err(
                    &format!("{key}.{name}"),
                    format!("expected a string, found {}", type_name(v)),
                ),
            }
        }
        out
    }

    /// Reports every key present but not declared (a typo, most often), with a "did you
    /// mean" hint or the list of known keys.
    pub fn finish(&self, cx: &mut Context) {
        let mut known: Vec<&str> = self.keys.iter().map(|k| k.name).collect();
        known.sort_unstable();
        known.dedup();
        for k in self.table.keys() {
            if known.contains(&k.as_str()) {
                continue;
            }
            let owner = match &self.label {
                Some(l) => format!(" for {l}"),
                None => String::new(),
            };
            let hint = match known.iter().find(|c| similar(c, k)) {
                Some(c) => format!(" (did you mean \"{c}\"?)"),
                None if known.is_empty() => " (no keys are known here)".to_string(),
                None => format!(" (known keys here: {})", known.join(", ")),
            };
            cx.err(&self.key(k), format!("unknown key{owner}{hint}"));
        }
    }
}

/// "a string", "an integer", ... for messages.
pub fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// A value as the user wrote it, strings quoted.
pub fn display_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// Cheap typo test: lengths within one, and at most two edits apart.
pub fn similar(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let mut dp: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut prev = dp[0];
        dp[0] = i;
        for j in 1..=b.len() {
            let tmp = dp[j];
            dp[j] = (dp[j] + 1)
                .min(dp[j - 1] + 1)
                .min(prev + usize::from(a[i - 1] != b[j - 1]));
            prev = tmp;
        }
    }
    dp[b.len()] <= 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LineIndex;

    const KEYS: &[Key] = &[
        Key::new("wait", Kind::Duration, "a wait"),
        Key::new("grace", Kind::DurationOrZero, "may be zero"),
        Key::required("name", Kind::String, "a name"),
    ];

    fn read(text: &str) -> Vec<String> {
        let root: toml::Table = text.parse().unwrap();
        let mut cx = Context::new("p.toml", LineIndex::new(text));
        let t = root["s"].as_table().unwrap();
        let mut s = Section::new(t, "s", KEYS).owned_by("the test");
        s.req_str(&mut cx, "name", "a name");
        s.duration(&mut cx, "wait", Duration::ZERO);
        s.duration(&mut cx, "grace", Duration::ZERO);
        s.finish(&mut cx);
        cx.into_errors().0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn zero_only_where_the_key_allows_it() {
        let e = read("[s]\nname = \"x\"\nwait = \"0s\"\ngrace = \"0s\"\n");
        assert_eq!(
            e,
            vec!["p.toml:3: s.wait: must be more than 0, found \"0s\""]
        );
    }

    #[test]
    fn unknown_keys_name_the_owner_and_the_known_keys() {
        let e = read("[s]\nnam = \"x\"\nzzz = 1\n");
        assert_eq!(
            e,
            vec![
                "p.toml:1: s: missing key \"name\": a name",
                "p.toml:2: s.nam: unknown key for the test (did you mean \"name\"?)",
                "p.toml:3: s.zzz: unknown key for the test (known keys here: grace, name, wait)",
            ]
        );
    }
}
