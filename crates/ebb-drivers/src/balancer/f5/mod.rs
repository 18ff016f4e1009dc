//! The `f5` balancer driver: F5 BIG-IP LTM through iControl REST, with the pool member
//! operations an operator uses in the GUI (Enabled / Disabled / Forced Offline).
//!
//! ```toml
//! [balancer]
//! driver = "f5"
//! url = "https://bigip.corp.example"     # the management address
//! partition = "Common"                    # the default
//! pool = "cas_https"
//! username = "ebb-maint"
//! password_env = "EBB_F5_PASSWORD"        # the default: the password is never in the file
//! ca_file = "bigip-ca.pem"                # or insecure_tls = true
//! timeout = "10s"                         # bound on each request
//! ```
//!
//! | ebb | iControl REST |
//! |---|---|
//! | state | `GET .../members/~P~NAME` (`session`, `state`) and `.../stats` (`serverside.curConns`, `status.availabilityState`) |
//! | drainstop, hold | `PATCH {"session": "user-disabled"}` (active and persistent connections go on) |
//! | stop | `PATCH {"state": "user-down", "session": "user-disabled"}`, then `DELETE /mgmt/tm/sys/connection?options=ss-server-addr+A+ss-server-port+P` |
//! | start | `PATCH {"state": "user-up", "session": "user-enabled"}` |
//! | restore initial state stopped | the `session` and `state` found first: Forced Offline again, or Disabled |
//!
//! Never run against a real BIG-IP: see docs/f5.md.

pub mod client;

use crate::tls::TlsOptions;
use async_trait::async_trait;
use client::{Client, Connection, RestError};
use ebb_config::{ConfigErrors, Context, Key, Kind};
use ebb_engine::interfaces::{
    Balancer, DriverError, DriverResult, HostState, MemberLbState, Transport,
};
use ebb_engine::plan::{Member, Plan};
use ebb_engine::registry::BalancerDriver;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The keys of `[balancer]` for the f5 driver.
pub const KEYS: &[Key] = &[
    Key::required(
        "url",
        Kind::String,
        "the BIG-IP management URL, https://HOST[:PORT]",
    ),
    Key::new(
        "partition",
        Kind::String,
        "the pool's partition (default \"Common\")",
    ),
    Key::required("pool", Kind::String, "the LTM pool of the members"),
    Key::required("username", Kind::String, "the iControl REST user"),
    Key::new(
        "password_env",
        Kind::String,
        "the environment variable holding the password (default \"EBB_F5_PASSWORD\")",
    ),
    Key::new(
        "ca_file",
        Kind::String,
        "PEM file of the CA of the management certificate",
    ),
    Key::new(
        "insecure_tls",
        Kind::Bool,
        "accept any management certificate (default false)",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "bound on each request (default \"10s\")",
    ),
];

/// The f5 driver's descriptor, registered in [`crate::registry`].
pub struct F5Driver;

impl BalancerDriver for F5Driver {
    fn name(&self) -> &'static str {
        "f5"
    }

    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }

    fn validate(&self, plan: &Plan, cx: &mut Context) {
        F5Settings::read(plan, cx);
    }

    fn build(
        &self,
        plan: &Plan,
        _: &[Arc<dyn Transport>],
    ) -> Result<Arc<dyn Balancer>, ConfigErrors> {
        Ok(Arc::new(F5::from_plan(plan)?))
    }
}

/// Where ebb finds the password unless `password_env` says otherwise.
pub const DEFAULT_PASSWORD_ENV: &str = "EBB_F5_PASSWORD";

/// `[balancer]` for the f5 driver.
#[derive(Debug, Clone)]
pub struct F5Settings {
    /// Login and transport.
    pub connection: Connection,
    /// The pool's partition.
    pub partition: String,
    /// The pool.
    pub pool: String,
}

impl F5Settings {
    /// Reads and validates `[balancer]`; every problem at once, with file, line and key.
    /// The password is read only when ebb logs in, so `ebb plan` needs none.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        super::read(plan, Self::read)
    }

    fn read(plan: &Plan, cx: &mut Context) -> Option<Self> {
        let mut s = super::section(plan, "f5", KEYS);
        let url = s.str(cx, "url");
        match &url {
            Some(u) if !u.starts_with("https://") && !u.starts_with("http://") => s.error(
                cx,
                "url",
                format!("expected the BIG-IP management URL, https://HOST, found \"{u}\""),
            ),
            Some(u) => {
                if let Err(e) = crate::http::parse_url(u) {
                    s.error(cx, "url", e);
                }
            }
            None if !s.has("url") => s.missing(
                cx,
                "the f5 driver needs url = \"https://<BIG-IP management address>\"",
            ),
            None => {}
        }
        let partition = s
            .str(cx, "partition")
            .unwrap_or_else(|| "Common".to_string());
        let pool = s.str(cx, "pool");
        if pool.is_none() && !s.has("pool") {
            s.missing(cx, "the f5 driver needs pool = \"<LTM pool name>\"");
        }
        let username = s.str(cx, "username");
        if username.is_none() && !s.has("username") {
            s.missing(cx, "the f5 driver needs username = \"<BIG-IP user>\" (the password comes from the environment: password_env)");
        }
        let password_env = s
            .str(cx, "password_env")
            .unwrap_or_else(|| DEFAULT_PASSWORD_ENV.to_string());
        let base = plan
            .file
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let ca_file = s.str(cx, "ca_file").map(|p| base.join(p));
        let insecure = s.bool(cx, "insecure_tls", false);
        if insecure && ca_file.is_some() {
            s.error(
                cx,
                "insecure_tls",
                "set either ca_file or insecure_tls, not both",
            );
        }
        let timeout = s.duration(cx, "timeout", Duration::from_secs(10));
        s.finish(cx);
        for (i, m) in plan.members.iter().enumerate() {
            if member_name(m).is_none() {
                cx.err(
                    &format!("member[{i}].lb_name"),
                    format!(
                        "member \"{}\": its pool member name is not known: set lb_name = \"ADDRESS:PORT\" (the name BIG-IP shows in pool {}), or give it an address with the port",
                        m.name,
                        pool.as_deref().unwrap_or("?")
                    ),
                );
            }
        }
        Some(F5Settings {
            connection: Connection {
                url: url?.trim_end_matches('/').to_string(),
                username: username?,
                password_env,
                tls: TlsOptions {
                    insecure,
                    ca_file,
                    client_cert: None,
                },
                timeout,
            },
            partition,
            pool: pool?,
        })
    }
}

/// The member's name in the pool: its `lb_name` when it has a port (`10.0.0.11:443`),
/// else its `address` when that has one.
fn member_name(m: &Member) -> Option<&str> {
    [m.lb_name.as_str(), m.address.as_str()]
        .into_iter()
        .find(|n| port_of(n).is_some())
}

/// The port of a pool member name: `ADDR:PORT`, or `V6.PORT` for IPv6 addresses.
fn port_of(name: &str) -> Option<(&str, &str)> {
    let split = if name.matches(':').count() > 1 {
        name.rsplit_once('.')
    } else {
        name.rsplit_once(':')
    };
    split.filter(|(a, p)| !a.is_empty() && !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Drives a BIG-IP pool through iControl REST.
pub struct F5 {
    settings: F5Settings,
    client: Client,
    /// Per pool member name, the `(session, state)` the first look found, before ebb
    /// changed anything: what `set_initial_state(Stopped)` puts back exactly.
    found: Mutex<HashMap<String, (String, String)>>,
}

/// `state: user-down`: Forced Offline (the GUI's word), whatever the session says.
const FORCED_OFFLINE: &str = "user-down";

/// What BIG-IP says of one pool member.
struct Observed {
    session: String,
    state: String,
    address: String,
    conns: Option<u64>,
    availability: String,
}

impl F5 {
    /// Reads `[balancer]` for the f5 driver.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        F5Settings::from_plan(plan).map(|settings| F5 {
            client: Client::new(settings.connection.clone()),
            settings,
            found: Mutex::new(HashMap::new()),
        })
    }

    fn pool_path(&self) -> String {
        format!(
            "/mgmt/tm/ltm/pool/~{}~{}",
            path_segment(&self.settings.partition),
            path_segment(&self.settings.pool)
        )
    }

    fn member_path(&self, name: &str) -> String {
        format!(
            "{}/members/~{}~{}",
            self.pool_path(),
            path_segment(&self.settings.partition),
            path_segment(name)
        )
    }

    fn full_pool(&self) -> String {
        format!("/{}/{}", self.settings.partition, self.settings.pool)
    }

    fn name<'a>(&self, member: &'a Member) -> DriverResult<&'a str> {
        member_name(member).ok_or_else(|| {
            self.error(
                member,
                "",
                "its pool member name is not known: set lb_name = \"ADDRESS:PORT\"",
            )
        })
    }

    fn error(&self, member: &Member, name: &str, what: impl std::fmt::Display) -> DriverError {
        DriverError::new(format!(
            "member \"{}\" (BIG-IP pool member {}{} at {}): {what}",
            member.name,
            self.full_pool(),
            if name.is_empty() {
                String::new()
            } else {
                format!(" {name}")
            },
            self.settings.connection.url
        ))
    }

    /// A [`RestError`] as a sentence about `member`: 401, 404 and 409 say what to do.
    async fn explain(&self, member: &Member, name: &str, e: RestError) -> DriverError {
        let said = e.to_string();
        let said = said.trim_end_matches('.');
        let what = match e.status {
            401 => format!(
                "{said}. BIG-IP refused ebb's credentials (user \"{}\"): check balancer.username and the password in ${}, and that the user may use iControl REST",
                self.settings.connection.username,
                self.settings.connection.password_env
            ),
            404 if e.message.contains("Pool Member") => {
                let names = self.member_names().await;
                format!(
                    "{said}. Pool {} has no member \"{name}\" (its members: {names}): set the member's lb_name to its pool member name",
                    self.full_pool()
                )
            }
            404 => format!(
                "{said}. BIG-IP has no pool {}: check balancer.pool and balancer.partition",
                self.full_pool()
            ),
            409 => format!(
                "{said}. BIG-IP refused the change because of a conflicting one (a config sync, a transaction or another client changing the same object): nothing was changed; `ebb resume` tries again"
            ),
            _ => said.to_string(),
        };
        self.error(member, name, what)
    }

    /// The pool's member names, for a message.
    async fn member_names(&self) -> String {
        match self
            .client
            .call("GET", &format!("{}/members", self.pool_path()), None)
            .await
        {
            Ok(v) => {
                let names: Vec<&str> = v
                    .get("items")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|m| m.get("name")?.as_str()).collect())
                    .unwrap_or_default();
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            }
            Err(e) => format!("unknown: {e}"),
        }
    }

    async fn observe(&self, member: &Member) -> DriverResult<(String, Observed)> {
        let name = self.name(member)?.to_string();
        let path = self.member_path(&name);
        let m = match self.client.call("GET", &path, None).await {
            Ok(v) => v,
            Err(e) => return Err(self.explain(member, &name, e).await),
        };
        let stats = match self
            .client
            .call("GET", &format!("{path}/stats"), None)
            .await
        {
            Ok(v) => v,
            Err(e) => return Err(self.explain(member, &name, e).await),
        };
        // {"entries": {"https://localhost/.../stats": {"nestedStats": {"entries": {...}}}}}
        let fields = stats
            .get("entries")
            .and_then(Value::as_object)
            .and_then(|o| o.values().next())
            .and_then(|v| v.pointer("/nestedStats/entries"))
            .cloned()
            .unwrap_or(Value::Null);
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Ok((
            name,
            Observed {
                session: text(&m, "session"),
                state: text(&m, "state"),
                address: text(&m, "address"),
                conns: fields
                    .pointer("/serverside.curConns/value")
                    .and_then(Value::as_u64),
                availability: fields
                    .pointer("/status.availabilityState/description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            },
        ))
    }

    fn to_state(o: &Observed) -> MemberLbState {
        let out = o.session == "user-disabled" || o.state == FORCED_OFFLINE;
        let conns = o
            .conns
            .map_or_else(String::new, |c| format!(", {c} connection(s)"));
        let detail = format!(
            "session {}, state {}{}{conns}",
            o.session,
            o.state,
            if o.availability.is_empty() {
                String::new()
            } else {
                format!(" ({})", o.availability)
            }
        );
        MemberLbState {
            state: match (out, o.conns.unwrap_or(0)) {
                (false, _) => HostState::Started,
                (true, 0) => HostState::Stopped,
                (true, _) => HostState::Draining,
            },
            healthy: match o.availability.as_str() {
                "available" => Some(true),
                "offline" => Some(false),
                _ => None,
            },
            active_connections: o.conns,
            detail,
        }
    }

    async fn patch(&self, member: &Member, name: &str, body: Value) -> DriverResult<()> {
        match self
            .client
            .call("PATCH", &self.member_path(name), Some(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.explain(member, name, e).await),
        }
    }
}

/// A session as BIG-IP reported it, in the words a PATCH takes.
fn user_session(reported: &str) -> &'static str {
    if reported == "user-disabled" {
        "user-disabled"
    } else {
        "user-enabled"
    }
}

/// A name in an iControl REST path: everything but unreserved characters and `:` escaped.
fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Balancer for F5 {
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        self.observe(member).await.map(|(_, o)| Self::to_state(&o))
    }

    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        let (name, o) = self.observe(member).await?;
        if o.session == "user-disabled" || o.state == FORCED_OFFLINE {
            // Held (or forced offline) already: nothing new reaches it.
            return Ok(());
        }
        self.patch(member, &name, json!({"session": "user-disabled"}))
            .await
    }

    async fn stop(&self, member: &Member) -> DriverResult<()> {
        let (name, o) = self.observe(member).await?;
        self.patch(
            member,
            &name,
            json!({"state": FORCED_OFFLINE, "session": "user-disabled"}),
        )
        .await?;
        let port = port_of(&name).map(|(_, p)| p).unwrap_or("0");
        let addr = if o.address.is_empty() {
            port_of(&name).map(|(a, _)| a).unwrap_or("")
        } else {
            o.address.as_str()
        };
        // The address may carry a route domain (`10.0.0.11%2`): tmsh takes it as is.
        let path = format!(
            "/mgmt/tm/sys/connection?options=ss-server-addr+{}+ss-server-port+{port}",
            path_segment(addr)
        );
        match self.client.call("DELETE", &path, None).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(
                member,
                &name,
                format!("forced offline, but deleting its server-side connections failed: {e}"),
            )),
        }
    }

    async fn start(&self, member: &Member) -> DriverResult<()> {
        let name = self.name(member)?;
        self.patch(
            member,
            name,
            json!({"state": "user-up", "session": "user-enabled"}),
        )
        .await
    }

    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        let (name, o) = self.observe(member).await?;
        // The first look is the state found: kept, so that it is restored exactly.
        self.found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_insert_with(|| (o.session.clone(), o.state.clone()));
        Ok(Some(
            if o.session == "user-disabled" || o.state == FORCED_OFFLINE {
                HostState::Stopped
            } else {
                HostState::Started
            },
        ))
    }

    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        // The member's state is BIG-IP configuration: disabled stays disabled across the
        // member's reboots (and the BIG-IP's), until ebb enables it.
        match state {
            HostState::Stopped => {
                let name = self.name(member)?;
                let found = self
                    .found
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(name)
                    .filter(|(_, state)| state == FORCED_OFFLINE)
                    .map(|(session, _)| session.clone());
                let Some(session) = found else {
                    return self.drainstop(member).await;
                };
                // Forced Offline before the run: exactly that again, not merely Disabled.
                // (BIG-IP reports `monitor-enabled` for an enabled session; it takes
                // `user-enabled`.)
                let session = user_session(&session);
                let (name, o) = self.observe(member).await?;
                if o.state == FORCED_OFFLINE && user_session(&o.session) == session {
                    return Ok(());
                }
                self.patch(
                    member,
                    &name,
                    json!({"state": FORCED_OFFLINE, "session": session}),
                )
                .await
            }
            _ => {
                // After a start (the usual order) there is nothing left to change.
                let (_, o) = self.observe(member).await?;
                if o.session == "user-disabled" || o.state == FORCED_OFFLINE {
                    self.start(member).await
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn preflight(&self, members: &[Member]) -> Vec<String> {
        let _ = members;
        let mut w = Vec::new();
        if self.settings.connection.tls.insecure {
            w.push(format!(
                "insecure_tls = true: ebb does not verify the certificate of {} and sends the BIG-IP password to whoever answers; prefer ca_file",
                self.settings.connection.url
            ));
        }
        if self.settings.connection.url.starts_with("http://") {
            w.push(format!(
                "{} is plain http: the BIG-IP password travels unencrypted; use https://",
                self.settings.connection.url
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_member_names_and_ports() {
        assert_eq!(port_of("10.0.0.11:443"), Some(("10.0.0.11", "443")));
        assert_eq!(port_of("cas1:443"), Some(("cas1", "443")));
        assert_eq!(port_of("2001:db8::11.443"), Some(("2001:db8::11", "443")));
        assert_eq!(port_of("cas1"), None);
        assert_eq!(port_of("cas1.corp.example"), None);
        assert_eq!(path_segment("10.0.0.11%2:443"), "10.0.0.11%252:443");
    }
}
