//! `/metrics`: the snapshot in Prometheus' text exposition format (version 0.0.4), named
//! as Prometheus' conventions say (`ebb_` prefix, base units, `_total` for counters).

use super::view::{Snapshot, View};
use std::collections::BTreeMap;

/// Upper bounds (seconds) of the step duration histogram: from a quick command to an
/// hour-long update.
const BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// Run states, each exported as `ebb_run_state{state=...}` 1 or 0.
const RUN_STATES: &[&str] = &["running", "paused", "halted", "done", "aborted"];
/// Member states, each exported as `ebb_members{state=...}`.
const MEMBER_STATES: &[&str] = &[
    "pending",
    "draining",
    "out",
    "failed",
    "done",
    "skipped",
    "rolled-back",
];

/// Renders the metrics text.
pub fn render(s: &Snapshot) -> String {
    let v = &s.view;
    let mut out = String::new();
    let pool = v
        .run
        .as_ref()
        .map(|r| r.pool.clone())
        .or_else(|| v.pool.clone())
        .unwrap_or_default();
    let pool_label = format!("pool=\"{}\"", escape(&pool));
    run_metrics(&mut out, &pool_label, v);
    member_metrics(&mut out, &pool_label, v);
    drain_and_undo_metrics(&mut out, &pool_label, v);
    step_metrics(&mut out, &pool_label, s);
    out
}

/// The latest run's state and start time.
fn run_metrics(out: &mut String, pool_label: &str, v: &View) {
    family(
        out,
        "ebb_run_state",
        "gauge",
        "State of the latest run of the pool: 1 for its state, 0 for the others.",
    );
    let state = v.run.as_ref().map(|r| r.state.as_str());
    for st in RUN_STATES {
        line(
            out,
            format!(
                "ebb_run_state{{{pool_label},state=\"{st}\"}} {}",
                u8::from(state == Some(st))
            ),
        );
    }
    if let Some(r) = &v.run {
        family(
            out,
            "ebb_run_start_time_seconds",
            "gauge",
            "When the latest run started, in seconds since the Unix epoch.",
        );
        line(
            out,
            format!(
                "ebb_run_start_time_seconds{{{pool_label}}} {}",
                r.started_ms as f64 / 1000.0
            ),
        );
    }
}

/// Members by state, and in service as the balancer showed them.
fn member_metrics(out: &mut String, pool_label: &str, v: &View) {
    family(
        out,
        "ebb_members",
        "gauge",
        "Members of the run by state (draining: its drain is in flight).",
    );
    for st in MEMBER_STATES {
        let n = v.members.iter().filter(|m| m.state == *st).count();
        line(
            out,
            format!("ebb_members{{{pool_label},state=\"{st}\"}} {n}"),
        );
    }

    if let Some(last) = v.in_service.last() {
        family(
            out,
            "ebb_members_in_service",
            "gauge",
            "Members in service as the balancer last showed them.",
        );
        line(
            out,
            format!("ebb_members_in_service{{{pool_label}}} {}", last.in_service),
        );
    }
}

/// Drains in flight with their connections, and the undos each member owes.
fn drain_and_undo_metrics(out: &mut String, pool_label: &str, v: &View) {
    family(
        out,
        "ebb_drains_in_progress",
        "gauge",
        "Members whose drain is in flight.",
    );
    line(
        out,
        format!(
            "ebb_drains_in_progress{{{pool_label}}} {}",
            v.draining().count()
        ),
    );
    family(
        out,
        "ebb_drain_connections",
        "gauge",
        "Connections still open on a draining member, as last seen.",
    );
    for m in v.draining() {
        if let Some(c) = m.connections {
            line(
                out,
                format!(
                    "ebb_drain_connections{{{pool_label},member=\"{}\"}} {c}",
                    escape(&m.name)
                ),
            );
        }
    }

    family(
        out,
        "ebb_owed_undos",
        "gauge",
        "Undos a member still owes (run when it returns, or by ebb release).",
    );
    for m in &v.members {
        line(
            out,
            format!(
                "ebb_owed_undos{{{pool_label},member=\"{}\"}} {}",
                escape(&m.name),
                m.owed.len()
            ),
        );
    }
}

/// Per step name: the histogram of finished steps' durations and the failure counter.
fn step_metrics(out: &mut String, pool_label: &str, s: &Snapshot) {
    let mut by_step: BTreeMap<&str, (Vec<u64>, f64, u64, u64)> = BTreeMap::new();
    for f in &s.finished {
        let e = by_step
            .entry(f.name.as_str())
            .or_insert_with(|| (vec![0; BUCKETS.len()], 0.0, 0, 0));
        for (i, le) in BUCKETS.iter().enumerate() {
            if f.seconds <= *le {
                e.0[i] += 1;
            }
        }
        e.1 += f.seconds;
        e.2 += 1;
        e.3 += u64::from(f.failed);
    }
    family(
        out,
        "ebb_step_duration_seconds",
        "histogram",
        "How long finished steps of the run took, by step name.",
    );
    for (step, (buckets, sum, count, _)) in &by_step {
        let l = format!("{pool_label},step=\"{}\"", escape(step));
        for (le, n) in BUCKETS.iter().zip(buckets) {
            line(
                out,
                format!("ebb_step_duration_seconds_bucket{{{l},le=\"{le}\"}} {n}"),
            );
        }
        line(
            out,
            format!("ebb_step_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}"),
        );
        line(out, format!("ebb_step_duration_seconds_sum{{{l}}} {sum}"));
        line(
            out,
            format!("ebb_step_duration_seconds_count{{{l}}} {count}"),
        );
    }
    family(
        out,
        "ebb_step_failures_total",
        "counter",
        "Steps of the run that failed, by step name.",
    );
    for (step, (_, _, _, failed)) in &by_step {
        line(
            out,
            format!(
                "ebb_step_failures_total{{{pool_label},step=\"{}\"}} {failed}",
                escape(step)
            ),
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    line(out, format!("# HELP {name} {help}"));
    line(out, format!("# TYPE {name} {kind}"));
}

/// Appends one line of the exposition.
fn line(out: &mut String, text: String) {
    out.push_str(&text);
    out.push('\n');
}

/// A label value: backslash, double quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
