//! Maintenance windows at the command line: the timing `ebb plan` shows (each member's
//! expected time, the run's expected end, who fits in the next window), the problems
//! `ebb check` reports, and the next window `ebb status` shows for a paused run.

use crate::RunSel;
use ebb_engine::journal::{Journal, MemberState, RunRecord};
use ebb_engine::plan::Plan;
use ebb_engine::window::jiff::Timestamp;
use ebb_engine::window::{self, Decision, Expectation};
use serde::Serialize;
use std::time::Duration;

/// The expected member times of `plan`: from the journal when one exists (it is never
/// created here), else `[runbook] expected_member_time` alone.
pub fn expectation(sel: &RunSel, plan: &Plan) -> Expectation {
    let fallback = plan.runbook.expected_member_time;
    let journal = match crate::locate::open_etcd(sel) {
        Ok(Some(etcd)) => Some(Journal::with_store(Box::new(etcd))),
        Ok(None) => crate::locate::state_dir(sel)
            .filter(|d| d.join(ebb_engine::journal::JOURNAL_FILE).is_file())
            .and_then(|d| Journal::open(&d).ok()),
        Err(_) => None,
    };
    journal
        .and_then(|j| Expectation::from_journal(&j, &plan.pool.name, fallback).ok())
        .unwrap_or_else(|| Expectation::new(Vec::new(), fallback))
}

/// One member in `ebb plan --json`'s `timing`.
#[derive(Debug, Serialize)]
pub struct MemberTiming {
    /// Member name.
    pub name: String,
    /// Its expected time in seconds, if known.
    pub expected_s: Option<u64>,
    /// Where that comes from.
    pub basis: Option<String>,
    /// When it is expected to start (in the first window's zone, as shown to people), if
    /// that can be judged.
    pub start: Option<String>,
    /// Its expected end.
    pub end: Option<String>,
    /// It starts in the next window (the one open now, if one is).
    pub in_next_window: bool,
}

/// `timing` of `ebb plan --json`.
#[derive(Debug, Serialize)]
pub struct Timing {
    /// The windows, described.
    pub windows: Vec<String>,
    /// The next window (the one open now, if one is): its start and end.
    pub next_window: Option<(String, String)>,
    /// Every member in the order the run takes them.
    pub members: Vec<MemberTiming>,
    /// When the run is expected to end, if every member's time is known and fits.
    pub expected_end: Option<String>,
    /// Why the windows cannot be judged, if they cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The run played forward from `now` on expected times.
pub fn timing(plan: &Plan, expectation: &Expectation, now: Timestamp) -> Timing {
    let names: Vec<String> = plan.members.iter().map(|m| m.name.clone()).collect();
    let order: Vec<Vec<usize>> = plan.waves.iter().map(|w| w.members.clone()).collect();
    let parallel = plan.pool.max_unavailable.resolve(plan.members.len()).max(1);
    let windows = &plan.pool.windows;
    let slots = window::simulate(&order, &names, parallel, windows, expectation, now);
    let next = window::open_spans(windows, now)
        .into_iter()
        .find(|s| s.end > now);
    let stamp = |t: Timestamp| window::show(t, windows);
    let members: Vec<MemberTiming> = slots
        .iter()
        .map(|s| {
            let name = &names[s.member];
            let basis = expectation.of(name).map(|(_, b)| b.describe());
            MemberTiming {
                name: name.clone(),
                expected_s: s.expected.map(|d| d.as_secs()),
                basis,
                start: s.at.map(|(a, _)| stamp(a)),
                end: s.at.map(|(_, b)| stamp(b)),
                in_next_window: match (s.at, next) {
                    (Some((a, _)), Some(w)) => a >= w.start && a < w.end,
                    _ => false,
                },
            }
        })
        .collect();
    let expected_end = if slots.iter().all(|s| s.at.is_some()) {
        slots.iter().filter_map(|s| s.at.map(|(_, b)| b)).max()
    } else {
        None
    };
    Timing {
        windows: windows.iter().map(|w| w.describe()).collect(),
        next_window: next.map(|w| (stamp(w.start), stamp(w.end))),
        members,
        expected_end: expected_end.map(stamp),
        problem: problems(plan, expectation).into_iter().next(),
    }
}

/// Prints `ebb plan`'s timing block.
pub fn print_timing(t: &Timing) {
    if t.members.iter().all(|m| m.expected_s.is_none()) && t.windows.is_empty() {
        return;
    }
    ebb_out::outln!("timing:");
    for w in &t.windows {
        ebb_out::outln!("  window: {w}");
    }
    if let Some((a, b)) = &t.next_window {
        let fit: Vec<&str> = t
            .members
            .iter()
            .filter(|m| m.in_next_window)
            .map(|m| m.name.as_str())
            .collect();
        ebb_out::outln!(
            "  next window: {a} to {b}; fits {} of {} member(s){}{}",
            fit.len(),
            t.members.len(),
            if fit.is_empty() { "" } else { ": " },
            fit.join(", ")
        );
    }
    for m in &t.members {
        let expected = match (m.expected_s, &m.basis) {
            (Some(s), Some(b)) => format!(
                "{} ({b})",
                ebb_config::format_duration(Duration::from_secs(s))
            ),
            _ => "unknown".to_string(),
        };
        let when = match (&m.start, &m.end) {
            (Some(a), Some(b)) => format!("  {a} → {b}"),
            _ => String::new(),
        };
        ebb_out::outln!("  {:<16} expected {expected}{when}", m.name);
    }
    match (&t.expected_end, &t.problem) {
        (_, Some(p)) => ebb_out::outln!("  expected end: cannot be judged: {p}"),
        (Some(e), None) => ebb_out::outln!("  expected end: {e}"),
        (None, None) => {}
    }
}

/// What `ebb check` finds wrong with the windows: no member time known to judge them by,
/// or members whose expected time is longer than every window (they would never start).
pub fn problems(plan: &Plan, expectation: &Expectation) -> Vec<String> {
    let windows = &plan.pool.windows;
    if windows.is_empty() {
        return Vec::new();
    }
    let now = Timestamp::now();
    let spans = window::open_spans(windows, now);
    let longest = spans
        .iter()
        .map(|s| window::between(s.start, s.end))
        .max()
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut too_long = Vec::new();
    for m in &plan.members {
        match expectation.of(&m.name) {
            None => {
                out.push(format!("{}: {}", plan.file.display(), window::CANNOT_JUDGE));
                return out;
            }
            Some((d, basis)) if d > longest => too_long.push(format!(
                "\"{}\" ({}, {})",
                m.name,
                ebb_config::format_duration(d),
                basis.describe()
            )),
            Some(_) => {}
        }
    }
    if !too_long.is_empty() {
        out.push(format!(
            "the longest maintenance window is {}; these members are expected to take longer and would never start: {}",
            ebb_config::format_duration(longest),
            too_long.join(", ")
        ));
    }
    out
}

/// The window a paused or running run waits for, for `ebb status`.
#[derive(Debug, Serialize)]
///
/// Fields in alphabetical order: the `ebb status --json` key order.
pub struct NextWindow {
    /// The next member to start.
    pub member: String,
    /// When it can start (in the first window's zone, as shown to people), if some window
    /// is long enough.
    pub next_start: Option<String>,
    /// The same, in Unix milliseconds.
    pub next_start_ms: Option<i64>,
    /// Whether it may start now.
    pub open: bool,
    /// Why it cannot start now.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The next window of `run`, when its pool has windows and a member is still pending.
pub fn next_window(journal: &Journal, run: &RunRecord, plan: &Plan) -> Option<NextWindow> {
    if plan.pool.windows.is_empty() {
        return None;
    }
    let pending = journal
        .members(run.id)
        .ok()?
        .into_iter()
        .find(|m| m.state == MemberState::Pending)?;
    let expectation =
        Expectation::from_journal(journal, &plan.pool.name, plan.runbook.expected_member_time)
            .ok()?;
    let now = Timestamp::now();
    let (expected, _) = expectation.of(&pending.name)?;
    Some(match window::decide(&plan.pool.windows, now, expected) {
        Decision::Start => NextWindow {
            member: pending.name,
            open: true,
            next_start: Some(window::show(now, &plan.pool.windows)),
            next_start_ms: Some(now.as_millisecond()),
            reason: String::new(),
        },
        Decision::Closed { reason, next } => NextWindow {
            member: pending.name,
            open: false,
            next_start: next.map(|t| window::show(t, &plan.pool.windows)),
            next_start_ms: next.map(|t| t.as_millisecond()),
            reason,
        },
    })
}
