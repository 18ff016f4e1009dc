//! The member status the control API reports and the client parses: one vocabulary for
//! the balancer, its control API, the CLI and the engine's `builtin` driver.

use serde::{Deserialize, Serialize};

/// A member's host state, as Windows NLB names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Takes new connections.
    Started,
    /// Takes no new connections; existing ones go on. Becomes `Stopped` by itself when its
    /// last connection closes.
    Draining,
    /// Takes no traffic at all.
    Stopped,
}

/// The state a member takes when it recovers from failed health checks and when the
/// balancer restarts (NLB's "initial host state").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    /// Come back taking connections.
    Started,
    /// Stay out until someone starts the member (a "hold").
    Stopped,
}

/// What the health checks say about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The last checks passed.
    Up,
    /// The last `fall` checks failed; the member gets no new connections.
    Down,
    /// No check has passed or failed enough times yet.
    Unknown,
}

/// One member as the balancer sees it right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's name in the balancer (`lb_name`, defaulting to `name`).
    pub name: String,
    /// The backend address, `host:port`.
    pub address: String,
    /// The member's weight for balancing.
    pub weight: u32,
    /// Host state.
    pub state: HostState,
    /// Initial host state.
    pub initial_state: InitialState,
    /// Health-check verdict.
    pub health: Health,
    /// Client connections open to this member now.
    pub active_connections: u64,
    /// Client connections sent to this member since the balancer started.
    pub total_connections: u64,
    /// Bytes from clients to this member.
    pub bytes_in: u64,
    /// Bytes from this member to clients.
    pub bytes_out: u64,
    /// Connections to this member that could not be opened (refused, timed out) since
    /// the balancer started; each client was offered to another member. 0 from a
    /// balancer older than this field.
    #[serde(default)]
    pub connect_failures: u64,
    /// Connections to this member that ended with an error on its side (reset, broken)
    /// since the balancer started. 0 from a balancer older than this field.
    #[serde(default)]
    pub resets: u64,
}

/// The answer to `GET /members`: `{"members":[...],"cursor":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Every member, in pool file order (with `?since=`: only those changed since).
    pub members: Vec<MemberStatus>,
    /// Pass as `GET /members?since=CURSOR` to get only the members whose state, initial
    /// state or health (or, draining, connection count) changed after this answer. Absent
    /// from balancers older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl HostState {
    /// The lowercase name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Started => "started",
            HostState::Draining => "draining",
            HostState::Stopped => "stopped",
        }
    }
}

impl InitialState {
    /// The lowercase name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialState::Started => "started",
            InitialState::Stopped => "stopped",
        }
    }

    /// Parses `started` or `stopped`.
    pub fn parse(s: &str) -> Option<InitialState> {
        match s {
            "started" => Some(InitialState::Started),
            "stopped" => Some(InitialState::Stopped),
            _ => None,
        }
    }
}

impl Health {
    /// The lowercase name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for InitialState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
