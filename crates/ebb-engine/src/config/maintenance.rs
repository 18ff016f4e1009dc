//! A maintenance step's `NAME = { ... }`: which registered maintenance kind it names. The
//! table is the kind's; the engine hands it over and never reads it.

use crate::plan::*;
use crate::registry::Registry;
use ebb_config::{Context as Cx, Section};

/// The maintenance kind named by a key of step `s` (at most one), its table validated by
/// that kind against every member.
pub(super) fn maintenance(
    cx: &mut Cx,
    s: &mut Section<'_>,
    members: &[Member],
    registry: &Registry,
) -> Option<MaintenanceSpec> {
    let named: Vec<&'static str> = registry
        .maintenance_kinds()
        .iter()
        .map(|k| k.name())
        .filter(|k| s.has(k))
        .collect();
    if named.len() > 1 {
        for k in &named {
            s.get(k);
        }
        let given = named.join(" = { ... } and ");
        cx.err(
            s.path(),
            format!("a step begins one kind of maintenance; found {given} = {{ ... }}"),
        );
        return None;
    }
    let name = *named.first()?;
    let kind = registry.find_maintenance(name)?;
    let spec = MaintenanceSpec {
        kind: name.to_string(),
        path: s.key(name),
        settings: s.sub(cx, name)?.clone(),
    };
    kind.validate(&spec, members, cx);
    Some(spec)
}

/// The keys naming the registered maintenance kinds, as `alertmanager = { ... } / webhook
/// = { ... }`, for messages.
pub(super) fn kinds_for_messages(registry: &Registry) -> String {
    registry
        .maintenance_kinds()
        .iter()
        .map(|k| format!("{} = {{ ... }}", k.name()))
        .collect::<Vec<_>>()
        .join(" / ")
}
