//! `[defaults]` and `[[member]]`. The transport keys (`ssh_*`, ...) belong to the
//! registered transports, which validate them; the engine only carries them to the member.

use super::keys;
use crate::plan::*;
use crate::registry::Registry;
use ebb_config::{type_name, Context, Section};
use std::collections::BTreeMap;

/// What `[defaults]` gives every member.
pub(super) struct Defaults {
    transport: Option<String>,
    shell: Shell,
    pub(super) boot_id: Option<String>,
    vars: BTreeMap<String, String>,
    settings: toml::Table,
}

const SHELLS: &[(&str, Shell)] = &[("sh", Shell::Sh), ("powershell", Shell::PowerShell)];

pub(super) fn defaults(cx: &mut Context, top: &mut Section<'_>, registry: &Registry) -> Defaults {
    let empty = toml::Table::new();
    let t = top.sub(cx, "defaults").unwrap_or(&empty);
    let mut d = with_transport_keys(Section::new(t, "defaults", keys::DEFAULTS), registry);
    let transport = transport(cx, &mut d, registry);
    let shell = d.choice(cx, "shell", SHELLS, Shell::Sh);
    let boot_id = d.str(cx, "boot_id");
    let vars = vars(cx, &mut d);
    let settings = transport_settings(cx, &mut d, registry);
    d.finish(cx);
    Defaults {
        transport,
        shell,
        boot_id,
        vars,
        settings,
    }
}

pub(super) fn members(
    cx: &mut Context,
    top: &mut Section<'_>,
    defaults: &Defaults,
    registry: &Registry,
) -> Vec<Member> {
    let tables = top.tables(cx, "member");
    if tables.is_empty() && !top.has("member") {
        cx.err(
            "member",
            "no [[member]] tables: a pool needs at least one member",
        );
    }
    let mut members: Vec<Member> = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut lb_names: BTreeMap<String, String> = BTreeMap::new();
    for (i, t) in tables.iter().enumerate() {
        let p = format!("member[{i}]");
        let Some(m) = member(cx, t, &p, defaults, registry) else {
            continue;
        };
        if let Some(prev) = names.get(&m.name) {
            cx.err(
                &format!("{p}.name"),
                format!("member \"{}\" is defined twice (first as {prev})", m.name),
            );
            // Its lb_name (by default its name) clashes too: that is the same mistake.
            continue;
        }
        names.insert(m.name.clone(), p.clone());
        if let Some(prev) = lb_names.get(&m.lb_name) {
            cx.err(
                &format!("{p}.lb_name"),
                format!(
                    "member \"{}\": lb_name \"{}\" duplicates member \"{prev}\"",
                    m.name, m.lb_name
                ),
            );
        } else {
            lb_names.insert(m.lb_name.clone(), m.name.clone());
        }
        members.push(m);
    }
    members
}

fn member(
    cx: &mut Context,
    t: &toml::Table,
    p: &str,
    defaults: &Defaults,
    registry: &Registry,
) -> Option<Member> {
    let member_keys = Section::new(t, p, keys::MEMBER).with_keys(keys::DEFAULTS);
    let mut m = with_transport_keys(member_keys, registry);
    let name = m.req_str(cx, "name", "the member's name, e.g. name = \"web1\"");
    let address = m.req_str(
        cx,
        "address",
        "where the member serves, e.g. address = \"10.0.0.11:443\"",
    );
    let lb_name = m.str(cx, "lb_name");
    let transport = transport(cx, &mut m, registry)
        .or_else(|| defaults.transport.clone())
        .or_else(|| registry.default_transport().map(str::to_string));
    let shell = m.choice(cx, "shell", SHELLS, defaults.shell);
    let group = m.str(cx, "group");
    let boot_id = m.str(cx, "boot_id").or_else(|| defaults.boot_id.clone());
    let weight = m.uint(cx, "weight", 1);
    let mut vars = defaults.vars.clone();
    vars.extend(self::vars(cx, &mut m));
    let mut settings = defaults.settings.clone();
    settings.extend(transport_settings(cx, &mut m, registry));
    m.finish(cx);
    let (name, address) = (name?, address?);
    for (k, v) in [
        ("name", Some(&name)),
        ("lb_name", lb_name.as_ref()),
        ("group", group.as_ref()),
    ] {
        if let Some((v, bad)) = v.and_then(|v| v.chars().find(|c| c.is_control()).map(|c| (v, c))) {
            cx.err(
                &format!("{p}.{k}"),
                format!("{v:?} contains the control character {bad:?}: names are printed, logged and sent to balancers one per line, so ebb refuses newlines, tabs and other control characters in them"),
            );
        }
    }
    if transport.is_none() {
        cx.err(
            &format!("{p}.transport"),
            "no transport is registered in this build of ebb",
        );
    }
    Some(Member {
        lb_name: lb_name.unwrap_or_else(|| name.clone()),
        name,
        address,
        transport: transport?,
        shell,
        group,
        vars,
        boot_id,
        settings,
        weight: weight.min(u32::MAX as u64) as u32,
    })
}

/// A section that also accepts the keys of every registered transport.
fn with_transport_keys<'a>(mut s: Section<'a>, registry: &Registry) -> Section<'a> {
    for t in registry.transports() {
        s = s.with_keys(&t.keys());
    }
    s
}

/// `transport = "NAME"`, checked against the registry.
fn transport(cx: &mut Context, s: &mut Section<'_>, registry: &Registry) -> Option<String> {
    let name = s.str(cx, "transport")?;
    if registry.find_transport(&name).is_none() {
        let m = format!(
            "expected one of {}, found \"{name}\"",
            registry.transport_names()
        );
        s.error(cx, "transport", m);
        return None;
    }
    Some(name)
}

/// The transports' keys present in `s`, each validated by its transport.
fn transport_settings(cx: &mut Context, s: &mut Section<'_>, registry: &Registry) -> toml::Table {
    let mut out = toml::Table::new();
    for t in registry.transports() {
        t.validate(cx, s);
        for k in &t.keys() {
            if let Some(v) = s.table().get(k.name) {
                out.insert(k.name.to_string(), v.clone());
            }
        }
    }
    out
}

pub(super) fn vars(cx: &mut Context, t: &mut Section<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let key = t.key("vars");
    for (k, v) in t.sub(cx, "vars").into_iter().flatten() {
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
    out
}
