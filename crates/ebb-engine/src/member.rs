//! Carrying one member through its operations: each one journaled (intent, then outcome),
//! each bounded, each undo owed from the moment its step may have changed something.

use crate::events::{Event, EventSink};
use crate::interfaces::{
    Balancer, CheckContext, Checker, CommandOutcome, HostState, Maintenance, MemberLbState,
    OutputSink, Transport,
};
use crate::journal::{ActionEnd, Journal, MemberState};
use crate::ops::{ops_for, Op};
use crate::placeholder::{render, Quote};
use crate::plan::{CheckSpec, DrainMode, Member, OnTimeout, Plan, RebootPolicy};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The drivers a run uses: one balancer, one transport per member (in plan order), one
/// checker.
#[derive(Clone)]
pub struct Drivers {
    /// The balancer in front of the pool.
    pub balancer: Arc<dyn Balancer>,
    /// How each member is reached, by member index.
    pub transports: Vec<Arc<dyn Transport>>,
    /// Runs verification checks.
    pub checker: Arc<dyn Checker>,
    /// Monitoring maintenance (silences, webhooks) and the alert gate.
    pub maintenance: Arc<dyn Maintenance>,
}

/// How a member's work ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEnd {
    /// Updated, verified and back in service.
    Done,
    /// A step failed: held out, undos owed.
    Failed(String),
    /// The availability policy could not be met in time; nothing was done to it.
    Capacity(String),
    /// Shutdown asked (Ctrl-C, abort); the journal shows where it stopped.
    Interrupted,
}

/// Shared state of a run in progress.
pub struct Engine {
    /// The plan.
    pub plan: Arc<Plan>,
    /// The drivers.
    pub drivers: Drivers,
    /// The journal.
    pub journal: Arc<Journal>,
    /// The run id.
    pub run_id: i64,
    /// Where events go.
    pub sink: EventSink,
    /// Members ebb has taken out (by index), for the policy.
    pub out: Mutex<HashSet<usize>>,
    /// Serialises policy checks, so two members never both see the same free slot.
    pub gate: tokio::sync::Mutex<()>,
    /// Becomes true when the run must stop.
    pub shutdown: watch::Receiver<bool>,
    /// The last in-service count recorded, so samples are written on change only.
    pub last_in_service: Mutex<Option<usize>>,
}

enum OpEnd {
    Ok {
        detail: String,
        exit_code: Option<i32>,
        output: String,
    },
    Skipped(String),
    Failed {
        reason: String,
        exit_code: Option<i32>,
        output: String,
    },
}

fn ok(detail: impl Into<String>) -> OpEnd {
    OpEnd::Ok {
        detail: detail.into(),
        exit_code: None,
        output: String::new(),
    }
}

fn failed(reason: impl Into<String>) -> OpEnd {
    OpEnd::Failed {
        reason: reason.into(),
        exit_code: None,
        output: String::new(),
    }
}

impl Engine {
    fn emit(&self, e: Event) {
        (self.sink)(&e);
    }

    fn member(&self, idx: usize) -> &Member {
        &self.plan.members[idx]
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The balancer's view of every member; a member it cannot read counts as out.
    pub async fn pool_states(&self) -> Vec<Option<MemberLbState>> {
        self.drivers
            .balancer
            .pool_state(&self.plan.members)
            .await
            .into_iter()
            .map(|r| r.ok())
            .collect()
    }

    /// Reads the pool's in-service count and, when it changed, records a sample and emits
    /// a `pool` event. Called periodically and right after each drain and rejoin, so that
    /// short changes between members are not missed.
    pub async fn sample_pool(&self) -> (usize, usize) {
        let states = self.pool_states().await;
        let in_service = states
            .iter()
            .filter(|s| s.as_ref().is_some_and(|s| s.in_service()))
            .count();
        let changed = {
            let mut last = self
                .last_in_service
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let changed = *last != Some(in_service);
            *last = Some(in_service);
            changed
        };
        if changed {
            let _ = self.journal.sample(self.run_id, in_service, states.len());
            self.emit(Event::Pool {
                in_service,
                total: states.len(),
            });
        }
        (in_service, states.len())
    }

    /// Waits until the availability policy allows taking member `idx` out, then counts it
    /// as out. Bounded by `capacity_wait`.
    pub async fn acquire_capacity(&self, idx: usize) -> Result<(), MemberEnd> {
        let plan = &self.plan;
        let total = plan.members.len();
        let max_u = plan.pool.max_unavailable.resolve(total);
        let deadline = Instant::now() + plan.pool.capacity_wait;
        let mut announced = false;
        loop {
            let message;
            {
                let _g = self.gate.lock().await;
                let states = self.pool_states().await;
                let mut out_set = self.out.lock().unwrap_or_else(|p| p.into_inner());
                let is_out = |j: usize| {
                    out_set.contains(&j) || !states[j].as_ref().is_some_and(|s| s.in_service())
                };
                let out_names: Vec<String> = (0..total)
                    .filter(|&j| j != idx && is_out(j))
                    .map(|j| plan.members[j].name.clone())
                    .collect();
                let in_service = (0..total).filter(|&j| !is_out(j)).count();
                let after = in_service - usize::from(!is_out(idx));
                if out_names.len() < max_u && after >= plan.pool.min_in_service {
                    out_set.insert(idx);
                    return Ok(());
                }
                message = format!(
                    "the availability policy does not allow taking \"{}\" out: {} of {total} in service, min_in_service = {}, max_unavailable = {max_u}; out of service now: {}",
                    plan.members[idx].name,
                    in_service,
                    plan.pool.min_in_service,
                    if out_names.is_empty() { "none".to_string() } else { out_names.join(", ") }
                );
            }
            if Instant::now() >= deadline {
                return Err(MemberEnd::Capacity(format!(
                    "{message}; waited {} (pool.capacity_wait)",
                    crate::duration::format_duration(plan.pool.capacity_wait)
                )));
            }
            if !announced {
                self.emit(Event::Waiting {
                    member: Some(plan.members[idx].name.clone()),
                    reason: message,
                });
                announced = true;
            }
            let mut sd = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = sd.changed() => {}
            }
            if self.shutting_down() {
                return Err(MemberEnd::Interrupted);
            }
        }
    }

    /// Carries member `idx` from its cursor to the end (or to a failure).
    pub async fn run_member(self: Arc<Self>, idx: usize) -> MemberEnd {
        let name = self.member(idx).name.clone();
        let rec = match self.journal.member(self.run_id, &name) {
            Ok(r) => r,
            Err(e) => return MemberEnd::Failed(e.to_string()),
        };
        let Some(rec) = rec else {
            return MemberEnd::Failed(format!("member \"{name}\" is not in this run's journal"));
        };
        if rec.cursor == 0 {
            if let Err(end) = self.wait_gate(idx).await {
                return end;
            }
            if let Err(end) = self.acquire_capacity(idx).await {
                return end;
            }
        } else {
            self.out
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(idx);
        }
        let _ = self
            .journal
            .set_member_state(self.run_id, &name, MemberState::Out, &rec.step, "");
        self.emit(Event::MemberStarted {
            member: name.clone(),
        });
        let ops = ops_for(&self.plan, idx);
        for (k, op) in ops.iter().enumerate().skip(rec.cursor) {
            if self.shutting_down() {
                return MemberEnd::Interrupted;
            }
            match self.clone().journaled(idx, k, *op).await {
                Ok(()) => {}
                Err(MemberEnd::Failed(reason)) => {
                    let step = op.name(&self.plan);
                    let _ = self.journal.set_member_state(
                        self.run_id,
                        &name,
                        MemberState::Failed,
                        &step,
                        &reason,
                    );
                    self.emit(Event::MemberFinished {
                        member: name.clone(),
                        state: "failed".into(),
                        reason: reason.clone(),
                    });
                    return MemberEnd::Failed(reason);
                }
                Err(other) => return other,
            }
        }
        let _ = self
            .journal
            .set_member_state(self.run_id, &name, MemberState::Done, "", "");
        self.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&idx);
        self.emit(Event::MemberFinished {
            member: name,
            state: "done".into(),
            reason: String::new(),
        });
        MemberEnd::Done
    }

    /// Runs one operation between its journaled intent and outcome.
    pub async fn journaled(self: Arc<Self>, idx: usize, k: usize, op: Op) -> Result<(), MemberEnd> {
        let name = self.member(idx).name.clone();
        let step = op.name(&self.plan);
        let kind = op.kind();
        let _ = self
            .journal
            .set_member_state(self.run_id, &name, MemberState::Out, &step, "");
        let action = self
            .journal
            .begin_action(self.run_id, &name, k, &step, kind)
            .map_err(|e| MemberEnd::Failed(e.to_string()))?;
        self.emit(Event::StepStarted {
            member: name.clone(),
            step: step.clone(),
            kind: kind.into(),
        });
        let started = Instant::now();
        let mut sd = self.shutdown.clone();
        let end = tokio::select! {
            end = self.exec(idx, op, action) => end,
            _ = async { while sd.changed().await.is_ok() { if *sd.borrow() { break; } } } => {
                // The intent stays without an outcome: resume sees exactly where it stopped.
                return Err(MemberEnd::Interrupted);
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let (outcome, detail, exit_code, output, result) = match end {
            OpEnd::Ok {
                detail,
                exit_code,
                output,
            } => ("ok", detail, exit_code, output, Ok(())),
            OpEnd::Skipped(d) => ("skipped", d, None, String::new(), Ok(())),
            OpEnd::Failed {
                reason,
                exit_code,
                output,
            } => (
                "failed",
                reason.clone(),
                exit_code,
                output,
                Err(MemberEnd::Failed(format!("{step}: {reason}"))),
            ),
        };
        if matches!(op, Op::Drain | Op::Return) {
            self.sample_pool().await;
        }
        let advance_to = result.is_ok().then_some(k + 1);
        self.journal
            .end_action(
                self.run_id,
                &name,
                action,
                &ActionEnd {
                    outcome,
                    exit_code,
                    output: &output,
                    detail: &detail,
                    advance_to,
                },
            )
            .map_err(|e| MemberEnd::Failed(e.to_string()))?;
        self.emit(Event::StepFinished {
            member: name,
            step,
            kind: kind.into(),
            outcome: outcome.into(),
            exit_code,
            duration_ms,
            detail,
        });
        result
    }

    async fn exec(&self, idx: usize, op: Op, action: i64) -> OpEnd {
        match op {
            Op::Hold => self.hold(idx).await,
            Op::Drain => self.drain(idx).await,
            Op::Step(i) if self.plan.runbook.steps[i].maintenance.is_some() => {
                self.begin_maintenance(idx, i, action).await
            }
            Op::Step(i) => self.step(idx, i).await,
            Op::Reboot(i) => self.reboot(idx, i, action).await,
            Op::Verify => self.verify(idx).await,
            Op::Return => self.unwind(idx, action).await,
            Op::PoolCheck => self.pool_check(idx).await,
        }
    }

    async fn hold(&self, idx: usize) -> OpEnd {
        let m = self.member(idx);
        let bal = &self.drivers.balancer;
        let prior = match bal.initial_state(m).await {
            Ok(s) => s.unwrap_or(HostState::Started),
            Err(e) => return failed(e.to_string()),
        };
        // Owed before it is changed; a re-run keeps the first recorded prior state.
        if let Err(e) = self
            .journal
            .push_owed(self.run_id, &m.name, "hold", "hold", prior.as_str())
        {
            return failed(e.to_string());
        }
        match bal.set_initial_state(m, HostState::Stopped).await {
            Ok(()) => ok(format!("initial state stopped (was {})", prior.as_str())),
            Err(e) => failed(e.to_string()),
        }
    }

    async fn drain(&self, idx: usize) -> OpEnd {
        let m = self.member(idx);
        let bal = &self.drivers.balancer;
        let spec = &self.plan.runbook.drain;
        if let Err(e) = self
            .journal
            .push_owed(self.run_id, &m.name, "drain", "drain", "")
        {
            return failed(e.to_string());
        }
        if spec.mode == DrainMode::Stop {
            let before = bal
                .state(m)
                .await
                .ok()
                .and_then(|s| s.active_connections)
                .unwrap_or(0);
            return match bal.stop(m).await {
                Ok(()) => ok(format!("stopped, {before} connection(s) cut")),
                Err(e) => failed(e.to_string()),
            };
        }
        if let Err(e) = bal.drainstop(m).await {
            return failed(e.to_string());
        }
        let started = Instant::now();
        let mut last: Option<u64> = None;
        let mut warned = false;
        loop {
            let st = match bal.state(m).await {
                Ok(s) => s,
                Err(e) => return failed(e.to_string()),
            };
            // Some balancers (NLB) cannot count a node's connections: show nothing rather
            // than a made-up 0.
            if let Some(conns) = st.active_connections.filter(|c| last != Some(*c)) {
                self.emit(Event::DrainProgress {
                    member: m.name.clone(),
                    active_connections: conns,
                });
                last = Some(conns);
            }
            let conns = st
                .active_connections
                .map_or_else(|| "an unknown number of".to_string(), |c| c.to_string());
            if st.state == HostState::Stopped
                || (st.state == HostState::Draining && st.active_connections == Some(0))
            {
                return ok(format!(
                    "drained in {}",
                    crate::duration::format_duration(started.elapsed())
                ));
            }
            if st.state == HostState::Started {
                return failed("the balancer shows the member started again while ebb was draining it (someone else started it?)");
            }
            if started.elapsed() >= spec.timeout {
                match spec.on_timeout {
                    OnTimeout::Stop => {
                        return match bal.stop(m).await {
                            Ok(()) => ok(format!("drain timeout {} reached: stopped, {conns} connection(s) cut", crate::duration::format_duration(spec.timeout))),
                            Err(e) => failed(e.to_string()),
                        };
                    }
                    OnTimeout::Abort => {
                        return failed(format!(
                            "drain timeout {} reached with {conns} connection(s) still open (on_timeout = \"abort\"); the member stays draining and held",
                            crate::duration::format_duration(spec.timeout)
                        ))
                    }
                    OnTimeout::Wait => {
                        if !warned {
                            self.emit(Event::Waiting {
                                member: Some(m.name.clone()),
                                reason: format!("drain timeout reached with {conns} connection(s) open; waiting (on_timeout = \"wait\")"),
                            });
                            warned = true;
                        }
                    }
                }
            }
            let left = spec
                .timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(50));
            bal.wait_change(m, left.min(Duration::from_secs(1))).await;
        }
    }

    fn env(&self, m: &Member) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("EBB_MEMBER".into(), m.name.clone());
        env.insert("EBB_ADDRESS".into(), m.address.clone());
        env.insert("EBB_LB_NAME".into(), m.lb_name.clone());
        env.insert("EBB_POOL".into(), self.plan.pool.name.clone());
        env.insert("EBB_RUN_ID".into(), self.run_id.to_string());
        if let Some(g) = &m.group {
            env.insert("EBB_GROUP".into(), g.clone());
        }
        for (k, v) in &m.vars {
            let key: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            env.insert(format!("EBB_VAR_{key}"), v.clone());
        }
        env
    }

    async fn command(
        &self,
        idx: usize,
        step: &str,
        template: &str,
        timeout: Duration,
    ) -> Result<CommandOutcome, String> {
        let m = self.member(idx);
        let cmd = render(template, m, Quote::from(m.shell), &BTreeMap::new());
        let sink = self.sink.clone();
        let (member, step_name) = (m.name.clone(), step.to_string());
        let out: OutputSink = Arc::new(move |line: &str| {
            sink(&Event::Output {
                member: member.clone(),
                step: step_name.clone(),
                line: line.to_string(),
            })
        });
        self.drivers.transports[idx]
            .run(&cmd, &self.env(m), timeout, Some(out))
            .await
            .map_err(|e| e.to_string())
    }

    async fn step(&self, idx: usize, i: usize) -> OpEnd {
        let m = self.member(idx);
        let spec = &self.plan.runbook.steps[i];
        if spec.undo.is_some() {
            // Owed from the moment the step may have changed anything.
            if let Err(e) =
                self.journal
                    .push_owed(self.run_id, &m.name, &spec.name, "undo", &spec.name)
            {
                return failed(e.to_string());
            }
        }
        let out = match self.command(idx, &spec.name, &spec.run, spec.timeout).await {
            Ok(o) => o,
            Err(e) => return failed(e),
        };
        if out.timed_out {
            return OpEnd::Failed {
                reason: format!(
                    "timed out after {} and was killed",
                    crate::duration::format_duration(spec.timeout)
                ),
                exit_code: None,
                output: out.tail,
            };
        }
        let code = out.exit_code;
        let reboot_code = code.is_some_and(|c| spec.reboot_required_exit_codes.contains(&c));
        let reboot = match spec.reboot {
            RebootPolicy::Never => false,
            RebootPolicy::Always => true,
            RebootPolicy::IfRequired => reboot_code,
        };
        let success = code == Some(0) || (reboot_code && spec.reboot != RebootPolicy::Never);
        if !success {
            return OpEnd::Failed {
                reason: match code {
                    Some(c) => format!("exited with code {c}"),
                    None => "was killed by a signal".into(),
                },
                exit_code: code,
                output: out.tail,
            };
        }
        if reboot {
            if let Err(e) = self.journal.set_reboot_pending(self.run_id, &m.name, true) {
                return failed(e.to_string());
            }
        }
        OpEnd::Ok {
            detail: if reboot {
                "reboot required".into()
            } else {
                String::new()
            },
            exit_code: code,
            output: out.tail,
        }
    }

    async fn reboot(&self, idx: usize, i: usize, action: i64) -> OpEnd {
        let m = self.member(idx);
        let pending = self
            .journal
            .member(self.run_id, &m.name)
            .ok()
            .flatten()
            .is_some_and(|r| r.reboot_pending);
        if !pending {
            return OpEnd::Skipped(format!(
                "\"{}\" did not ask for a reboot",
                self.plan.runbook.steps[i].name
            ));
        }
        let Some(spec) = self.plan.runbook.reboot.clone() else {
            return failed("a reboot is required but there is no [runbook.reboot]");
        };
        let transport = &self.drivers.transports[idx];
        // An interrupted reboot left the boot id it started from: the member may already
        // have rebooted, in which case it must not reboot again.
        let earlier = self
            .journal
            .actions(self.run_id, Some(&m.name))
            .ok()
            .and_then(|acts| {
                acts.into_iter()
                    .rev()
                    .filter(|a| a.kind == "reboot" && a.id != action)
                    .find_map(|a| a.detail.strip_prefix("boot before: ").map(String::from))
            });
        let current = transport.boot_id().await;
        let before = match (&earlier, &current) {
            (Some(b), Ok(now)) if b != now => {
                let _ = self.journal.set_reboot_pending(self.run_id, &m.name, false);
                return ok(format!("already rebooted (boot {b} → {now})"));
            }
            (Some(b), _) => b.clone(),
            (None, Ok(now)) => now.clone(),
            (None, Err(e)) => {
                return failed(format!(
                    "cannot read the boot identity before the reboot: {e}"
                ))
            }
        };
        let _ = self
            .journal
            .set_action_detail(action, &format!("boot before: {before}"));
        let started = Instant::now();
        let issued = self
            .command(
                idx,
                "reboot",
                &spec.command,
                spec.timeout.min(Duration::from_secs(120)),
            )
            .await;
        let mut issue_note = String::new();
        match issued {
            Ok(o) if o.exit_code != Some(0) => {
                // The command often dies with the machine; only the boot identity tells.
                issue_note = format!(" (the reboot command ended with {:?})", o.exit_code);
            }
            Err(e) => issue_note = format!(" (the reboot command: {e})"),
            _ => {}
        }
        let mut seen_down = false;
        loop {
            match transport.boot_id().await {
                Ok(now) if now != before => {
                    let _ = self.journal.set_reboot_pending(self.run_id, &m.name, false);
                    return ok(format!(
                        "rebooted in {}{}: boot {before} → {now}",
                        crate::duration::format_duration(started.elapsed()),
                        if seen_down { "" } else { " (never seen down)" }
                    ));
                }
                Ok(_) => {}
                Err(_) => seen_down = true,
            }
            if started.elapsed() >= spec.timeout {
                return failed(format!(
                    "did not come back as a new boot within {}{}{issue_note}",
                    crate::duration::format_duration(spec.timeout),
                    if seen_down {
                        " (it went down)"
                    } else {
                        " (it never went down)"
                    }
                ));
            }
            tokio::time::sleep(spec.poll_interval).await;
        }
    }

    /// Runs one check with its retries.
    pub async fn run_check(&self, check: &CheckSpec, idx: usize) -> Result<String, String> {
        let m = self.member(idx);
        let ctx = self.check_context(idx);
        let mut last = String::new();
        for attempt in 0..=check.retries {
            if attempt > 0 {
                tokio::time::sleep(check.interval).await;
            }
            match tokio::time::timeout(
                check.timeout,
                self.drivers.checker.check_in(
                    check,
                    m,
                    self.drivers.transports[idx].as_ref(),
                    &ctx,
                ),
            )
            .await
            {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = format!(
                        "timed out after {}",
                        crate::duration::format_duration(check.timeout)
                    )
                }
            }
        }
        Err(format!(
            "check \"{}\" failed on \"{}\" after {} attempt(s): {last}",
            check.name,
            m.name,
            check.retries + 1
        ))
    }

    async fn verify(&self, idx: usize) -> OpEnd {
        let mut passed = Vec::new();
        for check in &self.plan.runbook.verify {
            match self.run_check(check, idx).await {
                Ok(_) => passed.push(check.name.clone()),
                Err(e) => return failed(e),
            }
        }
        ok(if passed.is_empty() {
            "no checks configured".to_string()
        } else {
            format!("passed: {}", passed.join(", "))
        })
    }

    /// Unwinds the member's owed undos, newest first; each is paid only once it has run.
    async fn unwind(&self, idx: usize, _action: i64) -> OpEnd {
        let m = self.member(idx);
        let owed = match self.journal.owed(self.run_id, &m.name) {
            Ok(o) => o,
            Err(e) => return failed(e.to_string()),
        };
        let mut done = Vec::new();
        for o in owed.iter().rev() {
            let result: Result<(), String> = match o.kind.as_str() {
                "undo" => match self.plan.runbook.steps.iter().find(|s| s.name == o.payload).and_then(|s| s.undo.clone().map(|u| (u, s.timeout))) {
                    Some((undo, timeout)) => match self.command(idx, &format!("undo {}", o.name), &undo, timeout).await {
                        Ok(out) if out.exit_code == Some(0) => Ok(()),
                        Ok(out) if out.timed_out => Err(format!("undo of \"{}\" timed out; it is still owed", o.name)),
                        Ok(out) => Err(format!("undo of \"{}\" exited with {:?}; it is still owed. Output: {}", o.name, out.exit_code, out.tail.trim())),
                        Err(e) => Err(format!("undo of \"{}\": {e}; it is still owed", o.name)),
                    },
                    None => Err(format!("the undo of step \"{}\" is owed but the pool file no longer has that step with an undo; restore it", o.payload)),
                },
                "maintenance" => self.end_maintenance(idx, &o.payload).await,
                "drain" => self.drivers.balancer.start(m).await.map_err(|e| format!("start in the balancer: {e}")),
                "hold" => {
                    let st = HostState::parse(&o.payload).unwrap_or(HostState::Started);
                    self.drivers.balancer.set_initial_state(m, st).await.map_err(|e| format!("restore initial state {}: {e}", st.as_str()))
                }
                other => Err(format!("unknown owed undo kind \"{other}\" in the journal")),
            };
            match result {
                Ok(()) => {
                    if let Err(e) = self.journal.pay_owed(o.id) {
                        return failed(e.to_string());
                    }
                    done.push(o.name.clone());
                }
                Err(e) => return failed(e),
            }
        }
        ok(if done.is_empty() {
            "nothing owed".to_string()
        } else {
            format!("unwound: {}", done.join(", "))
        })
    }

    async fn pool_check(&self, idx: usize) -> OpEnd {
        let m = self.member(idx);
        let deadline = Instant::now() + self.plan.runbook.rejoin_timeout;
        loop {
            match self.drivers.balancer.state(m).await {
                Ok(st) if st.in_service() => break,
                Ok(st) if Instant::now() >= deadline => {
                    return failed(format!(
                        "\"{}\" is not in service {} after its return: the balancer shows {} ({}), health {}",
                        m.name,
                        crate::duration::format_duration(self.plan.runbook.rejoin_timeout),
                        st.state.as_str(),
                        st.detail,
                        match st.healthy { Some(true) => "up", Some(false) => "down", None => "unknown" }
                    ))
                }
                Err(e) if Instant::now() >= deadline => return failed(e.to_string()),
                _ => self.drivers.balancer.wait_change(m, Duration::from_millis(500)).await,
            }
        }
        // A rejoin can knock another member out: look at the whole pool.
        let out_set: HashSet<usize> = self.out.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (j, other) in self.plan.members.iter().enumerate() {
            if j == idx || out_set.contains(&j) {
                continue;
            }
            for check in &self.plan.pool.checks {
                if let Err(e) = self.run_check(check, j).await {
                    return failed(format!(
                        "after \"{}\" rejoined, the pool check failed on \"{}\": {e}",
                        m.name, other.name
                    ));
                }
            }
        }
        let (in_service, total) = self.sample_pool().await;
        ok(format!("in service; pool {in_service}/{total} in service"))
    }
}

/// Monitoring maintenance steps, the alert gate and the checks' context.
impl Engine {
    /// The key a maintenance step's work is found by (e.g. a silence's comment), unique to
    /// this run, member and step.
    fn maintenance_key(&self, member: &str, step: &str) -> String {
        format!(
            "ebb pool {} run {} member {member} step {step}",
            self.plan.pool.name, self.run_id
        )
    }

    /// Begins monitoring maintenance; its end is owed before it begins, and what ending it
    /// needs (the silence id) is kept in the journal as the step's detail.
    async fn begin_maintenance(&self, idx: usize, i: usize, action: i64) -> OpEnd {
        let m = self.member(idx);
        let spec = &self.plan.runbook.steps[i];
        let Some(mt) = &spec.maintenance else {
            return failed("not a maintenance step");
        };
        if let Err(e) =
            self.journal
                .push_owed(self.run_id, &m.name, &spec.name, "maintenance", &spec.name)
        {
            return failed(e.to_string());
        }
        let key = self.maintenance_key(&m.name, &spec.name);
        match self.drivers.maintenance.begin(mt, m, &key).await {
            Ok(token) => {
                let _ = self.journal.set_action_detail(action, &token);
                ok(token)
            }
            Err(e) => failed(e.to_string()),
        }
    }

    /// Ends the monitoring maintenance of step `step` (an owed undo).
    async fn end_maintenance(&self, idx: usize, step: &str) -> Result<(), String> {
        let m = self.member(idx);
        let Some(mt) = self
            .plan
            .runbook
            .steps
            .iter()
            .find(|s| s.name == step)
            .and_then(|s| s.maintenance.as_ref())
        else {
            return Err(format!("the end of maintenance step \"{step}\" is owed but the pool file no longer has that step; restore it"));
        };
        // The token the begin recorded; empty if ebb died between the two (the driver
        // then finds its work by the key).
        let token = self
            .journal
            .actions(self.run_id, Some(&m.name))
            .ok()
            .and_then(|acts| {
                acts.into_iter()
                    .rev()
                    .find(|a| a.kind == "step" && a.name == step && !a.detail.is_empty())
                    .map(|a| a.detail)
            })
            .unwrap_or_default();
        let key = self.maintenance_key(&m.name, step);
        self.drivers
            .maintenance
            .end(mt, m, &key, &token)
            .await
            .map(|_| ())
            .map_err(|e| format!("ending maintenance \"{step}\": {e}; it is still owed"))
    }

    /// Waits while `[pool.gate]`'s alerts fire, bounded by its timeout.
    async fn wait_gate(&self, idx: usize) -> Result<(), MemberEnd> {
        let Some(gate) = &self.plan.pool.gate else {
            return Ok(());
        };
        let started = Instant::now();
        let mut announced = false;
        loop {
            let why = match self.drivers.maintenance.gate_alerts(gate).await {
                Ok(alerts) if alerts.is_empty() => return Ok(()),
                Ok(alerts) => format!(
                    "{} alert(s) firing at {}: {}",
                    alerts.len(),
                    gate.alertmanager,
                    alerts.join("; ")
                ),
                Err(e) => format!("cannot ask {} for alerts: {e}", gate.alertmanager),
            };
            let reason = format!("[pool.gate] holds \"{}\": {why}", self.member(idx).name);
            if started.elapsed() >= gate.timeout {
                return Err(MemberEnd::Capacity(format!(
                    "{reason}; waited {} (pool.gate.timeout)",
                    crate::duration::format_duration(gate.timeout)
                )));
            }
            if !announced {
                self.emit(Event::Waiting {
                    member: Some(self.member(idx).name.clone()),
                    reason,
                });
                announced = true;
            }
            let left = gate.timeout.saturating_sub(started.elapsed());
            let mut sd = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(gate.poll_interval.min(left).max(Duration::from_millis(10))) => {}
                _ = sd.changed() => {}
            }
            if self.shutting_down() {
                return Err(MemberEnd::Interrupted);
            }
        }
    }

    /// When member `idx`'s update began in this run: the start of its first runbook step.
    fn check_context(&self, idx: usize) -> CheckContext {
        let update_began = self
            .journal
            .actions(self.run_id, Some(&self.member(idx).name))
            .ok()
            .and_then(|acts| acts.into_iter().find(|a| a.kind == "step"))
            .map(|a| std::time::UNIX_EPOCH + Duration::from_millis(a.started_ms.max(0) as u64));
        CheckContext { update_began }
    }
}
