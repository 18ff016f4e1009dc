//! The `[balancer]` table and the `[[member]]` list of a pool file, validated into an
//! [`LbConfig`].
//!
//! The pool file is the same TOML file `ebb run` uses; this module reads only the keys the
//! balancer owns and ignores the engine's tables and member keys. Every error names the
//! file, the line and the key, and all errors are collected before giving up so a user
//! fixes them in one pass.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::duration::parse_duration;

/// The control API address used when `balancer.control` is not set.
pub const DEFAULT_CONTROL: &str = "http://127.0.0.1:9900";

/// Environment variable holding the control API bearer token.
pub const TOKEN_ENV: &str = "EBB_LB_TOKEN";

/// A validated balancer configuration.
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// The pool file this came from (for messages).
    pub source: PathBuf,
    /// Addresses clients connect to.
    pub listen: Vec<SocketAddr>,
    /// Address of the control API.
    pub control: SocketAddr,
    /// Where member host states and initial states are kept across restarts.
    pub state_file: PathBuf,
    /// How a new connection picks its member.
    pub balance: Balance,
    /// Whether a client sticks to its member.
    pub affinity: Affinity,
    /// Bound on connecting to a member before trying another one.
    pub connect_timeout: Duration,
    /// A proxied connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// Bearer token the control API requires, if any.
    pub token: Option<String>,
    /// Health checks.
    pub health: HealthConfig,
    /// The members, in file order.
    pub members: Vec<MemberConfig>,
}

/// Balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Weighted round robin.
    RoundRobin,
    /// The member with the fewest active connections per unit of weight.
    LeastConnections,
}

/// Client affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// Every connection is balanced on its own.
    None,
    /// A client IP stays on its member while that member is started.
    SourceIp,
}

/// Health-check settings, shared by all members.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// TCP connect or HTTP GET.
    pub kind: HealthKind,
    /// Request path for HTTP checks.
    pub path: String,
    /// Status an HTTP check expects.
    pub expect_status: u16,
    /// Time between checks.
    pub interval: Duration,
    /// Bound on one check.
    pub timeout: Duration,
    /// Consecutive passes that bring a down member up.
    pub rise: u32,
    /// Consecutive failures that take a member down.
    pub fall: u32,
}

/// Kind of health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthKind {
    /// A TCP connect that succeeds within the timeout.
    Tcp,
    /// An HTTP/1.1 GET answered with the expected status within the timeout.
    Http,
}

/// One member as the balancer needs it.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// The member's name in the balancer: `lb_name`, defaulting to `name`.
    pub name: String,
    /// The backend address as written.
    pub address: String,
    /// The backend address, resolved when the config was read.
    pub addr: SocketAddr,
    /// Weight for balancing (1..=1000).
    pub weight: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            kind: HealthKind::Tcp,
            path: "/health".to_string(),
            expect_status: 200,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
        }
    }
}

/// One problem in the pool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key, e.g. `balancer.balance` or `member[1].address`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.file, line)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a pool file; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

const BALANCER_KEYS: &[&str] = &[
    "driver",
    "listen",
    "control",
    "state_file",
    "balance",
    "affinity",
    "connect_timeout",
    "idle_timeout",
    "token",
    "health",
];
const HEALTH_KEYS: &[&str] = &[
    "kind",
    "path",
    "expect_status",
    "interval",
    "timeout",
    "rise",
    "fall",
];

impl LbConfig {
    /// Reads and validates the balancer part of a pool file. The token falls back to the
    /// `EBB_LB_TOKEN` environment variable.
    pub fn from_pool_file(path: impl AsRef<Path>) -> Result<LbConfig, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.display().to_string(),
                line: None,
                key: String::new(),
                message: format!("cannot read the pool file: {e}"),
            }])
        })?;
        let env_token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        Self::from_pool_text(path, &text, env_token)
    }

    /// Validates pool file text; `path` names the file in messages and anchors relative
    /// paths. `env_token` is used when the file sets no token.
    pub fn from_pool_text(
        path: &Path,
        text: &str,
        env_token: Option<String>,
    ) -> Result<LbConfig, ConfigErrors> {
        let mut p = Parser {
            file: path.display().to_string(),
            loc: Locator::new(text),
            errors: Vec::new(),
        };
        let root: Table = match text.parse::<Table>() {
            Ok(t) => t,
            Err(e) => {
                let line = e.span().map(|s| line_of_offset(text, s.start));
                return Err(ConfigErrors(vec![ConfigError {
                    file: p.file,
                    line,
                    key: String::new(),
                    message: format!("invalid TOML: {}", e.message().trim()),
                }]));
            }
        };
        let cfg = p.build(path, &root, env_token);
        match cfg {
            Some(cfg) if p.errors.is_empty() => Ok(cfg),
            _ => Err(ConfigErrors(p.errors)),
        }
    }
}

struct Parser {
    file: String,
    loc: Locator,
    errors: Vec<ConfigError>,
}

impl Parser {
    fn err(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: self.loc.line(key),
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn string(&mut self, t: &Table, path: &str, key: &str) -> Option<String> {
        let full = format!("{path}.{key}");
        match t.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(
                    &full,
                    format!("expected a string, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn duration(&mut self, t: &Table, path: &str, key: &str, default: Duration) -> Duration {
        let full = format!("{path}.{key}");
        match self.string(t, path, key) {
            None => default,
            Some(s) => match parse_duration(&s) {
                Ok(d) => d,
                Err(msg) => {
                    self.err(&full, msg);
                    default
                }
            },
        }
    }

    fn integer(
        &mut self,
        t: &Table,
        path: &str,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> i64 {
        let full = format!("{path}.{key}");
        match t.get(key) {
            None => default,
            Some(Value::Integer(i)) if range.contains(i) => *i,
            Some(Value::Integer(i)) => {
                self.err(
                    &full,
                    format!(
                        "expected an integer from {} to {}, found {i}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
            Some(other) => {
                self.err(
                    &full,
                    format!("expected an integer, found {}", describe(other)),
                );
                default
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        t: &Table,
        path: &str,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = self.string(t, path, key) else {
            return default;
        };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == s) {
            return *v;
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
        let expected = match names.len() {
            0 | 1 => names.join(""),
            n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
        };
        self.err(
            &format!("{path}.{key}"),
            format!("expected {expected}, found {s:?}"),
        );
        default
    }

    fn unknown_keys(&mut self, t: &Table, path: &str, known: &[&str]) {
        for key in t.keys() {
            if !known.contains(&key.as_str()) {
                self.err(
                    &format!("{path}.{key}"),
                    format!(
                        "unknown key; the keys of [{path}] are: {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    fn build(&mut self, path: &Path, root: &Table, env_token: Option<String>) -> Option<LbConfig> {
        let empty = Table::new();
        let bal = match root.get("balancer") {
            Some(Value::Table(t)) => t,
            Some(other) => {
                self.err(
                    "balancer",
                    format!("expected a table [balancer], found {}", describe(other)),
                );
                &empty
            }
            None => {
                self.errors.push(ConfigError {
                    file: self.file.clone(),
                    line: None,
                    key: "balancer".into(),
                    message: "missing; add a [balancer] table with driver = \"builtin\" and listen = \"HOST:PORT\"".into(),
                });
                &empty
            }
        };
        self.unknown_keys(bal, "balancer", BALANCER_KEYS);

        match self.string(bal, "balancer", "driver") {
            None => {}
            Some(d) if d == "builtin" => {}
            Some(d) => self.err(
                "balancer.driver",
                format!("`ebb lb serve` runs the \"builtin\" balancer, but this pool uses {d:?}; set driver = \"builtin\""),
            ),
        }

        let listen = self.listen(bal);
        let control = {
            let s = self
                .string(bal, "balancer", "control")
                .unwrap_or_else(|| DEFAULT_CONTROL.to_string());
            match parse_control_url(&s).and_then(|(host, port)| resolve(&host, port)) {
                Ok(a) => Some(a),
                Err(msg) => {
                    self.err("balancer.control", msg);
                    None
                }
            }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let state_file = match self.string(bal, "balancer", "state_file") {
            Some(s) if s.trim().is_empty() => {
                self.err(
                    "balancer.state_file",
                    "expected a file path, found an empty string",
                );
                None
            }
            Some(s) => Some(dir.join(s)),
            None => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "pool".into());
                Some(dir.join(format!("{stem}.lb-state.json")))
            }
        };
        let balance = self.choice(
            bal,
            "balancer",
            "balance",
            &[
                ("round-robin", Balance::RoundRobin),
                ("least-connections", Balance::LeastConnections),
            ],
            Balance::RoundRobin,
        );
        let affinity = self.choice(
            bal,
            "balancer",
            "affinity",
            &[("none", Affinity::None), ("source-ip", Affinity::SourceIp)],
            Affinity::None,
        );
        let connect_timeout =
            self.duration(bal, "balancer", "connect_timeout", Duration::from_secs(2));
        let idle_timeout = self.duration(bal, "balancer", "idle_timeout", Duration::from_secs(300));
        let token = match self.string(bal, "balancer", "token") {
            Some(t) if t.trim().is_empty() => {
                self.err(
                    "balancer.token",
                    "is empty; set a secret token or remove the key",
                );
                None
            }
            Some(t) => Some(t),
            None => env_token,
        };
        let health = self.health(bal);
        let members = self.members(root);

        Some(LbConfig {
            source: path.to_path_buf(),
            listen: listen?,
            control: control?,
            state_file: state_file?,
            balance,
            affinity,
            connect_timeout,
            idle_timeout,
            token,
            health,
            members,
        })
    }

    fn listen(&mut self, bal: &Table) -> Option<Vec<SocketAddr>> {
        let key = "balancer.listen";
        let raw: Vec<String> = match bal.get("listen") {
            None => {
                self.err(
                    "balancer",
                    "missing key `listen`; add listen = \"127.0.0.1:8080\" (or a list of addresses)",
                );
                return None;
            }
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => {
                let mut out = Vec::new();
                for v in a {
                    match v {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            self.err(
                                key,
                                format!(
                                    "expected \"HOST:PORT\" strings, found {}",
                                    describe(other)
                                ),
                            );
                            return None;
                        }
                    }
                }
                if out.is_empty() {
                    self.err(key, "is empty; give at least one \"HOST:PORT\"");
                    return None;
                }
                out
            }
            Some(other) => {
                self.err(
                    key,
                    format!(
                        "expected \"HOST:PORT\" or a list of them, found {}",
                        describe(other)
                    ),
                );
                return None;
            }
        };
        let mut addrs = Vec::new();
        for s in raw {
            match parse_host_port(&s) {
                Ok(a) => addrs.push(a),
                Err(msg) => self.err(key, msg),
            }
        }
        Some(addrs)
    }

    fn health(&mut self, bal: &Table) -> HealthConfig {
        let mut h = HealthConfig::default();
        let t = match bal.get("health") {
            None => return h,
            Some(Value::Table(t)) => t,
            Some(other) => {
                self.err(
                    "balancer.health",
                    format!(
                        "expected a table [balancer.health], found {}",
                        describe(other)
                    ),
                );
                return h;
            }
        };
        let p = "balancer.health";
        self.unknown_keys(t, p, HEALTH_KEYS);
        h.kind = self.choice(
            t,
            p,
            "kind",
            &[("tcp", HealthKind::Tcp), ("http", HealthKind::Http)],
            HealthKind::Tcp,
        );
        if let Some(path) = self.string(t, p, "path") {
            if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                h.path = path;
            } else {
                self.err(
                    "balancer.health.path",
                    format!("expected an absolute URL path like \"/health\", found {path:?}"),
                );
            }
        }
        h.expect_status = self.integer(t, p, "expect_status", 100..=599, 200) as u16;
        h.interval = self.duration(t, p, "interval", h.interval);
        h.timeout = self.duration(t, p, "timeout", h.timeout);
        h.rise = self.integer(t, p, "rise", 1..=100, 2) as u32;
        h.fall = self.integer(t, p, "fall", 1..=100, 2) as u32;
        h
    }

    fn members(&mut self, root: &Table) -> Vec<MemberConfig> {
        let list = match root.get("member") {
            None => {
                self.errors.push(ConfigError {
                    file: self.file.clone(),
                    line: None,
                    key: "member".into(),
                    message: "no members; add [[member]] tables with name and address".into(),
                });
                return Vec::new();
            }
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.err(
                    "member",
                    format!("expected [[member]] tables, found {}", describe(other)),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, v) in list.iter().enumerate() {
            let p = format!("member[{i}]");
            let Value::Table(t) = v else {
                self.err(&p, format!("expected a table, found {}", describe(v)));
                continue;
            };
            let name = self.string(t, &p, "name");
            if name.is_none() && !t.contains_key("name") {
                self.err(&p, "missing key `name`");
            }
            let lb_name = self.string(t, &p, "lb_name").or(name);
            let address = self.string(t, &p, "address");
            if address.is_none() && !t.contains_key("address") {
                self.err(&p, "missing key `address` (the backend's \"HOST:PORT\")");
            }
            let addr = address.as_deref().and_then(|a| match parse_host_port(a) {
                Ok(x) => Some(x),
                Err(msg) => {
                    self.err(&format!("{p}.address"), msg);
                    None
                }
            });
            let weight = self.integer(t, &p, "weight", 1..=1000, 1) as u32;
            if let Some(n) = &lb_name {
                let key = if t.contains_key("lb_name") {
                    format!("{p}.lb_name")
                } else {
                    format!("{p}.name")
                };
                if n.is_empty() || n.contains('/') || n.chars().any(|c| c.is_whitespace()) {
                    self.err(
                        &key,
                        format!("expected a name without spaces or '/', found {n:?}"),
                    );
                } else if !seen.insert(n.clone()) {
                    self.err(
                        &key,
                        format!("the balancer name {n:?} is used by an earlier member; names in the balancer must be unique"),
                    );
                }
            }
            if let (Some(name), Some(address), Some(addr)) = (lb_name, address, addr) {
                out.push(MemberConfig {
                    name,
                    address,
                    addr,
                    weight,
                });
            }
        }
        if list.is_empty() {
            self.err(
                "member",
                "no members; add [[member]] tables with name and address",
            );
        }
        out
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("{b}"),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(_) => "a list".into(),
        Value::Table(_) => "a table".into(),
    }
}

/// Parses `host:port` into one socket address, resolving names like `localhost`.
pub fn parse_host_port(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("expected \"HOST:PORT\", found {s:?}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("expected \"HOST:PORT\" with a numeric port, found {s:?}"))?;
    resolve(host.trim_start_matches('[').trim_end_matches(']'), port)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("the host {host:?} has no address")),
        Err(e) => Err(format!("cannot resolve the host {host:?}: {e}")),
    }
}

/// Splits a control URL (`http://HOST:PORT`, a trailing `/` allowed; the scheme may be left
/// out) into host and port.
pub fn parse_control_url(url: &str) -> Result<(String, u16), String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(format!(
            "expected an http:// URL, found {url:?}; the control API speaks plain HTTP (keep it on loopback or behind a TLS proxy)"
        ));
    } else if url.contains("://") {
        return Err(format!("expected an http://HOST:PORT URL, found {url:?}"));
    } else {
        url
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.is_empty() {
        return Err(format!(
            "expected http://HOST:PORT without a path, found {url:?}"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (h, p),
        _ => {
            return Err(format!(
                "expected http://HOST:PORT with a port, found {url:?}"
            ))
        }
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("expected http://HOST:PORT with a numeric port, found {url:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!(
            "expected http://HOST:PORT with a host, found {url:?}"
        ));
    }
    Ok((host.to_string(), port))
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Finds the line of a key in TOML source text, so messages can point at it. It follows
/// table headers (`[a.b]`, `[[member]]` counted as `member[0]`, `member[1]`, ...) and
/// dotted keys; it is a best effort, falling back to the enclosing table's line.
struct Locator {
    lines: HashMap<String, usize>,
}

impl Locator {
    fn new(text: &str) -> Locator {
        let mut lines = HashMap::new();
        let mut current = String::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(inner) = line.strip_prefix("[[") {
                let name = normalize_key(inner.split("]]").next().unwrap_or(""));
                let n = counts.entry(name.clone()).or_insert(0);
                current = format!("{name}[{n}]");
                *n += 1;
                lines.entry(current.clone()).or_insert(lineno);
                continue;
            }
            if let Some(inner) = line.strip_prefix('[') {
                let name = normalize_key(inner.split(']').next().unwrap_or(""));
                // A sub-table of the latest element of an array of tables: [member.vars].
                let first = name.split('.').next().unwrap_or("").to_string();
                current = match counts.get(&first) {
                    Some(n) if *n > 0 => format!("{first}[{}]{}", n - 1, &name[first.len()..]),
                    _ => name,
                };
                lines.entry(current.clone()).or_insert(lineno);
                continue;
            }
            let Some((key, _)) = line.split_once('=') else {
                continue;
            };
            if !key
                .chars()
                .all(|c| c.is_alphanumeric() || "_-.\"' ".contains(c))
            {
                continue;
            }
            let key = normalize_key(key);
            if key.is_empty() {
                continue;
            }
            let full = if current.is_empty() {
                key
            } else {
                format!("{current}.{key}")
            };
            lines.entry(full).or_insert(lineno);
        }
        Locator { lines }
    }

    /// The line of `key`, or of the nearest enclosing table or key that has one.
    fn line(&self, key: &str) -> Option<usize> {
        let mut k = key;
        loop {
            if let Some(l) = self.lines.get(k) {
                return Some(*l);
            }
            match k.rfind(['.', '[']) {
                Some(pos) => k = &k[..pos],
                None => return None,
            }
        }
    }
}

fn normalize_key(k: &str) -> String {
    k.split('.')
        .map(|part| part.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LbConfig, ConfigErrors> {
        LbConfig::from_pool_text(Path::new("/tmp/pool.toml"), text, None)
    }

    const GOOD: &str = r#"
[pool]
name = "x"

[balancer]
driver = "builtin"
listen = ["127.0.0.1:8080", "127.0.0.1:8443"]
balance = "least-connections"
affinity = "source-ip"
connect_timeout = "500ms"

[balancer.health]
kind = "http"
interval = "2s"

[[member]]
name = "web1"
address = "127.0.0.1:8081"
transport = "ssh"

[[member]]
name = "web2"
lb_name = "w2"
address = "localhost:8082"
weight = 3
[member.vars]
x = "1"
"#;

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.balance, Balance::LeastConnections);
        assert_eq!(c.affinity, Affinity::SourceIp);
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.health.kind, HealthKind::Http);
        assert_eq!(c.members[1].name, "w2");
        assert_eq!(c.members[1].weight, 3);
        assert_eq!(c.state_file, PathBuf::from("/tmp/pool.lb-state.json"));
        assert_eq!(c.control.port(), 9900);
    }

    #[test]
    fn errors_name_line_and_key() {
        let text = "[balancer]\nlisten = \"127.0.0.1:1\"\nbalance = \"rr\"\nidle_timeout = \"5 parsecs\"\n\n[[member]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\n[[member]]\nname = \"b\"\naddress = \"nope\"\nweight = 0\n";
        let errs = parse(text).unwrap_err().to_string();
        assert!(
            errs.contains("pool.toml:3: balancer.balance: expected \"round-robin\" or \"least-connections\", found \"rr\""),
            "{errs}"
        );
        assert!(
            errs.contains("pool.toml:4: balancer.idle_timeout:"),
            "{errs}"
        );
        assert!(errs.contains("pool.toml:12: member[1].address:"), "{errs}");
        assert!(errs.contains("pool.toml:13: member[1].weight:"), "{errs}");
    }

    #[test]
    fn syntax_error_has_line() {
        let errs = parse("[balancer]\nlisten = \n").unwrap_err();
        assert_eq!(errs.0[0].line, Some(2), "{errs}");
    }

    #[test]
    fn control_urls() {
        assert_eq!(
            parse_control_url("http://127.0.0.1:9900/").unwrap(),
            ("127.0.0.1".to_string(), 9900)
        );
        assert_eq!(
            parse_control_url("[::1]:9900").unwrap(),
            ("::1".to_string(), 9900)
        );
        assert!(parse_control_url("https://x:1").is_err());
        assert!(parse_control_url("http://x").is_err());
        assert!(parse_control_url("http://x:1/api").is_err());
    }
}
