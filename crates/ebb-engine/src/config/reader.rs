//! Reading TOML tables while recording which keys were used, so unknown keys (typos) are
//! reported with a hint, and every value error names its key.

use super::Cx;
use crate::duration::parse_duration;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// A table being read: records which keys were used so unknown ones are reported.
pub(super) struct Tbl<'a> {
    pub(super) t: &'a toml::Table,
    pub(super) path: String,
    pub(super) used: HashSet<&'static str>,
}

pub(super) fn type_name(v: &toml::Value) -> &'static str {
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

impl<'a> Tbl<'a> {
    pub(super) fn new(t: &'a toml::Table, path: impl Into<String>) -> Self {
        Tbl {
            t,
            path: path.into(),
            used: HashSet::new(),
        }
    }

    pub(super) fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    pub(super) fn get(&mut self, k: &'static str) -> Option<&'a toml::Value> {
        self.used.insert(k);
        self.t.get(k)
    }

    pub(super) fn str(&mut self, cx: &mut Cx, k: &'static str) -> Option<String> {
        match self.get(k)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                cx.err(
                    &self.key(k),
                    format!("expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(super) fn req_str(&mut self, cx: &mut Cx, k: &'static str, what: &str) -> Option<String> {
        let v = self.str(cx, k);
        if v.is_none() && !self.t.contains_key(k) {
            cx.err(&self.path, format!("missing key \"{k}\": {what}"));
        }
        if let Some(s) = &v {
            if s.trim().is_empty() {
                cx.err(&self.key(k), format!("must not be empty: {what}"));
                return None;
            }
        }
        v
    }

    pub(super) fn bool(&mut self, cx: &mut Cx, k: &'static str, default: bool) -> bool {
        match self.get(k) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                cx.err(
                    &self.key(k),
                    format!("expected true or false, found {}", type_name(other)),
                );
                default
            }
        }
    }

    pub(super) fn uint(&mut self, cx: &mut Cx, k: &'static str, default: u64) -> u64 {
        match self.get(k) {
            None => default,
            Some(toml::Value::Integer(i)) if *i >= 0 => *i as u64,
            Some(toml::Value::Integer(i)) => {
                cx.err(
                    &self.key(k),
                    format!("expected a number 0 or more, found {i}"),
                );
                default
            }
            Some(other) => {
                cx.err(
                    &self.key(k),
                    format!("expected a whole number, found {}", type_name(other)),
                );
                default
            }
        }
    }

    pub(super) fn duration(&mut self, cx: &mut Cx, k: &'static str, default: Duration) -> Duration {
        match self.get(k) {
            None => default,
            Some(toml::Value::String(s)) => match parse_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    cx.err(&self.key(k), e);
                    default
                }
            },
            Some(other) => {
                cx.err(
                    &self.key(k),
                    format!(
                        "expected a duration string such as \"90s\" or \"10m\", found {}",
                        type_name(other)
                    ),
                );
                default
            }
        }
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        cx: &mut Cx,
        k: &'static str,
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
                cx.err(
                    &self.key(k),
                    format!("expected one of {}, found \"{s}\"", names.join(", ")),
                );
                default
            }
        }
    }

    pub(super) fn table(&mut self, cx: &mut Cx, k: &'static str) -> Option<&'a toml::Table> {
        match self.get(k)? {
            toml::Value::Table(t) => Some(t),
            other => {
                cx.err(
                    &self.key(k),
                    format!("expected a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(super) fn tables(&mut self, cx: &mut Cx, k: &'static str) -> Vec<&'a toml::Table> {
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
                cx.err(
                    &self.key(k),
                    format!(
                        "expected an array of tables ([[{k}]]), found {}",
                        type_name(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    pub(super) fn strings(&mut self, cx: &mut Cx, k: &'static str) -> Option<Vec<String>> {
        match self.get(k)? {
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => out.push(s.clone()),
                        other => {
                            cx.err(
                                &self.key(k),
                                format!(
                                    "expected a list of strings, found {} in it",
                                    type_name(other)
                                ),
                            );
                            return None;
                        }
                    }
                }
                Some(out)
            }
            other => {
                cx.err(
                    &self.key(k),
                    format!("expected a list of strings, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// Reports every key that was not read (a typo, most often).
    pub(super) fn finish(&self, cx: &mut Cx, also_allowed: &[&str]) {
        for k in self.t.keys() {
            if !self.used.contains(k.as_str()) && !also_allowed.contains(&k.as_str()) {
                let mut known: Vec<&str> = self.used.iter().copied().collect();
                known.extend_from_slice(also_allowed);
                known.sort();
                let hint = match known.iter().find(|c| similar(c, k)) {
                    Some(c) => format!(" (did you mean \"{c}\"?)"),
                    None => format!(" (known keys here: {})", known.join(", ")),
                };
                cx.err(&self.key(k), format!("unknown key{hint}"));
            }
        }
    }
}

pub(super) fn similar(a: &str, b: &str) -> bool {
    // Cheap typo test: same length ±1 and at most two differing characters.
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

pub(super) fn string_map(
    cx: &mut Cx,
    t: &mut Tbl<'_>,
    k: &'static str,
) -> BTreeMap<String, String> {
    let key = t.key(k);
    let mut out = BTreeMap::new();
    if let Some(mt) = t.table(cx, k) {
        for (name, v) in mt {
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
    }
    out
}

pub(super) fn http_url(cx: &mut Cx, key: &str, u: &Option<String>) {
    if let Some(u) = u {
        if !u.starts_with("http://") && !u.starts_with("https://") {
            cx.err(
                key,
                format!("expected an http:// or https:// URL, found \"{u}\""),
            );
        }
    }
}

pub(super) fn valid_regex(cx: &mut Cx, key: &str, r: &str) {
    if let Err(e) = regex::Regex::new(r) {
        let first = e.to_string();
        let last = first.lines().last().unwrap_or("").trim().to_string();
        cx.err(
            key,
            format!("\"{r}\" is not a valid regular expression: {last}"),
        );
    }
}

pub(super) fn display_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}
