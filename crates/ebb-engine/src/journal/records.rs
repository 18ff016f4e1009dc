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
    /// Its verify or bake failed: pulled back out, rolled back (when the runbook has
    /// rollback steps), verified again, and held until a person decides (`ebb release`).
    #[serde(rename = "rolled-back")]
    RolledBack,
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
            MemberState::RolledBack => "rolled-back",
        }
    }
    pub(super) fn parse(s: &str) -> Self {
        match s {
            "out" => MemberState::Out,
            "failed" => MemberState::Failed,
            "done" => MemberState::Done,
            "skipped" => MemberState::Skipped,
            "rolled-back" => MemberState::RolledBack,
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
    /// What paying it does.
    pub kind: OwedKind,
    /// Kind-specific data (the undo command's step name, the initial state to restore).
    pub payload: String,
}

impl Owed {
    /// What paying it does, in the operator's words: `start in the balancer` for a
    /// drain, `restore initial state started` for a hold, `undo of "maint"` for a step.
    pub fn describe(&self) -> String {
        match self.kind {
            OwedKind::Drain => "start in the balancer".to_string(),
            OwedKind::Hold if !self.payload.is_empty() => {
                format!("restore initial state {}", self.payload)
            }
            OwedKind::Hold => "restore the initial state".to_string(),
            OwedKind::Undo => format!("undo of \"{}\"", self.name),
            OwedKind::Maintenance => format!("end maintenance \"{}\"", self.name),
            OwedKind::Other(_) => self.name.clone(),
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
    /// What the operation was.
    pub kind: ActionKind,
    /// Start (unix ms).
    pub started_ms: i64,
    /// End, when it ended.
    pub ended_ms: Option<i64>,
    /// How it ended; `None` while in flight (or when the process died during it).
    pub outcome: Option<Outcome>,
    /// Exit code of its command.
    pub exit_code: Option<i32>,
    /// Last lines of output.
    pub output: String,
    /// Details (drain counts, boot ids, check results).
    pub detail: String,
    /// The boot identity the member had when this reboot began (reboots only): a resume
    /// compares it with the member's current one, so a reboot that completed after ebb
    /// stopped watching is not done twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_before: Option<String>,
}

/// How ebb before the typed `boot_before` recorded it: in the reboot's detail.
const LEGACY_BOOT_BEFORE: &str = "boot before: ";

impl ActionRecord {
    /// The record as this ebb knows it, from one an older ebb may have written: a reboot
    /// without `boot_before` takes it from its detail ("boot before: ID"), where older
    /// journals kept it. Both backends call this on every action they read.
    pub(super) fn upgraded(mut self) -> Self {
        if self.boot_before.is_none() && self.kind == ActionKind::Reboot {
            self.boot_before = self
                .detail
                .split_once(LEGACY_BOOT_BEFORE)
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(String::from);
        }
        self
    }
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
    /// Since when it holds the lock (unix ms; the etcd backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
}

/// How an action ended.
#[derive(Debug, Clone)]
pub struct ActionEnd<'a> {
    /// How it ended.
    pub outcome: Outcome,
    /// Exit code of its command.
    pub exit_code: Option<i32>,
    /// Last lines of output.
    pub output: &'a str,
    /// Details; empty keeps what was there.
    pub detail: &'a str,
    /// Move the member's cursor here.
    pub advance_to: Option<usize>,
}

/// A closed set of names stored (journal) and shown (`--json`, reports) as lowercase
/// strings, with `Other` for a name this ebb does not know.
///
/// Reading never fails on an unknown name: a journal written by a newer ebb (or edited by
/// hand) still reads, and the name is kept verbatim in `Other`, so it is shown and written
/// back exactly as found. Code that matches on the enum treats `Other` as "none of these".
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A name this ebb does not know, kept as found.
            Other(String),
        }

        impl $name {
            /// The name as stored and shown.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)*
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name::from(s.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }
    };
}

named_enum! {
    /// What an action (one operation of a member) was; stored in the journal as its name.
    ActionKind {
        /// Set the initial state to stopped, recording the prior one.
        Hold = "hold",
        /// Drain in the balancer and wait for connections to end.
        Drain = "drain",
        /// A runbook step (its command, or a monitoring maintenance window).
        Step = "step",
        /// The reboot after a step.
        Reboot = "reboot",
        /// The verification checks.
        Verify = "verify",
        /// Unwind the owed undos: back in service.
        Return = "return",
        /// The pool check after the return.
        Check = "check",
        /// The bake checks while the returned member takes traffic.
        Bake = "bake",
        /// A rollback step (after a failed verify or bake).
        Rollback = "rollback",
    }
}

named_enum! {
    /// How an action ended; stored in the journal as its name.
    Outcome {
        /// It did what it should.
        Ok = "ok",
        /// It failed; the member is held out with its undos owed.
        Failed = "failed",
        /// Nothing to do (or the member was left out).
        Skipped = "skipped",
        /// The connection to the member was lost while its command ran: it may or may not
        /// have completed.
        Unknown = "unknown",
        /// The process running it died (or was stopped); resume recorded this.
        Interrupted = "interrupted",
        /// An operator said it completed (`ebb resume --assume-done`).
        AssumedDone = "assumed-done",
    }
}

named_enum! {
    /// What an owed undo does when it is paid; stored in the journal as its name.
    OwedKind {
        /// Run the step's `undo` command (the payload names the step).
        Undo = "undo",
        /// End a maintenance window (the payload names the step).
        Maintenance = "maintenance",
        /// Start the member in the balancer again.
        Drain = "drain",
        /// Restore the initial state recorded in the payload.
        Hold = "hold",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_written() {
        for name in [
            "hold", "drain", "step", "reboot", "verify", "return", "check", "bake", "rollback",
        ] {
            let k = ActionKind::from(name);
            assert!(!matches!(k, ActionKind::Other(_)), "{name}");
            assert_eq!(k.as_str(), name);
        }
        for name in [
            "ok",
            "failed",
            "skipped",
            "unknown",
            "interrupted",
            "assumed-done",
        ] {
            let o = Outcome::from(name);
            assert!(!matches!(o, Outcome::Other(_)), "{name}");
            assert_eq!(o.as_str(), name);
        }
    }

    #[test]
    fn an_owed_undo_keeps_its_json_shape() {
        // The etcd journal stores owed undos as this JSON, as older ebbs wrote it.
        for (name, kind) in [
            ("undo", OwedKind::Undo),
            ("maintenance", OwedKind::Maintenance),
            ("drain", OwedKind::Drain),
            ("hold", OwedKind::Hold),
            ("snapshot", OwedKind::Other("snapshot".into())),
        ] {
            let json = format!(r#"{{"id":3,"name":"maint","kind":"{name}","payload":"started"}}"#);
            let o: Owed = serde_json::from_str(&json).unwrap();
            assert_eq!(o.kind, kind, "{json}");
            assert_eq!(serde_json::to_string(&o).unwrap(), json);
        }
    }

    #[test]
    fn an_unknown_name_is_kept_verbatim() {
        let o = Outcome::from("timed-out");
        assert_eq!(o, Outcome::Other("timed-out".into()));
        assert_eq!(serde_json::to_string(&o).unwrap(), "\"timed-out\"");
        let k: ActionKind = serde_json::from_str("\"snapshot\"").unwrap();
        assert_eq!(k, ActionKind::Other("snapshot".into()));
    }

    #[test]
    fn an_action_record_keeps_its_json_shape() {
        // The etcd journal stores actions as this JSON: kind and outcome stay strings.
        let json = r#"{"id":1,"member":"web1","op":2,"name":"install","kind":"step","started_ms":5,"ended_ms":9,"outcome":"assumed-done","exit_code":0,"output":"","detail":""}"#;
        let a: ActionRecord = serde_json::from_str(json).unwrap();
        assert_eq!(a.kind, ActionKind::Step);
        assert_eq!(a.outcome, Some(Outcome::AssumedDone));
        assert_eq!(serde_json::to_string(&a).unwrap(), json);
    }

    #[test]
    fn a_reboot_recorded_by_an_older_ebb_keeps_its_boot_before() {
        let json = r#"{"id":1,"member":"web1","op":3,"name":"reboot","kind":"reboot","started_ms":5,"ended_ms":9,"outcome":"failed","exit_code":null,"output":"","detail":"did not come back as a new boot within 10m; boot before: 4f2a-77 "}"#;
        let a = serde_json::from_str::<ActionRecord>(json)
            .unwrap()
            .upgraded();
        assert_eq!(a.boot_before.as_deref(), Some("4f2a-77"));
        // Only reboots: a step's detail that happens to say so is not read as one.
        let step = json.replace(r#""kind":"reboot""#, r#""kind":"step""#);
        let a = serde_json::from_str::<ActionRecord>(&step)
            .unwrap()
            .upgraded();
        assert_eq!(a.boot_before, None);
        // A typed one wins over the text.
        let typed = json.replace(r#""detail""#, r#""boot_before":"b-2","detail""#);
        let a = serde_json::from_str::<ActionRecord>(&typed)
            .unwrap()
            .upgraded();
        assert_eq!(a.boot_before.as_deref(), Some("b-2"));
    }
}
