//! The keys of every section the engine reads, with their kinds and one-line
//! descriptions: what the reader accepts, and what tools describe (JSON Schema, docs).
//! Driver and transport keys are not here: each plug-in declares its own (see
//! [`crate::registry`]).

use ebb_config::{Key, Kind};

/// The top level of a pool file.
pub const TOP: &[Key] = &[
    Key::required(
        "pool",
        Kind::Table,
        "the pool: name, availability policy, pool-wide checks",
    ),
    Key::required(
        "balancer",
        Kind::Table,
        "the balancer in front of the pool: driver = \"NAME\" and that driver's keys",
    ),
    Key::new(
        "defaults",
        Kind::Table,
        "settings every member gets unless it sets its own",
    ),
    Key::required("member", Kind::Tables, "the servers of the pool, in order"),
    Key::new("runbook", Kind::Table, "what happens to each member"),
    Key::new("wave", Kind::Tables, "groups of members rolled in order"),
    Key::new(
        "notify",
        Kind::Tables,
        "where to send a message when a run starts, pauses, ends or a member needs a person",
    ),
    Key::new(
        "state",
        Kind::Table,
        "where the journal and the pool's lock live: SQLite beside the pool file (default) or etcd",
    ),
];

/// `[state]`.
pub const STATE: &[Key] = &[
    Key::new(
        "backend",
        Kind::OneOf(&["sqlite", "etcd"]),
        "\"sqlite\" (default: .ebb/ beside the pool file) or \"etcd\" (shared by every machine)",
    ),
    Key::new(
        "endpoints",
        Kind::Strings,
        "etcd client URLs, e.g. [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]",
    ),
    Key::new("prefix", Kind::String, "etcd key prefix (default \"/ebb\")"),
    Key::new(
        "lease_ttl",
        Kind::Duration,
        "how long the lock outlives a silent holder (default \"15s\", whole seconds, at least 2s)",
    ),
    Key::new(
        "ca_file",
        Kind::String,
        "TLS CA (not supported by this build yet)",
    ),
    Key::new(
        "cert_file",
        Kind::String,
        "TLS client certificate (not supported by this build yet)",
    ),
    Key::new(
        "key_file",
        Kind::String,
        "TLS client key (not supported by this build yet)",
    ),
    Key::new(
        "username",
        Kind::String,
        "etcd user (with password or EBB_STATE_PASSWORD)",
    ),
    Key::new(
        "password",
        Kind::String,
        "etcd password; prefer EBB_STATE_PASSWORD; never printed",
    ),
];

/// `[pool]`.
pub const POOL: &[Key] = &[
    Key::required(
        "name",
        Kind::String,
        "the pool's name; also the name of its lock (letters, digits, -_.)",
    ),
    Key::new(
        "max_unavailable",
        Kind::Any,
        "most members out of service at once: a count (default 1) or a percentage such as \"25%\"",
    ),
    Key::new(
        "min_in_service",
        Kind::Integer,
        "never drain if fewer members would stay in service (default 0)",
    ),
    Key::new(
        "capacity_wait",
        Kind::DurationOrZero,
        "how long to wait for the policy to allow a drain (default \"5m\")",
    ),
    Key::new(
        "check",
        Kind::Tables,
        "checks run on every member before the run and after each rejoin",
    ),
    Key::new(
        "gate",
        Kind::Table,
        "no member starts while matching alerts fire",
    ),
    Key::new(
        "window",
        Kind::Tables,
        "maintenance windows: a member starts only inside one, with its expected time left before it closes (default: any time)",
    ),
];

/// `[[pool.window]]`.
pub const WINDOW: &[Key] = &[
    Key::required(
        "days",
        Kind::Any,
        "the days it opens on: \"daily\" or a list such as [\"sat\", \"sun\"] (mon, tue, wed, thu, fri, sat, sun)",
    ),
    Key::required(
        "start",
        Kind::String,
        "the local time it opens at, \"HH:MM\" (24-hour), e.g. \"22:00\"",
    ),
    Key::required(
        "length",
        Kind::Duration,
        "how long it stays open, e.g. \"4h\" (at most \"7d\"); elapsed time, also across a daylight-saving change",
    ),
    Key::new(
        "time_zone",
        Kind::String,
        "an IANA time zone such as \"Europe/Berlin\" or \"UTC\" (default: the machine's zone)",
    ),
];

/// `[pool.gate]`.
pub const GATE: &[Key] = &[
    Key::required(
        "alertmanager",
        Kind::String,
        "the Alertmanager URL to ask for firing alerts",
    ),
    Key::new(
        "matchers",
        Kind::StringMap,
        "labels an alert must all match (\"~regex\" for a regular expression)",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "longest wait for the gate before the run stops (default \"30m\")",
    ),
    Key::new(
        "poll_interval",
        Kind::Duration,
        "how often alerts are asked for (default \"15s\")",
    ),
];

/// `driver`, the one key of `[balancer]` the engine reads; the rest is the driver's.
pub const BALANCER: &[Key] = &[Key::required(
    "driver",
    Kind::String,
    "the balancer driver, one of the registered names",
)];

/// The keys `[defaults]` and `[[member]]` share (besides the transports' keys).
const MEMBER_COMMON: &[Key] = &[
    Key::new(
        "transport",
        Kind::String,
        "how ebb runs commands on the member (a registered transport; default the first)",
    ),
    Key::new(
        "shell",
        Kind::OneOf(&["sh", "powershell"]),
        "the shell commands run with (default \"sh\")",
    ),
    Key::new(
        "boot_id",
        Kind::String,
        "command printing the member's boot identity",
    ),
    Key::new(
        "vars",
        Kind::Table,
        "{var.NAME} values, also in the environment as EBB_VAR_NAME",
    ),
];

/// `[defaults]`.
pub const DEFAULTS: &[Key] = MEMBER_COMMON;

/// `[[member]]` (besides [`DEFAULTS`]' keys).
pub const MEMBER: &[Key] = &[
    Key::required("name", Kind::String, "the member's name in ebb"),
    Key::required(
        "address",
        Kind::String,
        "host:port (or host) where it serves",
    ),
    Key::new(
        "lb_name",
        Kind::String,
        "its name in the balancer (default: name); unique",
    ),
    Key::new("group", Kind::String, "for only_group and waves"),
    Key::new(
        "weight",
        Kind::Integer,
        "weight in the built-in balancer (default 1)",
    ),
];

/// `[runbook]`.
pub const RUNBOOK: &[Key] = &[
    Key::new(
        "on_failure",
        Kind::OneOf(&["halt", "continue"]),
        "what a failed member does to the run (default \"halt\")",
    ),
    Key::new(
        "max_failed",
        Kind::Integer,
        "with continue: how many members may fail before the run halts (default 0)",
    ),
    Key::new(
        "rejoin_timeout",
        Kind::Duration,
        "how long a returned member may take to show in service (default \"2m\")",
    ),
    Key::new(
        "balancer_retry",
        Kind::Duration,
        "how long a failing balancer call is retried before its error counts (default \"10s\")",
    ),
    Key::new(
        "stop_after",
        Kind::Duration,
        "no member starts once this long has passed since the run or resume began; the run pauses (default: no limit)",
    ),
    Key::new(
        "expected_member_time",
        Kind::Duration,
        "how long a member is expected to take, for [[pool.window]] while the journal has no earlier member that ended done (then: their median)",
    ),
    Key::new("drain", Kind::Table, "how a member leaves the balancer"),
    Key::new(
        "step",
        Kind::Tables,
        "the commands run on each member, in order",
    ),
    Key::new("reboot", Kind::Table, "how a member is rebooted"),
    Key::new(
        "verify",
        Kind::Tables,
        "checks that must pass before a member returns to service",
    ),
    Key::new(
        "bake",
        Kind::Table,
        "checks run again and again while a returned member takes traffic; the next member waits",
    ),
    Key::new(
        "rollback",
        Kind::Tables,
        "steps run when verify or the bake fails, then verify again; the member stays held and the run halts",
    ),
    Key::new(
        "rollback_on",
        Kind::Strings,
        "which failures run the rollback steps: \"verify\", \"bake\" (default both)",
    ),
];

/// `[runbook.bake]`.
pub const BAKE: &[Key] = &[
    Key::required(
        "duration",
        Kind::Duration,
        "how long the returned member is watched, e.g. \"10m\"",
    ),
    Key::new(
        "interval",
        Kind::Duration,
        "time between two rounds of the checks (default \"30s\")",
    ),
    Key::required(
        "check",
        Kind::Tables,
        "the checks (as [[runbook.verify]]) that must pass in every round",
    ),
];

/// `[[runbook.rollback]]`: the shape of a step, without what only a forward step has.
pub const ROLLBACK: &[Key] = &[
    Key::required("name", Kind::String, "the rollback step's name, unique"),
    Key::required("run", Kind::String, "the command run on the member"),
    STEP_TIMEOUT,
    STEP_IDEMPOTENT,
    STEP_REBOOT,
    STEP_REBOOT_CODES,
];

/// `[runbook.drain]`.
pub const DRAIN: &[Key] = &[
    Key::new(
        "mode",
        Kind::OneOf(&["drainstop", "stop"]),
        "drainstop: existing connections finish; stop: cut them now",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "how long a drainstop may take (default \"10m\")",
    ),
    Key::new(
        "on_timeout",
        Kind::OneOf(&["stop", "abort", "wait", "skip"]),
        "what happens when a drainstop takes longer: cut the connections, fail the member, keep waiting, or return it untouched and mark it skipped (default \"stop\")",
    ),
    Key::new(
        "hold",
        Kind::Bool,
        "keep the member's initial state stopped while it is out (default true)",
    ),
    Key::new(
        "until",
        Kind::Tables,
        "drain gates: checks (as [[runbook.verify]]) that must pass after the balancer reports the member drained; timeout and on_timeout bound the whole wait",
    ),
];

/// A key that `[[runbook.step]]` and `[[runbook.rollback]]` share.
const STEP_TIMEOUT: Key = Key::new(
    "timeout",
    Kind::Duration,
    "the command is killed after this (default \"30m\")",
);

/// A key that `[[runbook.step]]` and `[[runbook.rollback]]` share.
const STEP_IDEMPOTENT: Key = Key::new(
    "idempotent",
    Kind::Bool,
    "safe to run again after an interruption (default true)",
);

/// A key that `[[runbook.step]]` and `[[runbook.rollback]]` share.
const STEP_REBOOT: Key = Key::new(
    "reboot",
    Kind::OneOf(&["never", "if-required", "always"]),
    "whether a reboot follows (default \"never\")",
);

/// A key that `[[runbook.step]]` and `[[runbook.rollback]]` share.
const STEP_REBOOT_CODES: Key = Key::new(
    "reboot_required_exit_codes",
    Kind::Any,
    "exit codes meaning \"succeeded, reboot required\" (default [3010])",
);

/// `[[runbook.step]]` (and one key per registered maintenance kind, which owns its table).
pub const STEP: &[Key] = &[
    Key::required(
        "name",
        Kind::String,
        "the step's name, unique, not a built-in stage's",
    ),
    Key::new(
        "run",
        Kind::String,
        "the command (required unless this is a maintenance step)",
    ),
    Key::new(
        "undo",
        Kind::String,
        "makes the step paired: owed from the moment it starts, run on return",
    ),
    Key::new(
        "when",
        Kind::OneOf(&["every", "first", "never"]),
        "which members run it (default \"every\")",
    ),
    Key::new("only_group", Kind::String, "only members of this group"),
    STEP_TIMEOUT,
    STEP_IDEMPOTENT,
    Key::new(
        "retries",
        Kind::Integer,
        "further attempts after the command fails or times out, each journaled (default 0)",
    ),
    Key::new(
        "retry_interval",
        Kind::DurationOrZero,
        "pause before each further attempt (default \"10s\")",
    ),
    STEP_REBOOT,
    STEP_REBOOT_CODES,
];

/// `[runbook.reboot]`.
pub const REBOOT: &[Key] = &[
    Key::required(
        "command",
        Kind::String,
        "the command that starts the reboot",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "bound on going down and coming back (default \"15m\")",
    ),
    Key::new(
        "poll_interval",
        Kind::Duration,
        "how often the boot identity is asked for (default \"2s\")",
    ),
];

/// The keys every check table has (`[[runbook.verify]]`, `[[pool.check]]`, drain gates);
/// the key of its kind belongs to the kind (`Registry::check`).
pub const CHECK: &[Key] = &[
    Key::required("name", Kind::String, "the check's name"),
    Key::new(
        "retries",
        Kind::Integer,
        "extra attempts after the first failure (default 0)",
    ),
    Key::new(
        "interval",
        Kind::DurationOrZero,
        "pause between attempts (default \"2s\")",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "bound on one attempt (default \"30s\")",
    ),
];

/// The arrays of check tables, by path: each also takes the key of every registered check
/// kind (exactly one of them).
pub const CHECK_LISTS: &[&str] = &[
    "pool.check[]",
    "runbook.drain.until[]",
    "runbook.verify[]",
    "runbook.bake.check[]",
];

/// `[[notify]]`.
pub const NOTIFY: &[Key] = &[
    Key::required("url", Kind::String, "the http:// or https:// URL the message is POSTed to"),
    Key::new(
        "format",
        Kind::OneOf(&["json", "slack", "teams"]),
        "json: ebb's own fields; slack, teams: an incoming-webhook message (default \"json\")",
    ),
    Key::new(
        "events",
        Kind::Strings,
        "which of run_started, run_paused, run_done, run_failed, member_failed, member_skipped, member_rolled_back, capacity_wait_begun (default all)",
    ),
];

/// `[[wave]]`.
pub const WAVE: &[Key] = &[
    Key::new("name", Kind::String, "the wave's name (default \"wave N\")"),
    Key::new("members", Kind::Strings, "the members of the wave, by name"),
    Key::new("group", Kind::String, "the members of this group"),
    Key::new(
        "pause_after",
        Kind::Bool,
        "stop (state paused) after this wave until ebb resume",
    ),
];

/// Every section the engine reads, by its path in the pool file (`[]` for arrays of
/// tables), for tools that describe the whole file. The plug-ins' keys (`[balancer]`, the
/// transports' member keys, a maintenance step's table) come from the registry.
pub const SECTIONS: &[(&str, &[Key])] = &[
    ("", TOP),
    ("notify[]", NOTIFY),
    ("pool", POOL),
    ("pool.gate", GATE),
    ("pool.check[]", CHECK),
    ("pool.window[]", WINDOW),
    ("balancer", BALANCER),
    ("defaults", DEFAULTS),
    ("member[]", MEMBER),
    ("runbook", RUNBOOK),
    ("runbook.drain", DRAIN),
    ("runbook.step[]", STEP),
    ("runbook.reboot", REBOOT),
    ("runbook.drain.until[]", CHECK),
    ("runbook.verify[]", CHECK),
    ("runbook.bake", BAKE),
    ("runbook.bake.check[]", CHECK),
    ("runbook.rollback[]", ROLLBACK),
    ("wave[]", WAVE),
    ("state", STATE),
];
