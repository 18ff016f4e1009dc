//! Runs, resumes, releases and aborts: the scheduler over waves and members, the lock and
//! heartbeat, the pool sampler, and the rules that decide what a resume may do.

use crate::events::{Event, EventSink};
use crate::journal::{ActionEnd, Journal, LockHolder, MemberState, Outcome, RunRecord, RunState};
use crate::leftover::{settle, Leftover};
use crate::member::{Drivers, Engine, MemberEnd};
use crate::ops::{op_keys, ops_for, Op};
use crate::plan::{OnFailure, Plan};
use crate::window::Decision;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Why a command could not even start; exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad input or a state that does not allow the command.
    #[error("{0}")]
    Usage(String),
    /// The pool's lock is held by another live ebb.
    #[error("pool \"{pool}\" is locked by ebb pid {} on host {}{}", holder.pid, holder.host, match holder.lease_left_s {
        Some(s) => format!(" (its etcd lease has {s} s left; the lock frees itself if that ebb stops renewing it)"),
        None if *from_other_host => " (from another host: if that ebb is gone, wait 30 s without heartbeat and use --steal-lock)".to_string(),
        None => String::new(),
    })]
    Locked {
        /// Pool name.
        pool: String,
        /// Who holds it.
        holder: LockHolder,
        /// The holder is on another host.
        from_other_host: bool,
    },
    /// Another ebb on this host works on a pool of the same name from another state dir.
    #[error(transparent)]
    HostLocked(#[from] crate::journal::HostLockError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// Stopped (Ctrl-C, SIGTERM, SIGHUP) before the command could begin its work.
    #[error("{0}")]
    Interrupted(String),
    /// The journal failed while the run was under way: the run stopped at a safe point.
    #[error("{0}; the run stopped at a safe point: once the journal can be written again (free space, permissions), `ebb resume` continues")]
    JournalStopped(crate::journal::JournalError),
}

/// What kind of failure a [`RunError`] is; it decides the exit code, so the command line
/// never has to read the message to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input, or a state that does not allow the command (a lock held by another
    /// ebb, a run that cannot resume): exit 2, nothing was changed.
    Usage,
    /// The journal could not be read or written: exit 1.
    Journal,
    /// Stopped by a signal before the command began its work: exit 130 (the command line
    /// makes it 128 + the signal it saw).
    Interrupted,
}

impl ErrorKind {
    /// The process exit code of a command refused with this kind of error.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => 2,
            ErrorKind::Journal => 1,
            ErrorKind::Interrupted => 130,
        }
    }
}

impl RunError {
    /// Its kind (and so its exit code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunError::Journal(_) | RunError::JournalStopped(_) => ErrorKind::Journal,
            RunError::Interrupted(_) => ErrorKind::Interrupted,
            RunError::Usage(_) | RunError::Locked { .. } | RunError::HostLocked(_) => {
                ErrorKind::Usage
            }
        }
    }

    /// A journal failure after the run started becomes [`RunError::JournalStopped`].
    fn stopped(self) -> Self {
        match self {
            RunError::Journal(e) => RunError::JournalStopped(e),
            other => other,
        }
    }
}

/// How a run (or resume, or release) ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Run id.
    pub run_id: i64,
    /// Final state.
    pub state: RunState,
    /// 0 done or paused, 1 failed or stopped by the policy, 130 interrupted.
    pub exit_code: i32,
    /// Why, for humans.
    pub message: String,
}

/// Options of `ebb run` and `ebb resume`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue the latest run instead of starting one.
    pub resume: bool,
    /// Steps (`STEP` or `MEMBER:STEP`) interrupted mid-way to treat as done.
    pub assume_done: Vec<String>,
    /// Steps interrupted mid-way to run again even though they are not idempotent.
    pub rerun: Vec<String>,
    /// Take a stale lock held from another host.
    pub steal_lock: bool,
    /// Stop a step an earlier ebb left running instead of waiting for it to end.
    pub kill_running: bool,
    /// Start a run of only the members the latest (done) run skipped.
    pub only_skipped: bool,
    /// Outside a maintenance window, sleep until the next one instead of pausing.
    pub wait: bool,
    /// The clock maintenance windows are judged by (the system clock unless a test sets
    /// its own).
    pub clock: crate::window::ClockRef,
}

impl RunOptions {
    fn leftover(&self) -> Leftover {
        if self.kill_running {
            Leftover::Kill
        } else {
            Leftover::Wait
        }
    }
}

fn lock(journal: &Journal, pool: &str, steal: bool) -> Result<(), RunError> {
    // Not even able to ask (etcd unreachable): the command could not start, exit 2.
    let asked = journal
        .lock(pool, steal)
        .map_err(|e| RunError::Usage(e.to_string()))?;
    match asked {
        Ok(()) => Ok(()),
        // An etcd lock whose lease is alive has a holder that is still renewing it, so still
        // running and able to change the pool: there is nothing stale to steal.
        Err(holder) if steal && holder.lease_left_s.is_some() => Err(RunError::Usage(format!(
            "pool \"{pool}\" is locked by ebb pid {} on host {}, whose etcd lease is alive ({} s left): --steal-lock does not take an etcd lock, since an ebb that still renews its lease is running and could still change the pool. If that ebb is gone (a dead CI runner, a machine that lost its network), its lease lapses by itself within {} s and `ebb resume` then continues; `ebb lock status` shows the holder, and `ebb lock break` records the break for the audit trail once the lease has lapsed",
            holder.pid,
            holder.host,
            holder.lease_left_s.unwrap_or(0),
            holder.lease_left_s.unwrap_or(0),
        ))),
        Err(holder) => {
            let from_other_host = holder.host != crate::journal::hostname();
            Err(RunError::Locked {
                pool: pool.to_string(),
                holder,
                from_other_host,
            })
        }
    }
}

struct LockGuard {
    journal: Arc<Journal>,
    pool: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    fn take(journal: &Arc<Journal>, pool: &str, steal: bool) -> Result<Self, RunError> {
        lock(journal, pool, steal)?;
        let (j, p) = (journal.clone(), pool.to_string());
        let heartbeat = tokio::spawn(async move {
            let mut said = false;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                // A failed heartbeat is kept by the journal (`Journal::failure`): the run
                // stops at its next safe point. Said once per spell of failures, not every
                // 5 s while a long step runs on.
                match j.heartbeat(&p) {
                    Ok(()) => said = false,
                    Err(e) if !said => {
                        said = true;
                        ebb_out::errln!(
                            "ebb: warning: the lock's heartbeat could not be recorded ({e}); the run stops at its next safe point"
                        );
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(LockGuard {
            journal: journal.clone(),
            pool: pool.to_string(),
            heartbeat,
        })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
        // The run is over and nothing else can report it: say what is left and how it ends.
        if let Err(e) = self.journal.unlock(&self.pool) {
            ebb_out::errln!(
                "ebb: warning: the lock of pool \"{}\" was not released ({e}). It frees itself: on this host the next ebb sees that its holder has ended; from another host, --steal-lock after 30 s without a heartbeat (etcd: when its lease expires, or now with `ebb lock break`).",
                self.pool
            );
        }
    }
}

fn matches_step(list: &[String], member: &str, step: &str) -> bool {
    list.iter()
        .any(|s| s == step || *s == format!("{member}:{step}"))
}

/// Starts a new run (or, with `opts.resume`, continues the latest one) and drives it until
/// it is done, paused, halted or interrupted through `shutdown`.
pub async fn run(
    plan: Arc<Plan>,
    drivers: Drivers,
    journal: Arc<Journal>,
    sink: EventSink,
    opts: RunOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<RunOutcome, RunError> {
    let pool = plan.pool.name.clone();
    let schedule = schedule(&plan, &journal, &opts)?;
    // Read before the lock is taken over: when an ebb that was killed was last alive.
    let died_ms = journal.last_heartbeat(&pool)?;
    let _lock = LockGuard::take(&journal, &pool, opts.steal_lock)?;
    reachable(&plan, &drivers).await?;
    let latest = journal.latest_run(Some(&pool))?;
    let (run_id, resumed) = if opts.resume {
        let Some(run) = latest else {
            return Err(RunError::Usage(format!(
                "pool \"{pool}\" has no run to resume in {}; start one with `ebb run`",
                journal.path().display()
            )));
        };
        if !matches!(run.state, RunState::Done | RunState::Aborted) {
            settle(
                &plan,
                &drivers,
                &journal,
                run.id,
                None,
                opts.leftover(),
                died_ms,
                &sink,
                &shutdown,
            )
            .await?;
        }
        prepare_resume(&plan, &journal, &run, &opts)?;
        (run.id, true)
    } else {
        if let Some(run) = &latest {
            if matches!(
                run.state,
                RunState::Running | RunState::Paused | RunState::Halted
            ) {
                return Err(RunError::Usage(format!(
                    "run {} of pool \"{pool}\" is unfinished ({}): continue it with `ebb resume`, or stop it with `ebb abort`",
                    run.id,
                    effective_state(&journal, run).as_str()
                )));
            }
            let owing: Vec<String> = journal
                .members(run.id)?
                .into_iter()
                .filter(|m| {
                    journal
                        .owed(run.id, &m.name)
                        .map(|o| !o.is_empty())
                        .unwrap_or(false)
                })
                .map(|m| m.name)
                .collect();
            if !owing.is_empty() {
                return Err(RunError::Usage(format!(
                    "members of the aborted run {} still owe undos: {}; resolve each with `ebb release MEMBER` first",
                    run.id,
                    owing.join(", ")
                )));
            }
        }
        let only = if opts.only_skipped {
            Some(skipped_by(&journal, &pool, latest.as_ref())?)
        } else {
            None
        };
        let members: Vec<(String, Vec<String>)> = plan
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| only.as_ref().is_none_or(|o| o.contains(&m.name)))
            .map(|(i, m)| (m.name.clone(), op_keys(&plan, i)))
            .collect();
        (
            journal.create_run(
                &pool,
                // Absolute, so `ebb resume --state-dir DIR` works from anywhere.
                &std::fs::canonicalize(&plan.file)
                    .unwrap_or_else(|_| plan.file.clone())
                    .display()
                    .to_string(),
                &members,
            )?,
            false,
        )
    };
    journal.set_run_state(run_id, RunState::Running, "")?;
    let engine = Arc::new(Engine {
        plan: plan.clone(),
        drivers: crate::fenced::fenced(&journal, patient(&plan, drivers)),
        journal: journal.clone(),
        run_id,
        sink: sink.clone(),
        out: Mutex::new(HashSet::new()),
        gate: tokio::sync::Mutex::new(()),
        shutdown: shutdown.clone(),
        last_in_service: Mutex::new(None),
        pool_view: Default::default(),
        pool_read: Default::default(),
        starts: Default::default(),
        stop_at: plan
            .runbook
            .stop_after
            .map(|d| std::time::Instant::now() + d),
        schedule,
    });
    sink(&Event::RunStarted {
        run_id,
        pool: pool.clone(),
        members: plan.members.iter().map(|m| m.name.clone()).collect(),
        resumed,
    });
    // Aborted however this function ends, also when its future is dropped mid-run (an
    // embedder's cancellation): no sampler outlives its run.
    let sampler = AbortOnDrop(tokio::spawn(sample_pool(engine.clone())));
    let outcome = drive(&engine, opts.wait).await;
    drop(sampler);
    let outcome = outcome.map_err(RunError::stopped)?;
    journal
        .set_run_state(run_id, outcome.state, &outcome.message)
        .map_err(RunError::JournalStopped)?;
    if let Some(e) = journal.failure() {
        return Err(RunError::JournalStopped(e));
    }
    sink(&Event::RunFinished {
        state: outcome.state.as_str().into(),
        exit_code: outcome.exit_code,
        message: outcome.message.clone(),
    });
    Ok(outcome)
}

/// The maintenance windows of a run and the member times they are judged by; refused
/// (nothing changed) when the pool has windows and no member time is known.
fn schedule(
    plan: &Plan,
    journal: &Journal,
    opts: &RunOptions,
) -> Result<Option<Arc<crate::window::Schedule>>, RunError> {
    if plan.pool.windows.is_empty() {
        return Ok(None);
    }
    let expectation = crate::window::Expectation::from_journal(
        journal,
        &plan.pool.name,
        plan.runbook.expected_member_time,
    )?;
    if let Some(m) = plan.members.first() {
        if expectation.of(&m.name).is_none() {
            return Err(RunError::Usage(format!(
                "{}: {}; nothing was changed",
                plan.file.display(),
                crate::window::CANNOT_JUDGE
            )));
        }
    }
    Ok(Some(Arc::new(crate::window::Schedule {
        windows: plan.pool.windows.clone(),
        expectation,
        clock: opts.clock.0.clone(),
    })))
}

/// The members the latest run skipped (its drain did not end), for `--only-skipped`.
fn skipped_by(
    journal: &Journal,
    pool: &str,
    latest: Option<&RunRecord>,
) -> Result<HashSet<String>, RunError> {
    let Some(run) = latest else {
        return Err(RunError::Usage(format!(
            "pool \"{pool}\" has no earlier run; --only-skipped does the members a run skipped"
        )));
    };
    let skipped: HashSet<String> = journal
        .members(run.id)?
        .into_iter()
        .filter(|m| m.state == MemberState::Skipped)
        .map(|m| m.name)
        .collect();
    if skipped.is_empty() {
        return Err(RunError::Usage(format!(
            "run {} of pool \"{pool}\" skipped no member; nothing for --only-skipped to do",
            run.id
        )));
    }
    Ok(skipped)
}

/// Refuses to start when the balancer cannot be asked about every member: the policy
/// would otherwise see the whole pool as out and wait for nothing.
/// The drivers with a balancer that rides out a short outage (see [`crate::patient`]).
fn patient(plan: &Plan, drivers: Drivers) -> Drivers {
    Drivers {
        balancer: Arc::new(crate::patient::Patient::new(
            drivers.balancer.clone(),
            plan.runbook.balancer_retry,
        )),
        ..drivers
    }
}

async fn reachable(plan: &Plan, drivers: &Drivers) -> Result<(), RunError> {
    let errors: Vec<(usize, String)> = drivers
        .balancer
        .pool_state(&plan.members)
        .await
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.err().map(|e| (i, e.to_string())))
        .collect();
    let mut problems = balancer_errors(plan, &errors);
    problems.extend(drivers.balancer.preflight_problems(&plan.members).await);
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
    Err(RunError::Usage(format!(
        "the balancer cannot be used; nothing was changed:\n{}{}",
        shown.join("\n"),
        if problems.len() > shown.len() {
            "\n..."
        } else {
            ""
        }
    )))
}

/// The balancer's errors about members (`(member index, error)`), one line each, or one
/// line for all when they all say the same thing but for the member's name (a socket
/// that refuses everyone is one problem, not one per member).
pub fn balancer_errors(plan: &Plan, errors: &[(usize, String)]) -> Vec<String> {
    let general = |i: usize, e: &str| {
        let m = &plan.members[i];
        e.replace(&format!("\"{}\"", m.name), "\"MEMBER\"")
            .replace(&m.lb_name, "MEMBER")
    };
    let all_same = errors.len() > 1
        && errors.len() == plan.members.len()
        && errors
            .windows(2)
            .all(|w| general(w[0].0, &w[0].1) == general(w[1].0, &w[1].1));
    if all_same {
        return vec![format!(
            "the balancer cannot tell the state of any of the {} members; for the first, \"{}\": {}",
            errors.len(),
            plan.members[errors[0].0].name,
            errors[0].1
        )];
    }
    errors
        .iter()
        .map(|(i, e)| {
            let name = &plan.members[*i].name;
            if e.starts_with(&format!("member \"{name}\"")) {
                e.clone()
            } else {
                format!("member \"{name}\": {e}")
            }
        })
        .collect()
}

/// The state to show for a run: a `running` run that no live ebb works on is `halted`
/// (see [`shown`]).
pub fn effective_state(journal: &Journal, run: &RunRecord) -> RunState {
    shown(journal, run).0
}

/// What `status`, `report` and the web view show of a run: its state and its message.
///
/// The journal says `running` from a run's start until its ebb records how it stopped; an
/// ebb that died (kill -9, a crash, a lost admin host) never records it. So a `running`
/// run is running only while a live ebb holds the pool's lock *and* the run is the pool's
/// latest: `run`, `resume` and `release` only ever work on the latest run, so the holder
/// of the lock is never working on an earlier one. Any other `running` run is shown
/// `halted`, its message saying it was interrupted.
pub fn shown(journal: &Journal, run: &RunRecord) -> (RunState, String) {
    if run.state != RunState::Running {
        return (run.state, run.message.clone());
    }
    let held = journal.lock_holder(&run.pool).ok().flatten().is_some();
    let latest = match journal.latest_run(Some(&run.pool)) {
        Ok(Some(l)) => l.id == run.id,
        // Unreadable: judge by the lock alone, as before there was a later run.
        _ => true,
    };
    if held && latest {
        return (RunState::Running, run.message.clone());
    }
    let interrupted =
        "interrupted: the ebb running it ended without finishing (killed, crashed or its host lost)";
    let message = if run.message.is_empty() {
        interrupted.to_string()
    } else {
        format!("{interrupted}; {}", run.message)
    };
    (RunState::Halted, message)
}

fn prepare_resume(
    plan: &Plan,
    journal: &Journal,
    run: &RunRecord,
    opts: &RunOptions,
) -> Result<(), RunError> {
    match run.state {
        RunState::Done => return Err(RunError::Usage(format!("run {} of pool \"{}\" is done; nothing to resume (start a new one with `ebb run`)", run.id, run.pool))),
        RunState::Aborted => return Err(RunError::Usage(format!("run {} of pool \"{}\" was aborted; start a new one with `ebb run` (after `ebb release` of members that still owe undos)", run.id, run.pool))),
        _ => {}
    }
    let records = journal.members(run.id)?;
    // The plan must still describe the same operations, or cursors would point elsewhere.
    let mut problems = Vec::new();
    for rec in &records {
        if rec.state == MemberState::RolledBack {
            problems.push(format!(
                "member \"{}\" was rolled back and is held, so a person decides ({}); `ebb release {}` returns it to service as it is now, then `ebb resume` goes on with the others; or `ebb abort`",
                rec.name, rec.reason, rec.name
            ));
        }
        match plan.member_index(&rec.name) {
            None => problems.push(format!(
                "member \"{}\" of run {} is no longer in {}",
                rec.name,
                run.id,
                plan.file.display()
            )),
            Some(i) => {
                let now = op_keys(plan, i);
                if now != rec.ops && rec.cursor > 0 && rec.state != MemberState::Done {
                    problems.push(format!(
                        "the steps of member \"{}\" changed since run {} started (was: {}; now: {}); restore the pool file or finish this run with `ebb release`/`ebb abort`",
                        rec.name, run.id, rec.ops.join(", "), now.join(", ")
                    ));
                }
            }
        }
    }
    // A member of the pool file that is not in the run (added since, or left out of an
    // `--only-skipped` run) is simply not part of it: the run never touches it.
    // Interrupted actions: an intent without an outcome, or whose outcome is unknown (the
    // connection to the member dropped while it ran).
    let interrupted: Vec<_> = journal
        .actions(run.id, None)?
        .into_iter()
        .filter(|a| matches!(a.outcome, None | Some(Outcome::Unknown)))
        .collect();
    let mut decisions = Vec::new();
    for a in &interrupted {
        let Some(i) = plan.member_index(&a.member) else {
            continue;
        };
        let ops = ops_for(plan, i);
        let op = ops.get(a.op).copied();
        let assume = matches_step(&opts.assume_done, &a.member, &a.name);
        let rerun = matches_step(&opts.rerun, &a.member, &a.name);
        if assume && rerun {
            problems.push(format!(
                "step \"{}\" of \"{}\" is named in both --assume-done and --rerun",
                a.name, a.member
            ));
            continue;
        }
        let not_idempotent = op
            .and_then(|o| o.step_spec(plan))
            .is_some_and(|s| !s.idempotent);
        if not_idempotent && !assume && !rerun {
            let how = if a.outcome.is_some() {
                "lost its connection to the member while running, so its outcome is unknown,"
            } else {
                "was interrupted while running"
            };
            problems.push(format!(
                "step \"{}\" of member \"{}\" {how} and is marked idempotent = false: check the member, then choose `ebb resume --assume-done \"{}:{}\"` (it completed) or `ebb resume --rerun \"{}:{}\"` (run it again)",
                a.name, a.member, a.member, a.name, a.member, a.name
            ));
        }
        decisions.push((a.clone(), assume));
    }
    if !problems.is_empty() {
        return Err(RunError::Usage(problems.join("\n")));
    }
    for (a, assume) in decisions {
        if a.outcome.is_some() && !assume {
            // An unknown outcome stays recorded as such; the cursor still points at it.
            continue;
        }
        let advance_to = assume.then_some(a.op + 1);
        // A step assumed done may have asked for a reboot (`always`, or an exit code that
        // was lost with the process): reboot rather than return a half-installed member.
        let step = plan
            .member_index(&a.member)
            .and_then(|i| ops_for(plan, i).get(a.op).copied());
        let reboots = step
            .and_then(|o| o.step_spec(plan))
            .is_some_and(|s| s.reboot != crate::plan::RebootPolicy::Never);
        if assume && reboots {
            journal.set_reboot_pending(run.id, &a.member, true)?;
        }
        journal.end_action(
            run.id,
            &a.member,
            a.id,
            &ActionEnd {
                outcome: if assume {
                    Outcome::AssumedDone
                } else {
                    Outcome::Interrupted
                },
                advance_to,
                exit_code: a.exit_code,
                output: &a.output,
                detail: "",
            },
        )?;
    }
    for rec in records {
        if rec.state == MemberState::Failed {
            journal.set_member_state(run.id, &rec.name, MemberState::Out, &rec.step, "")?;
        }
    }
    Ok(())
}

async fn drive(engine: &Arc<Engine>, wait: bool) -> Result<RunOutcome, RunError> {
    let plan = &engine.plan;
    let journal = &engine.journal;
    let run_id = engine.run_id;
    let record = journal.latest_run(Some(&plan.pool.name))?;
    let start_wave = record.map(|r| r.next_wave).unwrap_or(0);
    let finish = |state, exit_code, message: String| {
        Ok(RunOutcome {
            run_id,
            state,
            exit_code,
            message,
        })
    };
    if let Some((code, message)) = pool_check_before(engine).await? {
        return finish(RunState::Halted, code, message);
    }
    let mut failed_total = journal
        .members(run_id)?
        .iter()
        .filter(|m| m.state == MemberState::Failed)
        .count();
    for (w, wave) in plan.waves.iter().enumerate().skip(start_wave) {
        let ended = run_wave(engine, wave, &mut failed_total, wait).await?;
        if let Some(e) = ended.journal_failure {
            return Err(RunError::Journal(e));
        }
        if let Some((code, msg)) = ended.halt {
            let mut message = ended.failures.join("; ");
            if !msg.is_empty() {
                if !message.is_empty() {
                    message.push_str("; ");
                }
                message.push_str(&msg);
            }
            return finish(RunState::Halted, code, message);
        }
        if let Some((code, msg)) = ended.pause {
            return finish(RunState::Paused, code, msg);
        }
        journal.set_next_wave(run_id, w + 1)?;
        if !ended.failures.is_empty() {
            (engine.sink)(&Event::Warning {
                message: format!(
                    "{} finished with failures: {}",
                    crate::plan::wave_label(&wave.name),
                    ended.failures.join("; ")
                ),
            });
        }
        if wave.pause_after && w + 1 < plan.waves.len() {
            return finish(
                RunState::Paused,
                0,
                format!(
                    "paused after {}; `ebb resume` starts {}",
                    crate::plan::wave_label(&wave.name),
                    crate::plan::wave_label(&plan.waves[w + 1].name)
                ),
            );
        }
    }
    end_of_run(engine, failed_total)
}

/// The pool checks before anything changed: on a new run, or one stopped before any member
/// was touched (killed during these very checks, or stopped by the policy). `Some((exit
/// code, why))` when the run must stop.
async fn pool_check_before(engine: &Arc<Engine>) -> Result<Option<(i32, String)>, RunError> {
    let plan = &engine.plan;
    let untouched = engine
        .journal
        .members(engine.run_id)?
        .iter()
        .all(|m| m.cursor == 0 && m.state == MemberState::Pending);
    if !untouched || plan.pool.checks.is_empty() {
        return Ok(None);
    }
    for (j, m) in plan.members.iter().enumerate() {
        for check in &plan.pool.checks {
            let checked = tokio::select! {
                r = engine.run_check(check, j) => r,
                _ = crate::member::shutdown_asked(engine.shutdown.clone()) => {
                    return Ok(Some((130, "interrupted during the pool check before the run, nothing was changed; `ebb resume` continues".into())));
                }
            };
            if let Err(e) = checked {
                return Ok(Some((
                    1,
                    format!(
                        "the pool check before the run failed on \"{}\", nothing was changed: {e}",
                        m.name
                    ),
                )));
            }
        }
    }
    Ok(None)
}

/// How the run ends once every wave has: halted when members failed, done otherwise
/// (naming the members skipped in this invocation or an earlier one of the same run).
fn end_of_run(engine: &Engine, failed_total: usize) -> Result<RunOutcome, RunError> {
    let finish = |state, exit_code, message: String| {
        Ok(RunOutcome {
            run_id: engine.run_id,
            state,
            exit_code,
            message,
        })
    };
    if failed_total > 0 {
        return finish(
            RunState::Halted,
            1,
            format!("{failed_total} member(s) failed: `ebb status` shows where each was left and what it owes; then `ebb resume` (after fixing the cause) or `ebb release MEMBER`"),
        );
    }
    let skipped: Vec<String> = engine
        .journal
        .members(engine.run_id)?
        .into_iter()
        .filter(|m| m.state == MemberState::Skipped)
        .map(|m| m.name)
        .collect();
    if !skipped.is_empty() {
        return finish(
            RunState::Done,
            0,
            format!(
                "{} member(s) skipped, returned to service not updated: {}; `ebb run --only-skipped` does them",
                skipped.len(),
                skipped.join(", ")
            ),
        );
    }
    finish(RunState::Done, 0, String::new())
}

/// How the members of one wave ended.
#[derive(Default)]
struct WaveEnd {
    /// The run halts: exit code and why (after the failures).
    halt: Option<(i32, String)>,
    /// The run pauses: exit code (0, or 130 for a Ctrl-C while waiting for a window) and why.
    pause: Option<(i32, String)>,
    /// `"m2" failed at ...`, one per failed member.
    failures: Vec<String>,
    /// The journal failed: the run stops.
    journal_failure: Option<crate::journal::JournalError>,
}

/// Runs the members of `wave` that have work left, at most `max_unavailable` at once, each
/// new one only when the maintenance windows let it start; with `wait`, sleeps until the
/// window it fits in instead of pausing.
async fn run_wave(
    engine: &Arc<Engine>,
    wave: &crate::plan::Wave,
    failed_total: &mut usize,
    wait: bool,
) -> Result<WaveEnd, RunError> {
    let plan = &engine.plan;
    let records = engine.journal.members(engine.run_id)?;
    // Members with work left, by name (a set: a scan per member would be O(pool²)), and
    // those already begun, which finish whatever the windows say.
    let left: HashSet<&str> = records
        .iter()
        .filter(|r| !matches!(r.state, MemberState::Done | MemberState::Skipped))
        .map(|r| r.name.as_str())
        .collect();
    let begun: HashSet<&str> = records
        .iter()
        .filter(|r| r.cursor > 0)
        .map(|r| r.name.as_str())
        .collect();
    let mut queue: VecDeque<usize> = wave
        .members
        .iter()
        .copied()
        .filter(|&i| left.contains(plan.members[i].name.as_str()))
        .collect();
    (engine.sink)(&Event::WaveStarted {
        wave: wave.name.clone(),
        members: wave
            .members
            .iter()
            .map(|&i| plan.members[i].name.clone())
            .collect(),
    });
    let limit = plan.pool.max_unavailable.resolve(plan.members.len()).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    let mut end = WaveEnd::default();
    let mut announced = None;
    loop {
        let mut window_wait = None;
        while end.halt.is_none() && end.pause.is_none() && tasks.len() < limit {
            let Some(&i) = queue.front() else { break };
            let name = plan.members[i].name.as_str();
            if let (Some(s), false) = (&engine.schedule, begun.contains(name)) {
                if let Decision::Closed { reason, next } = s.decide(name) {
                    match next.filter(|_| wait) {
                        Some(t) => window_wait = Some((t, i, reason)),
                        None => end.pause = Some((0, crate::window::paused(&reason))),
                    }
                    break;
                }
            }
            queue.pop_front();
            engine.starts.push(i);
            let e = engine.clone();
            tasks.spawn(async move { (i, e.run_member(i).await) });
        }
        let joined = match window_wait {
            None => match tasks.join_next().await {
                Some(j) => j,
                None => break,
            },
            Some((t, i, reason)) => {
                if announced != Some(t) {
                    announced = Some(t);
                    (engine.sink)(&Event::Waiting {
                        member: Some(plan.members[i].name.clone()),
                        kind: crate::events::WaitKind::Window,
                        reason: format!("{reason} (--wait)"),
                    });
                }
                let clock = engine.schedule.as_ref().map(|s| s.clock.clone());
                let Some(clock) = clock else { break };
                tokio::select! {
                    Some(j) = tasks.join_next(), if !tasks.is_empty() => j,
                    _ = clock.sleep_until(t) => continue,
                    _ = crate::member::shutdown_asked(engine.shutdown.clone()), if tasks.is_empty() => {
                        end.pause = Some((130, "interrupted while waiting for the maintenance window: no member was started, nothing is owed; `ebb resume` goes on (`ebb resume --wait` waits again)".into()));
                        break;
                    }
                }
            }
        };
        let (i, member_end) = match joined {
            Ok(r) => r,
            Err(e) => {
                end.halt
                    .get_or_insert((1, format!("internal error in a member task: {e}")));
                continue;
            }
        };
        // A member that found its window gone after waiting for capacity gave its slot back
        // untouched: with --wait it goes back to the head of the line.
        let outside_window = |name: &str| {
            engine
                .schedule
                .as_ref()
                .is_some_and(|s| matches!(s.decide(name), Decision::Closed { next: Some(_), .. }))
        };
        match member_end {
            MemberEnd::Paused(_) if wait && outside_window(&plan.members[i].name) => {
                queue.push_front(i)
            }
            other => member_ended(engine, i, other, failed_total, &mut end),
        }
        if end.halt.is_some() || end.pause.is_some() {
            // Nothing new starts; the wave ends when the members in flight have stopped.
            engine.starts.close();
        }
    }
    Ok(end)
}

/// Folds how member `i` ended into the wave's end.
fn member_ended(
    engine: &Engine,
    i: usize,
    member_end: MemberEnd,
    failed_total: &mut usize,
    end: &mut WaveEnd,
) {
    let plan = &engine.plan;
    match member_end {
        MemberEnd::Done | MemberEnd::NotStarted | MemberEnd::Skipped(_) => {}
        MemberEnd::Failed(reason) => {
            *failed_total += 1;
            end.failures
                .push(format!("\"{}\" failed at {reason}", plan.members[i].name));
            let stop = plan.runbook.on_failure == OnFailure::Halt
                || *failed_total > plan.runbook.max_failed;
            if stop && end.halt.is_none() {
                end.halt = Some((1, String::new()));
            }
            if let Err(e) = engine.journal.fence() {
                end.halt = Some((1, e.to_string()));
            }
        }
        MemberEnd::RolledBack(reason) => {
            // Whatever on_failure says: a person decides.
            *failed_total += 1;
            end.failures.push(format!(
                "\"{}\" was rolled back: {reason}",
                plan.members[i].name
            ));
            end.halt.get_or_insert((1, String::new()));
        }
        MemberEnd::Capacity(msg) => {
            end.halt.get_or_insert((1, msg));
        }
        MemberEnd::Interrupted => {
            end.halt = Some((
                130,
                "interrupted; `ebb resume` continues where it stopped".into(),
            ));
        }
        MemberEnd::Paused(msg) => {
            end.pause.get_or_insert((0, msg));
        }
        MemberEnd::Journal(e) => {
            // Members in flight stop at their own next safe point.
            end.journal_failure.get_or_insert(e);
            end.halt.get_or_insert((1, String::new()));
        }
    }
}

/// A spawned task that is aborted when this handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sample_pool(engine: Arc<Engine>) {
    loop {
        engine.sample_pool().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `ebb release MEMBER`: verify the member, and if it passes, unwind what it owes and
/// return it to service.
pub async fn release(
    plan: Arc<Plan>,
    drivers: Drivers,
    journal: Arc<Journal>,
    sink: EventSink,
    member: &str,
    kill_running: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<RunOutcome, RunError> {
    let pool = plan.pool.name.clone();
    let Some(idx) = plan.member_index(member) else {
        let names: Vec<&str> = plan.members.iter().map(|m| m.name.as_str()).collect();
        return Err(RunError::Usage(format!(
            "no member \"{member}\" in {} (members: {})",
            plan.file.display(),
            names.join(", ")
        )));
    };
    let died_ms = journal.last_heartbeat(&pool)?;
    let _lock = LockGuard::take(&journal, &pool, false)?;
    reachable(&plan, &drivers).await?;
    let Some(run) = journal.latest_run(Some(&pool))? else {
        return Err(RunError::Usage(format!(
            "pool \"{pool}\" has no run; nothing to release"
        )));
    };
    let leftover = if kill_running {
        Leftover::Kill
    } else {
        Leftover::Wait
    };
    settle(
        &plan,
        &drivers,
        &journal,
        run.id,
        Some(member),
        leftover,
        died_ms,
        &sink,
        &shutdown,
    )
    .await?;
    let rec = journal
        .members(run.id)?
        .into_iter()
        .find(|m| m.name == member);
    let Some(rec) = rec else {
        return Err(RunError::Usage(format!(
            "member \"{member}\" is not part of run {}",
            run.id
        )));
    };
    if rec.state == MemberState::Done {
        return Err(RunError::Usage(format!(
            "member \"{member}\" is already done and in service"
        )));
    }
    let owed = journal.owed(run.id, member)?;
    if rec.cursor == 0 && owed.is_empty() {
        return Err(RunError::Usage(format!(
            "member \"{member}\" was never taken out in run {}; nothing to release",
            run.id
        )));
    }
    let engine = Arc::new(Engine {
        plan: plan.clone(),
        drivers: crate::fenced::fenced(&journal, patient(&plan, drivers)),
        journal: journal.clone(),
        run_id: run.id,
        sink,
        out: Mutex::new(HashSet::from([idx])),
        gate: tokio::sync::Mutex::new(()),
        shutdown,
        last_in_service: Mutex::new(None),
        pool_view: Default::default(),
        pool_read: Default::default(),
        starts: Default::default(),
        stop_at: None,
        schedule: None,
    });
    let ops = ops_for(&plan, idx);
    let pos = |want: Op| ops.iter().position(|o| *o == want).unwrap_or(0);
    for op in [Op::Verify, Op::Return, Op::PoolCheck] {
        match engine.clone().journaled(idx, pos(op), op).await {
            Ok(()) => {}
            Err(MemberEnd::Failed(reason)) => {
                journal.set_member_state(
                    run.id,
                    member,
                    MemberState::Failed,
                    &op.name(&plan),
                    &reason,
                )?;
                return Ok(RunOutcome {
                    run_id: run.id,
                    state: run.state,
                    exit_code: 1,
                    message: format!("\"{member}\" stays out: {reason}"),
                });
            }
            Err(_) => {
                return Ok(RunOutcome {
                    run_id: run.id,
                    state: run.state,
                    exit_code: 130,
                    message: "interrupted".into(),
                })
            }
        }
    }
    journal.set_cursor(run.id, member, ops.len())?;
    journal.set_member_state(run.id, member, MemberState::Done, "", "")?;
    let released = released_note(member, &owed);
    // The run's message no longer says the member failed: it says what is true now.
    let run = journal.run(run.id)?.unwrap_or(run);
    journal.set_run_message(run.id, &after_release(&run.message, &rec, &released))?;
    Ok(RunOutcome {
        run_id: run.id,
        state: run.state,
        exit_code: 0,
        message: format!("{released}; back in service"),
    })
}

/// `"web1" released by USER@HOST at TIME: verify passed, undos paid: ...` (in the order
/// they ran).
fn released_note(member: &str, owed: &[crate::journal::Owed]) -> String {
    let paid: Vec<String> = owed.iter().rev().map(|o| o.describe()).collect();
    format!(
        "\"{member}\" released by {} at {}: verify passed, {}",
        crate::journal::operator(),
        ebb_config::format_utc(u64::try_from(crate::events::now_ms()).unwrap_or(0)),
        if paid.is_empty() {
            "no undo was owed".to_string()
        } else {
            format!("undos paid: {}", paid.join(", "))
        }
    )
}

/// The run's message once `rec`'s member is released: its "failed at" clause (as the run
/// wrote it) replaced by `released`, or `released` added when the message does not name it.
fn after_release(message: &str, rec: &crate::journal::MemberRecord, released: &str) -> String {
    let failed = format!("\"{}\" failed at {}", rec.name, rec.reason);
    if rec.state == MemberState::Failed && !rec.reason.is_empty() && message.contains(&failed) {
        return message.replacen(&failed, released, 1);
    }
    if message.is_empty() {
        released.to_string()
    } else {
        format!("{message}; since then {released}")
    }
}

/// The signal `ebb abort` sends the ebb that runs the pool (SIGUSR1): a stop at the next
/// safe point, like SIGINT, that the runner can tell apart from Ctrl-C.
pub const ABORT_SIGNAL: i32 = libc::SIGUSR1;

/// `ebb abort`: stop the run in progress (its process is asked to stop and waited for),
/// leaving each member where it is.
pub async fn abort(journal: &Journal, pool: Option<&str>) -> Result<RunRecord, RunError> {
    let Some(run) = journal.latest_run(pool)? else {
        return Err(RunError::Usage("no run to abort in this state dir".into()));
    };
    if matches!(run.state, RunState::Done | RunState::Aborted) {
        return Err(RunError::Usage(format!(
            "run {} is already {}; nothing to abort",
            run.id,
            run.state.as_str()
        )));
    }
    if let Some(h) = journal.lock_holder(&run.pool)? {
        if h.host == crate::journal::hostname() && h.pid != std::process::id() {
            // SAFETY: signalling a pid we just read. SIGUSR1 is `ebb abort`'s own stop: the
            // runner stops at its next safe point and knows it was aborted, not paused.
            unsafe { libc::kill(h.pid as i32, ABORT_SIGNAL) };
            for _ in 0..300 {
                if journal.lock_holder(&run.pool)?.is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if journal.lock_holder(&run.pool)?.is_some() {
                return Err(RunError::Usage(format!("the ebb running pool \"{}\" (pid {}) did not stop within 30 s; stop it, then run `ebb abort` again", run.pool, h.pid)));
            }
        } else if h.host != crate::journal::hostname() {
            return Err(RunError::Usage(format!(
                "run {} is in progress on host {} (pid {}); abort it there",
                run.id, h.host, h.pid
            )));
        }
    }
    journal.set_run_state(run.id, RunState::Aborted, "aborted by the operator")?;
    Ok(journal.latest_run(Some(&run.pool))?.unwrap_or(run))
}
