//! The availability policy and the pool's in-service count, as the balancer sees them.

use super::*;

impl Engine {
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
}
