//! The `nlb` balancer driver: Windows Network Load Balancing through its PowerShell
//! cmdlets, run on the members themselves through their transports (`shell =
//! "powershell"`), the way the tutorial's operator does it on each CAS server.
//!
//! ```toml
//! [balancer]
//! driver = "nlb"
//! interface = "NLB"            # optional: -InterfaceName, for hosts in several clusters
//! timeout = "1m"               # bound on each cmdlet run
//! converge_timeout = "2m"      # bound on waiting for the cluster to converge
//! poll_interval = "1s"         # how often the node states are read while waiting
//! ```
//!
//! | ebb | NLB cmdlets |
//! |---|---|
//! | state | `Get-NlbClusterNode` (one table, every node) |
//! | drainstop | `... \| Stop-NlbClusterNode -Drain`, started detached; ebb watches and owns the timeout |
//! | stop | `... \| Stop-NlbClusterNode` |
//! | start | `Resume-NlbClusterNode` first if suspended, then `Start-NlbClusterNode`; waits for convergence |
//! | initial state | `Get-NlbClusterDriverInfo` (`InitialHostState`) / `Set-NlbClusterNode -InitialHostState ... -Force`, then waits for convergence |
//!
//! See docs/nlb.md for why each is done this way.

pub mod commands;
pub mod parse;

use async_trait::async_trait;
use commands::Commands;
use ebb_config::{format_duration, ConfigErrors, Context, Key, Kind};
use ebb_engine::interfaces::{
    Balancer, DriverError, DriverResult, HostState, MemberLbState, OutputSink, Transport,
};
use ebb_engine::plan::{Member, Plan, Shell};
use ebb_engine::registry::BalancerDriver;
use parse::NodeRow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The keys of `[balancer]` for the nlb driver.
pub const KEYS: &[Key] = &[
    Key::new(
        "interface",
        Kind::String,
        "-InterfaceName, for hosts in several clusters",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "bound on each cmdlet run (default \"1m\")",
    ),
    Key::new(
        "converge_timeout",
        Kind::Duration,
        "bound on waiting for the cluster to converge (default \"2m\")",
    ),
    Key::new(
        "poll_interval",
        Kind::Duration,
        "how often node states are read while waiting (default \"1s\")",
    ),
];

/// The nlb driver's descriptor, registered in [`crate::registry`]. It acts through the
/// members' own transports.
pub struct NlbDriver;

impl BalancerDriver for NlbDriver {
    fn name(&self) -> &'static str {
        "nlb"
    }

    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }

    fn validate(&self, plan: &Plan, cx: &mut Context) {
        NlbSettings::read(plan, cx);
    }

    fn build(
        &self,
        plan: &Plan,
        transports: &[Arc<dyn Transport>],
    ) -> Result<Arc<dyn Balancer>, ConfigErrors> {
        let settings = NlbSettings::from_plan(plan)?;
        Ok(Arc::new(Nlb::with_transports(
            settings,
            plan,
            transports.to_vec(),
        )))
    }
}

/// `[balancer]` for the nlb driver.
#[derive(Debug, Clone)]
pub struct NlbSettings {
    /// Cmdlet generation.
    pub commands: Commands,
    /// Bound on each cmdlet run.
    pub timeout: Duration,
    /// Bound on waiting for the cluster to converge after a change.
    pub converge_timeout: Duration,
    /// How often node states are read while ebb waits.
    pub poll_interval: Duration,
}

impl NlbSettings {
    /// Reads and validates `[balancer]`; every problem at once, with file, line and key.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        super::read(plan, Self::read)
    }

    /// Reads `[balancer]`, every problem into `cx`; every member must run PowerShell.
    fn read(plan: &Plan, cx: &mut Context) -> Option<Self> {
        let mut s = super::section(plan, "nlb", KEYS);
        let interface = s.str(cx, "interface");
        let timeout = s.duration(cx, "timeout", Duration::from_secs(60));
        let converge_timeout = s.duration(cx, "converge_timeout", Duration::from_secs(120));
        let poll_interval = s.duration(cx, "poll_interval", Duration::from_secs(1));
        s.finish(cx);
        for (i, m) in plan.members.iter().enumerate() {
            if m.shell != Shell::PowerShell {
                cx.err(&format!("member[{i}].shell"), format!(
                    "member \"{}\": the nlb driver runs the NLB PowerShell cmdlets on the member itself: set shell = \"powershell\" on it (or in [defaults])",
                    m.name
                ));
            }
        }
        Some(NlbSettings {
            commands: Commands { interface },
            timeout,
            converge_timeout,
            poll_interval,
        })
    }
}

/// Why a command on a member gave no output.
struct Failed {
    /// What happened, naming the member (`on "cas1": ...`).
    text: String,
    /// The member's own connection failed (not the command on it).
    unreached: bool,
}

/// Drives Windows NLB through the cmdlets, on each member through its transport.
pub struct Nlb {
    settings: NlbSettings,
    /// Member name -> how to run commands on it, in plan order.
    members: Vec<(String, Arc<dyn Transport>)>,
}

impl Nlb {
    /// A driver running its commands through `transports` (one per member, in plan
    /// order): the seam tests use to record the exact command lines.
    pub fn with_transports(
        settings: NlbSettings,
        plan: &Plan,
        transports: Vec<Arc<dyn Transport>>,
    ) -> Self {
        Nlb {
            settings,
            members: plan
                .members
                .iter()
                .map(|m| m.name.clone())
                .zip(transports)
                .collect(),
        }
    }

    fn index(&self, member: &Member) -> DriverResult<usize> {
        self.members
            .iter()
            .position(|(n, _)| *n == member.name)
            .ok_or_else(|| {
                DriverError::new(format!("member \"{}\" is not in the pool", member.name))
            })
    }

    /// Runs `cmd` on member `idx`; its whole output on success.
    async fn run(&self, idx: usize, cmd: &str) -> Result<String, Failed> {
        let (name, transport) = &self.members[idx];
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink: OutputSink = {
            let lines = lines.clone();
            Arc::new(move |l: &str| {
                if let Ok(mut v) = lines.lock() {
                    v.push(l.to_string());
                }
            })
        };
        let out = transport
            .run(cmd, &BTreeMap::new(), self.settings.timeout, Some(sink))
            .await
            .map_err(|e| Failed {
                text: format!("on \"{name}\": {e}"),
                unreached: true,
            })?;
        let text = lines.lock().map(|v| v.join("\n")).unwrap_or_default();
        // Transports that do not stream (or streamed nothing) still give the tail.
        let text = if text.trim().is_empty() {
            out.tail.clone()
        } else {
            text
        };
        let failed = |text: String| {
            Err(Failed {
                text,
                unreached: false,
            })
        };
        match out.exit_code {
            Some(0) => Ok(text),
            _ if out.timed_out => failed(format!(
                "on \"{name}\": `{cmd}` did not finish within {} (balancer.timeout)",
                format_duration(self.settings.timeout)
            )),
            code => failed(format!(
                "on \"{name}\": `{cmd}` failed (exit code {}): {}",
                code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
                last_lines(&text, 6)
            )),
        }
    }

    /// The cluster's nodes, read on member `first` or, when it does not answer (it may be
    /// rebooting), on the other members in turn. The error holds why each member could
    /// not read them (see [`unreadable`]).
    async fn nodes(&self, first: usize) -> Result<Vec<NodeRow>, Vec<(usize, Failed)>> {
        let cmd = self.settings.commands.nodes();
        let mut errors = Vec::new();
        let order = std::iter::once(first).chain((0..self.members.len()).filter(|&i| i != first));
        for i in order {
            match self.run(i, &cmd).await {
                Ok(text) => match parse::parse_nodes(&text) {
                    Ok(rows) => return Ok(rows),
                    Err(e) => errors.push((
                        i,
                        Failed {
                            text: format!("on \"{}\": {e}", self.members[i].0),
                            unreached: false,
                        },
                    )),
                },
                Err(e) => errors.push((i, e)),
            }
        }
        Err(errors)
    }

    /// Every node of the cluster, read on the first member that answers (`ebb init`
    /// lists them as the pool's members).
    pub async fn cluster_nodes(&self) -> Result<Vec<NodeRow>, String> {
        if self.members.is_empty() {
            return Err("no member to read the cluster on".into());
        }
        self.nodes(0).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|(_, e)| e.text)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Why the cluster could not be read, as seen from member `idx`: its own error, and
    /// which other members were tried.
    fn unreadable(&self, errors: &[(usize, Failed)], idx: usize) -> String {
        let own = errors
            .iter()
            .find(|(i, _)| *i == idx)
            .map(|(_, e)| e.text.as_str())
            .unwrap_or("not tried");
        let others: Vec<String> = errors
            .iter()
            .filter(|(i, _)| *i != idx)
            .map(|(i, _)| format!("\"{}\"", self.members[*i].0))
            .collect();
        if others.is_empty() {
            format!("the NLB cluster's nodes could not be read {own}")
        } else {
            format!(
                "the NLB cluster's nodes could not be read {own}, nor on any other member ({} tried)",
                others.join(", ")
            )
        }
    }

    fn find<'a>(rows: &'a [NodeRow], member: &Member) -> Result<&'a NodeRow, String> {
        rows.iter()
            .find(|r| r.name.eq_ignore_ascii_case(&member.lb_name))
            .ok_or_else(|| {
                format!(
                    "the NLB cluster has no node \"{}\" (its nodes: {}): set the member's lb_name to its NLB node name",
                    member.lb_name,
                    rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
                )
            })
    }

    fn error(member: &Member, what: impl std::fmt::Display) -> DriverError {
        DriverError::new(format!(
            "member \"{}\" (NLB node \"{}\"): {what}",
            member.name, member.lb_name
        ))
    }

    /// [`Self::error`] of a command that failed on the member; it quotes the member's
    /// failed connection, if that is why.
    fn failed(member: &Member, e: Failed) -> DriverError {
        let error = Self::error(member, &e.text);
        if e.unreached {
            error.unreached(&member.name)
        } else {
            error
        }
    }

    /// [`Self::error`] of a cluster that could not be read (see [`Self::unreadable`]); it
    /// quotes the member's own failed connection, if that is why.
    fn unreadable_error(
        &self,
        member: &Member,
        errors: &[(usize, Failed)],
        idx: usize,
    ) -> DriverError {
        let error = Self::error(member, self.unreadable(errors, idx));
        if errors.iter().any(|(i, e)| *i == idx && e.unreached) {
            error.unreached(&member.name)
        } else {
            error
        }
    }

    async fn node(&self, member: &Member) -> DriverResult<NodeRow> {
        let idx = self.index(member)?;
        let rows = self
            .nodes(idx)
            .await
            .map_err(|e| self.unreadable_error(member, &e, idx))?;
        Self::find(&rows, member)
            .cloned()
            .map_err(|e| Self::error(member, e))
    }

    async fn act(&self, member: &Member, cmd: String) -> DriverResult<()> {
        let idx = self.index(member)?;
        self.run(idx, &cmd)
            .await
            .map(|_| ())
            .map_err(|e| Self::failed(member, e))
    }

    /// Waits until no node is converging any more (two readings in a row, so that a
    /// change that has not begun to converge yet is not mistaken for a settled cluster),
    /// and, with `started`, until the member's own node has converged. Bounded by
    /// `converge_timeout`.
    async fn wait_converged(
        &self,
        member: &Member,
        started: bool,
        after: &str,
    ) -> DriverResult<()> {
        let idx = self.index(member)?;
        let t = Instant::now();
        let mut settled_once = false;
        let mut last: String;
        loop {
            tokio::time::sleep(self.settings.poll_interval).await;
            match self.nodes(idx).await {
                Ok(rows) => {
                    let own_ok = !started || Self::find(&rows, member).is_ok_and(|r| r.converged());
                    let settled = own_ok && !rows.iter().any(|r| r.converging());
                    last = rows
                        .iter()
                        .map(|r| format!("{} {}", r.name, r.state))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if settled && settled_once {
                        return Ok(());
                    }
                    settled_once = settled;
                }
                Err(e) => last = self.unreadable(&e, idx),
            }
            if t.elapsed() >= self.settings.converge_timeout {
                return Err(Self::error(
                    member,
                    format!(
                        "the cluster has not converged {} after {after}: {last} (balancer.converge_timeout sets the wait; a node that stays Converging usually has a configuration that differs from the others')",
                        format_duration(self.settings.converge_timeout)
                    ),
                ));
            }
        }
    }
}

#[async_trait]
impl Balancer for Nlb {
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        self.node(member).await.map(|r| parse::to_member_state(&r))
    }

    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        // One reading of the whole cluster serves every member.
        match self.nodes(0).await {
            Ok(rows) => members
                .iter()
                .map(|m| {
                    Self::find(&rows, m)
                        .map(parse::to_member_state)
                        .map_err(|e| Self::error(m, e))
                })
                .collect(),
            Err(e) => members
                .iter()
                .enumerate()
                .map(|(i, m)| Err(self.unreadable_error(m, &e, i)))
                .collect(),
        }
    }

    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        let before = self.node(member).await?;
        if matches!(
            before.state_word().to_ascii_lowercase().as_str(),
            "draining" | "stopped"
        ) {
            return Ok(());
        }
        self.act(member, self.settings.commands.drainstop(&member.lb_name))
            .await?;
        // The drain runs detached: wait until it has visibly begun, so that the engine's
        // first look does not find the node still Converged and take it for started.
        let t = Instant::now();
        loop {
            let row = self.node(member).await?;
            if !row.converged() && !row.converging() {
                return Ok(());
            }
            if t.elapsed() >= self.settings.timeout {
                return Err(Self::error(
                    member,
                    format!(
                        "the drain was started but the node still shows {} after {}: look at the member's event log (source NLB)",
                        row.state,
                        format_duration(self.settings.timeout)
                    ),
                ));
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn stop(&self, member: &Member) -> DriverResult<()> {
        self.act(member, self.settings.commands.stop(&member.lb_name))
            .await
    }

    async fn start(&self, member: &Member) -> DriverResult<()> {
        let row = self.node(member).await?;
        if row.state_word().eq_ignore_ascii_case("Suspended") {
            // A resumed node is Stopped; it needs the start below as well.
            self.act(member, self.settings.commands.resume(&member.lb_name))
                .await?;
        }
        self.act(member, self.settings.commands.start(&member.lb_name))
            .await?;
        self.wait_converged(member, true, "Start-NlbClusterNode")
            .await
    }

    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        let idx = self.index(member)?;
        let text = self
            .run(idx, &self.settings.commands.driver_info())
            .await
            .map_err(|e| Self::failed(member, e))?;
        let word = parse::list_value(&text, "InitialHostState").ok_or_else(|| {
            Self::error(
                member,
                format!(
                    "Get-NlbClusterDriverInfo printed no InitialHostState: {}",
                    last_lines(&text, 4)
                ),
            )
        })?;
        parse::initial_state(&word).map(Some).ok_or_else(|| {
            Self::error(
                member,
                format!(
                    "its initial host state is \"{word}\": ebb can record and restore only Started or Stopped; set it to one of them (Set-NlbClusterNode -InitialHostState) before the run"
                ),
            )
        })
    }

    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        self.act(
            member,
            self.settings
                .commands
                .set_initial_state(&member.lb_name, state),
        )
        .await?;
        // Every Set-NlbClusterNode makes the whole cluster reconverge.
        let started = self
            .node(member)
            .await
            .map(|r| r.converged() || r.converging())
            .unwrap_or(false);
        self.wait_converged(member, started, "Set-NlbClusterNode")
            .await
    }

    async fn wait_change(&self, _member: &Member, max: Duration) {
        tokio::time::sleep(max.min(self.settings.poll_interval)).await;
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let s = lines[lines.len().saturating_sub(n)..].join(" | ");
    if s.is_empty() {
        "no output".into()
    } else {
        s
    }
}
