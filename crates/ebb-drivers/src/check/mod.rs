//! Check kinds: one file each, with its settings, its descriptor (a [`Descriptor`]: the
//! key that selects it, its keys, and the reader behind `validate` and `build`) and the
//! check it builds; they are registered in [`crate::registry`], one line each. `command`
//! (exit 0 on the member), `http` (status, body contains or matches; `https://` with TLS),
//! `tcp` (connect), `services` (systemd or Windows service states), `logs` (entries since
//! the update began), `version`, `prometheus` (a PromQL query against a bound) and
//! `balancer` (the member's error rate in the balancer's own counters against the members
//! not yet updated). One attempt each; the engine does retries. The commands
//! the member-side checks run, and the parsing of what they print, are kept apart so they
//! can be tested on recorded outputs.

pub mod balancer;
pub mod command;
pub mod http;
pub mod logs;
pub mod prometheus;
pub mod services;
pub mod tcp;
pub mod version;

use ebb_config::{ConfigError, ConfigErrors, Context, Key, Kind, Section};
use ebb_engine::interfaces::{Check, Transport};
use ebb_engine::registry::CheckKind;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Reads a check kind's value (found at the key given) into its check, recording every
/// problem in the context with its line.
pub type Reader<T> = fn(&mut Context, &str, &toml::Value) -> Option<T>;

/// A check kind's descriptor: its name, how it is written, its keys, and the one function
/// that reads its value into its check (`validate` reads and keeps the problems, `build`
/// reads a value `validate` accepted and keeps the check).
pub struct Descriptor<T> {
    /// The key that selects it (`http`).
    pub name: &'static str,
    /// What that key holds: `Kind::String` or `Kind::Table`.
    pub value: Kind,
    /// One line saying what it checks.
    pub description: &'static str,
    /// How it is written (`tcp = "host:port"`).
    pub example: &'static str,
    /// The keys of its table (none for a string).
    pub keys: &'static [Key],
    /// Reads its value.
    pub read: Reader<T>,
}

impl<T: Check + 'static> CheckKind for Descriptor<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn value(&self) -> Kind {
        self.value
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn example(&self) -> &'static str {
        self.example
    }
    fn keys(&self) -> Vec<Key> {
        self.keys.to_vec()
    }
    fn validate(&self, cx: &mut Context, key: &str, value: &toml::Value) {
        (self.read)(cx, key, value);
    }
    fn build(
        &self,
        cx: &Context,
        key: &str,
        value: &toml::Value,
    ) -> Result<Arc<dyn Check>, ConfigErrors> {
        let mut own = Context::new(cx.file(), cx.lines().clone());
        match (self.read)(&mut own, key, value) {
            Some(check) if own.is_ok() => Ok(Arc::new(check)),
            _ if !own.is_ok() => Err(own.into_errors()),
            _ => Err(ConfigErrors(vec![ConfigError {
                file: cx.file().to_string(),
                line: cx.lines().line(key),
                key: key.to_string(),
                message: format!("the {} check cannot be built", self.name),
            }])),
        }
    }
}

/// The table of a table-valued kind (`http = { ... }`), read against `keys`.
pub(crate) fn table<'a>(
    cx: &mut Context,
    key: &str,
    value: &'a toml::Value,
    keys: &[Key],
) -> Option<Section<'a>> {
    match value.as_table() {
        Some(t) => Some(Section::new(t, key, keys)),
        None => {
            cx.err(
                key,
                format!(
                    "expected a table ({} = {{ ... }}), found {}",
                    key.rsplit('.').next().unwrap_or(key),
                    ebb_config::type_name(value)
                ),
            );
            None
        }
    }
}

/// The string of a string-valued kind (`tcp = "host:port"`), not blank.
pub(crate) fn string(
    cx: &mut Context,
    key: &str,
    value: &toml::Value,
    what: &str,
) -> Option<String> {
    match value.as_str() {
        Some(s) if !s.trim().is_empty() => Some(s.to_string()),
        Some(_) => {
            cx.err(key, format!("must not be empty: {what}"));
            None
        }
        None => {
            cx.err(
                key,
                format!(
                    "expected a string ({what}), found {}",
                    ebb_config::type_name(value)
                ),
            );
            None
        }
    }
}

/// Most output lines a check keeps (the transports keep only a tail for the journal).
pub const MAX_LINES: usize = 50_000;

/// Runs `cmd` on the member and collects its whole output (stdout and stderr, as lines).
pub async fn run_collect(
    transport: &dyn Transport,
    cmd: &str,
    timeout: std::time::Duration,
) -> Result<(ebb_engine::interfaces::CommandOutcome, Vec<String>), String> {
    let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let l2 = lines.clone();
    let sink: ebb_engine::interfaces::OutputSink = std::sync::Arc::new(move |l: &str| {
        if let Ok(mut v) = l2.lock() {
            if v.len() < MAX_LINES {
                v.push(l.to_string());
            }
        }
    });
    let out = transport
        .run(cmd, &BTreeMap::new(), timeout, Some(sink))
        .await
        .map_err(|e| e.to_string())?;
    let all = lines.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((out, all))
}

/// The last line of `s`, cut to 200 characters.
pub fn last_line(s: &str) -> String {
    let t = s.trim();
    let line = t.lines().last().unwrap_or("");
    cut(line, 200)
}

/// `s` cut to `n` characters, with an ellipsis when cut.
pub fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Matches `name` against a pattern where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str, case_insensitive: bool) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            pattern.to_lowercase().chars().collect(),
            name.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), name.chars().collect())
    };
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("MSExchange*", "MSExchangeIS", false));
        assert!(glob_match("msexchange*", "MSExchangeIS", true));
        assert!(!glob_match("msexchange*", "MSExchangeIS", false));
        assert!(glob_match("*", "", false));
        assert!(glob_match("a*b*c", "axxbyyc", false));
        assert!(!glob_match("a*b*c", "axxbyy", false));
        assert!(glob_match("nginx", "nginx", false));
    }
}
