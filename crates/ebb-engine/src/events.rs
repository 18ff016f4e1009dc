//! What the engine reports while it works. Renderers (terminal, plain lines, JSON) live in
//! the binary; the engine only emits.

use crate::journal::{ActionKind, Outcome};
use serde::Serialize;
use std::sync::Arc;

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A run started or resumed.
    RunStarted {
        /// Journal id of the run.
        run_id: i64,
        /// Pool name.
        pool: String,
        /// Members in plan order.
        members: Vec<String>,
        /// True when this continues an earlier run.
        resumed: bool,
    },
    /// A wave began.
    WaveStarted {
        /// Wave name.
        wave: String,
        /// Its members.
        members: Vec<String>,
    },
    /// ebb began work on a member.
    MemberStarted {
        /// Member name.
        member: String,
    },
    /// A stage or step began.
    StepStarted {
        /// Member name.
        member: String,
        /// Step name.
        step: String,
        /// What the operation is.
        kind: ActionKind,
    },
    /// A stage or step ended.
    StepFinished {
        /// Member name.
        member: String,
        /// Step name.
        step: String,
        /// What the operation is.
        kind: ActionKind,
        /// How it ended.
        outcome: Outcome,
        /// Exit code of its command, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// How long it took.
        duration_ms: u64,
        /// What happened, for humans.
        #[serde(skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    /// A line of a command's output.
    Output {
        /// Member name.
        member: String,
        /// Step name.
        step: String,
        /// The line.
        line: String,
    },
    /// Live connection count while a member drains.
    DrainProgress {
        /// Member name.
        member: String,
        /// Connections still open.
        active_connections: u64,
    },
    /// ebb finished with a member.
    MemberFinished {
        /// Member name.
        member: String,
        /// done or failed.
        state: String,
        /// Why it failed.
        #[serde(skip_serializing_if = "String::is_empty")]
        reason: String,
        /// Where a failed member was left, as the balancer and the journal say it:
        /// in or out of service, held or not, the undos it owes.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        left: String,
    },
    /// The pool's in-service count changed.
    Pool {
        /// Members in service as the balancer sees them.
        in_service: usize,
        /// Members in the pool.
        total: usize,
        /// Members the balancer could not be asked about (not counted in service; when
        /// it is `total`, the balancer is unreachable and `in_service` means nothing).
        #[serde(default, skip_serializing_if = "is_zero")]
        unreadable: usize,
    },
    /// ebb is waiting (capacity, gate, an operator).
    Waiting {
        /// Member it waits to work on, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        member: Option<String>,
        /// What it waits for.
        kind: WaitKind,
        /// Why.
        reason: String,
    },
    /// Something the operator should know that is not a problem (a left-over step ended).
    Notice {
        /// The member it is about, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        member: Option<String>,
        /// What.
        message: String,
    },
    /// Something the operator should know that does not stop the run.
    Warning {
        /// What.
        message: String,
    },
    /// The run stopped (done, paused, halted or aborted).
    RunFinished {
        /// running, paused, halted, done, aborted.
        state: String,
        /// The process exit code that goes with it.
        exit_code: i32,
        /// Why, for humans.
        #[serde(skip_serializing_if = "String::is_empty")]
        message: String,
    },
}

/// What a [`Event::Waiting`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitKind {
    /// The availability policy (`max_unavailable`, `min_in_service`) to let a member out.
    Capacity,
    /// `[pool.gate]`: firing alerts to stop.
    Gate,
    /// A drain: the balancer to answer, connections to end, a drain gate to open.
    Drain,
    /// A command an earlier ebb left running on the member.
    Leftover,
    /// A returned member's bake, before the next member starts.
    Bake,
    /// The next maintenance window (`--wait`).
    Window,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// An event with its time, as streamed by `ebb run --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Stamped<'a> {
    /// Unix time in milliseconds.
    pub ts_ms: i64,
    /// The event.
    #[serde(flatten)]
    pub event: &'a Event,
}

/// Where events go.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
