//! The `command` balancer driver: each operation is a command of the operator's, run on
//! the machine running ebb, with the member's placeholders substituted shell-quoted.
//!
//! ```toml
//! [balancer]
//! driver = "command"
//! drainstop = "lbctl drain {lb_name}"
//! stop = "lbctl stop {lb_name}"
//! start = "lbctl start {lb_name}"
//! state = "lbctl state {lb_name}"             # prints started | draining | stopped
//! connections = "lbctl conns {lb_name}"       # prints a number
//! initial_state = "lbctl initial {lb_name} {state}"
//! get_initial_state = "lbctl initial {lb_name}"  # optional: prints started | stopped
//! health = "lbctl health {lb_name}"           # optional: exit 0 = healthy
//! timeout = "30s"                             # bound on each command
//! ```

use crate::transport::local::run_local;
use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key, Kind};
use ebb_engine::interfaces::{
    Balancer, DriverError, DriverResult, HostState, MemberLbState, Transport,
};
use ebb_engine::placeholder::{self, render, Quote};
use ebb_engine::plan::{Member, Plan, Shell};
use ebb_engine::registry::BalancerDriver;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The keys of `[balancer]` for the command driver: one command per operation.
pub const KEYS: &[Key] = &[
    Key::required(
        "drainstop",
        Kind::String,
        "drains the member; exit 0 when done",
    ),
    Key::required(
        "stop",
        Kind::String,
        "stops the member, cutting its connections; exit 0 when done",
    ),
    Key::required(
        "start",
        Kind::String,
        "puts the member back in service; exit 0 when done",
    ),
    Key::required("state", Kind::String, "prints started, draining or stopped"),
    Key::required(
        "initial_state",
        Kind::String,
        "sets the initial state; gets {state} = started or stopped",
    ),
    Key::new(
        "connections",
        Kind::String,
        "prints the member's active connection count",
    ),
    Key::new(
        "get_initial_state",
        Kind::String,
        "prints started or stopped (without it: started)",
    ),
    Key::new(
        "health",
        Kind::String,
        "exit 0 when the balancer considers the member healthy",
    ),
    Key::new(
        "timeout",
        Kind::Duration,
        "bound on each command (default \"30s\")",
    ),
];

/// The command driver's descriptor, registered in [`crate::registry`].
pub struct CommandDriver;

impl BalancerDriver for CommandDriver {
    fn name(&self) -> &'static str {
        "command"
    }

    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }

    fn validate(&self, plan: &Plan, cx: &mut Context) {
        CommandBalancer::read(plan, cx);
    }

    fn build(
        &self,
        plan: &Plan,
        _: &[Arc<dyn Transport>],
    ) -> Result<Arc<dyn Balancer>, ConfigErrors> {
        Ok(Arc::new(CommandBalancer::from_plan(plan)?))
    }
}

/// The operator's commands, one per operation.
pub struct CommandBalancer {
    commands: BTreeMap<String, String>,
    dir: Option<std::path::PathBuf>,
    timeout: Duration,
}

impl CommandBalancer {
    /// Reads `[balancer]` for the command driver.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        super::read(plan, Self::read)
    }

    /// Reads `[balancer]`, every problem into `cx`: the commands, their timeout, and the
    /// placeholders in each command, checked against every member (`{state}` only in
    /// `initial_state`).
    fn read(plan: &Plan, cx: &mut Context) -> Option<Self> {
        let mut s = super::section(plan, "command", KEYS);
        let mut commands = BTreeMap::new();
        for k in KEYS.iter().filter(|k| k.kind == Kind::String) {
            match s.str(cx, k.name) {
                Some(c) => {
                    commands.insert(k.name.to_string(), c);
                }
                None if k.required && !s.has(k.name) => s.missing(
                    cx,
                    format!("the command driver needs {} = \"<command>\"", k.name),
                ),
                None => {}
            }
        }
        let timeout = s.duration(cx, "timeout", Duration::from_secs(30));
        s.finish(cx);
        for (k, template) in &commands {
            if let Some(e) = placeholder::quoted_placeholder_error(template) {
                s.error(cx, k, e);
                continue;
            }
            let extras: &[&str] = if k == "initial_state" {
                &["state"]
            } else {
                &[]
            };
            for m in &plan.members {
                if let Err(e) = placeholder::validate(template, m, extras) {
                    s.error(cx, k, e);
                    break;
                }
            }
        }
        Some(CommandBalancer {
            commands,
            timeout,
            dir: crate::pool_dir(plan),
        })
    }

    async fn call(
        &self,
        op: &str,
        member: &Member,
        state: Option<HostState>,
    ) -> DriverResult<String> {
        let Some(template) = self.commands.get(op) else {
            return Err(DriverError::new(format!(
                "the command driver has no `{op}` command"
            )));
        };
        let mut extras = BTreeMap::new();
        if let Some(s) = state {
            extras.insert("state", s.as_str().to_string());
        }
        let cmd = render(template, member, Quote::Sh, &extras);
        let out = run_local(
            self.dir.as_deref(),
            Shell::Sh,
            &cmd,
            &BTreeMap::new(),
            self.timeout,
            None,
        )
        .await?;
        match out.exit_code {
            Some(0) => Ok(out.tail),
            _ if out.timed_out => Err(DriverError::new(format!(
                "balancer command `{cmd}` ({op} of member \"{}\") timed out after {}",
                member.name,
                ebb_config::format_duration(self.timeout)
            ))),
            _ => Err(DriverError::new(format!(
                "balancer command `{cmd}` ({op} of member \"{}\") failed ({}): {}",
                member.name,
                out.ended(),
                out.tail.trim()
            ))),
        }
    }
}

#[async_trait]
impl Balancer for CommandBalancer {
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        let text = self.call("state", member, None).await?;
        let word = text.lines().last().unwrap_or("").trim().to_string();
        let state = HostState::parse(&word).ok_or_else(|| {
            DriverError::new(format!(
                "balancer command `state` for member \"{}\" printed \"{word}\"; expected started, draining or stopped",
                member.name
            ))
        })?;
        let active_connections = if self.commands.contains_key("connections") {
            let t = self.call("connections", member, None).await?;
            let n = t.lines().last().unwrap_or("").trim().to_string();
            Some(n.parse::<u64>().map_err(|_| {
                DriverError::new(format!(
                    "balancer command `connections` for member \"{}\" printed \"{n}\"; expected a number",
                    member.name
                ))
            })?)
        } else {
            None
        };
        let healthy = if self.commands.contains_key("health") {
            Some(self.call("health", member, None).await.is_ok())
        } else {
            None
        };
        Ok(MemberLbState {
            state,
            healthy,
            active_connections,
            detail: word,
        })
    }

    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        self.call("drainstop", member, None).await.map(|_| ())
    }

    async fn stop(&self, member: &Member) -> DriverResult<()> {
        self.call("stop", member, None).await.map(|_| ())
    }

    async fn start(&self, member: &Member) -> DriverResult<()> {
        self.call("start", member, None).await.map(|_| ())
    }

    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        if !self.commands.contains_key("get_initial_state") {
            return Ok(None);
        }
        let text = self.call("get_initial_state", member, None).await?;
        let word = text.lines().last().unwrap_or("").trim().to_string();
        match HostState::parse(&word) {
            Some(s @ (HostState::Started | HostState::Stopped)) => Ok(Some(s)),
            _ => Err(DriverError::new(format!(
                "balancer command `get_initial_state` for member \"{}\" printed \"{word}\"; expected started or stopped",
                member.name
            ))),
        }
    }

    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        self.call("initial_state", member, Some(state))
            .await
            .map(|_| ())
    }
}
