//! The journal's storage seam: the operations the engine, the CLI and the web view use,
//! behind one trait, so the same engine runs on a SQLite file beside the pool file or on a
//! shared store (etcd).

use super::{
    ActionEnd, ActionKind, ActionRecord, JResult, JournalError, LockHolder, MemberRecord,
    MemberState, Owed, OwedKind, RunRecord, RunState, SqliteJournal,
};
use std::path::Path;
use std::time::Duration;

/// Where a journal keeps runs, members, actions, owed undos, samples and the pool's lock.
///
/// Every write of a run that holds the lock is fenced by the backend: once the lock is
/// lost, writes fail, and [`Store::fence`] says so before any balancer or member operation.
pub trait Store: Send + Sync {
    /// Where it lives, for messages (the SQLite file, or `etcd:ENDPOINTS/PREFIX`).
    fn path(&self) -> &Path;
    /// Ok while this process may still change the pool (holds its lock, or holds none);
    /// the error says why not. Called before each balancer or member operation.
    fn fence(&self) -> JResult<()> {
        Ok(())
    }
    /// The first operation on this store that failed, if any: once one has, a run stops at
    /// its next safe point (`MemberEnd::Journal`) and says so, naming the store.
    fn failure(&self) -> Option<JournalError> {
        None
    }
    /// Whether the lock is shared by every host (etcd): no host-wide lock is needed.
    fn shared(&self) -> bool {
        false
    }
    /// The last `ebb lock break` of the pool, for `status` and `report`.
    fn lock_broken(&self) -> JResult<Option<String>> {
        Ok(None)
    }
    /// Takes the pool's lock, or says who holds it.
    fn lock(&self, pool: &str, steal: bool) -> JResult<Result<(), LockHolder>>;
    /// Who holds the pool's lock, if its holder is still alive (or on another host).
    fn lock_holder(&self, pool: &str) -> JResult<Option<LockHolder>>;
    /// Renews this process's hold on the lock.
    fn heartbeat(&self, pool: &str) -> JResult<()>;
    /// Releases the lock if this process holds it.
    fn unlock(&self, pool: &str) -> JResult<()>;
    /// Creates a run with its members (each with its planned operations).
    fn create_run(
        &self,
        pool: &str,
        pool_file: &str,
        members: &[(String, Vec<String>)],
    ) -> JResult<i64>;
    /// The latest run of the pool, if any.
    fn latest_run(&self, pool: Option<&str>) -> JResult<Option<RunRecord>>;
    /// One run by its id (`ebb report --run N`), of whichever pool.
    fn run(&self, id: i64) -> JResult<Option<RunRecord>>;
    /// The ids of the pool's runs (every pool's with `None`), oldest first: what a
    /// `--run` that names no run can offer instead.
    fn run_ids(&self, pool: Option<&str>) -> JResult<Vec<i64>>;
    /// Sets the run's state (and its end time when it stops).
    fn set_run_state(&self, run: i64, state: RunState, message: &str) -> JResult<()>;
    /// Rewrites the run's message (what `status` and `report` say of it), leaving its state
    /// and end time: after `ebb release`, the message says what is now true.
    fn set_run_message(&self, run: i64, message: &str) -> JResult<()>;
    /// Records the next wave to run.
    fn set_next_wave(&self, run: i64, wave: usize) -> JResult<()>;
    /// Every member of a run, in plan order.
    fn members(&self, run: i64) -> JResult<Vec<MemberRecord>>;
    /// One member of a run.
    fn member(&self, run: i64, name: &str) -> JResult<Option<MemberRecord>>;
    /// Sets a member's state, current step and failure reason.
    fn set_member_state(
        &self,
        run: i64,
        member: &str,
        state: MemberState,
        step: &str,
        reason: &str,
    ) -> JResult<()>;
    /// Replaces a member's planned operations.
    fn set_member_ops(&self, run: i64, member: &str, ops: &[String]) -> JResult<()>;
    /// Marks `reboot_pending`.
    fn set_reboot_pending(&self, run: i64, member: &str, pending: bool) -> JResult<()>;
    /// Writes the intent of an action before it acts; returns its id.
    fn begin_action(
        &self,
        run: i64,
        member: &str,
        op: usize,
        name: &str,
        kind: &ActionKind,
    ) -> JResult<i64>;
    /// Sets an in-flight action's detail (e.g. a maintenance window's token).
    fn set_action_detail(&self, action: i64, detail: &str) -> JResult<()>;
    /// Records the boot identity a reboot starts from (`ActionRecord::boot_before`).
    fn set_action_boot_before(&self, action: i64, boot: &str) -> JResult<()>;
    /// Records the process an in-flight action's command runs as (what the transport named
    /// it), so that a later ebb can find out whether it still runs.
    fn set_action_process(&self, action: i64, process: &str) -> JResult<()>;
    /// The process last recorded for an action's command, if any.
    fn action_process(&self, action: i64) -> JResult<Option<String>>;
    /// Records when an interrupted action stopped, leaving its outcome unwritten.
    fn set_action_stopped(&self, action: i64, at_ms: i64) -> JResult<()>;
    /// The last heartbeat of whoever held the pool's lock, alive or not (`None` when the
    /// backend cannot say: etcd renews a lease, it records no heartbeat).
    fn last_heartbeat(&self, pool: &str) -> JResult<Option<i64>> {
        let _ = pool;
        Ok(None)
    }
    /// Writes an action's outcome; with `advance`, moves the member's cursor past `op` in
    /// the same transaction, so the journal never says "done" without "next".
    fn end_action(&self, run: i64, member: &str, action: i64, end: &ActionEnd<'_>) -> JResult<()>;
    /// Moves a member's cursor.
    fn set_cursor(&self, run: i64, member: &str, cursor: usize) -> JResult<()>;
    /// Every action of a run (or of one member), oldest first.
    fn actions(&self, run: i64, member: Option<&str>) -> JResult<Vec<ActionRecord>>;
    /// Pushes an owed undo onto a member's stack (once: a second push of the same name and
    /// kind keeps the first).
    fn push_owed(
        &self,
        run: i64,
        member: &str,
        name: &str,
        kind: &OwedKind,
        payload: &str,
    ) -> JResult<()>;
    /// A member's owed undos, oldest first (unwind from the end).
    fn owed(&self, run: i64, member: &str) -> JResult<Vec<Owed>>;
    /// Removes an owed undo once it has run.
    fn pay_owed(&self, owed_id: i64) -> JResult<()>;
    /// How long each member that ended done in the pool's runs took, newest first, at most
    /// `limit`: the sum of its actions' durations (so the time a run spent paused or
    /// waiting for capacity does not count). What maintenance windows judge by.
    fn member_times(&self, pool: &str, limit: usize) -> JResult<Vec<(String, Duration)>>;
    /// Records the pool's in-service count.
    fn sample(&self, run: i64, in_service: usize, total: usize) -> JResult<()>;
    /// The in-service samples of a run: (t_ms, in_service, total).
    fn samples(&self, run: i64) -> JResult<Vec<(i64, usize, usize)>>;
}

/// The journal a run, a resume or a reader works with: one [`Store`] behind it.
pub struct Journal {
    store: Box<dyn Store>,
}

impl Journal {
    /// Opens (creating if needed) the SQLite journal in `state_dir`.
    pub fn open(state_dir: &Path) -> JResult<Journal> {
        Ok(Journal::with_store(Box::new(SqliteJournal::open(
            state_dir,
        )?)))
    }

    /// A journal on another store.
    pub fn with_store(store: Box<dyn Store>) -> Journal {
        Journal { store }
    }
}

impl std::ops::Deref for Journal {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}
