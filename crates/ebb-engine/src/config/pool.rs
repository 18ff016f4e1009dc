//! `[pool]`: name, availability policy, pool-wide checks and the alert gate.

use super::keys;
use crate::plan::*;
use crate::registry::Registry;
use ebb_config::{display_value, Context, Section};
use std::time::Duration;

pub(super) fn pool(
    cx: &mut Context,
    top: &mut Section<'_>,
    registry: &Registry,
) -> Option<PoolSpec> {
    let Some(t) = top.sub(cx, "pool") else {
        if !top.has("pool") {
            cx.err(
                "pool",
                "missing table [pool] (it needs at least name = \"...\")",
            );
        }
        return None;
    };
    let mut pool = Section::new(t, "pool", keys::POOL);
    let name = pool.req_str(cx, "name", "the pool's name, e.g. name = \"web\"");
    if let Some(n) = &name {
        if !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            cx.err(
                "pool.name",
                format!("\"{n}\" may only contain letters, digits, '-', '_' and '.'"),
            );
        }
    }
    let max_unavailable = max_unavailable(cx, &mut pool);
    let min_in_service = pool.uint(cx, "min_in_service", 0) as usize;
    let capacity_wait = pool.duration(cx, "capacity_wait", Duration::from_secs(300));
    let checks: Vec<CheckSpec> = pool
        .tables(cx, "check")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| super::checks::check(cx, t, &format!("pool.check[{i}]"), registry))
        .collect();
    let gate = pool.sub(cx, "gate").and_then(|t| gate(cx, t));
    let windows = pool
        .tables(cx, "window")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| super::window::window(cx, t, &format!("pool.window[{i}]")))
        .collect();
    pool.finish(cx);
    Some(PoolSpec {
        name: name?,
        max_unavailable,
        min_in_service,
        capacity_wait,
        checks,
        gate,
        windows,
    })
}

/// A `[pool]` for a file whose `[pool]` is in error, so that the rest can still be
/// checked; never part of a plan that is returned.
pub(super) fn stand_in() -> PoolSpec {
    PoolSpec {
        name: String::new(),
        max_unavailable: MaxUnavailable::Count(1),
        min_in_service: 0,
        capacity_wait: Duration::from_secs(300),
        checks: Vec::new(),
        gate: None,
        windows: Vec::new(),
    }
}

fn max_unavailable(cx: &mut Context, pool: &mut Section<'_>) -> MaxUnavailable {
    match pool.get("max_unavailable") {
        None => MaxUnavailable::Count(1),
        Some(toml::Value::Integer(n)) if *n >= 1 => MaxUnavailable::Count(*n as usize),
        Some(toml::Value::String(s)) if s.ends_with('%') => {
            match s[..s.len() - 1].trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => MaxUnavailable::Percent(p),
                _ => {
                    cx.err(
                        "pool.max_unavailable",
                        format!("expected a percentage from \"1%\" to \"100%\", found \"{s}\""),
                    );
                    MaxUnavailable::Count(1)
                }
            }
        }
        Some(other) => {
            cx.err(
                "pool.max_unavailable",
                format!(
                    "expected a count of 1 or more or a percentage such as \"25%\", found {}",
                    display_value(other)
                ),
            );
            MaxUnavailable::Count(1)
        }
    }
}

/// `[pool.gate]`.
fn gate(cx: &mut Context, t: &toml::Table) -> Option<GateSpec> {
    let mut g = Section::new(t, "pool.gate", keys::GATE);
    let url = g.req_str(
        cx,
        "alertmanager",
        "the Alertmanager to ask, e.g. alertmanager = \"http://alertmanager:9093\"",
    );
    super::http_url(cx, "pool.gate.alertmanager", &url);
    let matchers = g.string_map(cx, "matchers");
    for (k, v) in &matchers {
        if let Some(r) = v.strip_prefix('~') {
            super::checks::valid_regex(cx, &format!("pool.gate.matchers.{k}"), r);
        }
    }
    let timeout = g.duration(cx, "timeout", Duration::from_secs(1800));
    let poll_interval = g.duration(cx, "poll_interval", Duration::from_secs(15));
    g.finish(cx);
    Some(GateSpec {
        alertmanager: url?,
        matchers,
        timeout,
        poll_interval,
    })
}

/// The policy must be satisfiable at all.
pub(super) fn satisfiable(cx: &mut Context, pool: &PoolSpec, members: usize) {
    if let MaxUnavailable::Count(n) = pool.max_unavailable {
        if members > 0 && n > members {
            cx.err(
                "pool.max_unavailable",
                format!("{n} is more than the {members} members of the pool"),
            );
        }
    }
    let min = pool.min_in_service;
    if members > 0 && min >= members {
        cx.err(
            "pool.min_in_service",
            format!("{min} leaves no member free to drain in a pool of {members} (it must be at most {})", members - 1),
        );
    }
}
