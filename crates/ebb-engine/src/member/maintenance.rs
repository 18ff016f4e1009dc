//! Monitoring maintenance steps and the alert gate.

use super::*;

/// Monitoring maintenance steps, the alert gate and the checks' context.
impl Engine {
    /// The key a maintenance step's work is found by (e.g. a silence's comment), unique to
    /// this run, member and step.
    pub(super) fn maintenance_key(&self, member: &str, step: &str) -> String {
        format!(
            "ebb pool {} run {} member {member} step {step}",
            self.plan.pool.name, self.run_id
        )
    }

    /// Begins monitoring maintenance; its end is owed before it begins, and what ending it
    /// needs (the silence id) is kept in the journal as the step's detail.
    pub(super) async fn begin_maintenance(&self, idx: usize, i: usize, action: i64) -> OpEnd {
        let m = self.member(idx);
        let spec = &self.plan.runbook.steps[i];
        let Some(mt) = &spec.maintenance else {
            return failed("not a maintenance step");
        };
        if let Err(e) = self.journal.push_owed(
            self.run_id,
            &m.name,
            &spec.name,
            &OwedKind::Maintenance,
            &spec.name,
        ) {
            return failed(e.to_string());
        }
        let key = self.maintenance_key(&m.name, &spec.name);
        match self.drivers.maintenance.begin(mt, m, &key).await {
            // Without the token in the journal, a resume could not end this maintenance
            // by it: the step fails and its end (owed above) is found by the key.
            Ok(token) => match self.journal.set_action_detail(action, &token) {
                Ok(()) => ok(token),
                Err(e) => failed(e.to_string()),
            },
            Err(e) => failed(e.to_string()),
        }
    }

    /// Ends the monitoring maintenance of step `step` (an owed undo).
    pub(super) async fn end_maintenance(&self, idx: usize, step: &str) -> Result<(), String> {
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
                    .find(|a| a.kind == ActionKind::Step && a.name == step && !a.detail.is_empty())
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
    pub(super) async fn wait_gate(&self, idx: usize) -> Result<(), MemberEnd> {
        let Some(gate) = &self.plan.pool.gate else {
            return Ok(());
        };
        let started = Instant::now();
        let mut announced = false;
        let mut turns = self.starts.watch();
        loop {
            if self.starts.is_closed() {
                return Err(MemberEnd::NotStarted);
            }
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
                    ebb_config::format_duration(gate.timeout)
                )));
            }
            if !announced {
                self.emit(Event::Waiting {
                    kind: crate::events::WaitKind::Gate,
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
                _ = turns.changed() => {}
            }
            if self.shutting_down() {
                return Err(MemberEnd::Interrupted);
            }
        }
    }

    /// When member `idx`'s update began in this run: the start of its first runbook step.
    pub(super) fn check_context(&self, idx: usize) -> CheckContext {
        let at = |ms: i64| std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
        let actions = self
            .journal
            .actions(self.run_id, Some(&self.member(idx).name))
            .unwrap_or_default();
        let update_began = actions
            .iter()
            .find(|a| a.kind == ActionKind::Step)
            .map(|a| at(a.started_ms));
        let returned = actions
            .iter()
            .rev()
            .find(|a| a.kind == ActionKind::Return && a.outcome == Some(Outcome::Ok))
            .and_then(|a| a.ended_ms)
            .map(at);
        // Members not yet touched in this run: what an updated member is compared with.
        // Read only if a check asks: a pass over the whole pool at every check made each
        // transition cost grow with the pool.
        let (journal, plan, run_id) = (self.journal.clone(), self.plan.clone(), self.run_id);
        let not_updated = crate::interfaces::NotUpdated::lazy(move || {
            let pending: HashSet<String> = journal
                .members(run_id)
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.state == MemberState::Pending)
                .map(|m| m.name)
                .collect();
            plan.members
                .iter()
                .enumerate()
                .filter(|(i, m)| *i != idx && pending.contains(&m.name))
                .map(|(_, m)| m.clone())
                .collect()
        });
        CheckContext {
            update_began,
            returned,
            balancer: Some(self.drivers.balancer.clone()),
            not_updated,
        }
    }
}
