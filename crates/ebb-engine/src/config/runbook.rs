//! `[runbook]`: failure policy, `[runbook.drain]`, `[[runbook.step]]`, `[runbook.reboot]`,
//! `[[runbook.verify]]`, `[runbook.bake]` and `[[runbook.rollback]]`.

use super::{keys, RESERVED_STEP_NAMES};
use crate::plan::*;
use crate::registry::Registry;
use ebb_config::{type_name, Context, Section};
use std::collections::HashSet;
use std::time::Duration;

/// The runbook, and the path of each step (`runbook.step[2]`) for later messages.
pub(super) fn runbook(
    cx: &mut Context,
    top: &mut Section<'_>,
    members: &[Member],
    registry: &Registry,
) -> (Runbook, Vec<String>) {
    let empty = toml::Table::new();
    let t = top.sub(cx, "runbook").unwrap_or(&empty);
    let mut rb = Section::new(t, "runbook", keys::RUNBOOK);
    let on_failure = rb.choice(
        cx,
        "on_failure",
        &[("halt", OnFailure::Halt), ("continue", OnFailure::Continue)],
        OnFailure::Halt,
    );
    let max_failed = rb.uint(cx, "max_failed", 0) as usize;
    let rejoin_timeout = rb.duration(cx, "rejoin_timeout", Duration::from_secs(120));
    let balancer_retry = rb.duration(cx, "balancer_retry", crate::patient::BALANCER_RETRY);
    let stop_after = rb.opt_duration(cx, "stop_after");
    let expected_member_time = rb.opt_duration(cx, "expected_member_time");
    let drain_t = rb.sub(cx, "drain").unwrap_or(&empty);
    let drain = drain(cx, drain_t, registry);
    let (steps, paths) = steps(cx, &mut rb, members, registry);
    let reboot = rb.sub(cx, "reboot").and_then(|t| reboot(cx, t));
    if reboot.is_some() {
        boot_identities(cx, members, registry);
    }
    let verify: Vec<CheckSpec> = rb
        .tables(cx, "verify")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| super::checks::check(cx, t, &format!("runbook.verify[{i}]"), registry))
        .collect();
    let bake = rb.sub(cx, "bake").and_then(|t| bake(cx, t, registry));
    let rollback = rollback_steps(cx, &mut rb, members);
    let rollback_on = rollback_on(cx, &mut rb, !rollback.is_empty(), bake.is_some());
    rb.finish(cx);
    let runbook = Runbook {
        on_failure,
        max_failed,
        drain,
        steps,
        reboot,
        verify,
        rejoin_timeout,
        balancer_retry,
        stop_after,
        expected_member_time,
        bake,
        rollback,
        rollback_on,
    };
    (runbook, paths)
}

/// `[runbook.bake]`.
fn bake(cx: &mut Context, t: &toml::Table, registry: &Registry) -> Option<BakeSpec> {
    let mut b = Section::new(t, "runbook.bake", keys::BAKE);
    let duration = b.opt_duration(cx, "duration");
    if duration.is_none() && !b.has("duration") {
        cx.err(
            "runbook.bake",
            "a bake needs duration = \"10m\" (how long the returned member is watched)",
        );
    }
    let interval = b.duration(cx, "interval", Duration::from_secs(30));
    let checks: Vec<CheckSpec> = b
        .tables(cx, "check")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| {
            super::checks::check(cx, t, &format!("runbook.bake.check[{i}]"), registry)
        })
        .collect();
    if !b.has("check") {
        cx.err(
            "runbook.bake",
            "a bake needs at least one [[runbook.bake.check]] (the same kinds as [[runbook.verify]])",
        );
    }
    b.finish(cx);
    Some(BakeSpec {
        duration: duration?,
        interval,
        checks,
    })
}

/// `[runbook] rollback_on`: both failures by default when there are rollback steps.
fn rollback_on(cx: &mut Context, rb: &mut Section<'_>, steps: bool, bake: bool) -> RollbackOn {
    let key = rb.key("rollback_on");
    let Some(names) = rb.strings(cx, "rollback_on") else {
        return RollbackOn {
            verify: steps,
            bake: steps,
        };
    };
    if !steps {
        cx.err(
            &key,
            "rollback_on needs [[runbook.rollback]] steps to run; add them or remove rollback_on",
        );
    }
    let mut on = RollbackOn::default();
    for n in names {
        match n.as_str() {
            "verify" => on.verify = true,
            "bake" if !bake => cx.err(&key, "\"bake\" is listed but there is no [runbook.bake]"),
            "bake" => on.bake = true,
            other => cx.err(
                &key,
                format!("unknown failure \"{other}\"; expected some of \"verify\", \"bake\""),
            ),
        }
    }
    on
}

/// `[[runbook.rollback]]`: run when verify or the bake fails (see `rollback_on`).
fn rollback_steps(cx: &mut Context, rb: &mut Section<'_>, members: &[Member]) -> Vec<StepSpec> {
    let has_reboot = rb.has("reboot");
    let mut steps: Vec<StepSpec> = Vec::new();
    for (i, t) in rb.tables(cx, "rollback").into_iter().enumerate() {
        let p = format!("runbook.rollback[{i}]");
        let mut s = Section::new(t, &p, keys::ROLLBACK);
        let name = s.req_str(
            cx,
            "name",
            "the rollback step's name, e.g. name = \"reinstall\"",
        );
        let run = s.req_str(cx, "run", "the command that puts the member back as it was");
        let timeout = s.duration(cx, "timeout", Duration::from_secs(1800));
        let idempotent = s.bool(cx, "idempotent", true);
        let reboot = reboot_policy(cx, &mut s);
        let reboot_required_exit_codes = exit_codes(cx, &mut s);
        s.finish(cx);
        let (Some(name), Some(run)) = (name, run) else {
            continue;
        };
        if steps.iter().any(|s| s.name == name) {
            cx.err(
                &format!("{p}.name"),
                format!("rollback step \"{name}\" is defined twice; names must be unique"),
            );
        }
        let step = StepSpec {
            name,
            run,
            undo: None,
            when: When::Every,
            only_group: None,
            timeout,
            idempotent,
            retries: 0,
            retry_interval: Duration::ZERO,
            reboot,
            reboot_required_exit_codes,
            maintenance: None,
        };
        if step.reboot != RebootPolicy::Never && !has_reboot {
            cx.err(&format!("{p}.reboot"), "this rollback step may reboot but there is no [runbook.reboot] with the command that reboots");
        }
        reboot_codes(
            cx,
            &p,
            &step,
            t.contains_key("reboot_required_exit_codes"),
            members,
        );
        steps.push(step);
    }
    steps
}

/// `reboot` of a step or a rollback step.
fn reboot_policy(cx: &mut Context, s: &mut Section<'_>) -> RebootPolicy {
    s.choice(
        cx,
        "reboot",
        &[
            ("never", RebootPolicy::Never),
            ("if-required", RebootPolicy::IfRequired),
            ("always", RebootPolicy::Always),
        ],
        RebootPolicy::Never,
    )
}

/// `[runbook.drain]`.
fn drain(cx: &mut Context, t: &toml::Table, registry: &Registry) -> DrainSpec {
    let mut dr = Section::new(t, "runbook.drain", keys::DRAIN);
    let drain = DrainSpec {
        mode: dr.choice(
            cx,
            "mode",
            &[
                ("drainstop", DrainMode::Drainstop),
                ("stop", DrainMode::Stop),
            ],
            DrainMode::Drainstop,
        ),
        timeout: dr.duration(cx, "timeout", Duration::from_secs(600)),
        on_timeout: dr.choice(
            cx,
            "on_timeout",
            &[
                ("stop", OnTimeout::Stop),
                ("abort", OnTimeout::Abort),
                ("wait", OnTimeout::Wait),
                ("skip", OnTimeout::Skip),
            ],
            OnTimeout::Stop,
        ),
        hold: dr.bool(cx, "hold", true),
        until: dr
            .tables(cx, "until")
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| {
                super::checks::check(cx, t, &format!("runbook.drain.until[{i}]"), registry)
            })
            .collect(),
    };
    dr.finish(cx);
    drain
}

/// `[[runbook.step]]`, with their paths.
fn steps(
    cx: &mut Context,
    rb: &mut Section<'_>,
    members: &[Member],
    registry: &Registry,
) -> (Vec<StepSpec>, Vec<String>) {
    let has_reboot = rb.has("reboot");
    let mut steps = Vec::new();
    let mut paths = Vec::new();
    let mut names: HashSet<String> = HashSet::new();
    for (i, t) in rb.tables(cx, "step").into_iter().enumerate() {
        let p = format!("runbook.step[{i}]");
        let Some(step) = step(cx, t, &p, members, registry) else {
            continue;
        };
        if RESERVED_STEP_NAMES.contains(&step.name.as_str()) {
            cx.err(
                &format!("{p}.name"),
                format!(
                    "\"{}\" is the name of a built-in stage; choose another",
                    step.name
                ),
            );
        }
        if !names.insert(step.name.clone()) {
            cx.err(
                &format!("{p}.name"),
                format!(
                    "step \"{}\" is defined twice; step names must be unique",
                    step.name
                ),
            );
        }
        if step.reboot != RebootPolicy::Never && !has_reboot {
            cx.err(&format!("{p}.reboot"), "this step may reboot but there is no [runbook.reboot] with the command that reboots");
        }
        let explicit = t.contains_key("reboot_required_exit_codes");
        reboot_codes(cx, &p, &step, explicit, members);
        if let Some(g) = &step.only_group {
            if !members
                .iter()
                .any(|m| m.group.as_deref() == Some(g.as_str()))
            {
                cx.err(
                    &format!("{p}.only_group"),
                    format!("no member is in group \"{g}\""),
                );
            }
        }
        steps.push(step);
        paths.push(p);
    }
    (steps, paths)
}

/// One `[[runbook.step]]`: a command (`run`, `undo`), or a maintenance step whose kind (a
/// key naming a registered maintenance kind) reads its own table.
fn step(
    cx: &mut Context,
    t: &toml::Table,
    p: &str,
    members: &[Member],
    registry: &Registry,
) -> Option<StepSpec> {
    let mut s = Section::new(t, p, keys::STEP).with_keys(&registry.maintenance_keys());
    let name = s.req_str(cx, "name", "the step's name, e.g. name = \"install\"");
    let maintenance = super::maintenance::maintenance(cx, &mut s, members, registry);
    let kind = registry
        .maintenance_kinds()
        .iter()
        .map(|k| k.name())
        .find(|k| t.contains_key(*k));
    let (run, undo) = match kind {
        Some(kind) => {
            // Read, so they are reported once, here, not as unknown keys.
            let (_, _) = (s.get("run"), s.get("undo"));
            if t.contains_key("run") || t.contains_key("undo") {
                cx.err(&s.key(kind), format!("a maintenance step ({kind}) has no run or undo: it begins maintenance and ends it on return"));
            }
            (Some(String::new()), None)
        }
        None => {
            let kinds = super::maintenance::kinds_for_messages(registry);
            let what = if kinds.is_empty() {
                "the command to run on the member".to_string()
            } else {
                format!("the command to run on the member (or {kinds})")
            };
            let run = s.req_str(cx, "run", &what);
            (run, s.str(cx, "undo"))
        }
    };
    let when = s.choice(
        cx,
        "when",
        &[
            ("every", When::Every),
            ("first", When::First),
            ("never", When::Never),
        ],
        When::Every,
    );
    let only_group = s.str(cx, "only_group");
    let timeout = s.duration(cx, "timeout", Duration::from_secs(1800));
    let idempotent = s.bool(cx, "idempotent", true);
    let retries = u32::try_from(s.uint(cx, "retries", 0)).unwrap_or(u32::MAX);
    let retry_interval = s.duration(cx, "retry_interval", Duration::from_secs(10));
    let reboot = reboot_policy(cx, &mut s);
    let reboot_required_exit_codes = exit_codes(cx, &mut s);
    s.finish(cx);
    Some(StepSpec {
        name: name?,
        run: run?,
        undo,
        when,
        only_group,
        timeout,
        idempotent,
        retries,
        retry_interval,
        reboot,
        reboot_required_exit_codes,
        maintenance,
    })
}

/// Reboot codes that can never be seen. An sh command exits with 0 to 255, so Windows
/// codes such as the default 3010 cannot ask for a reboot on sh members; and the codes are
/// read only with `reboot = "if-required"`.
fn reboot_codes(cx: &mut Context, p: &str, step: &StepSpec, explicit: bool, members: &[Member]) {
    let key = format!("{p}.reboot_required_exit_codes");
    if step.reboot != RebootPolicy::IfRequired {
        if explicit {
            cx.err(
                &key,
                "exit codes are read only with reboot = \"if-required\"; remove them or set reboot = \"if-required\"",
            );
        }
        return;
    }
    let in_scope = |m: &&Member| match &step.only_group {
        Some(g) => m.group.as_deref() == Some(g.as_str()),
        None => true,
    };
    let shells: Vec<Shell> = members.iter().filter(in_scope).map(|m| m.shell).collect();
    if !shells.contains(&Shell::Sh) {
        return;
    }
    let sh_code = |c: &i32| (0..=255).contains(c);
    let codes = &step.reboot_required_exit_codes;
    if !explicit {
        cx.err(
            &format!("{p}.reboot"),
            "the default reboot_required_exit_codes = [3010] is a Windows code that an sh command can never exit with (sh exit codes are 0 to 255): list the codes your command exits with when a reboot is needed, e.g. reboot_required_exit_codes = [100]",
        );
    } else if !shells.contains(&Shell::PowerShell) && !codes.iter().all(sh_code) {
        let never: Vec<String> = codes
            .iter()
            .filter(|c| !sh_code(c))
            .map(i32::to_string)
            .collect();
        cx.err(
            &key,
            format!(
                "{} can never be the exit code of an sh command (exit codes are 0 to 255)",
                never.join(", ")
            ),
        );
    } else if !codes.iter().any(sh_code) {
        cx.err(
            &key,
            "none of these codes can be the exit code of an sh command (0 to 255), and this step runs on sh members: add the code they exit with when a reboot is needed",
        );
    }
}

/// `reboot_required_exit_codes`.
fn exit_codes(cx: &mut Context, s: &mut Section<'_>) -> Vec<i32> {
    let key = s.key("reboot_required_exit_codes");
    match s.get("reboot_required_exit_codes") {
        None => vec![3010],
        Some(toml::Value::Array(a)) => {
            let mut out = Vec::new();
            for v in a {
                match v.as_integer() {
                    Some(c) if (i32::MIN as i64..=i32::MAX as i64).contains(&c) => {
                        out.push(c as i32)
                    }
                    _ => cx.err(&key, "expected a list of exit codes, e.g. [3010, 1641]"),
                }
            }
            out
        }
        Some(other) => {
            cx.err(
                &key,
                format!("expected a list of exit codes, found {}", type_name(other)),
            );
            vec![3010]
        }
    }
}

/// `[runbook.reboot]`.
fn reboot(cx: &mut Context, t: &toml::Table) -> Option<RebootSpec> {
    let mut r = Section::new(t, "runbook.reboot", keys::REBOOT);
    let command = r.req_str(cx, "command", "the command that reboots the member");
    let timeout = r.duration(cx, "timeout", Duration::from_secs(900));
    let poll_interval = r.duration(cx, "poll_interval", Duration::from_secs(2));
    r.finish(cx);
    Some(RebootSpec {
        command: command?,
        timeout,
        poll_interval,
    })
}

/// A runbook that reboots must be able to tell a member came back: members whose transport
/// does not know the boot identity need `boot_id`.
fn boot_identities(cx: &mut Context, members: &[Member], registry: &Registry) {
    for (i, m) in members.iter().enumerate() {
        let knows = registry
            .find_transport(&m.transport)
            .is_some_and(|t| t.knows_boot_identity());
        if !knows && m.boot_id.is_none() {
            cx.err(
                &format!("member[{i}]"),
                format!("member \"{}\" uses the {} transport and the runbook reboots: set boot_id = \"<command printing the boot identity>\" on it or in [defaults]", m.name, m.transport),
            );
        }
    }
}
