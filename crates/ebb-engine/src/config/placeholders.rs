//! Placeholders (`{address}`, `{var.NAME}`) in every template of the engine's sections,
//! checked against every member once all members' variables are known. Plug-ins check
//! the templates in their own sections (the `command` driver's commands, a maintenance
//! step's table).

use super::members::Defaults;
use crate::placeholder;
use crate::plan::*;
use ebb_config::Context;

pub(super) fn validate(
    cx: &mut Context,
    pool: &PoolSpec,
    runbook: &Runbook,
    step_paths: &[String],
    defaults: &Defaults,
    members: &[Member],
) {
    let mut templates: Vec<(String, String)> = Vec::new();
    for (p, s) in step_paths.iter().zip(&runbook.steps) {
        templates.push((format!("{p}.run"), s.run.clone()));
        if let Some(u) = &s.undo {
            templates.push((format!("{p}.undo"), u.clone()));
        }
    }
    if let Some(r) = &runbook.reboot {
        templates.push(("runbook.reboot.command".into(), r.command.clone()));
    }
    if let Some(b) = &defaults.boot_id {
        templates.push(("defaults.boot_id".into(), b.clone()));
    }
    for (prefix, checks) in [
        ("runbook.verify", &runbook.verify),
        ("runbook.drain.until", &runbook.drain.until),
        ("pool.check", &pool.checks),
    ] {
        for (i, c) in checks.iter().enumerate() {
            for (k, t) in c.check.templates() {
                templates.push((format!("{prefix}[{i}].{k}"), t));
            }
        }
    }
    for (key, template) in &templates {
        let command = [".run", ".undo", ".command", "boot_id"]
            .iter()
            .any(|s| key.ends_with(s));
        if let Some(e) = command
            .then(|| placeholder::quoted_placeholder_error(template))
            .flatten()
        {
            cx.err(key, e);
            continue;
        }
        for m in members {
            if let Err(e) = placeholder::validate(template, m, &[]) {
                cx.err(key, e);
                break;
            }
        }
    }
}
