//! The `nginx` balancer driver: open-source nginx has no runtime API, so the upstream file
//! is the truth. ebb toggles the `down` parameter on the member's `server` line (every
//! other byte stays the user's), tests the configuration and reloads gracefully, on the
//! nginx host through a transport.
//!
//! ```toml
//! [balancer]
//! driver = "nginx"
//! upstream_file = "/etc/nginx/upstreams/web.conf"  # included in `upstream web { ... }`
//! reload = "nginx -s reload"                        # the default
//! test = "nginx -t"                                 # the default
//! timeout = "30s"                                   # bound on each command
//! transport = "local"                               # or "ssh" with ssh_host, ssh_user, ...
//! ```
//!
//! | ebb | nginx host |
//! |---|---|
//! | state | the member's `server` line (`down` or not) and `ss` established connections to its address |
//! | drainstop, hold | `down` added, `test`, `reload` (old workers finish their connections) |
//! | stop | as drainstop, then `ss -K` closes the connections to the member's address |
//! | start | `down` removed, `test`, `reload` |
//! | initial state found / restored | the `down` flag as found / set back |
//!
//! See docs/nginx.md for the reasoning.

pub mod host;
pub mod upstream;

use crate::transport::ssh::{self, SshSettings};
use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key, Kind, Section};
use ebb_engine::interfaces::{
    Balancer, DriverError, DriverResult, HostState, MemberLbState, Transport,
};
use ebb_engine::placeholder::sh_quote;
use ebb_engine::plan::{Member, Plan, Shell};
use ebb_engine::registry::BalancerDriver;
use host::Host;
use std::sync::Arc;
use std::time::Duration;
use upstream::{ServerLine, Upstream};

/// The keys of `[balancer]` for the nginx driver, besides the ssh transport's `ssh_*`
/// keys (how the nginx host is reached with `transport = "ssh"`).
pub const KEYS: &[Key] = &[
    Key::required(
        "upstream_file",
        Kind::String,
        "the file of `server` lines included in the pool's upstream block, on the nginx host",
    ),
    Key::new(
        "reload",
        Kind::String,
        "reloads nginx gracefully (default \"nginx -s reload\")",
    ),
    Key::new(
        "test",
        Kind::String,
        "tests the configuration (default \"nginx -t\")",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "bound on each command (default \"30s\")",
    ),
    Key::new(
        "transport",
        Kind::OneOf(&["local", "ssh"]),
        "how the nginx host is reached (default \"local\")",
    ),
];

/// The nginx driver's descriptor, registered in [`crate::registry`].
pub struct NginxDriver;

impl BalancerDriver for NginxDriver {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn keys(&self) -> Vec<Key> {
        [KEYS, ssh::KEYS].concat()
    }

    fn validate(&self, plan: &Plan, cx: &mut Context) {
        NginxSettings::read(plan, cx);
    }

    fn build(
        &self,
        plan: &Plan,
        _: &[Arc<dyn Transport>],
    ) -> Result<Arc<dyn Balancer>, ConfigErrors> {
        Ok(Arc::new(Nginx::from_plan(plan)?))
    }
}

/// `[balancer]` for the nginx driver.
#[derive(Debug, Clone)]
pub struct NginxSettings {
    /// The file holding the pool's `server` lines, on the nginx host (relative paths are
    /// from the pool file's directory with the local transport, from the login directory
    /// over ssh).
    pub upstream_file: String,
    /// Reloads nginx gracefully.
    pub reload: String,
    /// Tests the configuration.
    pub test: String,
    /// Bound on each command.
    pub timeout: Duration,
}

impl NginxSettings {
    /// Reads and validates `[balancer]`; every problem at once, with file, line and key.
    /// Also gives the nginx host as a member-like target for its transport.
    pub fn from_plan(plan: &Plan) -> Result<(Self, Member), ConfigErrors> {
        super::read(plan, Self::read)
    }

    fn read(plan: &Plan, cx: &mut Context) -> Option<(Self, Member)> {
        let keys = NginxDriver.keys();
        let mut s = super::section(plan, "nginx", &keys);
        let upstream_file = s.str(cx, "upstream_file");
        if upstream_file.is_none() && !s.has("upstream_file") {
            s.missing(cx, "the nginx driver needs upstream_file = \"/etc/nginx/...\" (the file included in your `upstream NAME { include ...; }` block, one `server ADDRESS ...;` line per member)");
        }
        if upstream_file
            .as_deref()
            .is_some_and(|f| f.trim().is_empty())
        {
            s.error(cx, "upstream_file", "must not be empty");
        }
        let reload = s
            .str(cx, "reload")
            .unwrap_or_else(|| "nginx -s reload".to_string());
        let test = s.str(cx, "test").unwrap_or_else(|| "nginx -t".to_string());
        let timeout = s.duration(cx, "timeout", Duration::from_secs(30));
        let host = balancer_host(plan, cx, &mut s, "nginx");
        s.finish(cx);
        let settings = NginxSettings {
            upstream_file: upstream_file?,
            reload,
            test,
            timeout,
        };
        Some((settings, host?))
    }
}

/// The balancer host as a member-like target for [`crate::transport::build`]: `transport`
/// (`local` or `ssh`) and the same `ssh_*` keys members take, read from `s` (the
/// driver's `[balancer]`, which must accept [`ssh::KEYS`]).
pub(crate) fn balancer_host(
    plan: &Plan,
    cx: &mut Context,
    s: &mut Section<'_>,
    driver: &str,
) -> Option<Member> {
    let transport = s
        .str(cx, "transport")
        .unwrap_or_else(|| "local".to_string());
    if transport != "local" && transport != "ssh" {
        let m = format!("expected \"local\" or \"ssh\", found \"{transport}\"");
        s.error(cx, "transport", m);
        return None;
    }
    if transport == "ssh" && !s.has("ssh_host") {
        let m = format!("transport = \"ssh\" needs ssh_host = \"<the {driver} host>\"");
        s.error(cx, "transport", m);
        return None;
    }
    let base = plan.file.parent().unwrap_or(std::path::Path::new("."));
    let reach = SshSettings::read(cx, s, "localhost", base);
    let settings: toml::Table = plan
        .balancer
        .settings
        .iter()
        .filter(|(k, _)| k.starts_with("ssh_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(Member {
        name: format!("{driver} host"),
        address: reach.host,
        lb_name: String::new(),
        transport,
        shell: Shell::Sh,
        group: None,
        vars: Default::default(),
        boot_id: None,
        settings,
        weight: 1,
    })
}

/// Drives nginx through its upstream file.
pub struct Nginx {
    settings: NginxSettings,
    host: Host,
    /// One read-change-test-reload at a time (members drained in parallel).
    change_lock: tokio::sync::Mutex<()>,
}

/// What the file says of one member.
struct Found {
    index: usize,
    server: ServerLine,
}

impl Nginx {
    /// Reads `[balancer]` for the nginx driver and builds the host's transport.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        let (settings, host) = NginxSettings::from_plan(plan)?;
        let transport = crate::transport::build(plan, &host)?;
        let label = if host.transport == "ssh" {
            format!("ssh {}", host.address)
        } else {
            "local".to_string()
        };
        let host = Host::new(transport, settings.timeout, label);
        Ok(Nginx {
            settings,
            host,
            change_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn file(&self) -> &str {
        &self.settings.upstream_file
    }

    /// An error about `member`, naming the file (and line when known).
    fn error(
        &self,
        member: &Member,
        line: Option<usize>,
        what: impl std::fmt::Display,
    ) -> DriverError {
        let at = match line {
            Some(l) => format!("{}:{l}", self.file()),
            None => self.file().to_string(),
        };
        DriverError::new(format!(
            "member \"{}\" (nginx upstream file {at}): {what}",
            member.name
        ))
    }

    async fn read(&self) -> Result<Upstream, String> {
        let text = self.host.read(self.file()).await?;
        Upstream::parse(text).map_err(|e| format!("cannot parse it: {e}"))
    }

    /// The member's `server` line: the one whose address is the member's `address`, else
    /// its `lb_name` (for upstreams written with host names).
    fn find(&self, member: &Member, up: &Upstream) -> DriverResult<Found> {
        let by = |want: &str| -> Vec<usize> {
            up.servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.address == want)
                .map(|(i, _)| i)
                .collect()
        };
        let mut hits = by(&member.address);
        if hits.is_empty() {
            hits = by(&member.lb_name);
        }
        match hits.as_slice() {
            [i] => Ok(Found {
                index: *i,
                server: up.servers[*i].clone(),
            }),
            [] => Err(self.error(
                member,
                None,
                format!(
                    "no `server` line has the member's address \"{}\" (or its lb_name \"{}\"); its servers: {}. Set the member's address (or lb_name) to the address written on its server line",
                    member.address,
                    member.lb_name,
                    if up.servers.is_empty() {
                        "none".to_string()
                    } else {
                        up.servers
                            .iter()
                            .map(|s| format!("{} (line {})", s.address, s.line))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            )),
            many => Err(self.error(
                member,
                None,
                format!(
                    "{} `server` lines have the address \"{}\" (lines {}); ebb cannot tell which is the member's",
                    many.len(),
                    up.servers[many[0]].address,
                    many.iter()
                        .map(|i| up.servers[*i].line.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// Established TCP connections from the nginx host to the server's address, by `ss`
    /// (which resolves a host name there); `None` for `unix:` sockets.
    async fn connections(&self, member: &Member, server: &ServerLine) -> DriverResult<Option<u64>> {
        let Some(dst) = ss_destination(&server.address) else {
            return Ok(None);
        };
        let cmd = format!("ss -Htn state established dst {}", sh_quote(&dst));
        let out = self
            .host
            .run(&cmd)
            .await
            .map_err(|e| self.error(member, Some(server.line), e))?;
        if !out.ok() {
            return Err(self.error(
                member,
                Some(server.line),
                format!("`{cmd}` failed ({}): {}", out.how(), out.said()),
            ));
        }
        Ok(Some(
            out.lines.iter().filter(|l| !l.trim().is_empty()).count() as u64,
        ))
    }

    fn to_state(server: &ServerLine, conns: Option<u64>) -> MemberLbState {
        let c = conns.map_or_else(String::new, |c| format!(", {c} connection(s)"));
        if server.down {
            MemberLbState {
                state: if conns.unwrap_or(0) > 0 {
                    HostState::Draining
                } else {
                    HostState::Stopped
                },
                healthy: None,
                active_connections: conns,
                detail: format!("down (line {}){c}", server.line),
            }
        } else {
            MemberLbState {
                state: HostState::Started,
                healthy: None,
                active_connections: conns,
                detail: format!("up (line {}){c}", server.line),
            }
        }
    }

    async fn read_member(&self, member: &Member) -> DriverResult<Found> {
        let up = self.read().await.map_err(|e| self.error(member, None, e))?;
        self.find(member, &up)
    }

    /// Sets the member's `down` flag: write, `test`, `reload`; on a failure the previous
    /// file is written back and the error carries nginx's own words. Nothing is done when
    /// the flag is already so.
    async fn set_down(&self, member: &Member, down: bool) -> DriverResult<()> {
        let _one = self.change_lock.lock().await;
        let up = self.read().await.map_err(|e| self.error(member, None, e))?;
        let found = self.find(member, &up)?;
        if found.server.down == down {
            return Ok(());
        }
        let line = Some(found.server.line);
        let what = if down {
            "adding `down`"
        } else {
            "removing `down`"
        };
        let new = up.with_down(found.index, down);
        self.host
            .write(self.file(), &new)
            .await
            .map_err(|e| self.error(member, line, format!("{what}: {e}")))?;
        for (key, cmd) in [
            ("test", &self.settings.test),
            ("reload", &self.settings.reload),
        ] {
            let out = self.host.run(cmd).await;
            let (failure, said) = match out {
                Ok(o) if o.ok() => continue,
                Ok(o) => (
                    format!("balancer.{key} `{cmd}` failed ({}) after {what}", o.how()),
                    o.said(),
                ),
                Err(e) => (
                    format!("balancer.{key} `{cmd}` could not run after {what}"),
                    e.to_string(),
                ),
            };
            return Err(self.restore(member, line, &up.text, failure, said).await);
        }
        Ok(())
    }

    /// Writes `previous` back after a failed test or reload, and says so.
    async fn restore(
        &self,
        member: &Member,
        line: Option<usize>,
        previous: &str,
        failure: String,
        said: String,
    ) -> DriverError {
        let back = match self.host.write(self.file(), previous).await {
            Ok(()) => "the upstream file was put back as it was".to_string(),
            Err(e) => format!("putting the upstream file back failed too: {e}"),
        };
        self.error(
            member,
            line,
            format!("{failure}; {back}. nginx said: {said}"),
        )
    }
}

/// `ss`'s `dst` for an nginx server address: `HOST:PORT` (port 80 when nginx would use
/// it), or `None` for a unix socket.
fn ss_destination(address: &str) -> Option<String> {
    if address.starts_with("unix:") {
        return None;
    }
    let has_port = if let Some(rest) = address.strip_prefix('[') {
        rest.split_once(']')
            .is_some_and(|(_, p)| p.starts_with(':'))
    } else {
        address
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()))
    };
    Some(if has_port {
        address.to_string()
    } else if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:80")
    } else {
        format!("{address}:80")
    })
}

#[async_trait]
impl Balancer for Nginx {
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        let found = self.read_member(member).await?;
        let conns = self.connections(member, &found.server).await?;
        Ok(Self::to_state(&found.server, conns))
    }

    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        // One read of the file for the whole pool.
        let up = self.read().await;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            out.push(match &up {
                Ok(up) => match self.find(m, up) {
                    Ok(f) => match self.connections(m, &f.server).await {
                        Ok(c) => Ok(Self::to_state(&f.server, c)),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                Err(e) => Err(self.error(m, None, e)),
            });
        }
        out
    }

    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        // Held already: `down` is on and the graceful reload was done then.
        self.set_down(member, true).await
    }

    async fn stop(&self, member: &Member) -> DriverResult<()> {
        self.set_down(member, true).await?;
        let found = self.read_member(member).await?;
        let Some(dst) = ss_destination(&found.server.address) else {
            return Err(self.error(
                member,
                Some(found.server.line),
                "it is a unix socket: ebb cannot cut its connections (use mode = \"drainstop\")",
            ));
        };
        let cmd = format!("ss -K -Htn state established dst {}", sh_quote(&dst));
        let out = self
            .host
            .run(&cmd)
            .await
            .map_err(|e| self.error(member, Some(found.server.line), e))?;
        let left = self.connections(member, &found.server).await?.unwrap_or(0);
        if !out.ok() || left > 0 {
            return Err(self.error(
                member,
                Some(found.server.line),
                format!(
                    "`{cmd}` left {left} connection(s) open ({}: {}): closing sockets needs root (CAP_NET_ADMIN) on the nginx host and a kernel with CONFIG_INET_DIAG_DESTROY; the member is `down` and drains as with drainstop",
                    out.how(),
                    out.said()
                ),
            ));
        }
        Ok(())
    }

    async fn start(&self, member: &Member) -> DriverResult<()> {
        self.set_down(member, false).await
    }

    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        let found = self.read_member(member).await?;
        Ok(Some(if found.server.down {
            HostState::Stopped
        } else {
            HostState::Started
        }))
    }

    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        // nginx has one flag for both: `down` is what a restart comes back with.
        self.set_down(member, state == HostState::Stopped).await
    }

    async fn wait_change(&self, _member: &Member, max: Duration) {
        tokio::time::sleep(max.min(Duration::from_millis(200))).await;
    }

    async fn preflight(&self, _members: &[Member]) -> Vec<String> {
        let mut warnings = Vec::new();
        match self.host.run(&self.settings.test).await {
            Ok(o) if o.ok() => {}
            Ok(o) => warnings.push(format!(
                "balancer.test `{}` fails now ({}), so ebb could not change the upstream file {}: {}",
                self.settings.test,
                o.how(),
                self.file(),
                o.said()
            )),
            Err(e) => warnings.push(format!(
                "balancer.test `{}` could not run: {e}",
                self.settings.test
            )),
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_destinations() {
        assert_eq!(
            ss_destination("10.0.0.1:8080").as_deref(),
            Some("10.0.0.1:8080")
        );
        assert_eq!(ss_destination("10.0.0.1").as_deref(), Some("10.0.0.1:80"));
        assert_eq!(
            ss_destination("app.example").as_deref(),
            Some("app.example:80")
        );
        assert_eq!(ss_destination("[::1]:81").as_deref(), Some("[::1]:81"));
        assert_eq!(ss_destination("[::1]").as_deref(), Some("[::1]:80"));
        assert_eq!(ss_destination("::1").as_deref(), Some("[::1]:80"));
        assert_eq!(ss_destination("unix:/run/app.sock"), None);
    }
}
