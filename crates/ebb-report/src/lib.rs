//! The report of one run: what `ebb report` prints, as one typed document ([`RunReport`])
//! with three renderings of the same structs: JSON (`ebb report --json`, its `Serialize`),
//! text ([`text`]) and one self-contained HTML page ([`html`]).
//!
//! The document is built by the `ebb` binary from the journal; this crate only reads it.
//! `ebb demo` adds what its clients saw through the balancer as a typed attachment,
//! [`Traffic`], which it writes beside the journal ([`TRAFFIC_FILE`]).
//!
//! Reading is lenient where a field can be empty (lists, texts): a report saved by an
//! older ebb, without `notifications` say, still renders.
//!
//! Fields are declared in alphabetical order: serialized in declaration order, the JSON
//! keeps the key order (and so the bytes) of the earlier untyped output, whose maps were
//! sorted.

// Part of the `ebb` binary: no `println!` that panics on a closed pipe (see clippy.toml).
#![deny(clippy::disallowed_macros)]

pub mod html;
pub mod text;

use ebb_engine::journal::{ActionKind, MemberState, Outcome, RunState};
use serde::{Deserialize, Serialize};

/// The file, in the state dir, where `ebb demo` leaves its [`Traffic`] for the report of
/// the run it drove.
pub const TRAFFIC_FILE: &str = "demo-traffic.json";

/// One run, as `ebb report --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The pool's in-service count as the engine sampled it.
    #[serde(default)]
    pub in_service: Vec<InService>,
    /// The last `ebb lock break` of the pool, in words.
    pub lock_broken: Option<String>,
    /// Every member of the run, in plan order.
    #[serde(default)]
    pub members: Vec<MemberReport>,
    /// The run's notifications and whether they were delivered.
    #[serde(default)]
    pub notifications: Vec<Notification>,
    /// The run itself.
    pub run: RunSummary,
    /// What `ebb demo`'s clients saw (only the run the demo drove, while it is the latest).
    pub traffic: Option<Traffic>,
}

/// `ebb report --json` when the journal has no run of the pool yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NoRun {
    /// Always empty.
    pub members: [MemberReport; 0],
    /// Always `null`.
    pub run: Option<RunSummary>,
}

/// The run's identity, state and times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// When it ended (unix ms), if it did.
    pub ended_ms: Option<i64>,
    /// Journal id.
    pub id: i64,
    /// Why it stopped.
    #[serde(default)]
    pub message: String,
    /// Pool name.
    pub pool: String,
    /// When it started (unix ms).
    pub started_ms: i64,
    /// Its state (`running` only while its ebb is alive).
    pub state: RunState,
}

/// One member and every step it went through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    /// Name.
    pub name: String,
    /// Undos it still owes, in the order they will run.
    #[serde(default)]
    pub owed_undos: Vec<String>,
    /// Its state at the end (or now).
    pub state: MemberState,
    /// Its actions, oldest first.
    #[serde(default)]
    pub steps: Vec<StepReport>,
}

/// One action of a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// What happened (drain counts, boot ids, check results).
    #[serde(default)]
    pub detail: String,
    /// When it ended (unix ms), if it did.
    pub ended_ms: Option<i64>,
    /// Exit code of its command.
    pub exit_code: Option<i32>,
    /// What the operation was.
    pub kind: ActionKind,
    /// Step name.
    pub name: String,
    /// How it ended (`interrupted` when the journal has no outcome).
    pub outcome: Outcome,
    /// Last lines of its output.
    #[serde(default)]
    pub output: String,
    /// When it started (unix ms).
    pub started_ms: i64,
}

/// One in-service sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InService {
    /// Members in service.
    pub in_service: u64,
    /// When (unix ms).
    pub t_ms: u64,
    /// Members in the pool.
    pub total: u64,
}

/// One notification's fate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Attempts made.
    pub attempts: u32,
    /// The last error, when not delivered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// `run_done`, `member_failed`, ...
    pub event: String,
    /// Delivered (a 2xx answer).
    pub ok: bool,
    /// The run it is about.
    pub run_id: i64,
    /// When it was given up on or delivered (unix ms).
    pub t_ms: i64,
    /// Where it went.
    pub url: String,
}

/// What `ebb demo` measured on its side while the run went on: its clients' requests and
/// errors per second, and the in-service count as it polled it on the balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// Every change of the in-service count, as the demo's watcher saw it (50 ms
    /// resolution: finer than the engine's samples, so the page draws it instead).
    #[serde(default)]
    pub in_service: Vec<InService>,
    /// Most members out of service at once.
    #[serde(default)]
    pub max_out_of_service: u64,
    /// One sample per second.
    #[serde(default)]
    pub samples: Vec<TrafficSample>,
}

/// One second of the demo's client traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSample {
    /// Failures (including cut streams) in that second.
    pub errors: u64,
    /// Requests finished in that second.
    pub requests: u64,
    /// Start of the second, unix ms.
    pub t_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as `ebb report --json` printed it before the types: the same bytes back.
    const PINNED: &str = r#"{"in_service":[{"in_service":2,"t_ms":1000,"total":3}],"lock_broken":null,"members":[{"name":"web1","owed_undos":["drain"],"state":"failed","steps":[{"detail":"","ended_ms":2000,"exit_code":null,"kind":"drain","name":"drain","outcome":"ok","output":"","started_ms":1000},{"detail":"exit 3","ended_ms":null,"exit_code":3,"kind":"step","name":"install","outcome":"interrupted","output":"no space","started_ms":2000}]}],"notifications":[{"attempts":3,"error":"refused","event":"run_done","ok":false,"run_id":7,"t_ms":9000,"url":"http://127.0.0.1:1/"}],"run":{"ended_ms":9000,"id":7,"message":"web1 failed","pool":"web","started_ms":1000,"state":"halted"},"traffic":{"in_service":[{"in_service":3,"t_ms":900,"total":3}],"max_out_of_service":1,"samples":[{"errors":0,"requests":120,"t_ms":1000}]}}"#;

    #[test]
    fn the_json_shape_is_pinned() {
        let r: RunReport = serde_json::from_str(PINNED).unwrap();
        assert_eq!(r.members[0].state, MemberState::Failed);
        assert_eq!(r.members[0].steps[1].outcome, Outcome::Interrupted);
        assert_eq!(r.run.state, RunState::Halted);
        assert_eq!(serde_json::to_string(&r).unwrap(), PINNED);
        // Without the demo's attachment the key stays, as null.
        let plain = RunReport { traffic: None, ..r };
        assert!(serde_json::to_string(&plain)
            .unwrap()
            .ends_with(r#""traffic":null}"#));
    }

    #[test]
    fn no_run_is_an_empty_answer() {
        assert_eq!(
            serde_json::to_string(&NoRun::default()).unwrap(),
            r#"{"members":[],"run":null}"#
        );
    }
}
