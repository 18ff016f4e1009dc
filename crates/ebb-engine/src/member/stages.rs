//! The stages of a member: hold, drain, steps, reboot, verify, return and the pool check.

use super::*;

impl Engine {
    /// Refuses member `idx` when the balancer shows it held (initial state stopped) and
    /// out of service, but this run did not hold it: another run (from another state dir
    /// or admin host) or an operator keeps it out, and ebb would take it over and return
    /// it to service behind their back. (Initial state stopped on a member in service is a
    /// standing setting, common with NLB; it is recorded and restored as usual.) Called
    /// before anything is changed on the member. Returns the initial state it read
    /// (`None`: the hold is this run's, or the balancer has none).
    async fn refuse_if_held_elsewhere(&self, idx: usize) -> Result<Option<HostState>, OpEnd> {
        let m = self.member(idx);
        let ours = self
            .journal
            .owed(self.run_id, &m.name)
            .map_err(|e| failed(e.to_string()))?
            .iter()
            .any(|o| o.kind == OwedKind::Hold);
        if ours {
            return Ok(None);
        }
        let bal = &self.drivers.balancer;
        let initial = bal
            .initial_state(m)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if initial != Some(HostState::Stopped) {
            return Ok(initial);
        }
        match bal.state(m).await {
            Ok(st) if st.state != HostState::Started => Err(failed(format!(
                "the balancer shows \"{}\" out of service and held (initial state stopped) by someone else: another ebb run (other state dir or admin host) or an operator; nothing was changed. Finish that run, or set its initial state to started if no one holds it",
                m.name
            ))),
            Ok(_) => Ok(initial),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    pub(super) async fn hold(&self, idx: usize) -> OpEnd {
        let m = self.member(idx);
        let bal = &self.drivers.balancer;
        // On a re-run of this run's own hold `push_owed` keeps the first recorded prior.
        let prior = match self.refuse_if_held_elsewhere(idx).await {
            Ok(s) => s.unwrap_or(HostState::Started),
            Err(end) => return end,
        };
        // Owed before it is changed; a re-run keeps the first recorded prior state.
        if let Err(e) = self.journal.push_owed(
            self.run_id,
            &m.name,
            "hold",
            &OwedKind::Hold,
            prior.as_str(),
        ) {
            return failed(e.to_string());
        }
        match bal.set_initial_state(m, HostState::Stopped).await {
            Ok(()) => ok(format!("initial state stopped (was {})", prior.as_str())),
            Err(e) => failed(e.to_string()),
        }
    }

    /// Drains member `idx`: its connections, then its drain gates (`until`), all within
    /// the drain timeout.
    pub(super) async fn drain(&self, idx: usize) -> OpEnd {
        let started = Instant::now();
        match self.drain_connections(idx, started).await {
            OpEnd::Ok { detail, .. } if !self.plan.runbook.drain.until.is_empty() => {
                self.drain_gates(idx, started, detail).await
            }
            other => other,
        }
    }

    /// Keeps a drained member draining until each drain gate passes, in order. The live
    /// output names the gate that is still closed; the drain timeout (counted from
    /// `started`, the drain's start) and `on_timeout` bound the whole wait.
    async fn drain_gates(&self, idx: usize, started: Instant, drained: String) -> OpEnd {
        let m = self.member(idx);
        let spec = &self.plan.runbook.drain;
        let timeout = ebb_config::format_duration(spec.timeout);
        let mut shown: Option<&str> = None;
        let mut waiting_past_timeout = false;
        'gates: for gate in &spec.until {
            loop {
                let why = match self.run_check(gate, idx).await {
                    Ok(_) => continue 'gates,
                    Err(e) => e,
                };
                if shown != Some(gate.name.as_str()) {
                    self.emit(Event::Waiting {
                        kind: crate::events::WaitKind::Drain,
                        member: Some(m.name.clone()),
                        reason: format!("drain gate \"{}\" is still closed: {why}", gate.name),
                    });
                    shown = Some(gate.name.as_str());
                }
                if started.elapsed() >= spec.timeout {
                    let closed = format!(
                        "drain timeout {timeout} reached with drain gate \"{}\" still closed ({why})",
                        gate.name
                    );
                    match spec.on_timeout {
                        OnTimeout::Stop => {
                            return match self.drivers.balancer.stop(m).await {
                                Ok(()) => ok(format!("{drained}; {closed}: stopped and going on (on_timeout = \"stop\")")),
                                Err(e) => failed(e.to_string()),
                            }
                        }
                        OnTimeout::Abort => {
                            return failed(format!("{closed} (on_timeout = \"abort\"); the member stays draining and held"))
                        }
                        OnTimeout::Skip => {
                            return OpEnd::SkipMember(format!("{closed} (on_timeout = \"skip\"): returned to service untouched; `ebb run --only-skipped` does it later"))
                        }
                        OnTimeout::Wait if !waiting_past_timeout => {
                            self.emit(Event::Waiting {
 kind: crate::events::WaitKind::Drain,
                                member: Some(m.name.clone()),
                                reason: format!("{closed}; waiting (on_timeout = \"wait\")"),
                            });
                            waiting_past_timeout = true;
                        }
                        OnTimeout::Wait => {}
                    }
                }
                let left = spec.timeout.saturating_sub(started.elapsed());
                let pause = if left.is_zero() {
                    gate.interval
                } else {
                    gate.interval.min(left)
                };
                tokio::time::sleep(pause.max(Duration::from_millis(10))).await;
            }
        }
        let names: Vec<&str> = spec.until.iter().map(|g| g.name.as_str()).collect();
        ok(format!(
            "{drained}; drain gates open: {} after {}",
            names.join(", "),
            ebb_config::format_duration(started.elapsed())
        ))
    }

    /// Drains member `idx`'s connections (or cuts them, with `mode = "stop"`).
    async fn drain_connections(&self, idx: usize, started: Instant) -> OpEnd {
        let m = self.member(idx);
        let bal = &self.drivers.balancer;
        let spec = &self.plan.runbook.drain;
        if let Err(end) = self.refuse_if_held_elsewhere(idx).await {
            return end;
        }
        if let Err(e) = self
            .journal
            .push_owed(self.run_id, &m.name, "drain", &OwedKind::Drain, "")
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
        // The balancer may not answer for a while (its host cut off, a restart): the member
        // is only drained once the balancer confirms it, so ebb waits for that within the
        // drain timeout and never moves on without it.
        let mut unanswered = false;
        let unconfirmed = |e: &dyn std::fmt::Display| {
            format!(
                "the drain could not be confirmed within the drain timeout {}: the balancer does not answer ({e}); the member stays held. `ebb resume` continues once the balancer answers",
                ebb_config::format_duration(spec.timeout)
            )
        };
        let note_unanswered = |e: &dyn std::fmt::Display, unanswered: &mut bool| {
            if !*unanswered {
                self.emit(Event::Waiting {
                    kind: crate::events::WaitKind::Drain,
                    member: Some(m.name.clone()),
                    reason: format!(
                        "the balancer does not answer ({e}); waiting for it to confirm the drain"
                    ),
                });
                *unanswered = true;
            }
        };
        while let Err(e) = bal.drainstop(m).await {
            if started.elapsed() >= spec.timeout {
                return failed(unconfirmed(&e));
            }
            note_unanswered(&e, &mut unanswered);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut last: Option<u64> = None;
        let mut warned = false;
        loop {
            // Each read is bounded by the drain time left (at least DRAIN_READ): past the
            // drain timeout ebb stops waiting for a balancer that does not answer, rather
            // than for another whole retry period of it.
            let bound = spec
                .timeout
                .saturating_sub(started.elapsed())
                .max(DRAIN_READ);
            let st = match read_within(bound, bal.state(m)).await {
                Ok(s) => s,
                Err(e) if started.elapsed() >= spec.timeout => return failed(unconfirmed(&e)),
                Err(e) => {
                    note_unanswered(&e, &mut unanswered);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
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
                    ebb_config::format_duration(started.elapsed())
                ));
            }
            if st.state == HostState::Started {
                return failed("the balancer shows the member started again while ebb was draining it (someone else started it?)");
            }
            if started.elapsed() >= spec.timeout {
                match spec.on_timeout {
                    OnTimeout::Stop => {
                        return match bal.stop(m).await {
                            Ok(()) => ok(format!("drain timeout {} reached: stopped, {conns} connection(s) cut", ebb_config::format_duration(spec.timeout))),
                            Err(e) => failed(e.to_string()),
                        };
                    }
                    OnTimeout::Abort => {
                        return failed(format!(
                            "drain timeout {} reached with {conns} connection(s) still open (on_timeout = \"abort\"); the member stays draining",
                            ebb_config::format_duration(spec.timeout)
                        ))
                    }
                    OnTimeout::Skip => {
                        return OpEnd::SkipMember(format!(
                            "drain timeout {} reached with {conns} connection(s) still open (on_timeout = \"skip\"): returned to service untouched; `ebb run --only-skipped` does it later",
                            ebb_config::format_duration(spec.timeout)
                        ))
                    }
                    OnTimeout::Wait => {
                        if !warned {
                            self.emit(Event::Waiting {
 kind: crate::events::WaitKind::Drain,
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

    pub(super) fn env(&self, m: &Member) -> BTreeMap<String, String> {
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

    pub(super) async fn command(
        &self,
        idx: usize,
        step: &str,
        template: &str,
        timeout: Duration,
        action: i64,
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
        // The journal learns which process runs the step, so that if this ebb dies, the
        // next one can tell whether it still runs instead of starting it a second time.
        let (journal, sink, who) = (self.journal.clone(), self.sink.clone(), m.name.clone());
        let what = step.to_string();
        let started: StartedSink = Arc::new(move |process: &str| {
            if let Err(e) = journal.set_action_process(action, process) {
                sink(&Event::Warning {
                    message: format!("{who}: cannot record the process of \"{what}\" in the journal ({e}); if ebb stops now, `ebb resume` cannot tell whether it still runs"),
                });
            }
        });
        self.drivers.transports[idx]
            .run_tracked(&cmd, &self.env(m), timeout, Some(out), started)
            .await
            .map_err(|e| e.to_string())
    }

    pub(super) async fn step(&self, idx: usize, spec: &StepSpec, action: i64) -> OpEnd {
        let m = self.member(idx);
        if spec.undo.is_some() {
            // Owed from the moment the step may have changed anything.
            if let Err(e) = self.journal.push_owed(
                self.run_id,
                &m.name,
                &spec.name,
                &OwedKind::Undo,
                &spec.name,
            ) {
                return failed(e.to_string());
            }
        }
        let out = match self
            .command(idx, &spec.name, &spec.run, spec.timeout, action)
            .await
        {
            Ok(o) => o,
            Err(e) => return failed(e),
        };
        if out.connection_lost {
            return OpEnd::Unknown {
                reason: format!(
                    "the connection to \"{}\" was lost while the step ran: its outcome is unknown (it may have completed); the member stays out. Once it is reachable, `ebb resume` runs the step again if it is idempotent, or asks which way it went",
                    m.name
                ),
                output: out.tail,
            };
        }
        if out.timed_out {
            return OpEnd::Failed {
                reason: format!(
                    "timed out after {} and was killed",
                    ebb_config::format_duration(spec.timeout)
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
                    None => format!("ended with no exit code: {}", out.ended()),
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

    pub(super) async fn reboot(&self, idx: usize, step: &str, action: i64) -> OpEnd {
        let m = self.member(idx);
        let pending = self
            .journal
            .member(self.run_id, &m.name)
            .ok()
            .flatten()
            .is_some_and(|r| r.reboot_pending);
        if !pending {
            return OpEnd::Skipped(format!("\"{step}\" did not ask for a reboot"));
        }
        let Some(spec) = self.plan.runbook.reboot.clone() else {
            return failed("a reboot is required but there is no [runbook.reboot]");
        };
        let transport = &self.drivers.transports[idx];
        // An interrupted reboot left the boot id it started from: the member may already
        // have rebooted, in which case it must not reboot again.
        let earlier = match self.journal.actions(self.run_id, Some(&m.name)) {
            Ok(acts) => acts
                .into_iter()
                .rev()
                .filter(|a| a.kind == ActionKind::Reboot && a.id != action)
                .find_map(|a| a.boot_before),
            Err(e) => return failed(e.to_string()),
        };
        let current = transport.boot_id().await;
        let before = match (&earlier, &current) {
            (Some(b), Ok(now)) if b != now => {
                if let Err(e) = self.journal.set_reboot_pending(self.run_id, &m.name, false) {
                    return failed(e.to_string());
                }
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
        // Recorded before the command: without it a resume could not tell a completed
        // reboot from one still to do, and would reboot the member again.
        if let Err(e) = self.journal.set_action_boot_before(action, &before) {
            return failed(e.to_string());
        }
        let started = Instant::now();
        let issued = self
            .command(
                idx,
                "reboot",
                &spec.command,
                spec.timeout.min(Duration::from_secs(120)),
                action,
            )
            .await;
        let mut issue_note = String::new();
        match issued {
            Ok(o) if o.exit_code != Some(0) => {
                // The command often dies with the machine; only the boot identity tells.
                issue_note = format!(" (the reboot command ended with {})", o.ended());
            }
            Err(e) => issue_note = format!(" (the reboot command: {e})"),
            _ => {}
        }
        let mut seen_down = false;
        loop {
            match transport.boot_id().await {
                Ok(now) if now != before => {
                    if let Err(e) = self.journal.set_reboot_pending(self.run_id, &m.name, false) {
                        return failed(e.to_string());
                    }
                    return ok(format!(
                        "rebooted in {}{}: boot {before} → {now}",
                        ebb_config::format_duration(started.elapsed()),
                        if seen_down { "" } else { " (never seen down)" }
                    ));
                }
                Ok(_) => {}
                Err(_) => seen_down = true,
            }
            if started.elapsed() >= spec.timeout {
                // The boot it started from stays in the record: a resume must recognise a
                // reboot that completed after this timeout, not reboot it again.
                return failed(format!(
                    "did not come back as a new boot within {}{}{issue_note}; boot before: {before}",
                    ebb_config::format_duration(spec.timeout),
                    if seen_down {
                        " (it went down or cannot be reached)"
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
                        ebb_config::format_duration(check.timeout)
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

    pub(super) async fn verify(&self, idx: usize) -> OpEnd {
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
    pub(super) async fn unwind(&self, idx: usize, action: i64) -> OpEnd {
        let m = self.member(idx);
        let owed = match self.journal.owed(self.run_id, &m.name) {
            Ok(o) => o,
            Err(e) => return failed(e.to_string()),
        };
        let mut done = Vec::new();
        for o in owed.iter().rev() {
            if let Err(e) = self.journal.fence() {
                return failed(e.to_string());
            }
            let result: Result<(), String> = match &o.kind {
                OwedKind::Undo => match self.plan.runbook.steps.iter().find(|s| s.name == o.payload).and_then(|s| s.undo.clone().map(|u| (u, s.timeout))) {
                    Some((undo, timeout)) => match self.command(idx, &format!("undo {}", o.name), &undo, timeout, action).await {
                        Ok(out) if out.exit_code == Some(0) => Ok(()),
                        Ok(out) if out.timed_out => Err(format!("undo of \"{}\" timed out; it is still owed", o.name)),
                        Ok(out) => Err(format!("undo of \"{}\" failed ({}); it is still owed. Output: {}", o.name, out.ended(), out.tail.trim())),
                        Err(e) => Err(format!("undo of \"{}\": {e}; it is still owed", o.name)),
                    },
                    None => Err(format!("the undo of step \"{}\" is owed but the pool file no longer has that step with an undo; restore it", o.payload)),
                },
                OwedKind::Maintenance => self.end_maintenance(idx, &o.payload).await,
                OwedKind::Drain => self.drivers.balancer.start(m).await.map_err(|e| format!("start in the balancer: {e}")),
                OwedKind::Hold => {
                    let st = HostState::parse(&o.payload).unwrap_or(HostState::Started);
                    self.drivers.balancer.set_initial_state(m, st).await.map_err(|e| format!("restore initial state {}: {e}", st.as_str()))
                }
                OwedKind::Other(other) => Err(format!("unknown owed undo kind \"{other}\" in the journal")),
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

    pub(super) async fn pool_check(&self, idx: usize) -> OpEnd {
        let m = self.member(idx);
        let deadline = Instant::now() + self.plan.runbook.rejoin_timeout;
        loop {
            match self.drivers.balancer.state(m).await {
                Ok(st) if st.in_service() => break,
                Ok(st) if Instant::now() >= deadline => {
                    return failed(format!(
                        "\"{}\" is not in service {} after its return: the balancer shows {} ({}), health {}",
                        m.name,
                        ebb_config::format_duration(self.plan.runbook.rejoin_timeout),
                        st.state.as_str(),
                        st.detail,
                        match st.healthy { Some(true) => "up", Some(false) => "down", None => "unknown" }
                    ))
                }
                Err(e) if Instant::now() >= deadline => return failed(e.to_string()),
                _ => self.drivers.balancer.wait_change(m, Duration::from_millis(500)).await,
            }
        }
        // A rejoin can knock another member out: look at the whole pool (when the pool has
        // checks; without, this would be a walk over every member for nothing).
        let out_set: HashSet<usize> = if self.plan.pool.checks.is_empty() {
            HashSet::new()
        } else {
            self.out.lock().unwrap_or_else(|p| p.into_inner()).clone()
        };
        let others = if self.plan.pool.checks.is_empty() {
            &[][..]
        } else {
            &self.plan.members[..]
        };
        for (j, other) in others.iter().enumerate() {
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

/// The least time one balancer read may take while a drain waits for it (the drivers'
/// own request timeouts are about this long).
const DRAIN_READ: Duration = Duration::from_secs(5);
