//! Checks (`[[runbook.verify]]`, `[[pool.check]]`, drain gates): the keys every check has
//! (`name`, `retries`, `interval`, `timeout`) are read here; the one key that names the
//! check's kind (`http = { ... }`, `tcp = "..."`) is opaque here and handed to the kind
//! registered under that name, which validates it and builds the check.

use super::keys;
use crate::plan::*;
use crate::registry::Registry;
use ebb_config::{Context as Cx, Key, Section};
use std::time::Duration;

pub(super) fn check(
    cx: &mut Cx,
    t: &toml::Table,
    p: &str,
    registry: &Registry,
) -> Option<CheckSpec> {
    let kinds = registry.checks();
    let kind_keys: Vec<Key> = kinds
        .iter()
        .map(|k| Key::new(k.name(), k.value(), k.description()))
        .collect();
    let mut c = Section::new(t, p, keys::CHECK).with_keys(&kind_keys);
    let name = c.req_str(cx, "name", "the check's name");
    let retries = c.uint(cx, "retries", 0).min(u32::MAX as u64) as u32;
    let interval = c.duration(cx, "interval", Duration::from_secs(2));
    let timeout = c.duration(cx, "timeout", Duration::from_secs(30));
    let present: Vec<_> = kinds
        .iter()
        .filter_map(|k| Some((k, c.get(k.name())?)))
        .collect();
    c.finish(cx);
    let [(kind, value)] = present[..] else {
        let examples: Vec<&str> = kinds.iter().map(|k| k.example()).collect();
        cx.err(
            p,
            format!("a check needs exactly one of: {}", examples.join(", ")),
        );
        return None;
    };
    // Its own context: the check is built only when its own value is right, whatever
    // else in the file is wrong.
    let key = format!("{p}.{}", kind.name());
    let mut own = Cx::new(cx.file(), cx.lines().clone());
    kind.validate(&mut own, &key, value);
    let check = if own.is_ok() {
        match kind.build(&own, &key, value) {
            Ok(check) => Some(check),
            Err(e) => {
                cx.extend(e.0);
                None
            }
        }
    } else {
        cx.extend(own.into_errors().0);
        None
    };
    Some(CheckSpec {
        name: name?,
        kind: kind.name().to_string(),
        check: check?,
        retries,
        interval,
        timeout,
    })
}

/// A regular expression the `regex` crate accepts; the error shows its own last line.
pub fn valid_regex(cx: &mut Cx, key: &str, r: &str) {
    if let Err(e) = regex::Regex::new(r) {
        let first = e.to_string();
        let last = first.lines().last().unwrap_or("").trim().to_string();
        cx.err(
            key,
            format!("\"{r}\" is not a valid regular expression: {last}"),
        );
    }
}
