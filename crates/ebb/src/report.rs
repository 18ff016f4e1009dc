//! `ebb report`: the latest run, per member each step with its times and outcome; as text,
//! JSON, or one self-contained HTML page.

use crate::commands::{open_journal, EXIT_USAGE};
use crate::RunSel;
use ebb_engine::journal::Journal;
use serde_json::json;
use std::path::Path;

/// Builds the report document of the latest run in `journal`.
pub fn report_json(
    journal: &Journal,
    state_dir: &Path,
    pool: Option<&str>,
) -> Option<serde_json::Value> {
    let run = journal.latest_run(pool).ok()??;
    let members = journal.members(run.id).ok()?;
    let actions = journal.actions(run.id, None).ok()?;
    let samples = journal.samples(run.id).unwrap_or_default();
    let traffic = std::fs::read_to_string(state_dir.join("demo-traffic.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    Some(json!({
        "run": {
            "id": run.id,
            "pool": run.pool,
            "state": ebb_engine::run::effective_state(journal, &run).as_str(),
            "started_ms": run.started_ms,
            "ended_ms": run.ended_ms,
            "message": run.message,
        },
        "lock_broken": journal.lock_broken().ok().flatten(),
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

fn hms(ms: i64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

pub fn report(sel: &RunSel, json_out: bool, html: Option<&Path>) -> i32 {
    let journal = match open_journal(sel, true) {
        Ok(j) => j,
        Err(c) => return c,
    };
    let Some(dir) = crate::commands::state_dir(sel) else {
        return EXIT_USAGE;
    };
    let pool = crate::commands::pool_name(sel);
    let Some(doc) = report_json(&journal, &dir, pool.as_deref()) else {
        // As `ebb status`: a journal without a run of this pool is an answer, not an error.
        if json_out {
            ebb_out::outln!("{}", json!({"run": null, "members": []}));
        } else {
            ebb_out::outln!("no run yet in {}", journal.path().display());
        }
        return 0;
    };
    if let Some(path) = html {
        let page = ebb_demo::render_report_html(&doc);
        if let Err(e) = std::fs::write(path, page) {
            ebb_out::errln!("ebb: cannot write {}: {e}", path.display());
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
        "run {} of pool {}: {}",
        run["id"],
        run["pool"].as_str().unwrap_or(""),
        run["state"].as_str().unwrap_or("")
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
