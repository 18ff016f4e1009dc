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

use super::settings::Settings;
use crate::transport::local::run_local;
use async_trait::async_trait;
use ebb_engine::interfaces::{Balancer, DriverError, DriverResult, HostState, MemberLbState};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{Member, Plan, Shell};
use std::collections::BTreeMap;
use std::time::Duration;

const REQUIRED: &[&str] = &["drainstop", "stop", "start", "state", "initial_state"];
const OPTIONAL: &[&str] = &["connections", "get_initial_state", "health"];

/// The operator's commands, one per operation.
pub struct CommandBalancer {
    commands: BTreeMap<String, String>,
    dir: Option<std::path::PathBuf>,
    timeout: Duration,
}

impl CommandBalancer {
    /// Reads `[balancer]` for the command driver.
    pub fn from_plan(plan: &Plan) -> Result<Self, Vec<String>> {
        let known: Vec<&str> = REQUIRED
            .iter()
            .chain(OPTIONAL)
            .copied()
            .chain(["timeout"])
            .collect();
        let mut s = Settings::new(plan, "command", &known);
        let mut commands = BTreeMap::new();
        for k in REQUIRED.iter().chain(OPTIONAL) {
            match s.string(k) {
                Some(c) => {
                    commands.insert(k.to_string(), c);
                }
                None if REQUIRED.contains(k) && !s.has(k) => {
                    s.missing(format!("the command driver needs {k} = \"<command>\""))
                }
                None => {}
            }
        }
        let timeout = s.duration("timeout", Duration::from_secs(30));
        if s.errors.is_empty() {
            Ok(CommandBalancer {
                commands,
                timeout,
                dir: crate::pool_dir(plan),
            })
        } else {
            Err(s.errors)
        }
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
                "balancer command `{cmd}` ({op} of member \"{}\") timed out after {:?}",
                member.name, self.timeout
            ))),
            code => Err(DriverError::new(format!(
                "balancer command `{cmd}` ({op} of member \"{}\") failed with exit code {code:?}: {}",
                member.name,
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
