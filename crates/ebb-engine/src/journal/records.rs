//! What the journal records: runs, members, owed undos, actions, the lock's holder.

use serde::{Deserialize, Serialize};

/// The run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// In progress (or its process died: see the lock).
    Running,
    /// Stopped after a wave with `pause_after`; `ebb resume` goes on.
    Paused,
    /// Stopped by a failure or the policy; `ebb resume` retries.
    Halted,
    /// Every member done.
    Done,
    /// Stopped by `ebb abort`; members stay where they are.
    Aborted,
}

impl RunState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Halted => "halted",
            RunState::Done => "done",
            RunState::Aborted => "aborted",
        }
    }
    pub(super) fn parse(s: &str) -> Self {
        match s {
            "paused" => RunState::Paused,
            "halted" => RunState::Halted,
            "done" => RunState::Done,
            "aborted" => RunState::Aborted,
            _ => RunState::Running,
        }
    }
}

/// A member's progress in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Not touched yet.
    Pending,
    /// Out of service, being worked on.
    Out,
    /// A step failed; held out with its undos owed.
    Failed,
    /// Updated and back in service.
    Done,
    /// Left out of this run.
    Skipped,
}

impl MemberState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Pending => "pending",
            MemberState::Out => "out",
            MemberState::Failed => "failed",
            MemberState::Done => "done",
            MemberState::Skipped => "skipped",
        }
    }
    pub(super) fn parse(s: &str) -> Self {
        match s {
            "out" => MemberState::Out,
            "failed" => MemberState::Failed,
            "done" => MemberState::Done,
            "skipped" => MemberState::Skipped,
            _ => MemberState::Pending,
        }
    }
}

/// A run as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub id: i64,
    /// Pool name.
    pub pool: String,
    /// Pool file.
    pub pool_file: String,
    /// State.
    pub state: RunState,
    /// Start time (unix ms).
    pub started_ms: i64,
    /// End time, when it ended.
    pub ended_ms: Option<i64>,
    /// Next wave to run.
    pub next_wave: usize,
    /// Why it stopped.
    pub message: String,
}

/// A member as recorded in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Name.
    pub name: String,
    /// Position in the plan.
    pub position: usize,
    /// Progress.
    pub state: MemberState,
    /// Index of the next operation.
    pub cursor: usize,
    /// Names of its operations, as planned when the run started.
    pub ops: Vec<String>,
    /// The step it is at (or failed at).
    pub step: String,
    /// Why it failed.
    pub reason: String,
    /// A step asked for a reboot that has not happened yet.
    pub reboot_pending: bool,
}

/// One owed undo.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owed {
    /// Row id (stack order).
    pub id: i64,
    /// Name shown to the operator.
    pub name: String,
    /// `undo` (a command), `drain` (start in the balancer), `hold` (restore initial state).
    pub kind: String,
    /// Kind-specific data (the undo command's step name, the initial state to restore).
    pub payload: String,
}

impl Owed {
    /// What paying it does, in the operator's words: `start in the balancer` for a
    /// drain, `restore initial state started` for a hold, `undo of "maint"` for a step.
    pub fn describe(&self) -> String {
        match self.kind.as_str() {
            "drain" => "start in the balancer".to_string(),
            "hold" if !self.payload.is_empty() => {
                format!("restore initial state {}", self.payload)
            }
            "hold" => "restore the initial state".to_string(),
            "undo" => format!("undo of \"{}\"", self.name),
            "maintenance" => format!("end maintenance \"{}\"", self.name),
            _ => self.name.clone(),
        }
    }
}

/// One recorded action (intent, then outcome).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Row id.
    pub id: i64,
    /// Member.
    pub member: String,
    /// Operation index in the member's plan.
    pub op: usize,
    /// Step name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Start (unix ms).
    pub started_ms: i64,
    /// End, when it ended.
    pub ended_ms: Option<i64>,
    /// `ok`, `failed`, `skipped`, `unknown` (connection lost mid-command), `interrupted`,
    /// `assumed-done`; `None` while in flight
    /// (or when the process died during it).
    pub outcome: Option<String>,
    /// Exit code of its command.
    pub exit_code: Option<i32>,
    /// Last lines of output.
    pub output: String,
    /// Details (drain counts, boot ids, check results).
    pub detail: String,
}

/// Who holds a pool's lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Last heartbeat (unix ms).
    pub heartbeat_ms: i64,
    /// Seconds left on the holder's etcd lease (the etcd backend only): the lock frees
    /// itself when it reaches 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_left_s: Option<i64>,
}

/// How an action ended.
#[derive(Debug, Clone, Default)]
pub struct ActionEnd<'a> {
    /// ok, failed, skipped, interrupted, assumed-done.
    pub outcome: &'a str,
    /// Exit code of its command.
    pub exit_code: Option<i32>,
    /// Last lines of output.
    pub output: &'a str,
    /// Details; empty keeps what was there.
    pub detail: &'a str,
    /// Move the member's cursor here.
    pub advance_to: Option<usize>,
}
