//! The availability policy and the pool's in-service count, as the balancer sees them;
//! the order in which waiting members start.

use super::*;
use std::collections::{BTreeSet, VecDeque};
use std::sync::MutexGuard;

/// The balancer's view of the pool between reads: the members out of service in it
/// (not started, failing health checks, or unreadable).
#[derive(Default)]
pub struct PoolView {
    down: BTreeSet<usize>,
    /// Of those, the members the balancer could not be asked about: unknown, not out.
    unreadable: BTreeSet<usize>,
    /// Read in full at least once (changes are relative to that read).
    loaded: bool,
}

impl PoolView {
    fn set(&mut self, j: usize, state: &crate::interfaces::DriverResult<MemberLbState>) {
        if state.as_ref().is_ok_and(|s| s.in_service()) {
            self.down.remove(&j);
        } else {
            self.down.insert(j);
        }
        if state.is_err() {
            self.unreadable.insert(j);
        } else {
            self.unreadable.remove(&j);
        }
    }
}

/// The members waiting to be taken out, in plan order. Only the first may take a free
/// slot, so a member that waited first starts first; once closed (the run is stopping),
/// none starts and every waiting member gives up at once instead of waiting out
/// `capacity_wait`.
#[derive(Default)]
pub struct StartQueue {
    inner: Mutex<Queue>,
    /// Bumped on every change, to wake the waiting members.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<usize>,
    closed: bool,
}

impl StartQueue {
    /// Puts member `idx` at the end of the line (the scheduler does, in plan order).
    pub fn push(&self, idx: usize) {
        self.update(|q| q.waiting.push_back(idx));
    }

    /// Nothing new starts from now on; members waiting for their turn give up.
    pub fn close(&self) {
        self.update(|q| q.closed = true);
    }

    /// A member of this run gave its slot back: the waiting members look again at once.
    pub fn slot_freed(&self) {
        self.update(|_| {});
    }

    /// Member `idx` no longer waits (it started, or it will not).
    pub fn leave(&self, idx: usize) {
        self.update(|q| q.waiting.retain(|&i| i != idx));
    }

    fn update(&self, f: impl FnOnce(&mut Queue)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// True once nothing new may start.
    pub(super) fn is_closed(&self) -> bool {
        self.first().is_err()
    }

    /// Wakes on every change of the line.
    pub(super) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// `Err(())` once closed, else the member first in line (if any).
    fn first(&self) -> Result<Option<usize>, ()> {
        let q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(());
        }
        Ok(q.waiting.front().copied())
    }
}

impl Engine {
    /// Brings the pool view up to date with the balancer: only the members the driver
    /// reports changed, or, where the driver cannot report changes (and for the first
    /// read), the whole pool. Either way the view is the balancer's live state, so the
    /// policy stays exact; reading only the changes keeps each decision's cost flat in the
    /// pool's size. Returns (in service, total).
    pub async fn refresh_pool(&self) -> (usize, usize) {
        let _reading = self.pool_read.lock().await;
        let total = self.plan.members.len();
        let loaded = self.view().loaded;
        let changes = if loaded {
            self.drivers.balancer.pool_changes(&self.plan.members).await
        } else {
            None
        };
        match changes {
            Some(changes) => {
                let mut view = self.view();
                for (j, state) in changes {
                    view.set(j, &state);
                }
                (total - view.down.len(), total)
            }
            None => {
                let states = self.drivers.balancer.pool_state(&self.plan.members).await;
                let mut view = self.view();
                for (j, state) in states.iter().enumerate() {
                    view.set(j, state);
                }
                view.loaded = true;
                (total - view.down.len(), total)
            }
        }
    }

    fn view(&self) -> MutexGuard<'_, PoolView> {
        self.pool_view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the pool's in-service count and, when it changed, records a sample and emits
    /// a `pool` event. Called periodically and right after each drain and rejoin, so that
    /// short changes between members are not missed.
    pub async fn sample_pool(&self) -> (usize, usize) {
        let (in_service, total) = self.refresh_pool().await;
        let unreadable = self.view().unreadable.len();
        let changed = {
            let mut last = self
                .last_in_service
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let changed = *last != Some((in_service, unreadable));
            *last = Some((in_service, unreadable));
            changed
        };
        if changed {
            // A balancer that cannot be asked says nothing about who is in service: no
            // sample, so the report's count never shows an outage that was only silence.
            if unreadable == 0 {
                // A failed write is also kept by the journal (`Journal::failure`) and
                // stops the run at its next safe point.
                if let Err(e) = self.journal.sample(self.run_id, in_service, total) {
                    self.emit(Event::Warning {
                        message: format!("cannot record the pool's in-service count: {e}"),
                    });
                }
            }
            self.emit(Event::Pool {
                in_service,
                total,
                unreadable,
            });
        }
        (in_service, total)
    }

    /// Waits until the availability policy allows taking member `idx` out, then counts it
    /// as out. Bounded by `capacity_wait`.
    pub async fn acquire_capacity(&self, idx: usize) -> Result<(), MemberEnd> {
        let plan = &self.plan;
        let total = plan.members.len();
        let max_u = plan.pool.max_unavailable.resolve(total);
        let deadline = Instant::now() + plan.pool.capacity_wait;
        let mut announced = false;
        let mut turns = self.starts.watch();
        loop {
            let message;
            {
                let _g = self.gate.lock().await;
                let Ok(first) = self.starts.first() else {
                    return Err(MemberEnd::NotStarted);
                };
                self.refresh_pool().await;
                let mut out_set = self.out.lock().unwrap_or_else(|p| p.into_inner());
                // Out of service: taken out by this run, or out in the balancer's view.
                // Both sets hold only the members that are out, so this costs the same in
                // a pool of 10 or 50,000.
                let out_all: BTreeSet<usize> = {
                    let view = self.view();
                    out_set.iter().chain(view.down.iter()).copied().collect()
                };
                let out_names: Vec<String> = out_all
                    .iter()
                    .filter(|&&j| j != idx)
                    .map(|&j| plan.members[j].name.clone())
                    .collect();
                let in_service = total - out_all.len();
                let after = in_service - usize::from(!out_all.contains(&idx));
                let allowed = out_names.len() < max_u && after >= plan.pool.min_in_service;
                match first {
                    Some(f) if allowed && f != idx => {
                        message = format!(
                            "\"{}\" waits for \"{}\", earlier in the plan, to be taken out first",
                            plan.members[idx].name, plan.members[f].name
                        );
                    }
                    _ if allowed => {
                        out_set.insert(idx);
                        drop(out_set);
                        self.starts.leave(idx);
                        return Ok(());
                    }
                    _ => message = format!(
                    "the availability policy does not allow taking \"{}\" out: {} of {total} in service, min_in_service = {}, max_unavailable = {max_u}; out of service now: {}",
                    plan.members[idx].name,
                    in_service,
                    plan.pool.min_in_service,
                    if out_names.is_empty() { "none".to_string() } else { out_names.join(", ") }
                ),
                }
            }
            if Instant::now() >= deadline {
                return Err(MemberEnd::Capacity(format!(
                    "{message}; waited {} (pool.capacity_wait)",
                    ebb_config::format_duration(plan.pool.capacity_wait)
                )));
            }
            if !announced {
                self.emit(Event::Waiting {
                    kind: crate::events::WaitKind::Capacity,
                    member: Some(plan.members[idx].name.clone()),
                    reason: message,
                });
                announced = true;
            }
            // Poll the balancer (someone else's member may come back), wake at once when the
            // line changes or a member of this run gives its slot back, and never sleep past
            // the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            let mut sd = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500).min(left)) => {}
                _ = sd.changed() => {}
                _ = turns.changed() => {}
            }
            if self.shutting_down() {
                return Err(MemberEnd::Interrupted);
            }
        }
    }
}
