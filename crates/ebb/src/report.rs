//! `ebb report`: the latest run (or `--run N`), per member each step with its times and outcome; as text,
//! JSON, or one self-contained HTML page.

use crate::locate::{open_journal, pool_name, state_dir, EXIT_USAGE};
use crate::RunSel;
use ebb_engine::journal::{JResult, Journal, Outcome, RunRecord};
use ebb_report::{
    InService, MemberReport, NoRun, Notification, RunReport, RunSummary, StepReport, Traffic,
};
use std::path::Path;

/// Builds the report of `run` in `journal`; `latest`: it is the pool's latest run (the
/// demo's traffic belongs to that one only).
pub fn build(
    journal: &Journal,
    state_dir: &Path,
    run: &RunRecord,
    latest: bool,
) -> JResult<RunReport> {
    let actions = journal.actions(run.id, None)?;
    let (state, message) = ebb_engine::run::shown(journal, run);
    let mut members = Vec::new();
    for m in journal.members(run.id)? {
        let owed_undos = journal
            .owed(run.id, &m.name)?
            .into_iter()
            .rev()
            .map(|o| o.name)
            .collect();
        let steps = actions
            .iter()
            .filter(|a| a.member == m.name)
            .map(|a| StepReport {
                detail: a.detail.clone(),
                ended_ms: a.ended_ms,
                exit_code: a.exit_code,
                kind: a.kind.clone(),
                name: a.name.clone(),
                outcome: a.outcome.clone().unwrap_or(Outcome::Interrupted),
                output: a.output.clone(),
                started_ms: a.started_ms,
            })
            .collect();
        members.push(MemberReport {
            name: m.name,
            owed_undos,
            state: m.state,
            steps,
        });
    }
    let in_service = journal
        .samples(run.id)?
        .into_iter()
        .map(|(t, n, total)| InService {
            in_service: n as u64,
            t_ms: t.max(0) as u64,
            total: total as u64,
        })
        .collect();
    // The demo's attachment is a courtesy: an unreadable one leaves the report without it.
    let traffic = latest
        .then(|| std::fs::read_to_string(state_dir.join(ebb_report::TRAFFIC_FILE)).ok())
        .flatten()
        .and_then(|t| serde_json::from_str::<Traffic>(&t).ok());
    let notifications = ebb_drivers::notify::logged(state_dir, run.id)
        .into_iter()
        .map(|n| Notification {
            attempts: n.attempts,
            error: n.error,
            event: n.event,
            ok: n.ok,
            run_id: n.run_id,
            t_ms: n.t_ms,
            url: n.url,
        })
        .collect();
    Ok(RunReport {
        in_service,
        lock_broken: journal.lock_broken()?,
        members,
        notifications,
        run: RunSummary {
            ended_ms: run.ended_ms,
            id: run.id,
            message,
            pool: run.pool.clone(),
            started_ms: run.started_ms,
            state,
        },
        traffic,
    })
}

/// The run to report: `--run N` of the pool, or its latest (`None`: the journal has no
/// run of the pool yet). An unknown `N` is a usage error naming the runs there are.
fn chosen_run(
    journal: &Journal,
    pool: Option<&str>,
    id: Option<i64>,
) -> JResult<Result<Option<(RunRecord, bool)>, String>> {
    let latest = journal.latest_run(pool)?;
    let Some(id) = id else {
        return Ok(Ok(latest.map(|r| (r, true))));
    };
    match journal.run(id)? {
        Some(r) if pool.is_none_or(|p| p == r.pool) => {
            let is_latest = latest.is_some_and(|l| l.id == r.id);
            Ok(Ok(Some((r, is_latest))))
        }
        other => {
            let of_pool = pool
                .map(|p| format!(" of pool \"{p}\""))
                .unwrap_or_default();
            let elsewhere = other
                .map(|r| format!(" (run {id} is of pool \"{}\")", r.pool))
                .unwrap_or_default();
            let ids = journal.run_ids(pool)?;
            let there = match ids.len() {
                0 => "it has no run yet".to_string(),
                n if n > 20 => format!(
                    "its runs: {} ... {} ({n} runs)",
                    join_ids(&ids[..10]),
                    join_ids(&ids[n - 10..])
                ),
                _ => format!("its runs: {}", join_ids(&ids)),
            };
            Ok(Err(format!(
                "--run {id}: no run {id}{of_pool} in {}{elsewhere}; {there}",
                journal.path().display()
            )))
        }
    }
}

fn join_ids(ids: &[i64]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses an `--html` path that cannot be written before anything else is done; the
/// file is only written once the report is built.
fn writable(path: &Path) -> Result<(), String> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            format!(
                "--html {}: cannot write the report there: {e}",
                path.display()
            )
        })?;
    if !existed {
        // Probed only: an `ebb report` that finds nothing to report leaves no empty page.
        std::fs::remove_file(path).map_err(|e| format!("--html {}: {e}", path.display()))?;
    }
    Ok(())
}

pub fn report(sel: &RunSel, run_id: Option<i64>, json_out: bool, html: Option<&Path>) -> i32 {
    if let Some(path) = html {
        if let Err(e) = writable(path) {
            ebb_out::errln!("ebb: {e}; nothing was done");
            return EXIT_USAGE;
        }
    }
    let journal = match open_journal(sel, true) {
        Ok(j) => j,
        Err(c) => return c,
    };
    let Some(dir) = state_dir(sel) else {
        return EXIT_USAGE;
    };
    let pool = pool_name(sel);
    let (run, latest) = match chosen_run(&journal, pool.as_deref(), run_id) {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            // As `ebb status`: a journal without a run of this pool is an answer, not an error.
            if json_out {
                ebb_out::outln!("{}", to_json(&NoRun::default()));
            } else {
                ebb_out::outln!("no run yet in {}", journal.path().display());
            }
            return 0;
        }
        Ok(Err(unknown)) => {
            ebb_out::errln!("ebb: {unknown}");
            return EXIT_USAGE;
        }
        Err(e) => {
            ebb_out::errln!("ebb: {e}");
            return 1;
        }
    };
    let doc = match build(&journal, &dir, &run, latest) {
        Ok(d) => d,
        Err(e) => {
            ebb_out::errln!("ebb: {e}");
            return 1;
        }
    };
    if let Some(path) = html {
        let page = ebb_report::html::render(&doc);
        if let Err(e) = std::fs::write(path, page) {
            // Writable a moment ago (checked first): a full disk, not a usage error.
            ebb_out::errln!(
                "ebb: --html {}: cannot write the report there: {e}",
                path.display()
            );
            return 1;
        }
        ebb_out::errln!("ebb: wrote {}", path.display());
        if !json_out {
            return 0;
        }
    }
    if json_out {
        ebb_out::outln!("{}", to_json(&doc));
    } else {
        ebb_out::out!("{}", ebb_report::text::render(&doc));
    }
    0
}

/// One line of JSON. The documents are plain structs of strings and numbers, which
/// serde_json always serializes.
pub(crate) fn to_json<T: serde::Serialize>(doc: &T) -> String {
    serde_json::to_string(doc).unwrap_or_default()
}
