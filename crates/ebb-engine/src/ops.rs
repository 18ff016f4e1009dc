//! The operations each member goes through, in order: the runbook made concrete.
//!
//! The list is computed from the plan and recorded in the journal when a run starts; a
//! member's cursor is an index into it. A resume checks the list is unchanged, so that a
//! fixed command can be retried but a reshaped runbook cannot silently skip work.

use crate::journal::ActionKind;
use crate::plan::{Plan, RebootPolicy, StepSpec};

/// One operation on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Set the initial state to stopped (the hold), recording the prior one.
    Hold,
    /// Drainstop (or stop) and wait for the connections to end.
    Drain,
    /// A runbook step (index into `plan.runbook.steps`).
    Step(usize),
    /// The reboot after that step, when one was asked for.
    Reboot(usize),
    /// The verification checks.
    Verify,
    /// Unwind the owed undos (start in the balancer, clear the hold among them).
    Return,
    /// The member shows in service and the pool checks pass.
    PoolCheck,
    /// `[runbook.bake]`: the bake checks, round after round, while it takes traffic.
    Bake,
    /// After a failed bake: hold the member again (it is back in service).
    PullBackHold,
    /// After a failed bake: drain it again.
    PullBack,
    /// A rollback step (index into `plan.runbook.rollback`).
    Rollback(usize),
    /// The reboot after that rollback step, when one was asked for.
    RollbackReboot(usize),
    /// The verification checks again, after the rollback steps.
    Reverify,
}

impl Op {
    /// The kind shown in events and reports.
    pub fn kind(self) -> ActionKind {
        match self {
            Op::Hold => ActionKind::Hold,
            Op::Drain => ActionKind::Drain,
            Op::Step(_) => ActionKind::Step,
            Op::Reboot(_) => ActionKind::Reboot,
            Op::Verify => ActionKind::Verify,
            Op::Return => ActionKind::Return,
            Op::PoolCheck => ActionKind::Check,
            Op::Bake => ActionKind::Bake,
            Op::PullBackHold => ActionKind::Hold,
            Op::PullBack => ActionKind::Drain,
            Op::Rollback(_) => ActionKind::Rollback,
            Op::RollbackReboot(_) => ActionKind::Reboot,
            Op::Reverify => ActionKind::Verify,
        }
    }

    /// The step a `Step` or `Rollback` operation runs.
    pub fn step_spec(self, plan: &Plan) -> Option<&StepSpec> {
        match self {
            Op::Step(i) => plan.runbook.steps.get(i),
            Op::Rollback(i) => plan.runbook.rollback.get(i),
            _ => None,
        }
    }

    /// Whether this operation belongs to the rollback (after a failed verify or bake).
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            Op::PullBackHold
                | Op::PullBack
                | Op::Rollback(_)
                | Op::RollbackReboot(_)
                | Op::Reverify
        )
    }

    /// The name shown to operators (a step's own name for steps).
    pub fn name(self, plan: &Plan) -> String {
        match self {
            Op::Hold => "hold".into(),
            Op::Drain => "drain".into(),
            Op::Step(i) => plan.runbook.steps[i].name.clone(),
            Op::Reboot(_) => "reboot".into(),
            Op::Verify => "verify".into(),
            Op::Return => "return".into(),
            Op::PoolCheck => "pool-check".into(),
            Op::Bake => "bake".into(),
            Op::PullBackHold => "pull-back hold".into(),
            Op::PullBack => "pull-back".into(),
            Op::Rollback(i) => plan.runbook.rollback[i].name.clone(),
            Op::RollbackReboot(_) => "reboot".into(),
            Op::Reverify => "verify-after-rollback".into(),
        }
    }

    /// The stable key recorded in the journal.
    pub fn key(self, plan: &Plan) -> String {
        match self {
            Op::Step(i) => format!("step:{}", plan.runbook.steps[i].name),
            Op::Reboot(i) => format!("reboot:{}", plan.runbook.steps[i].name),
            Op::Rollback(i) => format!("rollback:{}", plan.runbook.rollback[i].name),
            Op::RollbackReboot(i) => format!("rollback-reboot:{}", plan.runbook.rollback[i].name),
            Op::Reverify => "reverify".into(),
            Op::PullBackHold => "pull-back-hold".into(),
            other => other.kind().to_string(),
        }
    }
}

/// The operations of member `index`, in order.
///
/// Monitoring maintenance steps (`alertmanager`, `webhook`) come first, before the hold and
/// the drain, so the monitoring is quiet before the member goes out; their ends, owed
/// first, are unwound last, after the member is back in service.
pub fn ops_for(plan: &Plan, index: usize) -> Vec<Op> {
    let steps: Vec<(usize, &crate::plan::StepSpec)> = plan
        .steps_for(index)
        .into_iter()
        .map(|step| {
            let i = plan
                .runbook
                .steps
                .iter()
                .position(|s| std::ptr::eq(s, step))
                .unwrap_or(0);
            (i, step)
        })
        .collect();
    let mut ops: Vec<Op> = steps
        .iter()
        .filter(|(_, s)| s.maintenance.is_some())
        .map(|(i, _)| Op::Step(*i))
        .collect();
    if plan.runbook.drain.hold {
        ops.push(Op::Hold);
    }
    ops.push(Op::Drain);
    for (i, step) in steps.into_iter().filter(|(_, s)| s.maintenance.is_none()) {
        ops.push(Op::Step(i));
        if step.reboot != RebootPolicy::Never {
            ops.push(Op::Reboot(i));
        }
    }
    ops.push(Op::Verify);
    ops.push(Op::Return);
    ops.push(Op::PoolCheck);
    if plan.runbook.bake.is_some() {
        ops.push(Op::Bake);
        if plan.runbook.drain.hold {
            ops.push(Op::PullBackHold);
        }
        ops.push(Op::PullBack);
    }
    for (i, step) in plan.runbook.rollback.iter().enumerate() {
        ops.push(Op::Rollback(i));
        if step.reboot != RebootPolicy::Never {
            ops.push(Op::RollbackReboot(i));
        }
    }
    if !plan.runbook.rollback.is_empty() {
        ops.push(Op::Reverify);
    }
    ops
}

/// Where the rollback of member `index` begins after its `failed` operation (`Verify` or
/// `Bake`) failed, as an index into [`ops_for`]; `None` when that failure sets off no
/// rollback (an ordinary failure). A failed bake always pulls the member back out; the
/// rollback steps follow when `rollback_on` lists the failure.
pub fn rollback_entry(plan: &Plan, ops: &[Op], failed: Op) -> Option<usize> {
    let first_step = ops.iter().position(|o| matches!(o, Op::Rollback(_)));
    match failed {
        Op::Verify if plan.runbook.rollback_on.verify => first_step,
        Op::Bake => ops
            .iter()
            .position(|o| matches!(o, Op::PullBackHold | Op::PullBack)),
        _ => None,
    }
}

/// The journal keys of a member's operations.
pub fn op_keys(plan: &Plan, index: usize) -> Vec<String> {
    ops_for(plan, index).iter().map(|o| o.key(plan)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_steps_come_before_the_member_goes_out() {
        let text = r#"
[pool]
name = "p"
[balancer]
driver = "command"
[[member]]
name = "a"
address = "127.0.0.1:1"
[[member]]
name = "b"
address = "127.0.0.1:2"
[[runbook.step]]
name = "fsc"
run = "fscutility /disable"
undo = "fscutility /enable"
[[runbook.step]]
name = "silence"
webhook = { url = "http://127.0.0.1:9/begin", undo_url = "http://127.0.0.1:9/end" }
[[runbook.step]]
name = "backup"
run = "backup"
when = "first"
"#;
        let plan = crate::config::parse(
            text,
            std::path::Path::new("p.toml"),
            &crate::registry::tests::inert(),
        )
        .expect("valid");
        assert_eq!(
            op_keys(&plan, 0),
            [
                "step:silence",
                "hold",
                "drain",
                "step:fsc",
                "step:backup",
                "verify",
                "return",
                "check"
            ]
        );
        assert_eq!(
            op_keys(&plan, 1),
            [
                "step:silence",
                "hold",
                "drain",
                "step:fsc",
                "verify",
                "return",
                "check"
            ]
        );
    }
}
