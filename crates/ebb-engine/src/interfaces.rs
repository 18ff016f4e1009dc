//! The interfaces drivers implement. The engine uses only these.

use crate::plan::{CheckSpec, GateSpec, MaintenanceSpec, Member};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A member's host state in the balancer, in ebb's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Takes new connections.
    Started,
    /// No new connections; existing ones go on.
    Draining,
    /// No traffic.
    Stopped,
}

impl HostState {
    /// `started`, `draining` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Started => "started",
            HostState::Draining => "draining",
            HostState::Stopped => "stopped",
        }
    }

    /// Parses `started`, `draining` or `stopped`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "started" => Some(HostState::Started),
            "draining" => Some(HostState::Draining),
            "stopped" => Some(HostState::Stopped),
            _ => None,
        }
    }
}

/// What the balancer says of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLbState {
    /// Host state.
    pub state: HostState,
    /// `Some(false)` when the balancer's health checks fail it.
    pub healthy: Option<bool>,
    /// Active connections, when the balancer knows them.
    pub active_connections: Option<u64>,
    /// The balancer's own words for the state (`MAINT`, `Converged`, ...).
    pub detail: String,
}

impl MemberLbState {
    /// In service: started and not failing health checks.
    pub fn in_service(&self) -> bool {
        self.state == HostState::Started && self.healthy != Some(false)
    }
}

/// A failure talking to the balancer, the transport or a check; the message says what
/// failed, where, and what to do next.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    /// What failed, where, and what to do next.
    pub message: String,
    /// The members whose own connection failed and whose failure this message quotes (a
    /// balancer driven through the members' transports, as NLB): `ebb check` says such a
    /// connection problem once, in this error, not again on its own.
    pub unreached: Vec<String>,
}

impl DriverError {
    /// Builds an error from anything printable.
    pub fn new(msg: impl Into<String>) -> Self {
        DriverError {
            message: msg.into(),
            unreached: Vec::new(),
        }
    }

    /// The same error, quoting the failed connection of `member`.
    pub fn unreached(mut self, member: &str) -> Self {
        self.unreached.push(member.to_string());
        self
    }
}

/// Result of driver operations.
pub type DriverResult<T> = Result<T, DriverError>;

/// What stands in front of the pool. Every driver offers the same operations.
#[async_trait]
pub trait Balancer: Send + Sync {
    /// The member's host state, health and connection count.
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState>;
    /// No new connections; existing ones finish.
    async fn drainstop(&self, member: &Member) -> DriverResult<()>;
    /// Cut every connection and take no more.
    async fn stop(&self, member: &Member) -> DriverResult<()>;
    /// Take new connections again.
    async fn start(&self, member: &Member) -> DriverResult<()>;
    /// The state the member takes when it comes back (`None`: the balancer cannot say).
    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>>;
    /// Sets the state the member takes when it comes back (`Started` or `Stopped`).
    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()>;
    /// Waits until something about `member` may have changed, at most `max`. Drivers with an
    /// event stream return as soon as an event arrives; the default polls.
    async fn wait_change(&self, member: &Member, max: Duration) {
        let _ = member;
        tokio::time::sleep(max.min(Duration::from_millis(500))).await;
    }
    /// The state of every member, in order; drivers that can read the whole pool in one
    /// request override this.
    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            out.push(self.state(m).await);
        }
        out
    }
    /// The members whose state may have changed since the previous `pool_state` or
    /// `pool_changes` call, by index in `members`, with their state now; `None` when the
    /// driver cannot tell (the default), and the engine reads the whole pool instead. Lets
    /// the engine keep its count of members in service exact without reading every member
    /// before each drain. A driver that returns `Some` must report every change it did not
    /// make on the engine's request too (health, an operator's drain).
    async fn pool_changes(
        &self,
        members: &[Member],
    ) -> Option<Vec<(usize, DriverResult<MemberLbState>)>> {
        let _ = members;
        None
    }
    /// Warnings for `ebb check` (e.g. HAProxy without a server-state-file).
    async fn preflight(&self, members: &[Member]) -> Vec<String> {
        let _ = members;
        Vec::new()
    }
    /// What makes this balancer unusable by ebb although it answers (an HAProxy socket
    /// below `level admin`): `ebb check` fails on these and a run refuses to start,
    /// before anything changed.
    async fn preflight_problems(&self, members: &[Member]) -> Vec<String> {
        let _ = members;
        Vec::new()
    }
    /// The balancer's own counters of requests sent to `member` and of those that failed
    /// (connect errors, resets, 5xx answers), counted since the balancer started: the
    /// `balancer` check judges their growth between two readings. `Ok(None)`: this driver
    /// cannot count per member (the default); `ebb check` then says so for that check.
    async fn member_errors(&self, member: &Member) -> DriverResult<Option<Counters>> {
        let _ = member;
        Ok(None)
    }
}

/// Requests a balancer sent to one member and how many of them failed, as the balancer
/// counted them since it started (both only grow, until the balancer restarts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Requests (or connections, for a balancer that does not see requests).
    pub requests: u64,
    /// Those that failed: could not connect, were reset, or were answered with a 5xx.
    pub errors: u64,
}

/// How a command went.
#[derive(Debug, Clone, Default)]
pub struct CommandOutcome {
    /// Exit code; `None` when killed (timeout, a signal) or unknown.
    pub exit_code: Option<i32>,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// The last lines of stdout and stderr together.
    pub tail: String,
    /// The connection to the member dropped while the command ran: it may have completed,
    /// failed or still be running there, so its outcome is unknown (`exit_code` is `None`).
    pub connection_lost: bool,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
}

impl CommandOutcome {
    /// How it ended, for messages: `exit code 4`, `killed by signal 9 (SIGKILL)`.
    pub fn ended(&self) -> String {
        if self.connection_lost {
            return "the connection to the member dropped; outcome unknown".to_string();
        }
        ended_text(self.exit_code, self.signal)
    }
}

/// How a process ended, for messages (never a Rust `Option`): `exit code 4`, `killed by
/// signal 9 (SIGKILL)`, or `no exit code` when neither is known.
pub fn ended_text(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => match signal_name(s) {
            Some(n) => format!("killed by signal {s} ({n})"),
            None => format!("killed by signal {s}"),
        },
        (None, None) => "no exit code (killed or lost)".to_string(),
    }
}

fn signal_name(s: i32) -> Option<&'static str> {
    Some(match s {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// Receives a command's output line by line, as it comes.
pub type OutputSink = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Receives the identity of a command's process as soon as it has started (an opaque
/// string the transport made, e.g. its process group and start time), for the journal:
/// if ebb dies while the command runs, a later `ebb resume` asks the transport whether
/// that very process still runs (`Transport::still_running`), instead of starting a
/// second copy beside it.
pub type StartedSink = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// How ebb reaches a member.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Runs `command` (already rendered for the member's shell) with `env`, bounded by
    /// `timeout`; on timeout the command is killed.
    async fn run(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
    ) -> DriverResult<CommandOutcome>;
    /// The member's boot identity; an error while it is down.
    async fn boot_id(&self) -> DriverResult<String>;

    /// `run`, and hands `started` the identity of the command's process once it runs.
    /// Transports that cannot name their processes run the command untracked.
    async fn run_tracked(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
        started: StartedSink,
    ) -> DriverResult<CommandOutcome> {
        let _ = started;
        self.run(command, env, timeout, output).await
    }

    /// Whether the process `run_tracked` named `process` still runs (a reused process id,
    /// or a reboot since, is not it). An error when the member cannot be asked.
    async fn still_running(&self, process: &str) -> DriverResult<bool> {
        let _ = process;
        Err(DriverError::new(
            "this transport cannot tell whether a command it started still runs",
        ))
    }

    /// Stops the process `run_tracked` named `process`, with everything it started, if it
    /// still runs.
    async fn stop_process(&self, process: &str) -> DriverResult<()> {
        let _ = process;
        Err(DriverError::new(
            "this transport cannot stop a command an earlier ebb started",
        ))
    }

    /// The process `run_tracked` named `process`, for humans (`process group 4242`).
    fn describe_process(&self, process: &str) -> String {
        process.to_string()
    }
}

/// What a check may need to know about the run besides the member.
#[derive(Clone, Default)]
pub struct CheckContext {
    /// When the member's update began (its first runbook step in this run), for checks
    /// that look at what happened since (`logs`); `None` before any update.
    pub update_began: Option<std::time::SystemTime>,
    /// When the member last returned to service in this run (the start of its bake);
    /// `None` while it has not.
    pub returned: Option<std::time::SystemTime>,
    /// The balancer in front of the pool, for checks that read its counters.
    pub balancer: Option<Arc<dyn Balancer>>,
    /// The members not yet updated in this run (pending), for checks that compare the
    /// member with them; read from the journal only when a check first asks.
    pub not_updated: NotUpdated,
}

/// The members not yet updated in this run, as a slice (`&ctx.not_updated[..]`, `.iter()`),
/// found the first time a check reads them and kept for the rest of that check.
///
/// Finding them takes a pass over every member's journal record and the plan: done for
/// every check before a check asked, that made each verify O(pool size) and a run O(N²)
/// (docs/benchmarks.md, "Engine overhead"). Most check kinds never ask.
#[derive(Clone, Default)]
pub struct NotUpdated {
    find: Option<Arc<dyn Fn() -> Vec<Member> + Send + Sync>>,
    found: std::sync::OnceLock<Vec<Member>>,
}

impl NotUpdated {
    /// Members that `find` returns when a check first reads them.
    pub fn lazy(find: impl Fn() -> Vec<Member> + Send + Sync + 'static) -> NotUpdated {
        NotUpdated {
            find: Some(Arc::new(find)),
            found: std::sync::OnceLock::new(),
        }
    }
}

/// Known members (for tests and tools).
impl From<Vec<Member>> for NotUpdated {
    fn from(members: Vec<Member>) -> NotUpdated {
        NotUpdated {
            find: None,
            found: std::sync::OnceLock::from(members),
        }
    }
}

impl std::ops::Deref for NotUpdated {
    type Target = [Member];
    fn deref(&self) -> &[Member] {
        self.found
            .get_or_init(|| self.find.as_ref().map_or_else(Vec::new, |find| find()))
    }
}

impl std::fmt::Debug for CheckContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckContext")
            .field("update_began", &self.update_began)
            .field("returned", &self.returned)
            .field("balancer", &self.balancer.is_some())
            .field(
                "not_updated",
                &self.not_updated.found.get().map(|m| m.len()),
            )
            .finish()
    }
}

/// One check of the pool file, built by its kind (a [`crate::registry::CheckKind`]) from
/// its table: what an attempt does, and what the reader and `ebb check` ask of it.
#[async_trait]
pub trait Check: Send + Sync + std::fmt::Debug {
    /// One attempt on `member` (the engine handles retries and bounds the attempt by
    /// `timeout`); `Ok` says what passed, `Err` why it failed, with what was seen.
    async fn run(
        &self,
        member: &Member,
        transport: &dyn Transport,
        ctx: &CheckContext,
        timeout: Duration,
    ) -> Result<String, String>;

    /// Its templates, by key below the check (`http.url`), checked against every member's
    /// placeholders once all members are known.
    fn templates(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Why it cannot work with this balancer (a driver that cannot count errors), for
    /// `ebb check`; `None` when it can.
    async fn preflight(
        &self,
        balancer: &dyn Balancer,
        balancer_driver: &str,
        members: &[Member],
    ) -> Option<String> {
        let _ = (balancer, balancer_driver, members);
        None
    }

    /// Itself, for code that looks for one kind (`ebb check`'s version table).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Runs verification checks against a member.
#[async_trait]
pub trait Checker: Send + Sync {
    /// One attempt of `check` on `member` with the run's context (the engine handles
    /// retries); `Err` says why it failed, with what was seen.
    async fn check_in(
        &self,
        check: &CheckSpec,
        member: &Member,
        transport: &dyn Transport,
        ctx: &CheckContext,
    ) -> Result<String, String>;
}

/// The checker of a real run: each check does what its kind built it to do.
pub struct BuiltChecks;

#[async_trait]
impl Checker for BuiltChecks {
    async fn check_in(
        &self,
        check: &CheckSpec,
        member: &Member,
        transport: &dyn Transport,
        ctx: &CheckContext,
    ) -> Result<String, String> {
        check.check.run(member, transport, ctx, check.timeout).await
    }
}

/// Monitoring maintenance and the pool's alert gate: the systems that page people. The
/// engine calls only this; `Registry::build` gives one that hands each step to the
/// [`MaintenanceStep`] its kind built and asks the registered [`AlertGate`] (tests give a
/// fake).
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Begins maintenance for `member` (e.g. creates a silence) and returns what ending it
    /// needs (e.g. the silence id), kept in the journal. `key` names this run, member and
    /// step; a begin that is repeated after an interruption finds its earlier work by it.
    async fn begin(
        &self,
        spec: &MaintenanceSpec,
        member: &Member,
        key: &str,
    ) -> DriverResult<String>;
    /// Ends it (expires the silence `token`, calls the undo webhook). Ending what is
    /// already ended succeeds.
    async fn end(
        &self,
        spec: &MaintenanceSpec,
        member: &Member,
        key: &str,
        token: &str,
    ) -> DriverResult<String>;
    /// The alerts now firing that hold the gate (one line each); empty: the gate is open.
    async fn gate_alerts(&self, gate: &GateSpec) -> DriverResult<Vec<String>>;
}

/// One maintenance step, built by its kind (`registry::MaintenanceKind`) from the step's
/// table: what [`Maintenance`] calls for that step.
#[async_trait]
pub trait MaintenanceStep: Send + Sync {
    /// Begins maintenance for `member`; returns what ending it needs (kept in the journal).
    /// `key` names this run, member and step; a repeated begin finds its earlier work by it.
    async fn begin(&self, member: &Member, key: &str) -> DriverResult<String>;
    /// Ends it; `token` is what the begin returned, or empty if ebb died before recording
    /// it (then the work is found by `key`). Ending what is already ended succeeds.
    async fn end(&self, member: &Member, key: &str, token: &str) -> DriverResult<String>;
}

/// What answers `[pool.gate]`: the alerts now firing that match it.
#[async_trait]
pub trait AlertGate: Send + Sync {
    /// The alerts now firing that hold the gate (one line each); empty: the gate is open.
    async fn firing(&self, gate: &GateSpec) -> DriverResult<Vec<String>>;
}
