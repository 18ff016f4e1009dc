//! The `[balancer]` table and the `[[member]]` list of a pool file, validated into an
//! [`LbConfig`].
//!
//! The pool file is the same TOML file `ebb run` uses; this module reads only the keys the
//! balancer owns and ignores the engine's tables and member keys. Every error names the
//! file, the line and the key, and all errors are collected before giving up so a user
//! fixes them in one pass.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod addr;
mod parse;

pub use addr::{parse_control_url, parse_host_port};
pub use ebb_config::{ConfigError, ConfigErrors};
use ebb_config::{Context, Key, Kind, LineIndex};
use parse::Parser;

/// The control API address used when `balancer.control` is not set.
pub const DEFAULT_CONTROL: &str = "http://127.0.0.1:9900";

/// Where clients connect when `balancer.listen` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

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
    /// Whether each data-plane thread is held to a core of its own.
    pub pin_threads: bool,
    /// Whether a data-plane thread not held to its core polls for events briefly before
    /// it sleeps.
    pub poll_before_sleep: bool,
    /// Whether long-lived connections are copied by their data thread's own epoll loop
    /// rather than by a task each.
    pub copy_loop: bool,
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

/// `driver = "builtin"` in `[balancer]`.
pub const DRIVER_KEY: Key =
    Key::required("driver", Kind::String, "\"builtin\" for ebb's own balancer");

/// The keys of `[balancer]` the built-in balancer reads besides `driver` (the keys of
/// ebb's `builtin` driver too).
pub const BALANCER_KEYS: &[Key] = &[
    Key::new(
        "listen",
        Kind::Any,
        "\"HOST:PORT\" or a list of them, where clients connect (default \"127.0.0.1:8080\")",
    ),
    Key::new(
        "control",
        Kind::String,
        "the control API's URL (default \"http://127.0.0.1:9900\")",
    ),
    Key::new(
        "state_file",
        Kind::String,
        "where host states are kept across restarts (default POOL.lb-state.json)",
    ),
    Key::new(
        "balance",
        Kind::OneOf(&["round-robin", "least-connections"]),
        "how a new connection picks its member (default \"round-robin\")",
    ),
    Key::new(
        "affinity",
        Kind::OneOf(&["none", "source-ip"]),
        "whether a client sticks to its member (default \"none\")",
    ),
    Key::new(
        "connect_timeout",
        Kind::Duration,
        "bound on connecting to a member (default \"2s\")",
    ),
    Key::new(
        "idle_timeout",
        Kind::Duration,
        "a connection idle this long is closed (default \"5m\")",
    ),
    Key::new(
        "pin_threads",
        Kind::Bool,
        "hold each data-plane thread to a core of its own (default true)",
    ),
    Key::new(
        "poll_before_sleep",
        Kind::Bool,
        "under many short connections, poll 50 µs before sleeping (default true)",
    ),
    Key::new(
        "copy_loop",
        Kind::Bool,
        "copy long-lived connections in each data thread's own epoll loop (default true)",
    ),
    Key::new(
        "token",
        Kind::String,
        "bearer token of the control API (or env EBB_LB_TOKEN)",
    ),
    Key::new("health", Kind::Table, "health checks of the members"),
];

/// The keys of `[balancer.health]`.
pub const HEALTH_KEYS: &[Key] = &[
    Key::new(
        "kind",
        Kind::OneOf(&["tcp", "http"]),
        "a TCP connect or an HTTP GET (default \"tcp\")",
    ),
    Key::new(
        "path",
        Kind::String,
        "request path of HTTP checks (default \"/health\")",
    ),
    Key::new(
        "expect_status",
        Kind::Integer,
        "status an HTTP check expects (default 200)",
    ),
    Key::new(
        "interval",
        Kind::Duration,
        "time between checks (default \"1s\")",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "bound on one check (default \"1s\")",
    ),
    Key::new(
        "rise",
        Kind::Integer,
        "consecutive passes that bring a member up (default 2)",
    ),
    Key::new(
        "fall",
        Kind::Integer,
        "consecutive failures that take a member down (default 2)",
    ),
];

impl LbConfig {
    /// Reads and validates the balancer part of a pool file. The token falls back to the
    /// `EBB_LB_TOKEN` environment variable.
    pub fn from_pool_file(path: impl AsRef<Path>) -> Result<LbConfig, ConfigErrors> {
        let path = path.as_ref();
        let text = ebb_config::read_file(path)?;
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
        let file = path.display().to_string();
        let root = ebb_config::parse_toml(text, &file)?;
        let mut cx = Context::new(file, LineIndex::new(text));
        match Self::read(&mut cx, &root, path, env_token) {
            Some(cfg) => cx.into_result(cfg),
            None => Err(cx.into_errors()),
        }
    }

    /// Reads the balancer's part of a parsed pool file (`[balancer]` and the members'
    /// `name`, `lb_name`, `address`, `weight`), recording problems in `cx`; `path` anchors
    /// relative paths.
    pub fn read(
        cx: &mut Context,
        root: &toml::Table,
        path: &Path,
        env_token: Option<String>,
    ) -> Option<LbConfig> {
        Parser::new(cx).build(path, root, env_token)
    }
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
        // The switches: each on unless told otherwise, off with `false`; anything but a
        // boolean is named with its key.
        type Switch = fn(&LbConfig) -> bool;
        let switches: [(&str, Switch); 3] = [
            ("pin_threads", |c| c.pin_threads),
            ("poll_before_sleep", |c| c.poll_before_sleep),
            ("copy_loop", |c| c.copy_loop),
        ];
        let with_line = |line: String| {
            parse(&GOOD.replace("[balancer.health]", &format!("{line}\n\n[balancer.health]")))
        };
        for (key, on) in switches {
            assert!(on(&c), "{key} is on unless told otherwise");
            let off = with_line(format!("{key} = false")).unwrap();
            assert!(!on(&off), "{key} = false left it on");
            let bad = with_line(format!("{key} = \"50us\""))
                .unwrap_err()
                .to_string();
            assert!(
                bad.contains(&format!("balancer.{key}: expected true or false, found")),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_name_line_and_key() {
        let text = "[balancer]\nlisten = \"127.0.0.1:1\"\nbalance = \"rr\"\nidle_timeout = \"5 parsecs\"\npin_threads = \"yes\"\n[[member]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\n[[member]]\nname = \"b\"\naddress = \"nope\"\nweight = 0\n";
        let errs = parse(text).unwrap_err().to_string();
        assert!(
            errs.contains("pool.toml:3: balancer.balance: expected \"round-robin\" or \"least-connections\", found \"rr\""),
            "{errs}"
        );
        assert!(
            errs.contains("pool.toml:4: balancer.idle_timeout:"),
            "{errs}"
        );
        assert!(
            errs.contains("pool.toml:5: balancer.pin_threads: expected true or false, found"),
            "{errs}"
        );
        assert!(errs.contains("pool.toml:12: member[1].address:"), "{errs}");
        assert!(errs.contains("pool.toml:13: member[1].weight:"), "{errs}");
    }

    #[test]
    fn syntax_error_has_line() {
        let errs = parse("[balancer]\nlisten = \n").unwrap_err();
        assert_eq!(errs.0[0].line, 2, "{errs}");
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
