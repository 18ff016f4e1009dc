//! Carrying one member through its operations: each one journaled (intent, then outcome),
//! each bounded, each undo owed from the moment its step may have changed something.

use crate::events::{Event, EventSink};
use crate::interfaces::{
    Balancer, CheckContext, Checker, CommandOutcome, HostState, Maintenance, MemberLbState,
    OutputSink, StartedSink, Transport,
};
use crate::journal::{
    ActionEnd, ActionKind, Journal, JournalError, MemberState, Outcome, OwedKind,
};
use crate::ops::{ops_for, Op};
use crate::placeholder::{render, Quote};
use crate::plan::{CheckSpec, DrainMode, Member, OnTimeout, Plan, RebootPolicy, StepSpec};
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
    /// The run is stopping (the failure policy says so): it was not started and nothing
    /// was done to it.
    NotStarted,
    /// `stop_after` has passed: it was not started and the run pauses.
    Paused(String),
    /// Its drain did not end in time (`on_timeout = "skip"`): it was returned to service
    /// untouched and marked skipped.
    Skipped(String),
    /// Its verify or bake failed: it was pulled back out (after a bake), rolled back (when
    /// the runbook has rollback steps) and verified again, and is held. The run halts
    /// whatever `on_failure` says, so a person decides.
    RolledBack(String),
    /// The journal could not be written: the member stopped at a safe point (between two
    /// operations, or with an operation's intent recorded and no outcome) and the run
    /// stops, to be continued by `ebb resume` once the journal is writable again.
    Journal(JournalError),
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
    pub last_in_service: Mutex<Option<(usize, usize)>>,
    /// The balancer's view of which members are out of service, kept between reads.
    pub pool_view: Mutex<PoolView>,
    /// One pool read at a time (the sampler's and a member's policy check may overlap):
    /// each read is applied to `pool_view` before the next one starts, so an older answer
    /// never lands over a newer one. With `pool_changes` that matters: the next read
    /// reports only what changed after this one.
    pub pool_read: tokio::sync::Mutex<()>,
    /// Members waiting to be taken out, in plan order.
    pub starts: StartQueue,
    /// `stop_after` from the start of this run or resume: no member starts after it.
    pub stop_at: Option<Instant>,
    /// `[[pool.window]]`: no member starts outside a window or too close to its end.
    pub schedule: Option<Arc<crate::window::Schedule>>,
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
    /// The member is to be returned to service untouched and marked skipped (its drain
    /// did not end, `on_timeout = "skip"`).
    SkipMember(String),
    /// The connection to the member dropped while its command ran: it may have completed.
    /// Not marked done; resume treats it as interrupted (re-run if idempotent, else ask).
    Unknown {
        reason: String,
        output: String,
    },
}

/// Where the cursor goes after an operation: past it when it succeeds; when it fails,
/// nowhere (`None`: it is tried again on resume) or to the start of the rollback.
#[derive(Debug, Clone, Copy)]
struct Advance {
    ok: usize,
    failed: Option<usize>,
}

/// A member's place in the start queue; leaves it when dropped.
struct Turn<'a>(&'a StartQueue, usize);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
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

mod bake;
mod maintenance;
mod policy;
mod resumed;
mod stages;

/// Returns once the shutdown signal is raised (at once if it already is); never if its
/// sender is gone.
pub(crate) async fn shutdown_asked(mut sd: watch::Receiver<bool>) {
    loop {
        if *sd.borrow_and_update() {
            return;
        }
        if sd.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

pub use policy::{PoolView, StartQueue};

impl Engine {
    pub(super) fn emit(&self, e: Event) {
        (self.sink)(&e);
    }

    /// Member `idx` is no longer out on this run's account: its slot goes to the next one.
    fn free_slot(&self, idx: usize) {
        self.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&idx);
        self.starts.slot_freed();
    }

    pub(super) fn member(&self, idx: usize) -> &Member {
        &self.plan.members[idx]
    }

    pub(super) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A safe point: going on is fine unless some write to the journal failed (here or in
    /// another member's task, the heartbeat or the pool sampler).
    pub(super) fn journal_ok(&self) -> Result<(), MemberEnd> {
        match self.journal.failure() {
            Some(e) => Err(MemberEnd::Journal(e)),
            None => Ok(()),
        }
    }

    /// Carries member `idx` from its cursor to the end (or to a failure).
    pub async fn run_member(self: Arc<Self>, idx: usize) -> MemberEnd {
        let name = self.member(idx).name.clone();
        // Out of the start queue on every way out of this block, panics included.
        let turn = Turn(&self.starts, idx);
        let rec = match self.journal.member(self.run_id, &name) {
            Ok(r) => r,
            Err(e) => return MemberEnd::Journal(e),
        };
        let Some(rec) = rec else {
            return MemberEnd::Failed(format!("member \"{name}\" is not in this run's journal"));
        };
        if rec.cursor == 0 {
            if let Some(end) = self.past_stop_after(idx) {
                return end;
            }
            if let Err(end) = self.wait_gate(idx).await {
                return end;
            }
            if let Err(end) = self.acquire_capacity(idx).await {
                return end;
            }
            if let Some(end) = self.past_stop_after(idx) {
                // Gave its slot back without touching the member.
                self.free_slot(idx);
                return end;
            }
            drop(turn);
        } else {
            drop(turn);
            self.out
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(idx);
            if let Err(reason) = self.put_out_again(idx, rec.cursor).await {
                if let Err(e) = self.journal.set_member_state(
                    self.run_id,
                    &name,
                    MemberState::Failed,
                    "drain",
                    &reason,
                ) {
                    return MemberEnd::Journal(e);
                }
                return MemberEnd::Failed(reason);
            }
        }
        if let Err(e) =
            self.journal
                .set_member_state(self.run_id, &name, MemberState::Out, &rec.step, "")
        {
            return MemberEnd::Journal(e);
        }
        self.emit(Event::MemberStarted {
            member: name.clone(),
        });
        let ops = ops_for(&self.plan, idx);
        let rolled_back = match self.clone().run_ops(idx, &ops, rec.cursor).await {
            Ok(rolled_back) => rolled_back,
            Err(MemberEnd::Skipped(reason)) => return self.skip_member(idx, &ops, reason).await,
            Err(end) => return end,
        };
        if rolled_back {
            return self.finish_rolled_back(idx).await;
        }
        if let Err(e) = self
            .journal
            .set_member_state(self.run_id, &name, MemberState::Done, "", "")
        {
            return MemberEnd::Journal(e);
        }
        self.free_slot(idx);
        self.emit(Event::MemberFinished {
            member: name,
            state: "done".into(),
            reason: String::new(),
            left: String::new(),
        });
        MemberEnd::Done
    }

    /// Runs `ops` from `from`: the member's operations up to its bake, and, when verify or
    /// the bake fails and the runbook says so, the rollback after them. `Ok(true)`: the
    /// rollback ran to its end (the member is held; the run halts). A failed operation
    /// ends the member `Failed` here (state, event).
    async fn run_ops(
        self: Arc<Self>,
        idx: usize,
        ops: &[Op],
        from: usize,
    ) -> Result<bool, MemberEnd> {
        let name = self.member(idx).name.clone();
        let forward_end = ops
            .iter()
            .position(|o| o.is_rollback())
            .unwrap_or(ops.len());
        // A cursor inside the rollback: a resume of a rollback under way.
        let mut rolling = (forward_end..ops.len()).contains(&from);
        let mut k = from;
        while k < ops.len() {
            if self.shutting_down() {
                return Err(MemberEnd::Interrupted);
            }
            self.journal_ok()?;
            let op = ops[k];
            let next = match op {
                // The last forward operation, or a pull-back with no rollback steps to
                // follow it, moves the cursor past the rollback.
                _ if k + 1 == forward_end => ops.len(),
                Op::PullBack if !self.plan.runbook.rollback_on.bake => ops.len(),
                _ => k + 1,
            };
            let on_failure = match op {
                Op::Verify | Op::Bake => crate::ops::rollback_entry(&self.plan, ops, op),
                // Verified again or not, the member stays held: the rollback ends here.
                Op::Reverify => Some(ops.len()),
                _ => None,
            };
            let to = Advance {
                ok: next,
                failed: on_failure,
            };
            match self.clone().attempts(idx, k, op, to).await {
                Ok(()) => k = next,
                Err(MemberEnd::Failed(reason)) if on_failure.is_some() => {
                    if !rolling {
                        self.emit(Event::Notice {
                            member: Some(name.clone()),
                            message: format!("{reason}: rolling back"),
                        });
                    }
                    rolling = true;
                    k = on_failure.unwrap_or(ops.len());
                }
                Err(MemberEnd::Failed(reason)) => {
                    let step = op.name(&self.plan);
                    self.journal
                        .set_member_state(self.run_id, &name, MemberState::Failed, &step, &reason)
                        .map_err(MemberEnd::Journal)?;
                    let left = self.where_left(idx).await;
                    self.emit(Event::MemberFinished {
                        member: name.clone(),
                        state: "failed".into(),
                        reason: reason.clone(),
                        left,
                    });
                    return Err(MemberEnd::Failed(reason));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(rolling)
    }

    /// Where a failed member was left, for the FAILED line: what the balancer says now (in
    /// service or not, held or not) and the undos the journal says it owes, never a
    /// stock phrase (a hold the balancer refused, or `hold = false`, leaves it unheld).
    pub async fn where_left(&self, idx: usize) -> String {
        let m = self.member(idx);
        let bal = &self.drivers.balancer;
        // The balancer may be the reason the member failed (its host cut off): ask both
        // at once, each bounded, so a balancer that does not answer delays the halt by
        // seconds, not by two full retry periods.
        let (state, initial) = tokio::join!(
            read_within(WHERE_LEFT_READ, bal.state(m)),
            read_within(WHERE_LEFT_READ, bal.initial_state(m))
        );
        let place = match state {
            Ok(s) if s.in_service() => "it is still in service".to_string(),
            Ok(s) => format!("it stays out of service ({})", s.state.as_str()),
            Err(e) => format!("the balancer cannot say where it is ({e})"),
        };
        let held = match initial {
            Ok(Some(HostState::Stopped)) => ", held (initial state stopped)",
            Ok(Some(_)) => ", not held",
            _ => "",
        };
        let owed = match self.journal.owed(self.run_id, &m.name) {
            Ok(o) if o.is_empty() => "; it owes no undo".to_string(),
            Ok(o) => format!(
                "; owed undos: {}",
                o.iter()
                    .rev()
                    .map(|o| o.describe())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("; its owed undos cannot be read ({e})"),
        };
        format!("{place}{held}{owed}")
    }

    /// `Some(Paused)` once `stop_after` has passed, or when member `idx` does not fit in a
    /// maintenance window now (checked again after a wait for capacity): it does not start.
    fn past_stop_after(&self, idx: usize) -> Option<MemberEnd> {
        if let Some(s) = &self.schedule {
            if let crate::window::Decision::Closed { reason, .. } = s.decide(&self.member(idx).name)
            {
                return Some(MemberEnd::Paused(crate::window::paused(&reason)));
            }
        }
        let at = self.stop_at?;
        (Instant::now() >= at).then(|| {
            MemberEnd::Paused(format!(
                "stop_after {} reached: no further member starts; `ebb resume` goes on",
                self.plan
                    .runbook
                    .stop_after
                    .map(ebb_config::format_duration)
                    .unwrap_or_default()
            ))
        })
    }

    /// Returns a member whose drain did not end to service untouched (its owed undos,
    /// the hold and the drain, are paid by the return) and marks it skipped.
    async fn skip_member(self: Arc<Self>, idx: usize, ops: &[Op], reason: String) -> MemberEnd {
        let name = self.member(idx).name.clone();
        let k = ops
            .iter()
            .position(|o| *o == Op::Return)
            .unwrap_or(ops.len());
        if let Err(end) = self.clone().journaled(idx, k, Op::Return).await {
            let why = match end {
                MemberEnd::Failed(r) => r,
                _ => return end,
            };
            let reason = format!("returning it after its drain was skipped: {why}");
            if let Err(e) = self.journal.set_member_state(
                self.run_id,
                &name,
                MemberState::Failed,
                "return",
                &reason,
            ) {
                return MemberEnd::Failed(e.to_string());
            }
            return MemberEnd::Failed(reason);
        }
        if let Err(e) = self.journal.set_member_state(
            self.run_id,
            &name,
            MemberState::Skipped,
            "drain",
            &reason,
        ) {
            return MemberEnd::Failed(e.to_string());
        }
        self.free_slot(idx);
        self.emit(Event::MemberFinished {
            member: name,
            state: "skipped".into(),
            reason: reason.clone(),
            left: String::new(),
        });
        MemberEnd::Skipped(reason)
    }

    /// Runs operation `k`, and again after a failure while its step has `retries` left,
    /// `retry_interval` apart. Every attempt is its own journaled action. An attempt whose
    /// outcome is unknown (the connection dropped) is tried again only when the step is
    /// idempotent, as resume would.
    async fn attempts(
        self: Arc<Self>,
        idx: usize,
        k: usize,
        op: Op,
        to: Advance,
    ) -> Result<(), MemberEnd> {
        let plan = self.plan.clone();
        let Some(spec) = op.step_spec(&plan) else {
            return self.journaled_to(idx, k, op, to).await;
        };
        let name = self.member(idx).name.clone();
        let mut attempt = 0;
        loop {
            let reason = match self.clone().journaled_to(idx, k, op, to).await {
                Err(MemberEnd::Failed(reason)) if attempt < spec.retries => reason,
                other => return other,
            };
            self.journal_ok()?;
            let unknown = self
                .journal
                .actions(self.run_id, Some(&name))
                .map_err(MemberEnd::Journal)?
                .last()
                .is_some_and(|a| a.outcome == Some(Outcome::Unknown));
            if unknown && !spec.idempotent {
                return Err(MemberEnd::Failed(reason));
            }
            attempt += 1;
            self.emit(Event::Notice {
                member: Some(name.clone()),
                message: format!(
                    "{reason}; attempt {} of {} in {} (retries = {})",
                    attempt + 1,
                    spec.retries + 1,
                    ebb_config::format_duration(spec.retry_interval),
                    spec.retries
                ),
            });
            tokio::select! {
                _ = tokio::time::sleep(spec.retry_interval) => {}
                _ = shutdown_asked(self.shutdown.clone()) => return Err(MemberEnd::Interrupted),
            }
        }
    }

    /// Runs one operation between its journaled intent and outcome.
    pub async fn journaled(self: Arc<Self>, idx: usize, k: usize, op: Op) -> Result<(), MemberEnd> {
        let to = Advance {
            ok: k + 1,
            failed: None,
        };
        self.journaled_to(idx, k, op, to).await
    }

    /// Runs one operation between its journaled intent and outcome; the outcome moves the
    /// cursor as `to` says, in the same journal write.
    async fn journaled_to(
        self: Arc<Self>,
        idx: usize,
        k: usize,
        op: Op,
        to: Advance,
    ) -> Result<(), MemberEnd> {
        let name = self.member(idx).name.clone();
        let step = op.name(&self.plan);
        let kind = op.kind();
        self.journal
            .set_member_state(self.run_id, &name, MemberState::Out, &step, "")
            .map_err(MemberEnd::Journal)?;
        let action = self
            .journal
            .begin_action(self.run_id, &name, k, &step, &kind)
            .map_err(MemberEnd::Journal)?;
        self.emit(Event::StepStarted {
            member: name.clone(),
            step: step.clone(),
            kind: kind.clone(),
        });
        let started = Instant::now();
        let end = tokio::select! {
            end = self.exec(idx, op, action) => end,
            _ = shutdown_asked(self.shutdown.clone()) => {
                // The intent stays without an outcome: resume sees exactly where it stopped.
                // Its time does: the step's duration ends now, not when resume runs.
                if let Err(e) = self.journal.set_action_stopped(action, crate::events::now_ms()) {
                    self.emit(Event::Warning { message: format!("{name}: {e}") });
                }
                return Err(MemberEnd::Interrupted);
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let (outcome, detail, exit_code, output, result) = match end {
            OpEnd::Ok {
                detail,
                exit_code,
                output,
            } => (Outcome::Ok, detail, exit_code, output, Ok(())),
            OpEnd::Skipped(d) => (Outcome::Skipped, d, None, String::new(), Ok(())),
            OpEnd::SkipMember(d) => (
                Outcome::Skipped,
                d.clone(),
                None,
                String::new(),
                Err(MemberEnd::Skipped(d)),
            ),
            OpEnd::Failed {
                reason,
                exit_code,
                output,
            } => (
                Outcome::Failed,
                reason.clone(),
                exit_code,
                output,
                Err(MemberEnd::Failed(format!("{step}: {reason}"))),
            ),
            OpEnd::Unknown { reason, output } => (
                Outcome::Unknown,
                reason.clone(),
                None,
                output,
                Err(MemberEnd::Failed(format!("{step}: {reason}"))),
            ),
        };
        // A sample right after a member left or came back, so a short change is not
        // missed. Not after a failure: the balancer may be what failed (its host cut
        // off), and the halt must not wait for it again; the periodic sampler reads it.
        if result.is_ok() && matches!(op, Op::Drain | Op::Return | Op::PullBack) {
            self.sample_pool().await;
        }
        let advance_to = match (&result, &outcome) {
            (Ok(()), _) => Some(to.ok),
            (Err(_), Outcome::Failed) => to.failed,
            _ => None,
        };
        self.journal
            .end_action(
                self.run_id,
                &name,
                action,
                &ActionEnd {
                    outcome: outcome.clone(),
                    exit_code,
                    output: &output,
                    detail: &detail,
                    advance_to,
                },
            )
            .map_err(MemberEnd::Journal)?;
        self.emit(Event::StepFinished {
            member: name,
            step,
            kind,
            outcome,
            exit_code,
            duration_ms,
            detail,
        });
        result
    }

    async fn exec(&self, idx: usize, op: Op, action: i64) -> OpEnd {
        // A run that lost its lock (lease lapsed, taken over) changes nothing more.
        if let Err(e) = self.journal.fence() {
            return failed(e.to_string());
        }
        match op {
            Op::Hold => self.hold(idx).await,
            Op::Drain => self.drain(idx).await,
            Op::Step(i) if self.plan.runbook.steps[i].maintenance.is_some() => {
                self.begin_maintenance(idx, i, action).await
            }
            Op::Step(i) => self.step(idx, &self.plan.runbook.steps[i], action).await,
            Op::Reboot(i) => {
                let step = &self.plan.runbook.steps[i].name;
                self.reboot(idx, step, action).await
            }
            Op::Verify | Op::Reverify => self.verify(idx).await,
            Op::Return => self.unwind(idx, action).await,
            Op::PoolCheck => self.pool_check(idx).await,
            Op::Bake => self.bake(idx).await,
            Op::PullBackHold => self.hold(idx).await,
            Op::PullBack => self.pull_back(idx).await,
            Op::Rollback(i) => self.step(idx, &self.plan.runbook.rollback[i], action).await,
            Op::RollbackReboot(i) => {
                let step = &self.plan.runbook.rollback[i].name;
                self.reboot(idx, step, action).await
            }
        }
    }
}

/// How long the FAILED line waits for the balancer to say where the member was left.
const WHERE_LEFT_READ: Duration = Duration::from_secs(5);

/// A balancer read that gives up after `bound`, as the balancer not answering. Only for
/// reads: they change nothing, so abandoning one mid-way is safe (a change, such as a
/// drainstop or an nginx edit and reload, is never cut short).
pub(crate) async fn read_within<T>(
    bound: Duration,
    read: impl std::future::Future<Output = crate::interfaces::DriverResult<T>>,
) -> crate::interfaces::DriverResult<T> {
    tokio::time::timeout(bound, read).await.unwrap_or_else(|_| {
        Err(crate::interfaces::DriverError::new(format!(
            "no answer within {}",
            ebb_config::format_duration(bound)
        )))
    })
}
