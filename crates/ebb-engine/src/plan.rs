//! The validated, typed plan that a pool file becomes. Nothing runs before a `Plan` exists,
//! and a `Plan` exists only when the whole file was valid.

use ebb_config::LineIndex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A whole pool file, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The pool file this plan came from.
    pub file: PathBuf,
    /// Where each key of the pool file is, for messages about it after parsing (a
    /// driver's settings).
    pub lines: Arc<LineIndex>,
    /// The pool: name, availability policy, pool-wide checks.
    pub pool: PoolSpec,
    /// What stands in front of the pool.
    pub balancer: BalancerSpec,
    /// The members, in the order of the file.
    pub members: Vec<Member>,
    /// What happens to each member.
    pub runbook: Runbook,
    /// Waves in order; every member is in exactly one.
    pub waves: Vec<Wave>,
    /// Where the journal and the lock live.
    pub state: StateSpec,
    /// `[[notify]]`: receivers of messages about the run.
    pub notify: Vec<NotifySpec>,
}

/// Which store holds the journal and the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackend {
    /// A SQLite file in the state dir (default).
    Sqlite,
    /// etcd, shared by every machine that can reach it.
    Etcd,
}

/// A secret: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// `[state]`, after the `--state-backend`/`EBB_STATE_*` overrides.
#[derive(Debug, Clone)]
pub struct StateSpec {
    /// The backend.
    pub backend: StateBackend,
    /// etcd client URLs (`http://HOST:PORT` or `https://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// etcd key prefix.
    pub prefix: String,
    /// Lease TTL of the lock (whole seconds).
    pub lease_ttl: Duration,
    /// etcd user.
    pub username: Option<String>,
    /// etcd password.
    pub password: Option<Secret>,
    /// CA certificates (PEM) that sign the `https://` endpoints' certificates (else the
    /// Mozilla roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM), for an etcd started with `--client-cert-auth`.
    pub cert_file: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<std::path::PathBuf>,
}

impl Default for StateSpec {
    fn default() -> Self {
        StateSpec {
            backend: StateBackend::Sqlite,
            endpoints: vec![],
            prefix: "/ebb".into(),
            lease_ttl: Duration::from_secs(15),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// The pool and its availability policy.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Name of the pool (also the name of its lock).
    pub name: String,
    /// Most members out of service at once.
    pub max_unavailable: MaxUnavailable,
    /// Fewest members that must stay in service.
    pub min_in_service: usize,
    /// How long to wait for the policy to allow a drain before halting.
    pub capacity_wait: Duration,
    /// Checks run across the whole pool before the run and after each rejoin.
    pub checks: Vec<CheckSpec>,
    /// `[pool.gate]`: no member starts while matching alerts fire.
    pub gate: Option<GateSpec>,
    /// `[[pool.window]]`: members start only inside these (none: at any time).
    pub windows: Vec<crate::window::Window>,
}

/// `[pool.gate]`: do not start the next member while the given Alertmanager has firing
/// (unsilenced, uninhibited) alerts matching `matchers`; wait at most `timeout`.
#[derive(Debug, Clone)]
pub struct GateSpec {
    /// Base URL of the Alertmanager (`http://host:9093`).
    pub alertmanager: String,
    /// Label matchers an alert must all match to hold the gate (`name = "value"`, or
    /// `"~regex"` for a regular expression).
    pub matchers: BTreeMap<String, String>,
    /// How long a member may wait for the gate before the run stops (exit 1).
    pub timeout: Duration,
    /// How often the alerts are asked for while waiting.
    pub poll_interval: Duration,
}

/// `max_unavailable`: a count or a percentage of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// At most this many members.
    Count(usize),
    /// At most this percentage of the members (rounded down, at least 1).
    Percent(u32),
}

impl MaxUnavailable {
    /// The bound as a number of members for a pool of `pool_size`.
    pub fn resolve(self, pool_size: usize) -> usize {
        match self {
            MaxUnavailable::Count(n) => n,
            MaxUnavailable::Percent(p) => ((pool_size * p as usize) / 100).max(1),
        }
    }
}

/// `[balancer]`: the driver name and its own settings, opaque to the engine and validated
/// by the driver registered under that name.
#[derive(Debug, Clone)]
pub struct BalancerSpec {
    /// The name of a registered balancer driver.
    pub driver: String,
    /// Every other key of `[balancer]`, as written (lines in `Plan::lines`, under
    /// `balancer.KEY`).
    pub settings: toml::Table,
}

/// One server of the pool.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its name in ebb.
    pub name: String,
    /// `host:port` (or host) where it serves.
    pub address: String,
    /// Its name in the balancer (defaults to `name`).
    pub lb_name: String,
    /// The name of a registered transport.
    pub transport: String,
    /// `sh` or `powershell`.
    pub shell: Shell,
    /// Optional group, for `only_group` and waves.
    pub group: Option<String>,
    /// `{var.NAME}` values.
    pub vars: BTreeMap<String, String>,
    /// Command printing the member's boot identity (local transport).
    pub boot_id: Option<String>,
    /// The transports' keys (`ssh_user`, `ssh_port`, ...), merged from `[defaults]`;
    /// validated by the transports.
    pub settings: toml::Table,
    /// Balancer weight (used by the built-in balancer).
    pub weight: u32,
}

/// The shell a member runs commands with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// POSIX `sh -c`.
    Sh,
    /// `powershell -NoProfile -NonInteractive -Command`.
    PowerShell,
}

/// `[runbook]`.
#[derive(Debug, Clone)]
pub struct Runbook {
    /// What a failed member does to the run.
    pub on_failure: OnFailure,
    /// With `continue`: how many members may fail before the run halts.
    pub max_failed: usize,
    /// `[runbook.drain]`.
    pub drain: DrainSpec,
    /// `[[runbook.step]]` in order.
    pub steps: Vec<StepSpec>,
    /// `[runbook.reboot]`.
    pub reboot: Option<RebootSpec>,
    /// `[[runbook.verify]]`: must pass before a member returns to service.
    pub verify: Vec<CheckSpec>,
    /// How long a returned member may take to show as in service in the balancer.
    pub rejoin_timeout: Duration,
    /// How long a failing balancer call is retried (a restart, a short outage) before its
    /// error counts (see [`crate::patient`]).
    pub balancer_retry: Duration,
    /// `stop_after`: no member starts once this long has passed since the run (or its
    /// resume) began; the run pauses instead.
    pub stop_after: Option<Duration>,
    /// `expected_member_time`: what a maintenance window judges a member by while the
    /// journal has no earlier member that ended done.
    pub expected_member_time: Option<Duration>,
    /// `[runbook.bake]`: checks run again and again while a returned member takes
    /// traffic; the next member waits for it.
    pub bake: Option<BakeSpec>,
    /// `[[runbook.rollback]]`: steps run when verify or the bake fails (see
    /// `rollback_on`), then verify again; the member stays held either way.
    pub rollback: Vec<StepSpec>,
    /// `rollback_on`: which failures set off the rollback steps.
    pub rollback_on: RollbackOn,
}

/// `[runbook.bake]`: after a member is back in service and the pool check passed, its
/// checks run every `interval` for `duration` while it takes traffic. A failure pulls the
/// member back out (drainstop, hold), runs the rollback steps and halts the run.
#[derive(Debug, Clone)]
pub struct BakeSpec {
    /// How long the bake lasts.
    pub duration: Duration,
    /// Time between two rounds of the checks.
    pub interval: Duration,
    /// `[[runbook.bake.check]]`: every one must pass in every round.
    pub checks: Vec<CheckSpec>,
}

/// `rollback_on`: which failures run the rollback steps (both by default when there are
/// rollback steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RollbackOn {
    /// A failed verify runs them.
    pub verify: bool,
    /// A failed bake runs them (after the member is pulled back out).
    pub bake: bool,
}

/// `on_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop forward progress at the first failed member.
    Halt,
    /// Go on with other members while `max_failed` and the policy allow.
    Continue,
}

/// `[runbook.drain]`.
#[derive(Debug, Clone)]
pub struct DrainSpec {
    /// Drainstop or stop.
    pub mode: DrainMode,
    /// How long a drainstop may take.
    pub timeout: Duration,
    /// What happens when it takes longer.
    pub on_timeout: OnTimeout,
    /// Keep the member out (initial state stopped) until ebb returns it.
    pub hold: bool,
    /// Drain gates (`until`): checks that must pass, after the balancer reports the
    /// member drained, before the drain ends (a mail queue emptied, a job finished). The
    /// drain `timeout` and `on_timeout` bound the whole wait.
    pub until: Vec<CheckSpec>,
}

/// How a member leaves the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// No new connections; existing ones finish.
    Drainstop,
    /// Cut every connection now.
    Stop,
}

/// What happens when a drainstop outlasts its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Cut the remaining connections (a stop) and go on.
    Stop,
    /// Fail the member (it stays draining, held).
    Abort,
    /// Keep waiting, showing the count.
    Wait,
    /// Return the member to service untouched, mark it skipped and go on with the others
    /// (`ebb run --only-skipped` does it later).
    Skip,
}

/// A plain or paired step.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Its name, unique in the runbook.
    pub name: String,
    /// Command template.
    pub run: String,
    /// Undo command template; when present the step is paired and its undo owed.
    pub undo: Option<String>,
    /// Every member, or only the first of the run.
    pub when: When,
    /// Only members of this group.
    pub only_group: Option<String>,
    /// Bound on the command.
    pub timeout: Duration,
    /// Safe to run again after an interruption.
    pub idempotent: bool,
    /// Further attempts after a failed one (as CAU's MaxRetriesPerNode); each attempt is
    /// journaled as its own action.
    pub retries: u32,
    /// Pause between a failed attempt and the next.
    pub retry_interval: Duration,
    /// Whether a reboot follows.
    pub reboot: RebootPolicy,
    /// Exit codes meaning "succeeded, reboot required".
    pub reboot_required_exit_codes: Vec<i32>,
    /// A monitoring maintenance step (`alertmanager` or `webhook`) instead of `run`: paired,
    /// its end (expire the silence, the webhook's undo) owed from the moment it starts.
    pub maintenance: Option<MaintenanceSpec>,
}

/// A maintenance step: `NAME = { ... }` in a `[[runbook.step]]`, where `NAME` is a
/// registered maintenance kind (`registry::MaintenanceKind`: `alertmanager`, `webhook`). It
/// begins maintenance before the member goes out and ends it when the member returns. The
/// table is the kind's, opaque to the engine: the kind validated it and builds from it.
#[derive(Debug, Clone)]
pub struct MaintenanceSpec {
    /// The kind's name (the step's key).
    pub kind: String,
    /// Where the table is in the pool file (`runbook.step[2].alertmanager`), for messages.
    pub path: String,
    /// The kind's table.
    pub settings: toml::Table,
}

/// `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Every member.
    Every,
    /// Only the first member of the run.
    First,
    /// Never (kept in the file, switched off).
    Never,
}

/// `reboot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootPolicy {
    /// Never reboot after this step.
    Never,
    /// Reboot when the exit code says so.
    IfRequired,
    /// Always reboot after this step.
    Always,
}

/// `[runbook.reboot]`.
#[derive(Debug, Clone)]
pub struct RebootSpec {
    /// Command that starts the reboot.
    pub command: String,
    /// Bound on going down and coming back.
    pub timeout: Duration,
    /// How often to ask for the boot identity.
    pub poll_interval: Duration,
}

/// A verification check: the keys every check has, and what its kind built from its own
/// key (`http = { ... }`), which the engine does not read.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// Its name.
    pub name: String,
    /// Its kind: the key that selected it (`http`, `prometheus`, ...).
    pub kind: String,
    /// What one attempt does, built by the kind.
    pub check: std::sync::Arc<dyn crate::interfaces::Check>,
    /// Extra attempts after the first failure.
    pub retries: u32,
    /// Pause between attempts.
    pub interval: Duration,
    /// Bound on one attempt.
    pub timeout: Duration,
}

/// A wave of members rolled together.
#[derive(Debug, Clone)]
pub struct Wave {
    /// Its name.
    pub name: String,
    /// Indexes into `Plan::members`, in order.
    pub members: Vec<usize>,
    /// Stop with state `paused` after this wave until `ebb resume`.
    pub pause_after: bool,
}

/// A wave as the operator reads it: `wave "canary"` for a named wave, `wave 2` for an
/// unnamed one (its name is already `wave 2`; never `wave wave 2`).
pub fn wave_label(name: &str) -> String {
    match name.strip_prefix("wave ") {
        Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => format!("wave \"{name}\""),
    }
}

/// `[[notify]]`: a receiver of messages about the run.
#[derive(Debug, Clone)]
pub struct NotifySpec {
    /// Where the message is POSTed.
    pub url: String,
    /// The body's shape.
    pub format: NotifyFormat,
    /// Which events are sent.
    pub events: Vec<NotifyEvent>,
}

/// The body of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// ebb's own fields (`event`, `pool`, `member`, `message`).
    Json,
    /// A Slack incoming-webhook message (`text`).
    Slack,
    /// A Microsoft Teams incoming-webhook message (`text`).
    Teams,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyEvent {
    /// A run started or resumed.
    RunStarted,
    /// A run paused (after a wave, at `stop_after`).
    RunPaused,
    /// A run is done.
    RunDone,
    /// A run halted (a failure, the policy) or was interrupted.
    RunFailed,
    /// A member failed and is held.
    MemberFailed,
    /// A member was skipped (its drain did not end).
    MemberSkipped,
    /// A member's verify or bake failed: it was pulled back, rolled back and held.
    MemberRolledBack,
    /// A member waits for the availability policy to let it out.
    CapacityWaitBegun,
}

impl NotifyEvent {
    /// Every event, in the order the docs list them.
    pub const ALL: [NotifyEvent; 8] = [
        NotifyEvent::RunStarted,
        NotifyEvent::RunPaused,
        NotifyEvent::RunDone,
        NotifyEvent::RunFailed,
        NotifyEvent::MemberFailed,
        NotifyEvent::MemberSkipped,
        NotifyEvent::MemberRolledBack,
        NotifyEvent::CapacityWaitBegun,
    ];

    /// Its name in the pool file and in a `json` message.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::RunStarted => "run_started",
            NotifyEvent::RunPaused => "run_paused",
            NotifyEvent::RunDone => "run_done",
            NotifyEvent::RunFailed => "run_failed",
            NotifyEvent::MemberFailed => "member_failed",
            NotifyEvent::MemberSkipped => "member_skipped",
            NotifyEvent::MemberRolledBack => "member_rolled_back",
            NotifyEvent::CapacityWaitBegun => "capacity_wait_begun",
        }
    }
}

/// Members' indices by their balancer name (`lb_name`), for a driver that maps a
/// balancer's answer back to the plan without a scan per member.
pub fn index_by_lb_name(members: &[Member]) -> std::collections::HashMap<String, usize> {
    members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.lb_name.clone(), i))
        .collect()
}

impl Plan {
    /// Every check of the plan: pool checks, drain gates, verification, the bake.
    pub fn checks(&self) -> impl Iterator<Item = &CheckSpec> {
        self.pool
            .checks
            .iter()
            .chain(&self.runbook.drain.until)
            .chain(&self.runbook.verify)
            .chain(self.runbook.bake.iter().flat_map(|b| &b.checks))
    }

    /// Index of a member by name.
    pub fn member_index(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// The steps that apply to member `index` (honours `when` and `only_group`).
    pub fn steps_for(&self, index: usize) -> Vec<&StepSpec> {
        let member = &self.members[index];
        let first = self.waves.first().and_then(|w| w.members.first()).copied() == Some(index);
        self.runbook
            .steps
            .iter()
            .filter(|s| match s.when {
                When::Every => true,
                When::First => first,
                When::Never => false,
            })
            .filter(|s| match &s.only_group {
                Some(g) => member.group.as_deref() == Some(g.as_str()),
                None => true,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::MaxUnavailable;

    #[test]
    fn max_unavailable_percentages_round_down_but_allow_one() {
        assert_eq!(MaxUnavailable::Percent(25).resolve(10), 2);
        assert_eq!(MaxUnavailable::Percent(25).resolve(3), 1, "never zero");
        assert_eq!(MaxUnavailable::Percent(100).resolve(4), 4);
        assert_eq!(MaxUnavailable::Count(2).resolve(10), 2);
    }
}
