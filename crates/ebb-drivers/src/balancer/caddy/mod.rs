//! The `caddy` balancer driver: Caddy v2 through its admin API. A member leaves by its
//! upstream leaving the pool's `reverse_proxy` handler (in-flight requests finish) and
//! comes back with the exact same upstream object at the same place.
//!
//! ```toml
//! [balancer]
//! driver = "caddy"
//! admin = "http://127.0.0.1:2019"   # the default
//! handler_id = "web"                # the "@id" of the pool's reverse_proxy handler
//! timeout = "10s"                   # bound on each admin API request
//! ```
//!
//! | ebb | admin API |
//! |---|---|
//! | state | `GET /config/` (is the upstream in the handler, or parked?) and `GET /reverse_proxy/upstreams` (`num_requests`) |
//! | drainstop, hold | one `PATCH .../routes` (If-Match): the upstream out of the handler, into a never-matching parking route |
//! | start | one `PATCH .../routes` (If-Match): the exact upstream back where it stood, the parking route gone |
//! | stop | refused at `ebb check`: Caddy cannot cut one upstream's requests |
//!
//! See docs/caddy.md for what each reload does to connections, measured.

pub mod config;

use crate::http::request;
use async_trait::async_trait;
use config::{dial_of, Snapshot};
use ebb_config::{format_duration, ConfigErrors, Context, Key, Kind};
use ebb_engine::interfaces::{
    Balancer, DriverError, DriverResult, HostState, MemberLbState, Transport,
};
use ebb_engine::plan::{DrainMode, Member, OnTimeout, Plan};
use ebb_engine::registry::BalancerDriver;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The keys of `[balancer]` for the caddy driver.
pub const KEYS: &[Key] = &[
    Key::new(
        "admin",
        Kind::String,
        "Caddy's admin API (default \"http://127.0.0.1:2019\")",
    ),
    Key::required(
        "handler_id",
        Kind::String,
        "the \"@id\" of the reverse_proxy handler whose upstreams are the members",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "bound on each admin API request (default \"10s\")",
    ),
];

/// The caddy driver's descriptor, registered in [`crate::registry`].
pub struct CaddyDriver;

impl BalancerDriver for CaddyDriver {
    fn name(&self) -> &'static str {
        "caddy"
    }

    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }

    fn validate(&self, plan: &Plan, cx: &mut Context) {
        CaddySettings::read(plan, cx);
    }

    fn build(
        &self,
        plan: &Plan,
        _: &[Arc<dyn Transport>],
    ) -> Result<Arc<dyn Balancer>, ConfigErrors> {
        Ok(Arc::new(Caddy::from_plan(plan)?))
    }
}

/// Default admin endpoint of Caddy.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:2019";

/// `[balancer]` for the caddy driver.
#[derive(Debug, Clone)]
pub struct CaddySettings {
    /// The admin API, `http://HOST:PORT`.
    pub admin: String,
    /// The `@id` of the pool's `reverse_proxy` handler.
    pub handler_id: String,
    /// Bound on each admin API request.
    pub timeout: Duration,
    /// The runbook's drain timeout (for the stream_close_delay advice).
    pub drain_timeout: Duration,
    /// Whether a drain timeout would ask for a stop (which Caddy cannot do).
    pub on_timeout_stop: bool,
}

impl CaddySettings {
    /// Reads and validates `[balancer]`; every problem at once, with file, line and key.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        super::read(plan, Self::read)
    }

    /// Reads `[balancer]`, every problem into `cx`; `mode = "stop"` is refused.
    fn read(plan: &Plan, cx: &mut Context) -> Option<Self> {
        let mut s = super::section(plan, "caddy", KEYS);
        let admin = s
            .str(cx, "admin")
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        if let Err(e) = crate::http::parse_url(&admin) {
            s.error(cx, "admin", e);
        }
        let handler_id = s.str(cx, "handler_id");
        if handler_id.is_none() && !s.has("handler_id") {
            s.missing(cx, "the caddy driver needs handler_id = \"<@id>\": the \"@id\" of the reverse_proxy handler whose upstreams are the members");
        }
        let timeout = s.duration(cx, "timeout", Duration::from_secs(10));
        s.finish(cx);
        if plan.runbook.drain.mode == DrainMode::Stop {
            cx.err("runbook.drain.mode", "\"stop\" is not possible with Caddy: its admin API cannot cut the requests of one upstream (a config change lets them finish). Use mode = \"drainstop\"");
        }
        Some(CaddySettings {
            admin: admin.trim_end_matches('/').to_string(),
            handler_id: handler_id?,
            timeout,
            drain_timeout: plan.runbook.drain.timeout,
            on_timeout_stop: plan.runbook.drain.on_timeout == OnTimeout::Stop,
        })
    }
}

/// Drives Caddy through its admin API.
pub struct Caddy {
    settings: CaddySettings,
    /// One read-change at a time (members drained in parallel).
    change_lock: tokio::sync::Mutex<()>,
}

/// Where the member's upstream is.
enum Place {
    /// In the handler, at this index (and maybe also parked, after an interrupted change).
    InHandler(usize),
    /// Parked by ebb.
    Parked,
}

impl Caddy {
    /// Reads `[balancer]` for the caddy driver.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        CaddySettings::from_plan(plan).map(|settings| Caddy {
            settings,
            change_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn error(&self, member: &Member, what: impl std::fmt::Display) -> DriverError {
        DriverError::new(format!(
            "member \"{}\" (Caddy reverse_proxy \"{}\" via {}): {what}",
            member.name, self.settings.handler_id, self.settings.admin
        ))
    }

    /// One admin API request; a non-2xx answer is an error with Caddy's own message.
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<String, String> {
        self.exchange(method, path, body, &[]).await.map(|r| r.body)
    }

    /// [`Self::call`] with headers, returning the whole response.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, String)],
    ) -> Result<crate::http::Response, String> {
        let url = format!("{}{path}", self.settings.admin);
        let r = request(method, &url, body, headers, self.settings.timeout)
            .await
            .map_err(|e| {
                if e.contains("cannot connect") {
                    format!("{e}: is Caddy running with its admin endpoint there (balancer.admin)?")
                } else {
                    e
                }
            })?;
        if (200..300).contains(&r.status) {
            Ok(r)
        } else {
            let msg = serde_json::from_str::<Value>(&r.body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from))
                .unwrap_or_else(|| r.body.trim().to_string());
            Err(format!(
                "Caddy answered {method} {path} with {}: {msg}",
                r.status
            ))
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, String> {
        let text = self.call("GET", "/config/", None).await?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| format!("GET /config/ did not return JSON: {e}"))?;
        Snapshot::find(&config, &self.settings.handler_id)
    }

    /// The member's dial: its `address`, else its `lb_name`, whichever the handler (or a
    /// parking route) has.
    fn dial<'a>(&self, member: &'a Member, s: &Snapshot) -> DriverResult<&'a str> {
        for d in [member.address.as_str(), member.lb_name.as_str()] {
            if s.position(d).is_some() || s.parked(d).is_some() {
                return Ok(d);
            }
        }
        let dials: Vec<&str> = s.upstreams.iter().filter_map(dial_of).collect();
        Err(self.error(
            member,
            format!(
                "the handler has no upstream with \"dial\": \"{}\" (or its lb_name \"{}\"); its upstreams: {}. Set the member's address (or lb_name) to its upstream's dial",
                member.address,
                member.lb_name,
                if dials.is_empty() { "none".to_string() } else { dials.join(", ") }
            ),
        ))
    }

    fn place(s: &Snapshot, dial: &str) -> Place {
        match s.position(dial) {
            Some(i) => Place::InHandler(i),
            None => Place::Parked,
        }
    }

    /// `num_requests` of every upstream Caddy knows, by address.
    async fn requests(&self) -> Result<Vec<(String, u64)>, String> {
        let text = self.call("GET", "/reverse_proxy/upstreams", None).await?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("GET /reverse_proxy/upstreams did not return JSON: {e}"))?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| {
                        Some((
                            u.get("address")?.as_str()?.to_string(),
                            u.get("num_requests")?.as_u64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn member_state(
        &self,
        member: &Member,
        s: &Snapshot,
        requests: &[(String, u64)],
    ) -> DriverResult<MemberLbState> {
        let dial = self.dial(member, s)?;
        let n = requests.iter().find(|(a, _)| a == dial).map(|(_, n)| *n);
        let count = n.map_or_else(String::new, |n| format!(", {n} request(s)"));
        Ok(match Self::place(s, dial) {
            Place::InHandler(i) => MemberLbState {
                state: HostState::Started,
                healthy: None,
                active_connections: n,
                detail: format!("upstream {} of {}{count}", i + 1, s.upstreams.len()),
            },
            Place::Parked => MemberLbState {
                state: if n.unwrap_or(0) > 0 {
                    HostState::Draining
                } else {
                    HostState::Stopped
                },
                healthy: None,
                active_connections: n.or(Some(0)),
                detail: format!("out of the handler (parked by ebb){count}"),
            },
        })
    }

    /// Changes the routes of the handler's server in one config change (one reload):
    /// read them with their ETag, let `edit` return the new routes (or `None`: nothing to
    /// do), and PATCH them with If-Match, so a change someone made meanwhile is never
    /// overwritten (ebb reads again and retries).
    async fn change<F>(&self, member: &Member, edit: F) -> DriverResult<()>
    where
        F: Fn(&Snapshot, &str) -> DriverResult<Option<Value>>,
    {
        let _one = self.change_lock.lock().await;
        let mut last = String::new();
        for _ in 0..5 {
            let located = self.snapshot().await.map_err(|e| self.error(member, e))?;
            let path = located.location.routes.url();
            let r = self
                .exchange("GET", &path, None, &[])
                .await
                .map_err(|e| self.error(member, e))?;
            let routes: Value = serde_json::from_str(&r.body)
                .map_err(|e| self.error(member, format!("GET {path} did not return JSON: {e}")))?;
            let s = Snapshot::new(routes, located.location.clone(), &self.settings.handler_id)
                .map_err(|e| self.error(member, e))?;
            let dial = self.dial(member, &s)?.to_string();
            let Some(new) = edit(&s, &dial)? else {
                return Ok(());
            };
            let mut headers = Vec::new();
            if let Some(etag) = r.header("etag") {
                headers.push(("if-match", etag.to_string()));
            }
            match self
                .exchange("PATCH", &path, Some(&new.to_string()), &headers)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.contains(" with 412:") => last = e,
                Err(e) => return Err(self.error(member, e)),
            }
        }
        Err(self.error(
            member,
            format!("Caddy's config kept changing under ebb (5 tries): {last}"),
        ))
    }

    /// Takes the member's upstream out of the handler into a parking route (its requests
    /// stay counted, its exact settings kept in Caddy's config).
    async fn park(&self, member: &Member) -> DriverResult<()> {
        let id = self.settings.handler_id.clone();
        self.change(member, |s, dial| {
            Ok(s.position(dial).map(|i| s.with_parked(&id, i)))
        })
        .await
    }

    /// Puts the parked upstream back where it stood, exactly as it was.
    async fn unpark(&self, member: &Member) -> DriverResult<()> {
        self.change(member, |s, dial| Ok(s.with_returned(dial)))
            .await
    }
}

#[async_trait]
impl Balancer for Caddy {
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        let s = self.snapshot().await.map_err(|e| self.error(member, e))?;
        let requests = self.requests().await.map_err(|e| self.error(member, e))?;
        self.member_state(member, &s, &requests)
    }

    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        let both = match self.snapshot().await {
            Ok(s) => self.requests().await.map(|r| (s, r)),
            Err(e) => Err(e),
        };
        members
            .iter()
            .map(|m| match &both {
                Ok((s, r)) => self.member_state(m, s, r),
                Err(e) => Err(self.error(m, e)),
            })
            .collect()
    }

    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        self.park(member).await
    }

    async fn stop(&self, member: &Member) -> DriverResult<()> {
        // Only reached by on_timeout = "stop": out of rotation it is; cutting is not
        // something Caddy can do.
        self.park(member).await?;
        let st = self.state(member).await?;
        match st.active_connections {
            Some(n) if n > 0 => Err(self.error(
                member,
                format!("the drain timed out with {n} request(s) still running, and Caddy cannot cut one upstream's requests: the member is out of rotation and stays held. Wait for them or end them on the member, then `ebb resume`; set runbook.drain.on_timeout = \"abort\" or \"wait\" for Caddy"),
            )),
            _ => Ok(()),
        }
    }

    async fn start(&self, member: &Member) -> DriverResult<()> {
        self.unpark(member).await
    }

    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        let s = self.snapshot().await.map_err(|e| self.error(member, e))?;
        let dial = self.dial(member, &s)?;
        Ok(Some(match Self::place(&s, dial) {
            Place::InHandler(_) => HostState::Started,
            Place::Parked => HostState::Stopped,
        }))
    }

    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        // Caddy has one place for both: out of the handler is what a restart (with
        // --resume) comes back with.
        match state {
            HostState::Stopped => self.park(member).await,
            _ => self.unpark(member).await,
        }
    }

    async fn wait_change(&self, _member: &Member, max: Duration) {
        tokio::time::sleep(max.min(Duration::from_millis(200))).await;
    }

    async fn preflight(&self, _members: &[Member]) -> Vec<String> {
        let mut w = Vec::new();
        let admin = &self.settings.admin;
        match self.call("GET", "/debug/pprof/cmdline", None).await {
            Ok(cmdline) if cmdline.split('\0').any(|a| a == "--resume") => {}
            Ok(cmdline) => w.push(format!(
                "Caddy at {admin} runs as `{}`, without --resume: a restart of Caddy loads that config again and puts drained and held members back into service. Run it as `caddy run --resume` (Debian's caddy-api.service does), so that it starts from the config it autosaved, ebb's changes included",
                cmdline.replace('\0', " ").trim()
            )),
            Err(e) => w.push(format!(
                "ebb cannot tell whether Caddy at {admin} runs with --resume ({e}); without it a restart of Caddy puts drained and held members back into service"
            )),
        }
        if let Ok(v) = self.call("GET", "/config/admin/config/persist", None).await {
            if v.trim() == "false" {
                w.push(format!("Caddy at {admin} has admin.config.persist = false: it does not autosave its config, so a restart forgets drained and held members"));
            }
        }
        let advice = format!(
            "every drain and every return is a config change, and each config change closes every WebSocket (and other upgraded) connection through Caddy, on every member, not only the one drained (measured with Caddy 2.6.2). Caddy 2.7 and later keep them open for stream_close_delay: set \"stream_close_delay\": \"{}\" (at least the drain timeout) on the reverse_proxy handler \"{}\"; Caddy 2.6 has no such setting, so its WebSocket clients must reconnect",
            format_duration(self.settings.drain_timeout),
            self.settings.handler_id
        );
        // An unreachable Caddy or a wrong handler_id: the state check reports it.
        if let Ok(s) = self.snapshot().await {
            match &s.stream_close_delay {
                None => w.push(advice),
                Some(Ok(d)) if *d < self.settings.drain_timeout => w.push(format!(
                    "stream_close_delay on \"{}\" is {}, shorter than the drain timeout {}: {advice}",
                    self.settings.handler_id,
                    format_duration(*d),
                    format_duration(self.settings.drain_timeout)
                )),
                _ => {}
            }
        }
        if self.settings.on_timeout_stop {
            w.push("runbook.drain.on_timeout is \"stop\", but Caddy cannot cut one upstream's requests: a drain that times out fails instead (the member stays out and held). Set on_timeout = \"abort\" or \"wait\" to say so".to_string());
        }
        w
    }
}
