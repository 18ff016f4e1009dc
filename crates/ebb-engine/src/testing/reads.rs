//! A journal store that counts what is read from it: lets a test show that a run's journal
//! reads grow with the pool only as its members do (a constant per member), without timing
//! anything.

use crate::journal::{
    ActionEnd, ActionKind, ActionRecord, JResult, JournalError, LockHolder, MemberRecord,
    MemberState, Owed, OwedKind, RunRecord, RunState, Store,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Records read from a journal so far (members, actions, owed undos, samples, runs,
/// member times: one per record returned) and whole-run member reads (`Store::members`).
#[derive(Debug, Default)]
pub struct JournalReads {
    records: AtomicUsize,
    member_lists: AtomicUsize,
}

impl JournalReads {
    /// Records returned by every read so far.
    pub fn records(&self) -> usize {
        self.records.load(Ordering::SeqCst)
    }

    /// Calls of `Store::members` (every member of a run) so far.
    pub fn member_lists(&self) -> usize {
        self.member_lists.load(Ordering::SeqCst)
    }

    fn count<T>(&self, r: JResult<Vec<T>>) -> JResult<Vec<T>> {
        if let Ok(v) = &r {
            self.records.fetch_add(v.len(), Ordering::SeqCst);
        }
        r
    }

    fn count_one<T>(&self, r: JResult<Option<T>>) -> JResult<Option<T>> {
        if let Ok(Some(_)) = &r {
            self.records.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

/// `inner` with its reads counted in `reads`.
pub(super) struct CountingStore {
    pub(super) inner: Box<dyn Store>,
    pub(super) reads: Arc<JournalReads>,
}

impl Store for CountingStore {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn fence(&self) -> JResult<()> {
        self.inner.fence()
    }
    fn failure(&self) -> Option<JournalError> {
        self.inner.failure()
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    fn lock_broken(&self) -> JResult<Option<String>> {
        self.inner.lock_broken()
    }
    fn lock(&self, pool: &str, steal: bool) -> JResult<Result<(), LockHolder>> {
        self.inner.lock(pool, steal)
    }
    fn lock_holder(&self, pool: &str) -> JResult<Option<LockHolder>> {
        self.inner.lock_holder(pool)
    }
    fn heartbeat(&self, pool: &str) -> JResult<()> {
        self.inner.heartbeat(pool)
    }
    fn unlock(&self, pool: &str) -> JResult<()> {
        self.inner.unlock(pool)
    }
    fn create_run(
        &self,
        pool: &str,
        pool_file: &str,
        members: &[(String, Vec<String>)],
    ) -> JResult<i64> {
        self.inner.create_run(pool, pool_file, members)
    }
    fn latest_run(&self, pool: Option<&str>) -> JResult<Option<RunRecord>> {
        self.reads.count_one(self.inner.latest_run(pool))
    }
    fn run(&self, id: i64) -> JResult<Option<RunRecord>> {
        self.reads.count_one(self.inner.run(id))
    }
    fn run_ids(&self, pool: Option<&str>) -> JResult<Vec<i64>> {
        self.reads.count(self.inner.run_ids(pool))
    }
    fn set_run_state(&self, run: i64, state: RunState, message: &str) -> JResult<()> {
        self.inner.set_run_state(run, state, message)
    }
    fn set_run_message(&self, run: i64, message: &str) -> JResult<()> {
        self.inner.set_run_message(run, message)
    }
    fn set_next_wave(&self, run: i64, wave: usize) -> JResult<()> {
        self.inner.set_next_wave(run, wave)
    }
    fn members(&self, run: i64) -> JResult<Vec<MemberRecord>> {
        self.reads.member_lists.fetch_add(1, Ordering::SeqCst);
        self.reads.count(self.inner.members(run))
    }
    fn member(&self, run: i64, name: &str) -> JResult<Option<MemberRecord>> {
        self.reads.count_one(self.inner.member(run, name))
    }
    fn set_member_state(
        &self,
        run: i64,
        member: &str,
        state: MemberState,
        step: &str,
        reason: &str,
    ) -> JResult<()> {
        self.inner
            .set_member_state(run, member, state, step, reason)
    }
    fn set_member_ops(&self, run: i64, member: &str, ops: &[String]) -> JResult<()> {
        self.inner.set_member_ops(run, member, ops)
    }
    fn set_reboot_pending(&self, run: i64, member: &str, pending: bool) -> JResult<()> {
        self.inner.set_reboot_pending(run, member, pending)
    }
    fn begin_action(
        &self,
        run: i64,
        member: &str,
        op: usize,
        name: &str,
        kind: &ActionKind,
    ) -> JResult<i64> {
        self.inner.begin_action(run, member, op, name, kind)
    }
    fn set_action_detail(&self, action: i64, detail: &str) -> JResult<()> {
        self.inner.set_action_detail(action, detail)
    }
    fn set_action_boot_before(&self, action: i64, boot: &str) -> JResult<()> {
        self.inner.set_action_boot_before(action, boot)
    }
    fn set_action_process(&self, action: i64, process: &str) -> JResult<()> {
        self.inner.set_action_process(action, process)
    }
    fn action_process(&self, action: i64) -> JResult<Option<String>> {
        self.reads.count_one(self.inner.action_process(action))
    }
    fn set_action_stopped(&self, action: i64, at_ms: i64) -> JResult<()> {
        self.inner.set_action_stopped(action, at_ms)
    }
    fn last_heartbeat(&self, pool: &str) -> JResult<Option<i64>> {
        self.reads.count_one(self.inner.last_heartbeat(pool))
    }
    fn end_action(&self, run: i64, member: &str, action: i64, end: &ActionEnd<'_>) -> JResult<()> {
        self.inner.end_action(run, member, action, end)
    }
    fn set_cursor(&self, run: i64, member: &str, cursor: usize) -> JResult<()> {
        self.inner.set_cursor(run, member, cursor)
    }
    fn actions(&self, run: i64, member: Option<&str>) -> JResult<Vec<ActionRecord>> {
        self.reads.count(self.inner.actions(run, member))
    }
    fn push_owed(
        &self,
        run: i64,
        member: &str,
        name: &str,
        kind: &OwedKind,
        payload: &str,
    ) -> JResult<()> {
        self.inner.push_owed(run, member, name, kind, payload)
    }
    fn owed(&self, run: i64, member: &str) -> JResult<Vec<Owed>> {
        self.reads.count(self.inner.owed(run, member))
    }
    fn pay_owed(&self, owed_id: i64) -> JResult<()> {
        self.inner.pay_owed(owed_id)
    }
    fn member_times(&self, pool: &str, limit: usize) -> JResult<Vec<(String, Duration)>> {
        self.reads.count(self.inner.member_times(pool, limit))
    }
    fn sample(&self, run: i64, in_service: usize, total: usize) -> JResult<()> {
        self.inner.sample(run, in_service, total)
    }
    fn samples(&self, run: i64) -> JResult<Vec<(i64, usize, usize)>> {
        self.reads.count(self.inner.samples(run))
    }
}
