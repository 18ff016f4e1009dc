//! What the live page and `/metrics` show: one snapshot of the latest run of a pool, read
//! from the journal (so a run started by another ebb is seen the same way), plus the live
//! connection counts of the members that are draining.

use ebb_engine::journal::{ActionKind, ActionRecord, Journal, JournalError, MemberState, Outcome};
use serde::Serialize;
use std::collections::BTreeMap;

/// Most event log entries sent to the page.
const LOG_LIMIT: usize = 300;
/// Most failed steps (with their output) sent to the page.
const FAILURES_LIMIT: usize = 10;

/// The page's whole state, sent on every change as one server-sent event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct View {
    /// The pool the server watches.
    pub pool: Option<String>,
    /// The latest run; `None` before the first one.
    pub run: Option<RunView>,
    /// Every member of the run, in plan order.
    pub members: Vec<MemberView>,
    /// In-service count over time.
    pub in_service: Vec<Sample>,
    /// Steps started and finished, oldest first (the last [`LOG_LIMIT`]).
    pub log: Vec<LogEntry>,
    /// Failed steps with their output, newest first.
    pub failures: Vec<Failure>,
}

/// The run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunView {
    pub id: i64,
    pub pool: String,
    /// running, paused, halted, done, aborted.
    pub state: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub message: String,
    /// `pid@host` of the ebb running it, while one does.
    pub holder: Option<String>,
}

/// One member.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberView {
    pub name: String,
    /// `draining` while its drain runs; otherwise the journal's state (pending, out,
    /// failed, done, skipped).
    pub state: String,
    /// The step in flight (or the one it stopped at).
    pub step: String,
    /// The kind of the step in flight (drain, hold, step, reboot, verify, undo, start, ...).
    pub step_kind: Option<ActionKind>,
    /// When the step in flight started.
    pub step_started_ms: Option<i64>,
    /// Connections still open while it drains, as last seen.
    pub connections: Option<u64>,
    /// Undos it still owes, in the order they will run.
    pub owed: Vec<String>,
    /// Why it failed.
    pub reason: String,
    /// Steps finished and planned.
    pub done_ops: usize,
    pub total_ops: usize,
}

/// One in-service sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    pub t_ms: i64,
    pub in_service: usize,
    pub total: usize,
}

/// One line of the event log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogEntry {
    pub t_ms: i64,
    pub member: String,
    pub text: String,
    /// started, ok, failed, skipped, ...
    pub outcome: String,
}

/// A failed step and what it printed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub member: String,
    pub step: String,
    pub kind: ActionKind,
    pub t_ms: i64,
    pub exit_code: Option<i32>,
    pub detail: String,
    pub output: String,
}

/// A finished step, for the duration histogram of `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedStep {
    pub name: String,
    pub seconds: f64,
    pub failed: bool,
}

/// A view plus what `/metrics` needs beyond it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub view: View,
    pub finished: Vec<FinishedStep>,
}

impl View {
    /// The view before the pool's first run.
    pub fn empty(pool: Option<&str>) -> View {
        View {
            pool: pool.map(str::to_string),
            run: None,
            members: Vec::new(),
            in_service: Vec::new(),
            log: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Members whose drain is in flight.
    pub fn draining(&self) -> impl Iterator<Item = &MemberView> {
        self.members.iter().filter(|m| m.state == "draining")
    }
}

/// Reads the latest run of `pool` (any pool when `None`) from `journal`; `conns` holds the
/// last connection count seen for each draining member.
pub fn snapshot(
    journal: &Journal,
    pool: Option<&str>,
    conns: &BTreeMap<String, u64>,
) -> Result<Snapshot, JournalError> {
    let Some(run) = journal.latest_run(pool)? else {
        return Ok(Snapshot {
            view: View::empty(pool),
            finished: Vec::new(),
        });
    };
    let records = journal.members(run.id)?;
    let actions = journal.actions(run.id, None)?;
    let holder = journal.lock_holder(&run.pool)?;
    let (state, message) = ebb_engine::run::shown(journal, &run);
    let mut members = Vec::with_capacity(records.len());
    for rec in &records {
        let in_flight = actions
            .iter()
            .rev()
            .find(|a| a.member == rec.name && a.ended_ms.is_none() && holder.is_some());
        let draining = in_flight.is_some_and(|a| a.kind == ActionKind::Drain);
        let owed = journal.owed(run.id, &rec.name)?;
        members.push(MemberView {
            name: rec.name.clone(),
            state: if draining {
                "draining".into()
            } else {
                rec.state.as_str().into()
            },
            step: in_flight
                .map(|a| a.name.clone())
                .unwrap_or_else(|| rec.step.clone()),
            step_kind: in_flight.map(|a| a.kind.clone()),
            step_started_ms: in_flight.map(|a| a.started_ms),
            connections: if draining {
                conns.get(&rec.name).copied()
            } else {
                None
            },
            owed: owed.iter().rev().map(|o| o.name.clone()).collect(),
            reason: rec.reason.clone(),
            done_ops: if rec.state == MemberState::Done {
                rec.ops.len()
            } else {
                rec.cursor.min(rec.ops.len())
            },
            total_ops: rec.ops.len(),
        });
    }
    let in_service = journal
        .samples(run.id)?
        .into_iter()
        .map(|(t_ms, in_service, total)| Sample {
            t_ms,
            in_service,
            total,
        })
        .collect();
    Ok(Snapshot {
        view: View {
            pool: pool.map(str::to_string),
            run: Some(RunView {
                id: run.id,
                pool: run.pool.clone(),
                state: state.as_str().into(),
                started_ms: run.started_ms,
                ended_ms: run.ended_ms,
                message,
                holder: holder.map(|h| format!("{}@{}", h.pid, h.host)),
            }),
            members,
            in_service,
            log: log(&actions),
            failures: failures(&actions),
        },
        finished: actions
            .iter()
            .filter_map(|a| {
                let end = a.ended_ms?;
                Some(FinishedStep {
                    name: a.name.clone(),
                    seconds: (end - a.started_ms).max(0) as f64 / 1000.0,
                    failed: a.outcome == Some(Outcome::Failed),
                })
            })
            .collect(),
    })
}

fn log(actions: &[ActionRecord]) -> Vec<LogEntry> {
    let mut log = Vec::with_capacity(actions.len() * 2);
    for a in actions {
        log.push(LogEntry {
            t_ms: a.started_ms,
            member: a.member.clone(),
            text: format!("{} ({}) started", a.name, a.kind),
            outcome: "started".into(),
        });
        if let Some(end) = a.ended_ms {
            let outcome = a
                .outcome
                .clone()
                .unwrap_or(Outcome::Interrupted)
                .to_string();
            let mut text = format!(
                "{} {outcome} in {:.1}s",
                a.name,
                (end - a.started_ms).max(0) as f64 / 1000.0
            );
            if let Some(c) = a.exit_code {
                text += &format!(" (exit {c})");
            }
            if !a.detail.is_empty() {
                text += &format!(": {}", a.detail);
            }
            log.push(LogEntry {
                t_ms: end,
                member: a.member.clone(),
                text,
                outcome,
            });
        }
    }
    log.sort_by_key(|e| e.t_ms);
    let skip = log.len().saturating_sub(LOG_LIMIT);
    log.split_off(skip)
}

fn failures(actions: &[ActionRecord]) -> Vec<Failure> {
    actions
        .iter()
        .rev()
        .filter(|a| a.outcome == Some(Outcome::Failed))
        .take(FAILURES_LIMIT)
        .map(|a| Failure {
            member: a.member.clone(),
            step: a.name.clone(),
            kind: a.kind.clone(),
            t_ms: a.ended_ms.unwrap_or(a.started_ms),
            exit_code: a.exit_code,
            detail: a.detail.clone(),
            output: a.output.clone(),
        })
        .collect()
}
