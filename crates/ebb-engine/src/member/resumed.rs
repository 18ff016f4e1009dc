//! A member resumed mid-way: what ebb did to it in the balancer may have been undone by
//! someone while ebb was stopped (started again, hold lifted). It is done again before the
//! member's next step: no step runs on a member that takes traffic, no reboot brings back
//! a member that should stay out.

use super::*;

impl Engine {
    /// Holds and drains member `idx` again if the balancer shows it back, for a member whose
    /// journal cursor is `cursor` (past its hold or drain, before its return). What is
    /// restored on return is still the state recorded the first time (the owed undo).
    pub(super) async fn put_out_again(&self, idx: usize, cursor: usize) -> Result<(), String> {
        let ops = ops_for(&self.plan, idx);
        let pos = |want: Op| ops.iter().position(|o| *o == want);
        // From its return on, ebb's own unwind may have started it and lifted its hold.
        match pos(Op::Return) {
            Some(ret) if cursor < ret => {}
            _ => return Ok(()),
        }
        let m = self.member(idx);
        let bal = &self.drivers.balancer;
        if pos(Op::Hold).is_some_and(|hold| cursor > hold) {
            if let Ok(Some(initial)) = bal.initial_state(m).await {
                if initial != HostState::Stopped {
                    self.warn_back(m, "its hold was lifted", "holding");
                    bal.set_initial_state(m, HostState::Stopped)
                        .await
                        .map_err(|e| format!("holding it again on resume: {e}"))?;
                }
            }
        }
        let drained = pos(Op::Drain).is_some_and(|drain| cursor > drain);
        if drained && matches!(bal.state(m).await, Ok(st) if st.state == HostState::Started) {
            self.warn_back(m, "it is in service", "draining");
            match self.drain(idx).await {
                OpEnd::Ok { .. } | OpEnd::Skipped(_) => {}
                OpEnd::Failed { reason, .. }
                | OpEnd::Unknown { reason, .. }
                | OpEnd::SkipMember(reason) => {
                    return Err(format!("draining it again on resume: {reason}"))
                }
            }
        }
        Ok(())
    }

    fn warn_back(&self, m: &Member, what: &str, doing: &str) {
        self.emit(Event::Warning {
            message: format!(
                "\"{}\": {what} although ebb had taken it out (changed while ebb was stopped?); {doing} it again before its next step",
                m.name
            ),
        });
    }
}
