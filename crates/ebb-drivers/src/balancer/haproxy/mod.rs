//! The `haproxy` balancer driver: HAProxy through its runtime API (the admin "stats
//! socket"), exactly as a careful operator would drive it with `socat`.
//!
//! ```toml
//! [balancer]
//! driver = "haproxy"
//! socket = "/run/haproxy/admin.sock"   # or "tcp://127.0.0.1:9999"
//! backend = "web"                      # a member's lb_name is its server name there
//! state_file = "/var/lib/haproxy/server-state"  # HAProxy's server-state-file (for hold)
//! start_timeout = "60s"                # how long `start` waits for the server to be UP
//! timeout = "10s"                      # bound on each runtime API command
//! ```
//!
//! | ebb | HAProxy |
//! |---|---|
//! | drainstop | `set server B/S state drain` (kept in `maint` when held) |
//! | stop | `set server B/S state maint`, then `shutdown sessions server B/S` |
//! | start | `set server B/S state ready`, then wait until `show stat` says `UP` |
//! | state | `show stat` (`status`, `scur`, `qcur`) and `show servers state` (admin flags) |
//! | errors (the `balancer` check) | `show stat`: `econ` + `eresp` + `hrsp_5xx` of `max(req_tot, lbtot)` requests |
//! | initial state stopped (hold) | `set server B/S state maint`, and `show servers state` written to `state_file` |
//! | initial state found | `stopped` when the server is in maintenance, else `started` |
//!
//! See docs/haproxy.md for the reasoning, notably why a hold is MAINT.

pub mod client;
pub mod status;

use async_trait::async_trait;
use client::{RuntimeApi, SocketAddr};
use ebb_config::{format_duration, ConfigErrors, Context, Key, Kind};
use ebb_engine::interfaces::{
    Balancer, Counters, DriverError, DriverResult, HostState, MemberLbState, Transport,
};
use ebb_engine::plan::{Member, Plan};
use ebb_engine::registry::BalancerDriver;
use status::{admin, AdminRow, StatRow};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The keys of `[balancer]` for the haproxy driver.
pub const KEYS: &[Key] = &[
    Key::required(
        "socket",
        Kind::String,
        "HAProxy's runtime API at level admin: a unix socket path or tcp://HOST:PORT",
    ),
    Key::new(
        "backend",
        Kind::String,
        "the backend of the members' servers (needed unless every lb_name is BACKEND/SERVER)",
    ),
    Key::new(
        "state_file",
        Kind::String,
        "HAProxy's server-state-file, rewritten after every change (for hold)",
    ),
    Key::new(
        "start_timeout",
        Kind::Duration,
        "how long a start waits for the server to be UP (default \"60s\")",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "bound on each runtime API command (default \"10s\")",
    ),
];

/// The haproxy driver's descriptor, registered in [`crate::registry`].
pub struct HaproxyDriver;

impl BalancerDriver for HaproxyDriver {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }

    fn validate(&self, plan: &Plan, cx: &mut Context) {
        HaproxySettings::read(plan, cx);
    }

    fn build(
        &self,
        plan: &Plan,
        _: &[Arc<dyn Transport>],
    ) -> Result<Arc<dyn Balancer>, ConfigErrors> {
        Ok(Arc::new(Haproxy::from_plan(plan)?))
    }
}

/// `[balancer]` for the haproxy driver.
#[derive(Debug, Clone)]
pub struct HaproxySettings {
    /// The runtime API socket.
    pub socket: SocketAddr,
    /// The backend holding the members' servers (a member's `lb_name` may also be
    /// `BACKEND/SERVER`).
    pub backend: Option<String>,
    /// HAProxy's `server-state-file`, rewritten after every change ebb makes, so that a
    /// reload keeps held members out.
    pub state_file: Option<PathBuf>,
    /// How long `start` waits for the server to come UP.
    pub start_timeout: Duration,
    /// Bound on each runtime API command.
    pub timeout: Duration,
    /// Whether the runbook holds members (for the preflight warning).
    pub hold: bool,
}

impl HaproxySettings {
    /// Reads and validates `[balancer]`; every problem at once, with file, line and key.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        super::read(plan, Self::read)
    }

    /// Reads `[balancer]`, every problem into `cx`.
    fn read(plan: &Plan, cx: &mut Context) -> Option<Self> {
        let mut s = super::section(plan, "haproxy", KEYS);
        let socket = match s.str(cx, "socket") {
            Some(v) => match SocketAddr::parse(&v) {
                Ok(a) => Some(a),
                Err(e) => {
                    s.error(cx, "socket", e);
                    None
                }
            },
            None => {
                if !s.has("socket") {
                    s.missing(cx, "the haproxy driver needs socket = \"/run/haproxy/admin.sock\" (HAProxy's `stats socket ... level admin`, or tcp://HOST:PORT)");
                }
                None
            }
        };
        let backend = s.str(cx, "backend");
        if backend.is_none() && !s.has("backend") {
            if let Some(m) = plan.members.iter().find(|m| !m.lb_name.contains('/')) {
                s.missing(cx, format!(
                    "the haproxy driver needs backend = \"<HAProxy backend>\" (member \"{}\" has lb_name \"{}\", not BACKEND/SERVER)",
                    m.name, m.lb_name
                ));
            }
        }
        if let Some(b) = backend.as_deref().filter(|b| !haproxy_name_ok(b)) {
            s.error(
                cx,
                "backend",
                format!("{b:?} is not a HAProxy backend name ({HAPROXY_NAMES})"),
            );
        }
        member_names(plan, cx, backend.as_deref());
        let base = plan
            .file
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let state_file = s.str(cx, "state_file").map(|p| base.join(p));
        let start_timeout = s.duration(cx, "start_timeout", Duration::from_secs(60));
        let timeout = s.duration(cx, "timeout", Duration::from_secs(10));
        s.finish(cx);
        Some(HaproxySettings {
            socket: socket?,
            backend,
            state_file,
            start_timeout,
            timeout,
            hold: plan.runbook.drain.hold,
        })
    }
}

/// What HAProxy accepts in a backend or server name.
const HAPROXY_NAMES: &str = "HAProxy names hold only letters, digits, '.', '_', '-' and ':'";

/// Whether HAProxy would accept `name` as a backend or server name. Anything else cannot
/// name a server, and `;` or a newline would end the runtime API command ebb sends and
/// start another one.
pub fn haproxy_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
}

/// Reports every member whose HAProxy server (its `lb_name`, or `BACKEND/SERVER`) is not a
/// name HAProxy accepts, at `member[N].lb_name`.
fn member_names(plan: &Plan, cx: &mut Context, backend: Option<&str>) {
    for (i, m) in plan.members.iter().enumerate() {
        let (b, s) = match m.lb_name.split_once('/') {
            Some((b, s)) => (Some(b), s),
            None => (backend, m.lb_name.as_str()),
        };
        if b.is_some_and(|b| !haproxy_name_ok(b)) || !haproxy_name_ok(s) {
            cx.err(
                &format!("member[{i}].lb_name"),
                format!(
                    "member \"{}\": {:?} is not a HAProxy server name ({HAPROXY_NAMES}); set lb_name to the server's name in the backend",
                    m.name, m.lb_name
                ),
            );
        }
    }
}

/// Drives HAProxy through its runtime API.
pub struct Haproxy {
    settings: HaproxySettings,
    api: RuntimeApi,
    /// One state-file write at a time (members drained in parallel), each with a snapshot
    /// taken inside the lock, so the file ends with the newest one.
    state_file_lock: tokio::sync::Mutex<()>,
}

/// A member's server in HAProxy.
struct Target {
    backend: String,
    server: String,
    member: String,
}

impl Target {
    fn path(&self) -> String {
        format!("{}/{}", self.backend, self.server)
    }
}

impl Haproxy {
    /// Reads `[balancer]` for the haproxy driver.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        HaproxySettings::from_plan(plan).map(Self::new)
    }

    /// A driver with these settings.
    pub fn new(settings: HaproxySettings) -> Self {
        let api = RuntimeApi::new(settings.socket.clone(), settings.timeout);
        Haproxy {
            settings,
            api,
            state_file_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn target(&self, member: &Member) -> Target {
        let (backend, server) = match (member.lb_name.split_once('/'), &self.settings.backend) {
            (Some((b, s)), _) => (b.to_string(), s.to_string()),
            (None, Some(b)) => (b.clone(), member.lb_name.clone()),
            (None, None) => (String::new(), member.lb_name.clone()),
        };
        Target {
            backend,
            server,
            member: member.name.clone(),
        }
    }

    /// An error about `t`, naming the member, the server and the socket.
    fn error(&self, t: &Target, what: impl std::fmt::Display) -> DriverError {
        DriverError::new(format!(
            "member \"{}\" (HAProxy server {} via {}): {what}",
            t.member,
            t.path(),
            self.api.addr()
        ))
    }

    /// `set server`/`shutdown sessions`, with HAProxy's error lines explained.
    async fn action(&self, t: &Target, cmd: String) -> DriverResult<()> {
        match self.api.action(&cmd).await {
            Ok(()) => Ok(()),
            Err(e) if e.contains("\"No such backend.\"") => Err(self.error(
                t,
                format!("HAProxy has no backend \"{}\" (it answered `{cmd}` with \"No such backend.\"): check balancer.backend", t.backend),
            )),
            Err(e) if e.contains("\"No such server.\"") => Err(self.error(
                t,
                format!("backend \"{}\" has no server \"{}\" (HAProxy answered `{cmd}` with \"No such server.\"): set the member's lb_name to its server name", t.backend, t.server),
            )),
            Err(e) => Err(self.error(t, e)),
        }
    }

    /// `show stat` and `show servers state` of one backend.
    async fn backend_status(
        &self,
        t: &Target,
    ) -> DriverResult<(Vec<StatRow>, HashMap<(String, String), AdminRow>)> {
        self.backend_status_of(&t.backend)
            .await
            .map_err(|e| self.error(t, e))
    }

    /// `show stat` and `show servers state` of `backend`; the error is about the backend,
    /// for [`Self::error`] to say which member it concerns.
    async fn backend_status_of(
        &self,
        backend: &str,
    ) -> Result<(Vec<StatRow>, HashMap<(String, String), AdminRow>), String> {
        let cmd = format!("show stat {backend} 4 -1");
        let text = self.api.command(&cmd).await?;
        let rows = status::parse_stat(&text).map_err(|first| {
            if first.contains("No such proxy") || first.contains("No such backend") {
                format!("HAProxy has no backend \"{backend}\" (it answered `{cmd}` with {first}): check balancer.backend")
            } else {
                format!("HAProxy answered `{cmd}` with {first}")
            }
        })?;
        let cmd = format!("show servers state {backend}");
        let text = self.api.command(&cmd).await?;
        let admin = status::parse_servers_state(&text)
            .map_err(|first| format!("HAProxy answered `{cmd}` with {first}"))?;
        Ok((rows, admin))
    }

    fn member_state(
        &self,
        t: &Target,
        rows: &[StatRow],
        admin: &HashMap<(String, String), AdminRow>,
    ) -> DriverResult<(MemberLbState, Option<AdminRow>)> {
        let Some(row) = rows
            .iter()
            .find(|r| r.backend == t.backend && r.server == t.server)
        else {
            let names: Vec<&str> = rows.iter().map(|r| r.server.as_str()).collect();
            return Err(self.error(
                t,
                format!(
                    "backend \"{}\" has no server \"{}\" (its servers: {}): set the member's lb_name to its server name",
                    t.backend,
                    t.server,
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ),
            ));
        };
        let a = admin.get(&(t.backend.clone(), t.server.clone())).copied();
        Ok((status::to_member_state(row, a), a))
    }

    async fn read(&self, t: &Target) -> DriverResult<(MemberLbState, Option<AdminRow>, StatRow)> {
        let (rows, admin) = self.backend_status(t).await?;
        let (st, a) = self.member_state(t, &rows, &admin)?;
        let row = rows
            .into_iter()
            .find(|r| r.backend == t.backend && r.server == t.server)
            .unwrap_or_default();
        Ok((st, a, row))
    }

    /// Writes `show servers state` to the configured state file (atomically), so that an
    /// HAProxy reload restores what ebb set.
    async fn save_state_file(&self, t: &Target) -> DriverResult<()> {
        let Some(path) = &self.settings.state_file else {
            return Ok(());
        };
        let _one_at_a_time = self.state_file_lock.lock().await;
        let text = self
            .api
            .command("show servers state")
            .await
            .map_err(|e| self.error(t, e))?;
        if status::parse_servers_state(&text).is_err() {
            return Err(self.error(
                t,
                format!(
                    "HAProxy answered `show servers state` with \"{}\"; the state file {} was not written",
                    text.lines().next().unwrap_or("").trim(),
                    path.display()
                ),
            ));
        }
        let tmp = path.with_extension(format!("ebb-tmp-{}", std::process::id()));
        let write = async {
            tokio::fs::write(&tmp, text.as_bytes()).await?;
            tokio::fs::rename(&tmp, path).await
        };
        write.await.map_err(|e| {
            self.error(
                t,
                format!(
                    "writing the server state file {} failed: {e}; an HAProxy reload now would forget the member's admin state (fix the path or its permissions: balancer.state_file)",
                    path.display()
                ),
            )
        })
    }
}

#[async_trait]
impl Balancer for Haproxy {
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        let t = self.target(member);
        self.read(&t).await.map(|(s, _, _)| s)
    }

    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        // One pair of requests per backend, not per member.
        let mut cache: HashMap<String, Result<(Vec<StatRow>, HashMap<_, _>), String>> =
            HashMap::new();
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            let t = self.target(m);
            if !cache.contains_key(&t.backend) {
                let r = self.backend_status_of(&t.backend).await;
                cache.insert(t.backend.clone(), r);
            }
            out.push(match &cache[&t.backend] {
                Ok((rows, admin)) => self.member_state(&t, rows, admin).map(|(s, _)| s),
                Err(e) => Err(self.error(&t, e)),
            });
        }
        out
    }

    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        let t = self.target(member);
        let (_, a, _) = self.read(&t).await?;
        if a.is_some_and(|a| a.admin_state & admin::FMAINT != 0) {
            // Held (or stopped): MAINT already takes no new connections, not even
            // persistent ones, and lets established ones finish; `state drain` would
            // release the hold.
            return Ok(());
        }
        self.action(&t, format!("set server {} state drain", t.path()))
            .await?;
        self.save_state_file(&t).await
    }

    async fn stop(&self, member: &Member) -> DriverResult<()> {
        let t = self.target(member);
        self.action(&t, format!("set server {} state maint", t.path()))
            .await?;
        self.action(&t, format!("shutdown sessions server {}", t.path()))
            .await?;
        self.save_state_file(&t).await
    }

    async fn start(&self, member: &Member) -> DriverResult<()> {
        let t = self.target(member);
        let (_, a, _) = self.read(&t).await?;
        if a.is_some_and(|a| {
            a.admin_state & admin::FMAINT != 0 && a.check_state & status::CHECK_CONFIGURED != 0
        }) {
            // Checks are paused in MAINT and HAProxy would put the server straight back UP
            // on its last (stale) result; mark it down so that a fresh check must pass
            // before it takes traffic. (In DRAIN the checks kept running: their verdict
            // is current.)
            self.action(&t, format!("set server {} health down", t.path()))
                .await?;
        }
        self.action(&t, format!("set server {} state ready", t.path()))
            .await?;
        self.save_state_file(&t).await?;
        let started = Instant::now();
        loop {
            let (st, _, row) = self.read(&t).await?;
            let status = row.status.trim();
            if st.state == HostState::Started && (status == "UP" || status == "no check") {
                return Ok(());
            }
            if started.elapsed() >= self.settings.start_timeout {
                // Not proven healthy: back out of rotation, so that it does not slip in
                // unverified when a check finally passes; the start stays owed.
                let back = self
                    .action(&t, format!("set server {} state maint", t.path()))
                    .await;
                let check = if row.check_status.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", last health check {}{}",
                        row.check_status,
                        if row.last_chk.is_empty() {
                            String::new()
                        } else {
                            format!(" \"{}\"", row.last_chk)
                        }
                    )
                };
                return Err(self.error(
                    &t,
                    format!(
                        "not UP {} after `set server {} state ready`: HAProxy shows {}{check}; {} (balancer.start_timeout sets the wait). Fix the member, then `ebb resume`",
                        format_duration(self.settings.start_timeout),
                        t.path(),
                        row.status,
                        match back {
                            Ok(()) => "it was put back in MAINT".to_string(),
                            Err(e) => format!("putting it back in MAINT failed too: {e}"),
                        }
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        let t = self.target(member);
        let (_, a, row) = self.read(&t).await?;
        let maint = match a {
            Some(a) => a.admin_state & (admin::FMAINT | admin::CMAINT) != 0,
            None => row.status.starts_with("MAINT"),
        };
        Ok(Some(if maint {
            HostState::Stopped
        } else {
            HostState::Started
        }))
    }

    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        let t = self.target(member);
        if state == HostState::Stopped {
            let (_, a, _) = self.read(&t).await?;
            let in_maint = a.is_some_and(|a| a.admin_state & admin::FMAINT != 0);
            if !in_maint {
                self.action(&t, format!("set server {} state maint", t.path()))
                    .await?;
            }
        }
        // `started` changes nothing live (taking traffic again is `start`'s job); either
        // way the state file now says what a reload must restore.
        self.save_state_file(&t).await
    }

    async fn wait_change(&self, _member: &Member, max: Duration) {
        tokio::time::sleep(max.min(Duration::from_millis(200))).await;
    }

    async fn preflight(&self, members: &[Member]) -> Vec<String> {
        let mut warnings = Vec::new();
        match &self.settings.state_file {
            None if self.settings.hold => warnings.push(format!(
                "hold is on but balancer.state_file is not set: HAProxy forgets runtime admin states on reload, so a reload while a member is held would put it back into service. Configure `server-state-file PATH` (global) and `load-server-state-from-file global` (defaults) in HAProxy, and set state_file = \"PATH\" (socket {})",
                self.api.addr()
            )),
            Some(p) => {
                let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
                if dir.is_some_and(|d| !d.is_dir()) {
                    warnings.push(format!(
                        "balancer.state_file {}: its directory does not exist; ebb could not save the server state for an HAProxy reload",
                        p.display()
                    ));
                }
            }
            None => {}
        }
        let _ = members;
        warnings
    }

    async fn member_errors(&self, member: &Member) -> DriverResult<Option<Counters>> {
        let t = self.target(member);
        self.read(&t).await.map(|(_, _, row)| Some(row.counters))
    }

    async fn preflight_problems(&self, _members: &[Member]) -> Vec<String> {
        match self.api.command("show cli level").await {
            Ok(level) if level.trim() == "operator" || level.trim() == "user" => vec![format!(
                "the HAProxy socket {} is at level \"{}\": ebb needs `level admin` on its `stats socket` line to drain, stop and start servers (a run would fail at its first hold or drain)",
                self.api.addr(),
                level.trim()
            )],
            // admin; or an older HAProxy without `show cli level`, or unreachable (the
            // state check says so).
            _ => Vec::new(),
        }
    }
}
