//! Commands an earlier ebb left running. After `kill -9`, a crash or a lost admin host,
//! the journal holds an intent without an outcome and, for a command, the process it runs
//! as (what the transport named it). Before a resume or a release touches that member, ebb
//! asks the transport whether that very process still runs, and waits for it to end (or,
//! with `--kill-running`, stops it): never two copies of a step on one member.

use crate::events::{now_ms, Event, EventSink};
use crate::journal::{Journal, Outcome};
use crate::member::Drivers;
use crate::ops::{ops_for, Op};
use crate::plan::Plan;
use crate::run::RunError;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What to do with a command an earlier ebb left running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// Wait for it to end (at most until its own timeout, then stop it).
    Wait,
    /// Stop it now (`--kill-running`).
    Kill,
}

/// How often a left-over command is asked about while ebb waits for it.
const POLL: Duration = Duration::from_secs(1);

/// The bound on a step's command: its own timeout, as if the ebb that started it were
/// still there to enforce it.
fn op_timeout(plan: &Plan, member: usize, op: usize) -> Duration {
    let longest_step = plan.runbook.steps.iter().map(|s| s.timeout).max();
    let fallback = longest_step.unwrap_or(Duration::from_secs(600));
    let op = ops_for(plan, member).get(op).copied();
    if let Some(step) = op.and_then(|o| o.step_spec(plan)) {
        return step.timeout;
    }
    match op {
        Some(Op::Reboot(_) | Op::RollbackReboot(_)) => plan
            .runbook
            .reboot
            .as_ref()
            .map_or(fallback, |r| r.timeout.min(Duration::from_secs(120))),
        _ => fallback,
    }
}

/// For every interrupted action (or one with an unknown outcome) of run `run_id` (of `only` that member, if given): when
/// its command still runs, waits for it to end or stops it, saying so through `sink`;
/// records when each one stopped (`died_ms`, the last heartbeat of the ebb that was
/// killed, when nothing better is known), so durations end there and not at the resume.
#[allow(clippy::too_many_arguments)]
pub async fn settle(
    plan: &Plan,
    drivers: &Drivers,
    journal: &Journal,
    run_id: i64,
    only: Option<&str>,
    what_to_do: Leftover,
    died_ms: Option<i64>,
    sink: &EventSink,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), RunError> {
    let interrupted: Vec<_> = journal
        .actions(run_id, only)?
        .into_iter()
        // An unknown outcome (the ssh connection dropped mid-command) may be still running
        // just as well.
        .filter(|a| matches!(a.outcome, None | Some(Outcome::Unknown)))
        .collect();
    for a in interrupted {
        let stopped_at = |journal: &Journal, at: i64| journal.set_action_stopped(a.id, at);
        let died = died_ms.unwrap_or_else(now_ms).clamp(a.started_ms, now_ms());
        let Some(i) = plan.member_index(&a.member) else {
            continue;
        };
        let Some(process) = journal.action_process(a.id)? else {
            if a.ended_ms.is_none() {
                stopped_at(journal, died)?;
            }
            continue;
        };
        let transport = &drivers.transports[i];
        let desc = transport.describe_process(&process);
        let step = format!("step \"{}\" of member \"{}\"", a.name, a.member);
        let running = transport.still_running(&process).await.map_err(|e| {
            RunError::Usage(format!(
                "{step} was interrupted while its command ran ({desc}), and ebb cannot tell whether it still runs: {e}. Make sure it has ended (or stop it), then try again"
            ))
        })?;
        if !running {
            if a.ended_ms.is_none() {
                stopped_at(journal, died)?;
            }
            continue;
        }
        let member = Some(a.member.clone());
        let (step_r, desc_r, process_r, name_r) = (&step, &desc, &process, &a.member);
        let stop = move |why: String| async move {
            let (step, desc) = (step_r, desc_r);
            sink(&Event::Waiting {
                kind: crate::events::WaitKind::Leftover,
                member: Some(name_r.clone()),
                reason: why,
            });
            transport.stop_process(process_r).await.map_err(|e| {
                RunError::Usage(format!(
                    "{step}: cannot stop its command ({desc}) that an earlier ebb left running: {e}; stop it on the member, then try again"
                ))
            })
        };
        if what_to_do == Leftover::Kill {
            stop(format!(
                "{step}, started by an earlier ebb, is still running ({desc}); stopping it (--kill-running)"
            ))
            .await?;
            stopped_at(journal, now_ms())?;
            sink(&Event::Notice {
                member,
                message: format!("\"{}\" stopped ({desc})", a.name),
            });
            continue;
        }
        let timeout = op_timeout(plan, i, a.op);
        let deadline_ms = a.started_ms + timeout.as_millis() as i64;
        sink(&Event::Waiting {
 kind: crate::events::WaitKind::Leftover,
            member: member.clone(),
            reason: format!(
                "{step}, started by an earlier ebb, is still running ({desc}); waiting for it to end before anything else touches \"{}\" (at most {} more, its timeout; `--kill-running` stops it instead)",
                a.member,
                ebb_config::format_duration(Duration::from_millis(
                    (deadline_ms - now_ms()).max(0) as u64
                ))
            ),
        });
        let waited = Instant::now();
        let mut sd = shutdown.clone();
        loop {
            if now_ms() >= deadline_ms {
                stop(format!(
                    "{step} ran past its timeout of {} ({desc}); stopping it",
                    ebb_config::format_duration(timeout)
                ))
                .await?;
                stopped_at(journal, now_ms())?;
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = async { while sd.changed().await.is_ok() { if *sd.borrow() { break; } } } => {}
            }
            if *shutdown.borrow() {
                return Err(RunError::Interrupted(format!(
                    "stopped while waiting for {step} ({desc}); it may still be running, and the next `ebb resume` waits for it again"
                )));
            }
            // A member that cannot be asked for a moment (rebooting, network) is asked
            // again; the deadline bounds it.
            if let Ok(false) = transport.still_running(&process).await {
                stopped_at(journal, now_ms())?;
                sink(&Event::Notice {
                    member: member.clone(),
                    message: format!(
                        "\"{}\" ended after ebb waited {} for it",
                        a.name,
                        ebb_config::format_duration(waited.elapsed())
                    ),
                });
                break;
            }
        }
    }
    Ok(())
}
