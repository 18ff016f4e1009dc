//! Reading typed values out of the TOML tree, collecting every error with its line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::addr::{parse_control_url, parse_host_port, resolve};
use super::{
    Affinity, Balance, HealthConfig, HealthKind, LbConfig, MemberConfig, BALANCER_KEYS,
    DEFAULT_CONTROL, DEFAULT_LISTEN, DRIVER_KEY, HEALTH_KEYS,
};
use ebb_config::{parse_duration, Context, Section};

/// The balancer's reading of a pool file, through the shared reader's [`Context`] (its
/// lines, its errors); the getters keep the balancer's own wording.
pub(super) struct Parser<'c> {
    cx: &'c mut Context,
}

impl<'c> Parser<'c> {
    pub fn new(cx: &'c mut Context) -> Self {
        Parser { cx }
    }

    fn err(&mut self, key: &str, message: impl Into<String>) {
        self.cx.err(key, message);
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

    fn boolean(&mut self, t: &Table, path: &str, key: &str, default: bool) -> bool {
        match t.get(key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(other) => {
                self.err(
                    &format!("{path}.{key}"),
                    format!("expected true or false, found {}", describe(other)),
                );
                default
            }
        }
    }

    fn duration(&mut self, t: &Table, path: &str, key: &str, default: Duration) -> Duration {
        let full = format!("{path}.{key}");
        match self.string(t, path, key) {
            None => default,
            Some(s) => match parse_duration(&s) {
                Ok(d) if d.is_zero() => {
                    self.err(&full, format!("must be more than 0, found \"{s}\""));
                    default
                }
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

    pub fn build(
        &mut self,
        path: &Path,
        root: &Table,
        env_token: Option<String>,
    ) -> Option<LbConfig> {
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
                self.err("balancer", "missing; add a [balancer] table with driver = \"builtin\" and listen = \"HOST:PORT\"");
                &empty
            }
        };
        Section::new(bal, "balancer", BALANCER_KEYS)
            .with_keys(&[DRIVER_KEY])
            .finish(self.cx);

        match self.string(bal, "balancer", "driver") {
            None => {}
            Some(d) if d == "builtin" => {}
            Some(d) => self.err(
                "balancer.driver",
                format!("`ebb lb` is ebb's \"builtin\" balancer, but this pool uses {d:?}; set driver = \"builtin\""),
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
        let pin_threads = self.boolean(bal, "balancer", "pin_threads", true);
        let poll_before_sleep = self.boolean(bal, "balancer", "poll_before_sleep", true);
        let copy_loop = self.boolean(bal, "balancer", "copy_loop", true);
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
            pin_threads,
            poll_before_sleep,
            copy_loop,
            token,
            health,
            members,
        })
    }

    fn listen(&mut self, bal: &Table) -> Option<Vec<SocketAddr>> {
        let key = "balancer.listen";
        let raw: Vec<String> = match bal.get("listen") {
            // The engine's pool files may name only `control` for the builtin driver.
            None => vec![DEFAULT_LISTEN.to_string()],
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
        Section::new(t, p, HEALTH_KEYS).finish(self.cx);
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
                self.err(
                    "member",
                    "no members; add [[member]] tables with name and address",
                );
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
