//! A simulated Windows NLB cluster behind fake member transports: each transport records
//! the exact command lines it is given and answers the NLB cmdlets the way the documented
//! cmdlets do (the same table format as the recorded fixtures), with the cluster's state
//! changing as a real one would (drains that take a few readings, reconvergence after a
//! start or a Set-NlbClusterNode). Other commands (runbook steps) answer from a script.

use async_trait::async_trait;
use ebb_drivers::balancer::nlb::commands::decode_command;
use ebb_engine::interfaces::{CommandOutcome, DriverError, DriverResult, OutputSink, Transport};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One node of the simulated cluster.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// `Converged`, `Converging`, `Draining`, `Stopped`, `Suspended`.
    pub state: String,
    /// `Started`, `Stopped`, `Suspended`.
    pub initial: String,
    /// Readings left before a drain ends (Draining -> Stopped).
    pub drain_readings: u32,
    /// Boot counter (a `Restart-Computer` increments it).
    pub boot: u32,
    /// The member's transport fails (down, rebooting).
    pub down: bool,
}

/// The cluster and everything the transports were asked.
#[derive(Debug, Default)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// Readings left during which every started node shows Converging.
    pub converging_readings: u32,
    /// How many readings a reconvergence lasts.
    pub converge_for: u32,
    /// How many readings a drain lasts.
    pub drain_for: u32,
    /// (member, command) in order.
    pub log: Vec<(String, String)>,
    /// Step commands containing the key answer (exit code, output).
    pub scripted: Vec<(String, i32, String)>,
    /// Cmdlet operations (e.g. "Start-NlbClusterNode") that fail with this message.
    pub failing: BTreeMap<String, String>,
}

pub type Shared = Arc<Mutex<Cluster>>;

/// A cluster of `names`, all Converged (the first the default host), initial state Started.
pub fn cluster(names: &[&str]) -> Shared {
    Arc::new(Mutex::new(Cluster {
        nodes: names
            .iter()
            .map(|n| Node {
                name: n.to_string(),
                state: "Converged".into(),
                initial: "Started".into(),
                drain_readings: 0,
                boot: 1,
                down: false,
            })
            .collect(),
        converge_for: 2,
        drain_for: 2,
        ..Default::default()
    }))
}

/// Renders `Get-NlbClusterNode`'s default table.
pub fn table(nodes: &[Node], converging: bool) -> String {
    let mut out = String::from(
        "\nName                State               Interface           HostID\n----                -----               ---------           ------\n",
    );
    for (i, n) in nodes.iter().enumerate() {
        let mut state = n.state.clone();
        if converging && state == "Converged" {
            state = "Converging".into();
        }
        if state == "Converged"
            && i == nodes
                .iter()
                .position(|n| n.state == "Converged")
                .unwrap_or(0)
        {
            state = "Converged(default)".into();
        }
        out += &format!("{:<20}{:<20}{:<20}{}\n", n.name, state, "NLB", i + 1);
    }
    out + "\n\n"
}

/// The transport of member `member` (whose NLB node is `node`).
pub struct FakeTransport {
    pub member: String,
    pub node: String,
    pub cluster: Shared,
}

fn ps_unquote_after(cmd: &str, flag: &str) -> Option<String> {
    let rest = cmd.split(flag).nth(1)?.trim_start();
    let rest = rest.strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                out.push('\'');
                chars.next();
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

fn ok(text: String) -> CommandOutcome {
    CommandOutcome {
        exit_code: Some(0),
        timed_out: false,
        tail: text,
        connection_lost: false,
        signal: None,
    }
}

fn fail(text: String) -> CommandOutcome {
    CommandOutcome {
        exit_code: Some(1),
        timed_out: false,
        tail: text,
        connection_lost: false,
        signal: None,
    }
}

impl Cluster {
    fn reconverge(&mut self) {
        self.converging_readings = self.converge_for;
    }

    fn answer(&mut self, own: &str, cmd: &str) -> CommandOutcome {
        let node_name = ps_unquote_after(cmd, "-NodeName");
        if let Some(n) = &node_name {
            if !self.nodes.iter().any(|x| x.name.eq_ignore_ascii_case(n)) {
                return fail(format!("Get-NlbClusterNode : The specified node {n} was not found in the cluster.\n    + CategoryInfo          : ObjectNotFound"));
            }
        }
        for (op, msg) in &self.failing {
            if cmd.contains(op.as_str()) {
                return fail(msg.clone());
            }
        }
        let idx = node_name.as_ref().and_then(|n| {
            self.nodes
                .iter()
                .position(|x| x.name.eq_ignore_ascii_case(n))
        });
        if cmd.contains("Win32_Process") {
            let enc = cmd
                .split("-EncodedCommand ")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap_or("");
            let inner = decode_command(enc).unwrap_or_default();
            let target = ps_unquote_after(&inner, "-NodeName").unwrap_or_default();
            assert!(
                inner.ends_with("| Stop-NlbClusterNode -Drain"),
                "detached command: {inner}"
            );
            let drain_for = self.drain_for;
            if let Some(n) = self
                .nodes
                .iter_mut()
                .find(|x| x.name.eq_ignore_ascii_case(&target))
            {
                n.state = "Draining".into();
                n.drain_readings = drain_for;
            }
            return ok(String::new());
        }
        if cmd.contains("| Stop-NlbClusterNode") {
            let i = idx.unwrap_or(0);
            self.nodes[i].state = "Stopped".into();
            self.reconverge();
            return ok(table(&self.nodes[i..=i], false));
        }
        if cmd.contains("| Resume-NlbClusterNode") {
            let i = idx.unwrap_or(0);
            if self.nodes[i].state == "Suspended" {
                self.nodes[i].state = "Stopped".into();
            }
            return ok(table(&self.nodes[i..=i], false));
        }
        if cmd.contains("| Start-NlbClusterNode") {
            let i = idx.unwrap_or(0);
            if self.nodes[i].state == "Suspended" {
                return fail(
                    "Start-NlbClusterNode : The node is suspended. Resume it first.".into(),
                );
            }
            self.nodes[i].state = "Converged".into();
            self.reconverge();
            return ok(table(&self.nodes[i..=i], true));
        }
        if cmd.contains("| Set-NlbClusterNode -InitialHostState ") {
            let i = idx.unwrap_or(0);
            let word = cmd
                .split("-InitialHostState ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("");
            assert!(
                cmd.ends_with(" -Force"),
                "Set-NlbClusterNode without -Force asks for confirmation: {cmd}"
            );
            self.nodes[i].initial = word.to_string();
            self.reconverge();
            return ok(table(&self.nodes[i..=i], false));
        }
        if cmd.contains("Get-NlbClusterDriverInfo") {
            let n = self.nodes.iter().find(|x| x.name == own).cloned();
            let Some(n) = n else {
                return fail("no NLB driver".into());
            };
            let current = if n.state.starts_with("Converg") {
                "Started"
            } else {
                n.state.as_str()
            };
            return ok(format!(
                "\nFullyQualifiedDomainName : {}.corp.example\nHostId                   : 1\nInitialHostState         : {}\nCurrentHostState         : {current}\nPersistedHostStates      : True\n\n",
                n.name.to_lowercase(),
                n.initial
            ));
        }
        if cmd.contains("Get-NlbClusterNode") {
            let converging = self.converging_readings > 0;
            self.converging_readings = self.converging_readings.saturating_sub(1);
            let text = table(&self.nodes, converging);
            for n in self.nodes.iter_mut().filter(|n| n.state == "Draining") {
                if n.drain_readings == 0 {
                    n.state = "Stopped".into();
                } else {
                    n.drain_readings -= 1;
                }
            }
            return ok(text);
        }
        // A runbook step.
        if cmd.contains("Restart-Computer") {
            if let Some(n) = self.nodes.iter_mut().find(|x| x.name == own) {
                n.boot += 1;
                // NLB comes back in its initial host state.
                n.state = if n.initial == "Started" {
                    "Converged".into()
                } else {
                    n.initial.clone()
                };
            }
            return ok(String::new());
        }
        for (key, code, out) in &self.scripted {
            if cmd.contains(key.as_str()) {
                return CommandOutcome {
                    exit_code: Some(*code),
                    timed_out: false,
                    tail: out.clone(),
                    connection_lost: false,
                    signal: None,
                };
            }
        }
        ok(String::new())
    }
}

#[async_trait]
impl Transport for FakeTransport {
    async fn run(
        &self,
        command: &str,
        _env: &BTreeMap<String, String>,
        _timeout: Duration,
        output: Option<OutputSink>,
    ) -> DriverResult<CommandOutcome> {
        let out = {
            let mut c = self.cluster.lock().unwrap();
            c.log.push((self.member.clone(), command.to_string()));
            if c.nodes.iter().any(|n| n.name == self.node && n.down) {
                return Err(DriverError::new(format!(
                    "ssh: connect to host {}.corp.example port 22: Connection refused",
                    self.member
                )));
            }
            c.answer(&self.node, command)
        };
        if let Some(o) = output {
            for l in out.tail.lines() {
                o(l);
            }
        }
        Ok(out)
    }

    async fn boot_id(&self) -> DriverResult<String> {
        let c = self.cluster.lock().unwrap();
        let n = c.nodes.iter().find(|n| n.name == self.node).unwrap();
        if n.down {
            return Err(DriverError::new("down"));
        }
        Ok(format!("boot-{}", n.boot))
    }
}

/// One fake transport per member (node names = the members' lb_names).
pub fn transports(plan: &ebb_engine::plan::Plan, cluster: &Shared) -> Vec<Arc<dyn Transport>> {
    plan.members
        .iter()
        .map(|m| {
            Arc::new(FakeTransport {
                member: m.name.clone(),
                node: m.lb_name.clone(),
                cluster: cluster.clone(),
            }) as Arc<dyn Transport>
        })
        .collect()
}

/// The commands sent so far (and forget them).
pub fn take_log(cluster: &Shared) -> Vec<(String, String)> {
    std::mem::take(&mut cluster.lock().unwrap().log)
}
