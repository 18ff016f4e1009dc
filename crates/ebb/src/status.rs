//! `ebb status` and `ebb abort`: the latest run, per member its state, step and owed undos,
//! and what to type next. One typed document ([`RunStatus`]): `--json` serializes it, the
//! text reads the same struct.
//!
//! Fields are declared in alphabetical order: serialized in declaration order, the JSON
//! keeps the key order (and so the bytes) of the earlier untyped output, whose maps were
//! sorted.

use crate::windows::NextWindow;
use ebb_engine::journal::{Journal, MemberState, RunRecord, RunState};
use serde::Serialize;
use std::fmt::Write as _;

/// A run as `ebb status --json` prints it.
#[derive(Debug, Serialize)]
pub struct RunStatus {
    /// The live holder of the pool's lock: an ebb works on the run now.
    pub lock: Option<LockView>,
    /// The last `ebb lock break` of the pool, in words.
    pub lock_broken: Option<String>,
    /// Every member of the run, in plan order.
    pub members: Vec<MemberStatus>,
    /// The run.
    pub run: RunView,
    /// Returned to service not updated (`on_timeout = "skip"`): `ebb run --only-skipped`.
    pub skipped: Vec<String>,
    /// The maintenance window the run waits for, when its pool has windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<NextWindow>,
}

/// Who holds the pool's lock.
#[derive(Debug, Serialize)]
pub struct LockView {
    /// Last heartbeat (unix ms).
    pub heartbeat_ms: i64,
    /// Host name.
    pub host: String,
    /// Seconds left on the holder's etcd lease (`null` with the SQLite journal).
    pub lease_left_s: Option<i64>,
    /// Process id.
    pub pid: u32,
    /// Since when it holds the lock (unix ms; etcd only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
}

/// The run's identity, state and times.
#[derive(Debug, Serialize)]
pub struct RunView {
    /// When it ended (unix ms), if it did.
    pub ended_ms: Option<i64>,
    /// Journal id.
    pub id: i64,
    /// Why it stopped.
    pub message: String,
    /// Pool name.
    pub pool: String,
    /// The pool file it ran from.
    pub pool_file: String,
    /// When it started (unix ms).
    pub started_ms: i64,
    /// Its state (`running` only while its ebb is alive).
    pub state: RunState,
}

/// One member.
#[derive(Debug, Serialize)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// Undos it owes, in the order they will run.
    pub owed: Vec<OwedView>,
    /// Their names only.
    pub owed_undos: Vec<String>,
    /// Why it failed.
    pub reason: String,
    /// Its state.
    pub state: MemberState,
    /// The step it is at (or failed at).
    pub step: String,
}

/// One owed undo.
#[derive(Debug, Serialize)]
pub struct OwedView {
    /// `undo`, `drain`, `hold`, `maintenance`.
    pub kind: ebb_engine::journal::OwedKind,
    /// Its name.
    pub name: String,
    /// What paying it does, in the operator's words.
    pub undo: String,
}

impl RunStatus {
    /// Reads `run` from `journal`. A part the journal cannot give (a member's owed undos, the
    /// lock) is shown empty: status is what an operator reads when something is wrong.
    pub fn read(journal: &Journal, run: &RunRecord) -> RunStatus {
        let members = journal.members(run.id).unwrap_or_default();
        let holder = journal.lock_holder(&run.pool).ok().flatten();
        let (state, message) = ebb_engine::run::shown(journal, run);
        RunStatus {
            lock: holder.map(|h| LockView {
                heartbeat_ms: h.heartbeat_ms,
                host: h.host,
                lease_left_s: h.lease_left_s,
                pid: h.pid,
                since_ms: h.since_ms,
            }),
            lock_broken: journal.lock_broken().ok().flatten(),
            skipped: members
                .iter()
                .filter(|m| m.state == MemberState::Skipped)
                .map(|m| m.name.clone())
                .collect(),
            members: members
                .into_iter()
                .map(|m| {
                    let owed = journal.owed(run.id, &m.name).unwrap_or_default();
                    MemberStatus {
                        owed: owed
                            .iter()
                            .rev()
                            .map(|o| OwedView {
                                kind: o.kind.clone(),
                                name: o.name.clone(),
                                undo: o.describe(),
                            })
                            .collect(),
                        owed_undos: owed.into_iter().rev().map(|o| o.name).collect(),
                        name: m.name,
                        reason: m.reason,
                        state: m.state,
                        step: m.step,
                    }
                })
                .collect(),
            run: RunView {
                ended_ms: run.ended_ms,
                id: run.id,
                message,
                pool: run.pool.clone(),
                pool_file: run.pool_file.clone(),
                started_ms: run.started_ms,
                state,
            },
            window: None,
        }
    }

    /// The status as text, each line ending in a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let run = &self.run;
        if let Some(b) = &self.lock_broken {
            writeln!(out, "{b}")?;
        }
        writeln!(
            out,
            "{}",
            ebb_report::text::headline(run.id, &run.pool, run.state, &run.message)
        )?;
        if let Some(w) = &self.window {
            match (w.open, &w.next_start) {
                (true, _) => writeln!(out, "  maintenance window: open now for {}", w.member)?,
                (_, Some(t)) => writeln!(out, "  next maintenance window: {t} (for {})", w.member)?,
                _ => writeln!(out, "  maintenance window: {}", w.reason)?,
            }
        }
        if let Some(l) = &self.lock {
            // etcd: what is known of a holder that may have died: since when it holds the
            // lock, when it last renewed its lease, and how long until the lease lapses.
            let lease = match (l.lease_left_s, l.since_ms) {
                (Some(left), Some(since)) => format!(
                    " (holder since {} UTC, lease last renewed at {} UTC, {left} s left)",
                    ebb_report::text::hms(since),
                    ebb_report::text::hms(l.heartbeat_ms),
                ),
                _ => String::new(),
            };
            writeln!(out, "  in progress: ebb pid {} on {}{lease}", l.pid, l.host)?;
        }
        if !self.skipped.is_empty() {
            writeln!(
                out,
                "  skipped, not updated: {} (`ebb run --only-skipped` does them)",
                self.skipped.join(", ")
            )?;
        }
        writeln!(
            out,
            "  {:<16} {:<8} {:<20} owed undos (in the order they will run)",
            "MEMBER", "STATE", "STEP"
        )?;
        for m in &self.members {
            let owed: Vec<&str> = m.owed.iter().map(|o| o.undo.as_str()).collect();
            writeln!(
                out,
                "  {:<16} {:<8} {:<20} {}",
                m.name,
                m.state.as_str(),
                m.step,
                if owed.is_empty() {
                    "-".to_string()
                } else {
                    owed.join(", ")
                }
            )?;
            if !m.reason.is_empty() {
                writeln!(out, "  {:<16} why: {}", "", m.reason)?;
            }
        }
        for hint in self.next_steps() {
            writeln!(out, "{hint}")?;
        }
        Ok(())
    }

    /// What the operator can do next with a run in this state, as commands to type.
    fn next_steps(&self) -> Vec<String> {
        let pool = &self.run.pool_file;
        let out: Vec<&str> = self
            .members
            .iter()
            .filter(|m| {
                matches!(
                    m.state,
                    MemberState::Failed | MemberState::Out | MemberState::RolledBack
                ) || !m.owed.is_empty()
            })
            .map(|m| m.name.as_str())
            .collect();
        let release = |m: &str| {
            format!(
                "  ebb release {m} {pool}   verify {m} (fixed by hand), unwind what it owes, return it"
            )
        };
        match self.run.state {
            RunState::Halted => {
                let rolled_back = self
                    .members
                    .iter()
                    .any(|m| m.state == MemberState::RolledBack);
                let mut h = vec![
                    "next:".to_string(),
                    if rolled_back {
                        format!("  ebb resume {pool}   after releasing the rolled-back member (a person decides): goes on with the others")
                    } else {
                        format!(
                            "  ebb resume {pool}   fix the cause first; continues where the run stopped"
                        )
                    },
                ];
                h.extend(out.iter().map(|m| release(m)));
                h.push(format!(
                    "  ebb abort {pool}   stop the run; members stay where they are"
                ));
                h
            }
            RunState::Paused if self.window.is_some() => vec![format!(
                "next:\n  ebb resume {pool}   goes on inside the window\n  ebb resume --wait {pool}   sleeps until the window, then goes on"
            )],
            RunState::Paused => vec![format!("next:\n  ebb resume {pool}   starts the next wave")],
            RunState::Aborted if !out.is_empty() => {
                let mut h = vec!["next (before a new `ebb run`):".to_string()];
                h.extend(out.iter().map(|m| release(m)));
                h
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: RunState, window: Option<NextWindow>) -> RunStatus {
        RunStatus {
            lock: Some(LockView {
                heartbeat_ms: 5,
                host: "adm".into(),
                lease_left_s: None,
                pid: 42,
                since_ms: None,
            }),
            lock_broken: None,
            members: vec![MemberStatus {
                name: "web1".into(),
                owed: vec![OwedView {
                    kind: "drain".into(),
                    name: "drain".into(),
                    undo: "start in the balancer".into(),
                }],
                owed_undos: vec!["drain".into()],
                reason: "install: exit 3".into(),
                state: MemberState::Failed,
                step: "install".into(),
            }],
            run: RunView {
                ended_ms: None,
                id: 3,
                message: String::new(),
                pool: "web".into(),
                pool_file: "web.toml".into(),
                started_ms: 1,
                state,
            },
            skipped: vec![],
            window,
        }
    }

    #[test]
    fn the_json_shape_is_pinned() {
        // The keys and their order of the earlier untyped output (sorted maps).
        assert_eq!(
            serde_json::to_string(&status(RunState::Halted, None)).unwrap(),
            r#"{"lock":{"heartbeat_ms":5,"host":"adm","lease_left_s":null,"pid":42},"lock_broken":null,"members":[{"name":"web1","owed":[{"kind":"drain","name":"drain","undo":"start in the balancer"}],"owed_undos":["drain"],"reason":"install: exit 3","state":"failed","step":"install"}],"run":{"ended_ms":null,"id":3,"message":"","pool":"web","pool_file":"web.toml","started_ms":1,"state":"halted"},"skipped":[]}"#
        );
        let w = NextWindow {
            member: "web1".into(),
            next_start: Some("Sat 02:00".into()),
            next_start_ms: Some(9),
            open: false,
            reason: String::new(),
        };
        let json = serde_json::to_string(&status(RunState::Paused, Some(w))).unwrap();
        assert!(
            json.ends_with(r#""skipped":[],"window":{"member":"web1","next_start":"Sat 02:00","next_start_ms":9,"open":false}}"#),
            "{json}"
        );
    }

    #[test]
    fn the_text_reads_the_same_struct_and_says_what_to_do_next() {
        let text = status(RunState::Halted, None).render();
        assert_eq!(
            text,
            "run 3 of pool web: halted\n  \
             in progress: ebb pid 42 on adm\n  \
             MEMBER           STATE    STEP                 owed undos (in the order they will run)\n  \
             web1             failed   install              start in the balancer\n  \
             \x20                why: install: exit 3\n\
             next:\n  \
             ebb resume web.toml   fix the cause first; continues where the run stopped\n  \
             ebb release web1 web.toml   verify web1 (fixed by hand), unwind what it owes, return it\n  \
             ebb abort web.toml   stop the run; members stay where they are\n"
        );
    }
}
