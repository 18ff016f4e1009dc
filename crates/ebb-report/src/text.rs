//! `ebb report` as text: the run, its notifications, then per member each step with its
//! time, kind, outcome and duration; a failed step's last output lines below it.

use crate::RunReport;
use ebb_engine::journal::{Outcome, RunState};
use std::fmt::Write as _;

/// The report as lines of text, each ending in a newline.
pub fn render(r: &RunReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut out, r);
    out
}

/// The first line of a run's report or status: `run 4 of pool web: halted (why)`.
pub fn headline(id: i64, pool: &str, state: RunState, message: &str) -> String {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    };
    format!("run {id} of pool {pool}: {}{message}", state.as_str())
}

fn write_report(out: &mut String, r: &RunReport) -> std::fmt::Result {
    let run = &r.run;
    writeln!(
        out,
        "{}",
        headline(run.id, &run.pool, run.state, &run.message)
    )?;
    if let Some(b) = &r.lock_broken {
        writeln!(out, "{b}")?;
    }
    for n in &r.notifications {
        let how = if n.ok {
            format!("sent ({} attempt(s))", n.attempts)
        } else {
            format!("NOT SENT after {} attempt(s): {}", n.attempts, n.error)
        };
        writeln!(out, "notification {} to {}: {how}", n.event, n.url)?;
    }
    for m in &r.members {
        writeln!(out, "{} ({})", m.name, m.state.as_str())?;
        for s in &m.steps {
            let dur = s
                .ended_ms
                .map(|e| format!("{:.1}s", (e - s.started_ms) as f64 / 1000.0))
                .unwrap_or_else(|| "-".into());
            let code = s
                .exit_code
                .map(|c| format!(" exit {c}"))
                .unwrap_or_default();
            let detail = if s.detail.is_empty() {
                String::new()
            } else {
                format!("  {}", s.detail)
            };
            writeln!(
                out,
                "  {} {:<20} {:<7} {:<12} {:>7}{code}{detail}",
                hms(s.started_ms),
                s.name,
                s.kind.as_str(),
                s.outcome.as_str(),
                dur
            )?;
            if matches!(s.outcome, Outcome::Failed | Outcome::Unknown) {
                for line in s.output.lines() {
                    writeln!(out, "           | {line}")?;
                }
            }
        }
        if !m.owed_undos.is_empty() {
            writeln!(out, "  still owes: {}", m.owed_undos.join(", "))?;
        }
    }
    Ok(())
}

/// Time of day (UTC) of a unix time in ms, `HH:MM:SS`.
pub fn hms(ms: i64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemberReport, RunSummary, StepReport};
    use ebb_engine::journal::{ActionKind, MemberState};

    #[test]
    fn a_failed_step_shows_its_output_and_what_is_owed() {
        let r = RunReport {
            in_service: vec![],
            lock_broken: None,
            members: vec![MemberReport {
                name: "web1".into(),
                owed_undos: vec!["drain".into(), "hold".into()],
                state: MemberState::Failed,
                steps: vec![StepReport {
                    detail: "exit 3".into(),
                    ended_ms: Some(3_661_500),
                    exit_code: Some(3),
                    kind: ActionKind::Step,
                    name: "install".into(),
                    outcome: Outcome::Failed,
                    output: "disk full\nstop".into(),
                    started_ms: 3_661_000,
                }],
            }],
            notifications: vec![],
            run: RunSummary {
                ended_ms: None,
                id: 4,
                message: "web1 failed".into(),
                pool: "web".into(),
                started_ms: 0,
                state: RunState::Halted,
            },
            traffic: None,
        };
        assert_eq!(
            render(&r),
            "run 4 of pool web: halted (web1 failed)\n\
             web1 (failed)\n  \
             01:01:01 install              step    failed          0.5s exit 3  exit 3\n           \
             | disk full\n           \
             | stop\n  \
             still owes: drain, hold\n"
        );
    }
}
