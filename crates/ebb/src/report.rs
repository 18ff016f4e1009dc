//! `ebb report`: the latest run (or `--run N`), per member each step with its times and outcome; as text,
//! JSON, or one self-contained HTML page.

use crate::commands::{open_journal, EXIT_USAGE};
use crate::RunSel;
use ebb_engine::journal::{JResult, Journal, RunRecord};
use serde_json::json;
use std::path::Path;

/// Builds the report document of `run` in `journal`; `latest`: it is the pool's latest run
/// (the demo's traffic timeline belongs to that one only).
pub fn report_json(
    journal: &Journal,
    state_dir: &Path,
    run: &RunRecord,
    latest: bool,
) -> JResult<serde_json::Value> {
    let members = journal.members(run.id)?;
    let actions = journal.actions(run.id, None)?;
    let samples = journal.samples(run.id)?;
    let traffic = latest
        .then(|| std::fs::read_to_string(state_dir.join("demo-traffic.json")).ok())
        .flatten()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    Ok(json!({
        "run": {
            "id": run.id,
            "pool": run.pool,
            "state": ebb_engine::run::effective_state(journal, run).as_str(),
            "started_ms": run.started_ms,
            "ended_ms": run.ended_ms,
            "message": run.message,
        },
        "lock_broken": journal.lock_broken()?,
        "members": members.iter().map(|m| json!({
            "name": m.name,
            "state": m.state.as_str(),
            "owed_undos": journal.owed(run.id, &m.name).unwrap_or_default().iter().rev().map(|o| o.name.clone()).collect::<Vec<_>>(),
            "steps": actions.iter().filter(|a| a.member == m.name).map(|a| json!({
                "name": a.name,
                "kind": a.kind,
                "started_ms": a.started_ms,
                "ended_ms": a.ended_ms,
                "outcome": a.outcome.clone().unwrap_or_else(|| "interrupted".into()),
                "exit_code": a.exit_code,
                "detail": a.detail,
                "output": a.output,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "in_service": samples.iter().map(|(t, n, total)| json!({"t_ms": t, "in_service": n, "total": total})).collect::<Vec<_>>(),
        "traffic": traffic,
        "notifications": ebb_drivers::notify::logged(state_dir, run.id),
    }))
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

fn hms(ms: i64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
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
    let Some(dir) = crate::commands::state_dir(sel) else {
        return EXIT_USAGE;
    };
    let pool = crate::commands::pool_name(sel);
    let (run, latest) = match chosen_run(&journal, pool.as_deref(), run_id) {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            // As `ebb status`: a journal without a run of this pool is an answer, not an error.
            if json_out {
                ebb_out::outln!("{}", json!({"run": null, "members": []}));
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
    let doc = match report_json(&journal, &dir, &run, latest) {
        Ok(d) => d,
        Err(e) => {
            ebb_out::errln!("ebb: {e}");
            return 1;
        }
    };
    if let Some(path) = html {
        let page = ebb_demo::render_report_html(&doc);
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
        ebb_out::outln!("{doc}");
        return 0;
    }
    let run = &doc["run"];
    ebb_out::outln!(
        "run {} of pool {}: {}{}",
        run["id"],
        run["pool"].as_str().unwrap_or(""),
        run["state"].as_str().unwrap_or(""),
        match run["message"].as_str() {
            Some(m) if !m.is_empty() => format!(" ({m})"),
            _ => String::new(),
        }
    );
    if let Some(b) = doc["lock_broken"].as_str() {
        ebb_out::outln!("{b}");
    }
    for n in doc["notifications"].as_array().into_iter().flatten() {
        let how = if n["ok"] == true {
            format!("sent ({} attempt(s))", n["attempts"])
        } else {
            format!(
                "NOT SENT after {} attempt(s): {}",
                n["attempts"],
                n["error"].as_str().unwrap_or("")
            )
        };
        ebb_out::outln!(
            "notification {} to {}: {how}",
            n["event"].as_str().unwrap_or(""),
            n["url"].as_str().unwrap_or("")
        );
    }
    for m in doc["members"].as_array().into_iter().flatten() {
        ebb_out::outln!(
            "{} ({})",
            m["name"].as_str().unwrap_or(""),
            m["state"].as_str().unwrap_or("")
        );
        for s in m["steps"].as_array().into_iter().flatten() {
            let start = s["started_ms"].as_i64().unwrap_or(0);
            let dur = s["ended_ms"]
                .as_i64()
                .map(|e| format!("{:.1}s", (e - start) as f64 / 1000.0))
                .unwrap_or_else(|| "-".into());
            let code = s["exit_code"]
                .as_i64()
                .map(|c| format!(" exit {c}"))
                .unwrap_or_default();
            let detail = s["detail"]
                .as_str()
                .filter(|d| !d.is_empty())
                .map(|d| format!("  {d}"))
                .unwrap_or_default();
            ebb_out::outln!(
                "  {} {:<20} {:<7} {:<12} {:>7}{code}{detail}",
                hms(start),
                s["name"].as_str().unwrap_or(""),
                s["kind"].as_str().unwrap_or(""),
                s["outcome"].as_str().unwrap_or(""),
                dur
            );
            if s["outcome"] == "failed" || s["outcome"] == "unknown" {
                for line in s["output"].as_str().unwrap_or("").lines() {
                    ebb_out::outln!("           | {line}");
                }
            }
        }
        let owed: Vec<&str> = m["owed_undos"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_str())
            .collect();
        if !owed.is_empty() {
            ebb_out::outln!("  still owes: {}", owed.join(", "));
        }
    }
    0
}
