//! The bake after a member's return, and the way back when it (or verify) fails: the
//! pull-back out of service and the end of a rollback.

use super::*;
use crate::journal::{ActionKind, ActionRecord, Outcome};

impl Engine {
    /// `[runbook.bake]`: every `interval` for `duration`, each bake check must pass while
    /// the member takes traffic. The first failure ends the bake with the check's name,
    /// the round and what the check said (its value, status or output), for `status` and
    /// `report`.
    pub(super) async fn bake(&self, idx: usize) -> OpEnd {
        let Some(spec) = &self.plan.runbook.bake else {
            return OpEnd::Skipped("there is no [runbook.bake]".into());
        };
        let m = self.member(idx);
        let every = ebb_config::format_duration(spec.interval);
        let length = ebb_config::format_duration(spec.duration);
        self.emit(Event::Waiting {
            member: Some(m.name.clone()),
            kind: crate::events::WaitKind::Bake,
            reason: format!(
                "baking \"{}\" for {length} while it takes traffic (checks every {every}); the next member waits",
                m.name
            ),
        });
        let started = Instant::now();
        let mut last: Vec<(String, String)> = Vec::new();
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            last.clear();
            for check in &spec.checks {
                match self.run_check(check, idx).await {
                    Ok(out) => last.push((check.name.clone(), one_line(&out))),
                    Err(e) => {
                        return OpEnd::Failed {
                            reason: format!(
                                "bake check \"{}\" failed {} into the bake (round {rounds}): {e}",
                                check.name,
                                ebb_config::format_duration(started.elapsed())
                            ),
                            exit_code: None,
                            output: e,
                        }
                    }
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= spec.duration {
                break;
            }
            tokio::time::sleep(spec.interval.min(spec.duration - elapsed)).await;
        }
        let figures: Vec<String> = last
            .iter()
            .map(|(name, out)| {
                if out.is_empty() {
                    name.clone()
                } else {
                    format!("{name} ({out})")
                }
            })
            .collect();
        ok(format!(
            "baked {length} in service, {rounds} round(s) passed: {}",
            figures.join(", ")
        ))
    }

    /// After a failed bake the member is in service again: drain it as the way out does
    /// (after its hold, a separate operation; its owed hold and drain come back). A drain
    /// that does not end is not skipped here (`on_timeout = "skip"` would return it to
    /// service): it is stopped.
    pub(super) async fn pull_back(&self, idx: usize) -> OpEnd {
        match self.drain(idx).await {
            OpEnd::Ok { detail, .. } => ok(format!("pulled back out of service: {detail}")),
            OpEnd::SkipMember(why) => match self.drivers.balancer.stop(self.member(idx)).await {
                Ok(()) => ok(format!(
                    "pulled back out of service: stopped, since a member whose bake failed never goes back in service ({why})"
                )),
                Err(e) => failed(format!("stop in the balancer: {e}")),
            },
            other => other,
        }
    }

    /// The end of a rollback: the member is held (state `rolled-back`) with what failed,
    /// what the rollback did and whether verify passed after it, and the run halts so a
    /// person decides.
    pub(super) async fn finish_rolled_back(&self, idx: usize) -> MemberEnd {
        let name = self.member(idx).name.clone();
        let actions = match self.journal.actions(self.run_id, Some(&name)) {
            Ok(a) => a,
            Err(e) => return MemberEnd::Journal(e),
        };
        let ended = |a: &ActionRecord, o: Outcome| a.outcome.as_ref() == Some(&o);
        let cause = actions
            .iter()
            .rev()
            .find(|a| {
                (a.kind == ActionKind::Verify && a.name == "verify" || a.kind == ActionKind::Bake)
                    && ended(a, Outcome::Failed)
            })
            .map_or_else(
                || "verify or the bake failed".to_string(),
                |a| a.detail.clone(),
            );
        let steps: Vec<&str> = actions
            .iter()
            .filter(|a| a.kind == ActionKind::Rollback && ended(a, Outcome::Ok))
            .map(|a| a.name.as_str())
            .collect();
        let reverify = actions
            .iter()
            .rev()
            .find(|a| a.name == "verify-after-rollback");
        let after = match (steps.is_empty(), reverify) {
            (true, _) => "pulled back out; there are no rollback steps".to_string(),
            (false, Some(v)) if ended(v, Outcome::Ok) => format!(
                "rolled back ({}); verify after the rollback passed",
                steps.join(", ")
            ),
            (false, Some(v)) => format!(
                "rolled back ({}); verify after the rollback failed: {}",
                steps.join(", "),
                v.detail
            ),
            (false, None) => format!("rolled back ({})", steps.join(", ")),
        };
        let reason = format!(
            "{cause}; {after}. The member is held: `ebb release {name}` returns it to service as it is now, then `ebb resume` goes on; or `ebb abort`"
        );
        if let Err(e) = self.journal.set_member_state(
            self.run_id,
            &name,
            MemberState::RolledBack,
            "rollback",
            &reason,
        ) {
            return MemberEnd::Journal(e);
        }
        let left = self.where_left(idx).await;
        self.emit(Event::MemberFinished {
            member: name,
            state: MemberState::RolledBack.as_str().into(),
            reason: reason.clone(),
            left,
        });
        MemberEnd::RolledBack(reason)
    }
}

/// A check's answer on one line, shortened: a bake's figures go into one detail line.
fn one_line(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}
