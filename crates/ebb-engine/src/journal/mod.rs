//! The journal: every transition written durably before and after its action, so a run
//! killed at any instant can be resumed. SQLite in WAL mode, one file per state dir.
//!
//! `synchronous = NORMAL` in WAL mode survives the death of the process at any instant
//! (the case `ebb resume` exists for); only a power loss can lose the last commits.

use crate::events::now_ms;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub mod etcd;
mod host;
mod records;
mod store;

pub use host::{default_lock_dir, hostname, operator, pid_alive, user, HostLock, HostLockError};
pub use records::*;
pub use store::{Journal, Store};

/// A journal error, naming the journal file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal {path}: {message}")]
pub struct JournalError {
    /// The database file.
    pub path: String,
    /// What failed.
    pub message: String,
}

/// Result of journal operations.
pub type JResult<T> = Result<T, JournalError>;

fn member_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MemberRecord> {
    let ops: String = r.get(4)?;
    Ok(MemberRecord {
        name: r.get(0)?,
        position: r.get::<_, i64>(1)? as usize,
        state: MemberState::parse(&r.get::<_, String>(2)?),
        cursor: r.get::<_, i64>(3)? as usize,
        ops: if ops.is_empty() {
            vec![]
        } else {
            ops.split('\n').map(String::from).collect()
        },
        step: r.get(5)?,
        reason: r.get(6)?,
        reboot_pending: r.get::<_, i64>(7)? != 0,
    })
}

const LOCK_SELECT: &str = "SELECT pid, host, heartbeat_ms FROM lock WHERE pool = ?1";

fn lock_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LockHolder> {
    Ok(LockHolder {
        pid: r.get(0)?,
        host: r.get(1)?,
        heartbeat_ms: r.get(2)?,
        lease_left_s: None,
        since_ms: None,
    })
}

const RUN_SELECT: &str =
    "SELECT id, pool, pool_file, state, started_ms, ended_ms, next_wave, message FROM runs";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        pool: r.get(1)?,
        pool_file: r.get(2)?,
        state: RunState::parse(&r.get::<_, String>(3)?),
        started_ms: r.get(4)?,
        ended_ms: r.get(5)?,
        next_wave: r.get::<_, i64>(6)? as usize,
        message: r.get(7)?,
    })
}

/// Adds `actions.boot_before` to a journal written before it existed (its reboots kept
/// the boot identity in their detail; `ActionRecord::upgraded` still reads that).
fn add_boot_before(conn: &Connection) -> rusqlite::Result<()> {
    let has = |conn: &Connection| {
        conn.prepare("SELECT 1 FROM pragma_table_info('actions') WHERE name = 'boot_before'")?
            .exists([])
    };
    if has(conn)? {
        return Ok(());
    }
    match conn.execute_batch("ALTER TABLE actions ADD COLUMN boot_before TEXT") {
        // Another ebb opening the same old journal may have added it first.
        Err(_) if has(conn)? => Ok(()),
        other => other,
    }
}

/// The SQLite journal of one state dir.
pub struct SqliteJournal {
    path: PathBuf,
    conn: Mutex<Connection>,
    failure: FirstFailure,
}

/// The first operation of a store that failed (a full disk, a read-only file, a lost
/// connection): the run stops at its next safe point instead of going on with a journal
/// that no longer tells the truth (see [`Store::failure`]).
#[derive(Debug, Default)]
pub(crate) struct FirstFailure(Mutex<Option<JournalError>>);

impl FirstFailure {
    /// Keeps `e` if it is the first, and gives it back.
    pub(crate) fn record(&self, e: JournalError) -> JournalError {
        let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| e.clone());
        e
    }

    /// The first failure, if any.
    pub(crate) fn get(&self) -> Option<JournalError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// File name of the journal inside the state dir.
pub const JOURNAL_FILE: &str = "journal.db";

/// A lock on another host is stale after this long without a heartbeat.
pub const LOCK_STALE_MS: i64 = 30_000;

impl SqliteJournal {
    /// Opens (creating if needed) the journal in `state_dir`.
    pub fn open(state_dir: &Path) -> JResult<SqliteJournal> {
        let path = state_dir.join(JOURNAL_FILE);
        let err = |m: String| JournalError {
            path: path.display().to_string(),
            message: m,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| {
            err(format!(
                "cannot create the state dir {}: {e}",
                state_dir.display()
            ))
        })?;
        let conn = Connection::open(&path).map_err(|e| err(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| err(e.to_string()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS runs(
               id INTEGER PRIMARY KEY, pool TEXT NOT NULL, pool_file TEXT NOT NULL,
               state TEXT NOT NULL, started_ms INTEGER NOT NULL, ended_ms INTEGER,
               next_wave INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '');
             CREATE TABLE IF NOT EXISTS members(
               run_id INTEGER NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL,
               state TEXT NOT NULL, cursor INTEGER NOT NULL DEFAULT 0, ops TEXT NOT NULL,
               step TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',
               reboot_pending INTEGER NOT NULL DEFAULT 0,
               PRIMARY KEY(run_id, name));
             CREATE TABLE IF NOT EXISTS actions(
               id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, member TEXT NOT NULL,
               op INTEGER NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
               started_ms INTEGER NOT NULL, ended_ms INTEGER, outcome TEXT,
               exit_code INTEGER, output TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '',
               boot_before TEXT);
             CREATE INDEX IF NOT EXISTS actions_member ON actions(run_id, member);
             CREATE TABLE IF NOT EXISTS owed(
               id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, member TEXT NOT NULL,
               name TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL DEFAULT '');
             CREATE INDEX IF NOT EXISTS owed_member ON owed(run_id, member);
             CREATE TABLE IF NOT EXISTS samples(
               run_id INTEGER NOT NULL, t_ms INTEGER NOT NULL, in_service INTEGER NOT NULL,
               total INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS processes(
               action_id INTEGER PRIMARY KEY, process TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS lock(
               pool TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
               heartbeat_ms INTEGER NOT NULL);",
        )
        .map_err(|e| err(e.to_string()))?;
        add_boot_before(&conn).map_err(|e| err(e.to_string()))?;
        Ok(SqliteJournal {
            path,
            conn: Mutex::new(conn),
            failure: FirstFailure::default(),
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent: recover the guard.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn e(&self, e: rusqlite::Error) -> JournalError {
        self.failure.record(JournalError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Runs one statement that changes the journal (a failure is recorded, see `e`).
    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> JResult<()> {
        self.db().execute(sql, params).map_err(|e| self.e(e))?;
        Ok(())
    }
}

impl Store for SqliteJournal {
    fn path(&self) -> &Path {
        &self.path
    }

    fn failure(&self) -> Option<JournalError> {
        self.failure.get()
    }

    /// Takes the pool's lock, or says who holds it.
    fn lock(&self, pool: &str, steal: bool) -> JResult<Result<(), LockHolder>> {
        let host = hostname();
        let pid = std::process::id();
        let mut db = self.db();
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.e(e))?;
        let holder: Option<LockHolder> = tx
            .query_row(LOCK_SELECT, [pool], lock_row)
            .optional()
            .map_err(|e| self.e(e))?;
        if let Some(h) = holder {
            let free = if h.host == host {
                h.pid == pid || !pid_alive(h.pid)
            } else {
                steal && now_ms() - h.heartbeat_ms > LOCK_STALE_MS
            };
            if !free {
                return Ok(Err(h));
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO lock(pool, pid, host, heartbeat_ms) VALUES (?1, ?2, ?3, ?4)",
            params![pool, pid, host, now_ms()],
        )
        .map_err(|e| self.e(e))?;
        tx.commit().map_err(|e| self.e(e))?;
        Ok(Ok(()))
    }

    /// Who holds the pool's lock, if its holder is still alive (or on another host).
    fn lock_holder(&self, pool: &str) -> JResult<Option<LockHolder>> {
        let h: Option<LockHolder> = self
            .db()
            .query_row(LOCK_SELECT, [pool], lock_row)
            .optional()
            .map_err(|e| self.e(e))?;
        Ok(h.filter(|h| h.host != hostname() || pid_alive(h.pid)))
    }

    /// Renews this process's heartbeat on the lock.
    fn heartbeat(&self, pool: &str) -> JResult<()> {
        self.exec(
            "UPDATE lock SET heartbeat_ms = ?1 WHERE pool = ?2 AND pid = ?3",
            params![now_ms(), pool, std::process::id()],
        )
    }

    /// Releases the lock if this process holds it.
    fn unlock(&self, pool: &str) -> JResult<()> {
        self.exec(
            "DELETE FROM lock WHERE pool = ?1 AND pid = ?2",
            params![pool, std::process::id()],
        )
    }

    /// Creates a run with its members (each with its planned operations).
    fn create_run(
        &self,
        pool: &str,
        pool_file: &str,
        members: &[(String, Vec<String>)],
    ) -> JResult<i64> {
        let mut db = self.db();
        let tx = db.transaction().map_err(|e| self.e(e))?;
        tx.execute(
            "INSERT INTO runs(pool, pool_file, state, started_ms) VALUES (?1, ?2, 'running', ?3)",
            params![pool, pool_file, now_ms()],
        )
        .map_err(|e| self.e(e))?;
        let id = tx.last_insert_rowid();
        for (pos, (name, ops)) in members.iter().enumerate() {
            tx.execute(
                "INSERT INTO members(run_id, name, position, state, ops) VALUES (?1, ?2, ?3, 'pending', ?4)",
                params![id, name, pos, ops.join("\n")],
            )
            .map_err(|e| self.e(e))?;
        }
        tx.commit().map_err(|e| self.e(e))?;
        Ok(id)
    }

    /// The latest run of the pool, if any.
    fn latest_run(&self, pool: Option<&str>) -> JResult<Option<RunRecord>> {
        let sql = format!("{RUN_SELECT} WHERE (?1 IS NULL OR pool = ?1) ORDER BY id DESC LIMIT 1");
        self.db()
            .query_row(&sql, params![pool], run_row)
            .optional()
            .map_err(|e| self.e(e))
    }

    /// One run by its id.
    fn run(&self, id: i64) -> JResult<Option<RunRecord>> {
        let sql = format!("{RUN_SELECT} WHERE id = ?1");
        self.db()
            .query_row(&sql, params![id], run_row)
            .optional()
            .map_err(|e| self.e(e))
    }

    /// The ids of the pool's runs (of every pool with `None`), oldest first.
    fn run_ids(&self, pool: Option<&str>) -> JResult<Vec<i64>> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT id FROM runs WHERE (?1 IS NULL OR pool = ?1) ORDER BY id")
            .map_err(|e| self.e(e))?;
        let ids = st
            .query_map(params![pool], |r| r.get(0))
            .map_err(|e| self.e(e))?
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|e| self.e(e));
        ids
    }

    /// Sets the run's state (and its end time when it stops).
    fn set_run_state(&self, run: i64, state: RunState, message: &str) -> JResult<()> {
        let ended = (state != RunState::Running).then(now_ms);
        self.exec(
            "UPDATE runs SET state = ?1, message = ?2, ended_ms = ?3 WHERE id = ?4",
            params![state.as_str(), message, ended, run],
        )
    }

    /// Rewrites the run's message, leaving its state and end time.
    fn set_run_message(&self, run: i64, message: &str) -> JResult<()> {
        self.exec(
            "UPDATE runs SET message = ?1 WHERE id = ?2",
            params![message, run],
        )
    }

    /// Records the next wave to run.
    fn set_next_wave(&self, run: i64, wave: usize) -> JResult<()> {
        self.exec(
            "UPDATE runs SET next_wave = ?1 WHERE id = ?2",
            params![wave as i64, run],
        )
    }

    /// Every member of a run, in plan order.
    fn members(&self, run: i64) -> JResult<Vec<MemberRecord>> {
        let db = self.db();
        let mut st = db
            .prepare(
                "SELECT name, position, state, cursor, ops, step, reason, reboot_pending FROM members
                 WHERE run_id = ?1 ORDER BY position",
            )
            .map_err(|e| self.e(e))?;
        let rows = st.query_map([run], member_row).map_err(|e| self.e(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.e(e))
    }

    /// One member of a run.
    fn member(&self, run: i64, name: &str) -> JResult<Option<MemberRecord>> {
        self.db()
            .query_row(
                "SELECT name, position, state, cursor, ops, step, reason, reboot_pending FROM members
                 WHERE run_id = ?1 AND name = ?2",
                params![run, name],
                member_row,
            )
            .optional()
            .map_err(|e| self.e(e))
    }

    /// Sets a member's state, current step and failure reason.
    fn set_member_state(
        &self,
        run: i64,
        member: &str,
        state: MemberState,
        step: &str,
        reason: &str,
    ) -> JResult<()> {
        self.exec(
            "UPDATE members SET state = ?1, step = ?2, reason = ?3 WHERE run_id = ?4 AND name = ?5",
            params![state.as_str(), step, reason, run, member],
        )
    }

    /// Replaces a member's planned operations (a resume with an unchanged plan keeps them).
    fn set_member_ops(&self, run: i64, member: &str, ops: &[String]) -> JResult<()> {
        self.exec(
            "UPDATE members SET ops = ?1 WHERE run_id = ?2 AND name = ?3",
            params![ops.join("\n"), run, member],
        )
    }

    /// Marks `reboot_pending`.
    fn set_reboot_pending(&self, run: i64, member: &str, pending: bool) -> JResult<()> {
        self.exec(
            "UPDATE members SET reboot_pending = ?1 WHERE run_id = ?2 AND name = ?3",
            params![pending as i64, run, member],
        )
    }

    /// Writes the intent of an action before it acts; returns its id.
    fn begin_action(
        &self,
        run: i64,
        member: &str,
        op: usize,
        name: &str,
        kind: &ActionKind,
    ) -> JResult<i64> {
        let db = self.db();
        db.execute(
            "INSERT INTO actions(run_id, member, op, name, kind, started_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![run, member, op as i64, name, kind.as_str(), now_ms()],
        )
        .map_err(|e| self.e(e))?;
        Ok(db.last_insert_rowid())
    }

    /// Records the boot identity a reboot starts from.
    fn set_action_boot_before(&self, action: i64, boot: &str) -> JResult<()> {
        self.exec(
            "UPDATE actions SET boot_before = ?1 WHERE id = ?2",
            params![boot, action],
        )
    }

    /// Sets an in-flight action's detail (e.g. a maintenance window's token).
    fn set_action_detail(&self, action: i64, detail: &str) -> JResult<()> {
        self.exec(
            "UPDATE actions SET detail = ?1 WHERE id = ?2",
            params![detail, action],
        )
    }

    /// Records the process an in-flight action's command runs as (what the transport named
    /// it), so that a later ebb can find out whether it still runs.
    fn set_action_process(&self, action: i64, process: &str) -> JResult<()> {
        self.exec(
            "INSERT OR REPLACE INTO processes(action_id, process) VALUES (?1, ?2)",
            params![action, process],
        )
    }

    /// The process last recorded for an action's command, if any.
    fn action_process(&self, action: i64) -> JResult<Option<String>> {
        self.db()
            .query_row(
                "SELECT process FROM processes WHERE action_id = ?1",
                [action],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.e(e))
    }

    /// Records when an interrupted action stopped, leaving its outcome unwritten (resume
    /// decides it); its duration then ends there, not when `ebb resume` runs.
    fn set_action_stopped(&self, action: i64, at_ms: i64) -> JResult<()> {
        self.exec(
            "UPDATE actions SET ended_ms = ?1 WHERE id = ?2 AND outcome IS NULL",
            params![at_ms, action],
        )
    }

    /// The last heartbeat of whoever held the pool's lock, alive or not: when an ebb that
    /// was killed was last known to be working.
    fn last_heartbeat(&self, pool: &str) -> JResult<Option<i64>> {
        let h: Option<LockHolder> = self
            .db()
            .query_row(LOCK_SELECT, [pool], lock_row)
            .optional()
            .map_err(|e| self.e(e))?;
        Ok(h.map(|h| h.heartbeat_ms))
    }

    /// Writes an action's outcome; with `advance`, moves the member's cursor past `op` in
    /// the same transaction, so the journal never says "done" without "next".
    fn end_action(&self, run: i64, member: &str, action: i64, end: &ActionEnd<'_>) -> JResult<()> {
        let mut db = self.db();
        let tx = db.transaction().map_err(|e| self.e(e))?;
        tx.execute(
            "UPDATE actions SET ended_ms = COALESCE(ended_ms, ?1), outcome = ?2, exit_code = ?3, output = ?4,
             detail = CASE WHEN ?5 = '' THEN detail ELSE ?5 END WHERE id = ?6",
            params![
                now_ms(),
                end.outcome.as_str(),
                end.exit_code,
                end.output,
                end.detail,
                action
            ],
        )
        .map_err(|e| self.e(e))?;
        if let Some(next) = end.advance_to {
            tx.execute(
                "UPDATE members SET cursor = ?1 WHERE run_id = ?2 AND name = ?3",
                params![next as i64, run, member],
            )
            .map_err(|e| self.e(e))?;
        }
        tx.commit().map_err(|e| self.e(e))?;
        Ok(())
    }

    /// Moves a member's cursor.
    fn set_cursor(&self, run: i64, member: &str, cursor: usize) -> JResult<()> {
        self.exec(
            "UPDATE members SET cursor = ?1 WHERE run_id = ?2 AND name = ?3",
            params![cursor as i64, run, member],
        )
    }

    /// Every action of a run (or of one member), oldest first.
    fn actions(&self, run: i64, member: Option<&str>) -> JResult<Vec<ActionRecord>> {
        let db = self.db();
        // Two statements, not `(?2 IS NULL OR member = ?2)`: with that, SQLite uses only the
        // run_id half of the index and reads every action of the run to find one member's
        // (each member's checks read its actions: O(pool) per member).
        const COLUMNS: &str = "SELECT id, member, op, name, kind, started_ms, ended_ms, outcome, exit_code, output, detail, boot_before FROM actions";
        let mut st = match member {
            Some(_) => db.prepare_cached(&format!(
                "{COLUMNS} WHERE run_id = ?1 AND member = ?2 ORDER BY id"
            )),
            None => db.prepare_cached(&format!(
                "{COLUMNS} WHERE run_id = ?1 AND ?2 IS NULL ORDER BY id"
            )),
        }
        .map_err(|e| self.e(e))?;
        let rows = st
            .query_map(params![run, member], |r| {
                Ok(ActionRecord {
                    id: r.get(0)?,
                    member: r.get(1)?,
                    op: r.get::<_, i64>(2)? as usize,
                    name: r.get(3)?,
                    kind: ActionKind::from(r.get::<_, String>(4)?),
                    started_ms: r.get(5)?,
                    ended_ms: r.get(6)?,
                    outcome: r.get::<_, Option<String>>(7)?.map(Outcome::from),
                    exit_code: r.get(8)?,
                    output: r.get(9)?,
                    detail: r.get(10)?,
                    boot_before: r.get(11)?,
                }
                .upgraded())
            })
            .map_err(|e| self.e(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.e(e))
    }

    /// Pushes an owed undo onto a member's stack.
    fn push_owed(
        &self,
        run: i64,
        member: &str,
        name: &str,
        kind: &OwedKind,
        payload: &str,
    ) -> JResult<()> {
        let kind = kind.as_str();
        let db = self.db();
        // Pushing twice (a step re-run after an interruption) must not owe the undo twice.
        let exists: Option<i64> = db
            .query_row(
                "SELECT id FROM owed WHERE run_id = ?1 AND member = ?2 AND name = ?3 AND kind = ?4",
                params![run, member, name, kind],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.e(e))?;
        if exists.is_none() {
            db.execute(
                "INSERT INTO owed(run_id, member, name, kind, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, member, name, kind, payload],
            )
            .map_err(|e| self.e(e))?;
        }
        Ok(())
    }

    /// A member's owed undos, oldest first (unwind from the end).
    fn owed(&self, run: i64, member: &str) -> JResult<Vec<Owed>> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT id, name, kind, payload FROM owed WHERE run_id = ?1 AND member = ?2 ORDER BY id")
            .map_err(|e| self.e(e))?;
        let rows = st
            .query_map(params![run, member], |r| {
                Ok(Owed {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    kind: OwedKind::from(r.get::<_, String>(2)?),
                    payload: r.get(3)?,
                })
            })
            .map_err(|e| self.e(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.e(e))
    }

    /// Removes an owed undo once it has run.
    fn pay_owed(&self, owed_id: i64) -> JResult<()> {
        self.db()
            .execute("DELETE FROM owed WHERE id = ?1", [owed_id])
            .map_err(|e| self.e(e))?;
        Ok(())
    }

    fn member_times(&self, pool: &str, limit: usize) -> JResult<Vec<(String, Duration)>> {
        let db = self.db();
        let mut st = db
            .prepare_cached(
                "SELECT m.name, SUM(a.ended_ms - a.started_ms), MAX(a.ended_ms) AS last
                 FROM runs r JOIN members m ON m.run_id = r.id
                 JOIN actions a ON a.run_id = m.run_id AND a.member = m.name
                 WHERE r.pool = ?1 AND m.state = 'done' AND a.ended_ms IS NOT NULL
                 GROUP BY m.run_id, m.name ORDER BY last DESC LIMIT ?2",
            )
            .map_err(|e| self.e(e))?;
        let rows = st
            .query_map(params![pool, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Duration::from_millis(r.get::<_, i64>(1)?.max(0) as u64),
                ))
            })
            .map_err(|e| self.e(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.e(e))
    }

    /// Records the pool's in-service count.
    fn sample(&self, run: i64, in_service: usize, total: usize) -> JResult<()> {
        self.exec(
            "INSERT INTO samples(run_id, t_ms, in_service, total) VALUES (?1, ?2, ?3, ?4)",
            params![run, now_ms(), in_service as i64, total as i64],
        )
    }

    /// The in-service samples of a run: (t_ms, in_service, total).
    fn samples(&self, run: i64) -> JResult<Vec<(i64, usize, usize)>> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT t_ms, in_service, total FROM samples WHERE run_id = ?1 ORDER BY t_ms")
            .map_err(|e| self.e(e))?;
        let rows = st
            .query_map([run], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as usize,
                    r.get::<_, i64>(2)? as usize,
                ))
            })
            .map_err(|e| self.e(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.e(e))
    }
}

#[cfg(test)]
mod tests {
    use super::host::is_zombie;
    use super::*;

    fn fake_holder(j: &SqliteJournal, host: &str, pid: u32, heartbeat_ms: i64) {
        j.db()
            .execute(
                "INSERT OR REPLACE INTO lock(pool, pid, host, heartbeat_ms) VALUES ('p', ?1, ?2, ?3)",
                params![pid, host, heartbeat_ms],
            )
            .unwrap();
    }

    #[test]
    fn a_lock_from_another_host_is_taken_only_when_stale_and_asked() {
        let dir = tempfile::tempdir().unwrap();
        let j = SqliteJournal::open(dir.path()).unwrap();
        fake_holder(&j, "elsewhere", 1234, now_ms());
        assert!(
            j.lock("p", true).unwrap().is_err(),
            "fresh heartbeat: never stolen"
        );
        fake_holder(&j, "elsewhere", 1234, now_ms() - LOCK_STALE_MS - 1000);
        let held = j.lock("p", false).unwrap().unwrap_err();
        assert_eq!((held.pid, held.host.as_str()), (1234, "elsewhere"));
        assert!(
            j.lock("p", true).unwrap().is_ok(),
            "stale and --steal-lock: taken"
        );
        assert_eq!(j.lock_holder("p").unwrap().unwrap().pid, std::process::id());
    }

    #[test]
    fn a_lock_whose_holder_died_on_this_host_is_free_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = SqliteJournal::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        fake_holder(&j, &hostname(), dead, now_ms());
        assert!(j.lock_holder("p").unwrap().is_none());
        assert!(j.lock("p", false).unwrap().is_ok());
    }

    #[test]
    fn a_killed_but_unreaped_holder_does_not_hold_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let j = SqliteJournal::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fake_holder(&j, &hostname(), child.id(), now_ms());
        assert!(j.lock_holder("p").unwrap().is_some(), "alive: holds");
        child.kill().unwrap();
        // Not reaped yet: a zombie.
        for _ in 0..100 {
            if is_zombie(child.id()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(is_zombie(child.id()));
        assert!(j.lock_holder("p").unwrap().is_none(), "zombie: free");
        child.wait().unwrap();
    }

    #[test]
    fn owed_undos_are_a_stack_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let j = SqliteJournal::open(dir.path()).unwrap();
        let run = j
            .create_run("p", "p.toml", &[("m".into(), vec!["hold".into()])])
            .unwrap();
        j.push_owed(run, "m", "hold", &OwedKind::Hold, "started")
            .unwrap();
        j.push_owed(run, "m", "drain", &OwedKind::Drain, "")
            .unwrap();
        // A re-run after an interruption keeps the first record (the true prior state).
        j.push_owed(run, "m", "hold", &OwedKind::Hold, "stopped")
            .unwrap();
        let owed = j.owed(run, "m").unwrap();
        assert_eq!(
            owed.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            ["hold", "drain"]
        );
        assert_eq!(owed[0].payload, "started");
        j.pay_owed(owed[1].id).unwrap();
        assert_eq!(j.owed(run, "m").unwrap().len(), 1);
    }

    #[test]
    fn owed_kinds_read_back_from_their_stored_names() {
        let dir = tempfile::tempdir().unwrap();
        let j = SqliteJournal::open(dir.path()).unwrap();
        let run = j
            .create_run("p", "p.toml", &[("m".into(), vec!["hold".into()])])
            .unwrap();
        j.push_owed(run, "m", "maint", &OwedKind::Undo, "maint")
            .unwrap();
        // As an older (or newer) ebb wrote them: plain names, one this ebb does not know.
        j.db()
            .execute(
                "INSERT INTO owed(run_id, member, name, kind, payload) VALUES (?1, 'm', 'w', 'maintenance', 'w'), (?1, 'm', 'x', 'snapshot', '')",
                [run],
            )
            .unwrap();
        let stored: Vec<String> = j
            .db()
            .prepare("SELECT kind FROM owed ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, ["undo", "maintenance", "snapshot"]);
        let kinds: Vec<OwedKind> = j
            .owed(run, "m")
            .unwrap()
            .into_iter()
            .map(|o| o.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                OwedKind::Undo,
                OwedKind::Maintenance,
                OwedKind::Other("snapshot".into())
            ]
        );
    }

    #[test]
    fn action_kinds_and_outcomes_are_stored_as_their_names_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let j = SqliteJournal::open(dir.path()).unwrap();
        let run = j
            .create_run("p", "p.toml", &[("m".into(), vec!["drain".into()])])
            .unwrap();
        let a = j
            .begin_action(run, "m", 0, "drain", &ActionKind::Drain)
            .unwrap();
        j.end_action(
            run,
            "m",
            a,
            &ActionEnd {
                outcome: Outcome::AssumedDone,
                exit_code: None,
                output: "",
                detail: "",
                advance_to: Some(1),
            },
        )
        .unwrap();
        // The rows hold the same text as journals written before the types existed.
        let stored: (String, String) = j
            .db()
            .query_row(
                "SELECT kind, outcome FROM actions WHERE id = ?1",
                [a],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(stored, ("drain".to_string(), "assumed-done".to_string()));
        // A name this ebb does not know (a newer ebb's) reads as Other, verbatim.
        j.db()
            .execute(
                "INSERT INTO actions(run_id, member, op, name, kind, started_ms, outcome)
                 VALUES (?1, 'm', 1, 'snap', 'snapshot', 1, 'timed-out')",
                [run],
            )
            .unwrap();
        let acts = j.actions(run, Some("m")).unwrap();
        assert_eq!(acts[0].kind, ActionKind::Drain);
        assert_eq!(acts[0].outcome, Some(Outcome::AssumedDone));
        assert_eq!(acts[1].kind, ActionKind::Other("snapshot".into()));
        assert_eq!(acts[1].outcome, Some(Outcome::Other("timed-out".into())));
    }

    #[test]
    fn a_journal_from_before_boot_before_opens_and_its_reboots_keep_their_boot() {
        let dir = tempfile::tempdir().unwrap();
        // The actions table as ebb created it before `boot_before`, with an interrupted
        // reboot that recorded its boot in the detail.
        let old = Connection::open(dir.path().join(JOURNAL_FILE)).unwrap();
        old.execute_batch(
            "CREATE TABLE actions(
               id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, member TEXT NOT NULL,
               op INTEGER NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
               started_ms INTEGER NOT NULL, ended_ms INTEGER, outcome TEXT,
               exit_code INTEGER, output TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '');
             INSERT INTO actions(run_id, member, op, name, kind, started_ms, detail)
               VALUES (1, 'm', 3, 'reboot', 'reboot', 1, 'boot before: 9c1e-0a');",
        )
        .unwrap();
        drop(old);
        let j = SqliteJournal::open(dir.path()).unwrap();
        let a = &j.actions(1, Some("m")).unwrap()[0];
        assert_eq!(a.boot_before.as_deref(), Some("9c1e-0a"));
        // A second open of the now-upgraded file changes nothing.
        let j = SqliteJournal::open(dir.path()).unwrap();
        let id = j
            .begin_action(1, "m", 4, "reboot", &ActionKind::Reboot)
            .unwrap();
        j.set_action_boot_before(id, "77-b").unwrap();
        let acts = j.actions(1, Some("m")).unwrap();
        assert_eq!(acts[1].boot_before.as_deref(), Some("77-b"));
        assert_eq!(
            acts[1].detail, "",
            "the boot is not written into the detail"
        );
    }
}
