//! Member settings: transport keys (`ssh_*`) and variables.

use super::reader::*;
use super::Cx;
use crate::duration::parse_duration;
use std::collections::BTreeMap;

pub(super) const MEMBER_SETTINGS: &[&str] = &[
    "ssh_user",
    "ssh_port",
    "ssh_key",
    "ssh_known_hosts",
    "ssh_options",
    "ssh_host",
    "ssh_connect_timeout",
];

/// Options of `ssh_options` that ebb owns (host keys are always checked).
pub(super) const SSH_OWNED_OPTIONS: &[&str] = &[
    "stricthostkeychecking",
    "userknownhostsfile",
    "globalknownhostsfile",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "batchmode",
    "requesttty",
    "permitlocalcommand",
    "localcommand",
];

/// Checks the type of one transport setting (`ssh_*`), so a typo fails with its line.
pub(super) fn member_setting(cx: &mut Cx, key: &str, k: &str, v: &toml::Value) {
    let bad = |cx: &mut Cx, what: &str| {
        cx.err(key, format!("expected {what}, found {}", display_value(v)));
    };
    match k {
        "ssh_port" => match v.as_integer() {
            Some(p) if (1..=65535).contains(&p) => {}
            _ => bad(cx, "a port number from 1 to 65535"),
        },
        "ssh_connect_timeout" => match v.as_str().map(parse_duration) {
            Some(Ok(_)) => {}
            Some(Err(e)) => cx.err(key, e),
            None => bad(cx, "a duration such as \"10s\""),
        },
        "ssh_options" => match v.as_array() {
            Some(items) => {
                for item in items {
                    let Some(o) = item.as_str() else {
                        bad(cx, "a list of \"Key=Value\" strings");
                        return;
                    };
                    let name = o.split_once('=').map(|(n, _)| n.trim()).unwrap_or("");
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                        cx.err(key, format!("\"{o}\" is not of the form Key=Value"));
                    } else if SSH_OWNED_OPTIONS.contains(&name.to_ascii_lowercase().as_str()) {
                        cx.err(key, format!("\"{name}\" is set by ebb: host keys are always checked (use ssh_known_hosts for the file)"));
                    }
                }
            }
            None => bad(cx, "a list of \"Key=Value\" strings"),
        },
        _ => match v.as_str() {
            Some(s) if !s.trim().is_empty() => {}
            _ => bad(cx, "a non-empty string"),
        },
    }
}

pub(super) fn vars(cx: &mut Cx, t: &mut Tbl<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let key = t.key("vars");
    if let Some(vt) = t.table(cx, "vars") {
        for (k, v) in vt {
            match v {
                toml::Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    out.insert(k.clone(), v.to_string());
                }
                other => cx.err(
                    &format!("{key}.{k}"),
                    format!(
                        "expected a string, number or boolean, found {}",
                        type_name(other)
                    ),
                ),
            }
        }
    }
    out
}
