//! Runs the rollout with `ebb run POOL --json --state-dir DIR` as a child process and
//! follows its events (one JSON object per line), tolerating events and fields it does not
//! know: the engine's event stream may grow.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::procs::Processes;

/// How many recent event lines the live view keeps.
const KEPT_LINES: usize = 6;

/// Where one member is in the rollout.
#[derive(Debug, Clone, Default)]
pub struct MemberProgress {
    /// The step running now or last run.
    pub step: String,
    /// Its kind: drain, hold, step, reboot, verify, undo, start, ...
    pub kind: String,
    /// Unix ms when it started.
    pub since_ms: u64,
    /// `pending`, `running`, `done`, `failed`.
    pub state: String,
    /// Connections still open while draining.
    pub draining_connections: Option<u64>,
}

/// What the engine has said so far.
#[derive(Debug, Clone, Default)]
pub struct RolloutView {
    /// The run id from `run_started`.
    pub run_id: Option<String>,
    /// Per member.
    pub members: BTreeMap<String, MemberProgress>,
    /// From the last `pool` event: (in service, total).
    pub in_service: Option<(u64, u64)>,
    /// The latest `waiting` reason, cleared by the next step.
    pub waiting: Option<String>,
    /// `run_finished.state`.
    pub final_state: Option<String>,
    /// Recent events as text.
    pub recent: VecDeque<String>,
    /// Unix ms of `run_started` and `run_finished`.
    pub started_ms: Option<u64>,
    /// See `started_ms`.
    pub finished_ms: Option<u64>,
    /// Steps that failed, as `member: step (exit code)`.
    pub failures: Vec<String>,
}

/// One line of `ebb run --json`, with only what the demo reads. An event it does not
/// know is `Other`, and fields it does not know are passed over: the stream may grow.
#[derive(Debug, Deserialize)]
pub struct EventLine {
    /// Unix ms when the engine said it.
    #[serde(default)]
    pub ts_ms: Option<u64>,
    /// The event.
    #[serde(flatten)]
    pub event: RunEvent,
}

/// The events of [`EventLine`] (the engine's `Event`, as far as the demo follows it).
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run began.
    RunStarted {
        /// Its id in the journal.
        run_id: i64,
        /// Every member, in order.
        #[serde(default)]
        members: Vec<String>,
    },
    /// A member went out.
    MemberStarted {
        /// Its name.
        member: String,
    },
    /// A member's step began.
    StepStarted {
        /// The member.
        member: String,
        /// The step.
        step: String,
        /// Its kind.
        kind: String,
    },
    /// A member's step ended.
    StepFinished {
        /// The member.
        member: String,
        /// The step.
        step: String,
        /// `ok`, `failed`, ...
        outcome: String,
        /// Its command's exit code.
        #[serde(default)]
        exit_code: Option<i64>,
        /// How long it took.
        #[serde(default)]
        duration_ms: u64,
    },
    /// Connections still open on a draining member.
    DrainProgress {
        /// The member.
        member: String,
        /// How many.
        active_connections: u64,
    },
    /// A member's turn ended.
    MemberFinished {
        /// The member.
        member: String,
        /// `done`, `failed`, ...
        state: String,
    },
    /// The pool as the balancer sees it.
    Pool {
        /// Members in service.
        in_service: u64,
        /// All members.
        total: u64,
    },
    /// The run waits.
    Waiting {
        /// For what, for humans.
        reason: String,
    },
    /// The run ended.
    RunFinished {
        /// `done`, `halted`, ...
        state: String,
    },
    /// An event the demo does not follow.
    #[serde(other)]
    Other,
}

impl RolloutView {
    /// Applies one event line; returns a one-line description for plain output.
    pub fn apply(&mut self, line: &EventLine) -> Option<String> {
        let ts = line.ts_ms.unwrap_or_else(crate::traffic::unix_ms);
        let line = match &line.event {
            RunEvent::RunStarted { run_id, members } => {
                self.run_id = Some(run_id.to_string());
                self.started_ms = Some(ts);
                for name in members {
                    self.members
                        .entry(name.clone())
                        .or_insert_with(|| MemberProgress {
                            state: "pending".into(),
                            ..Default::default()
                        });
                }
                format!("run {run_id} started")
            }
            RunEvent::MemberStarted { member } => {
                let m = self.members.entry(member.clone()).or_default();
                m.state = "running".into();
                m.since_ms = ts;
                format!("{member}: out of rotation, maintenance begins")
            }
            RunEvent::StepStarted { member, step, kind } => {
                self.waiting = None;
                let m = self.members.entry(member.clone()).or_default();
                m.step = step.clone();
                m.kind = kind.clone();
                m.since_ms = ts;
                m.state = "running".into();
                m.draining_connections = None;
                format!("{member}: {step} ({kind})")
            }
            RunEvent::StepFinished {
                member,
                step,
                outcome,
                exit_code,
                duration_ms,
            } => {
                if outcome == "failed" {
                    let code = exit_code
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default();
                    self.failures.push(format!("{member}: {step}{code}"));
                }
                format!(
                    "{member}: {step} {outcome} in {:.1}s",
                    *duration_ms as f64 / 1000.0
                )
            }
            RunEvent::DrainProgress {
                member,
                active_connections,
            } => {
                self.members
                    .entry(member.clone())
                    .or_default()
                    .draining_connections = Some(*active_connections);
                return None;
            }
            RunEvent::MemberFinished { member, state } => {
                let m = self.members.entry(member.clone()).or_default();
                m.state = state.clone();
                m.since_ms = ts;
                format!("{member}: {state}")
            }
            RunEvent::Pool { in_service, total } => {
                self.in_service = Some((*in_service, *total));
                return None;
            }
            RunEvent::Waiting { reason } => {
                self.waiting = Some(reason.clone());
                format!("waiting: {reason}")
            }
            RunEvent::RunFinished { state } => {
                self.final_state = Some(state.clone());
                self.finished_ms = Some(ts);
                format!("run finished: {state}")
            }
            RunEvent::Other => return None,
        };
        if self.recent.len() >= KEPT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(line.clone());
        Some(line)
    }
}

/// Where the rollout's files go.
pub struct RolloutPaths<'a> {
    /// The `ebb` binary.
    pub exe: &'a Path,
    /// The pool file.
    pub pool: &'a Path,
    /// `--state-dir`.
    pub state_dir: &'a Path,
    /// Where the engine's stderr goes.
    pub log: &'a Path,
}

/// Runs `ebb run` to completion (bounded by `limit`); returns its exit code. Every event
/// updates `view`; its description is sent to `lines` if given.
pub async fn run(
    paths: RolloutPaths<'_>,
    procs: &Processes,
    view: Arc<Mutex<RolloutView>>,
    lines: Option<mpsc::UnboundedSender<String>>,
    limit: Duration,
) -> anyhow::Result<i32> {
    let log = std::fs::File::create(paths.log)
        .with_context(|| format!("cannot create {}", paths.log.display()))?;
    let mut command = Command::new(paths.exe);
    command
        .arg("run")
        .arg(paths.pool)
        .arg("--json")
        .arg("--state-dir")
        .arg(paths.state_dir)
        // The demo's pool and balancer belong to its directory alone: two demos in two
        // directories are two pools, whatever their shared name.
        .env("EBB_LOCK_DIR", paths.state_dir.join("locks"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = procs.spawn(&mut command, "the rollout (`ebb run`)")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("the rollout's stdout")?;
    let follow = async {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            // A line that is not an event (or an event missing what the demo reads) is
            // passed over.
            let Ok(event) = serde_json::from_str::<EventLine>(&line) else {
                continue;
            };
            let described = view.lock().unwrap_or_else(|p| p.into_inner()).apply(&event);
            if let (Some(text), Some(lines)) = (described, lines.as_ref()) {
                let _ = lines.send(text);
            }
        }
        child.wait().await
    };
    match tokio::time::timeout(limit, follow).await {
        Ok(status) => {
            procs.forget(pid);
            let status = status.context("waiting for the rollout")?;
            Ok(status.code().unwrap_or(128 + status_signal(&status)))
        }
        Err(_) => {
            procs.signal(pid, libc::SIGTERM);
            tokio::time::sleep(Duration::from_secs(2)).await;
            procs.signal(pid, libc::SIGKILL);
            procs.forget(pid);
            bail!(
                "the rollout did not finish within {limit:?}; see {}",
                paths.log.display()
            )
        }
    }
}

fn status_signal(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(v: serde_json::Value) -> EventLine {
        serde_json::from_value(v).expect("an event line")
    }

    #[test]
    fn follows_a_member_through_its_steps() {
        let mut view = RolloutView::default();
        let events = [
            json!({"ts_ms": 1, "event": "run_started", "run_id": 7, "resumed": false, "pool": "demo", "members": ["web1", "web2"]}),
            json!({"ts_ms": 2, "event": "member_started", "member": "web1"}),
            json!({"ts_ms": 3, "event": "step_started", "member": "web1", "step": "drain", "kind": "drain"}),
            json!({"ts_ms": 4, "event": "drain_progress", "member": "web1", "active_connections": 2}),
            json!({"ts_ms": 5, "event": "step_finished", "member": "web1", "step": "install 1.1", "kind": "step", "outcome": "failed", "exit_code": 1, "duration_ms": 1500}),
            json!({"ts_ms": 6, "event": "pool", "in_service": 1, "total": 2}),
            json!({"ts_ms": 7, "event": "something_new", "whatever": true}),
            json!({"ts_ms": 8, "event": "run_finished", "state": "halted", "exit_code": 1}),
        ];
        let said: Vec<Option<String>> = events.into_iter().map(|e| view.apply(&line(e))).collect();
        assert_eq!(said[0].as_deref(), Some("run 7 started"));
        assert_eq!(said[6], None, "an unknown event is passed over");
        assert_eq!(view.members["web1"].kind, "drain");
        assert_eq!(view.members["web1"].draining_connections, Some(2));
        assert_eq!(view.members["web2"].state, "pending");
        assert_eq!(view.in_service, Some((1, 2)));
        assert_eq!(
            view.failures,
            vec!["web1: install 1.1 (exit 1)".to_string()]
        );
        assert_eq!(view.final_state.as_deref(), Some("halted"));
        assert_eq!(view.run_id.as_deref(), Some("7"));
        assert!(serde_json::from_value::<EventLine>(json!({"no_event": 1})).is_err());
    }
}
