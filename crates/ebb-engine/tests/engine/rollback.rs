//! `[[runbook.rollback]]`: run when verify or the bake fails, then verify again; the member
//! stays held and the run halts either way. Journaled and resumable: a kill at any
//! operation of a bake and rollback, then a resume, ends the same way with nothing done
//! twice.

use crate::every;
use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{MemberState, RunState};
use ebb_engine::plan::{RebootPolicy, RollbackOn, StepSpec};
use ebb_engine::run::RunOptions;
use ebb_engine::testing::{
    assert_ended, step, CheckReply, Ended, Harness, Interrupt, KillPoint, PlanBuilder, Reply,
};
use std::collections::BTreeMap;
use std::time::Duration;

fn verify_plan() -> PlanBuilder {
    PlanBuilder::new(2)
        .paired("fsc")
        .step("install")
        .verify("owa")
        .rollback(step("downgrade"))
}

#[tokio::test]
async fn a_failed_verify_rolls_back_verifies_again_and_holds() {
    let h = Harness::new(verify_plan().build());
    h.checker
        .script("owa", "m1", [CheckReply::Fail, CheckReply::Pass]);
    let out = h.run().await;
    assert_ended(&out, RunState::Halted, 1);
    assert_eq!(
        h.log.calls("m1"),
        [
            "set-initial stopped",
            "drainstop",
            "run fsc",
            "run install",
            "check owa: fail",
            "run downgrade",
            "check owa: pass",
        ]
    );
    assert!(h.log.calls("m2").is_empty());
    let m1 = h.member("m1");
    assert_eq!(m1.state, MemberState::RolledBack);
    assert!(m1.reason.contains("check \"owa\" failed"), "{}", m1.reason);
    assert!(
        m1.reason
            .contains("rolled back (downgrade); verify after the rollback passed"),
        "{}",
        m1.reason
    );
    // Still out, held, owing all it owed when verify failed.
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"]);
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Draining, HostState::Stopped)
    );
}

#[tokio::test]
async fn a_rollback_whose_verify_fails_again_still_holds_and_halts() {
    let h = Harness::new(verify_plan().build());
    h.checker.script("owa", "m1", [CheckReply::Fail]);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    let m1 = h.member("m1");
    assert_eq!(m1.state, MemberState::RolledBack);
    assert!(
        m1.reason.contains("verify after the rollback failed"),
        "{}",
        m1.reason
    );
    assert!(h.log.calls("m2").is_empty());
    let open = h
        .actions("m1")
        .into_iter()
        .filter(|a| a.outcome.is_none())
        .count();
    assert_eq!(open, 0);
}

#[tokio::test]
async fn rollback_on_bake_only_leaves_a_failed_verify_an_ordinary_failure() {
    let plan = verify_plan()
        .edit(|p| {
            p.runbook.rollback_on = RollbackOn {
                verify: false,
                bake: true,
            }
        })
        .build();
    let h = Harness::new(plan);
    h.checker.script("owa", "m1", [CheckReply::Fail]);
    assert_eq!(h.run().await.exit_code, 1);
    assert_eq!(h.member("m1").state, MemberState::Failed);
    assert_eq!(h.log.count("m1", "run downgrade"), 0);
}

#[tokio::test]
async fn a_failed_rollback_step_is_resumed_like_any_step() {
    let h = Harness::new(verify_plan().build());
    h.checker
        .script("owa", "m1", [CheckReply::Fail, CheckReply::Pass]);
    h.transport("m1")
        .script("downgrade", [Reply::Exit(2), Reply::Exit(0)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    let m1 = h.member("m1");
    assert_eq!(
        (m1.state, m1.step.as_str()),
        (MemberState::Failed, "downgrade")
    );
    // The operator fixes the cause; resume goes on with the rollback, not the update.
    let out = h.resume().await;
    assert_eq!(out.exit_code, 1, "{}", out.message);
    assert_eq!(h.member("m1").state, MemberState::RolledBack);
    assert_eq!(h.log.count("m1", "run install"), 1);
    assert_eq!(h.log.count("m1", "run downgrade"), 2);
    assert!(h.log.calls("m2").is_empty());
}

/// Two members: a paired step, an install, verify, a bake that fails on m1's second
/// round, and a rollback step that reboots.
fn bake_and_rollback() -> Harness {
    let plan = PlanBuilder::new(2)
        .paired("fsc")
        .step("install")
        .verify("owa")
        .bake(
            Duration::from_millis(200),
            Duration::from_millis(5),
            &["errors"],
        )
        .rollback(StepSpec {
            reboot: RebootPolicy::Always,
            ..step("reinstall")
        })
        .rebooting()
        .build();
    let h = Harness::new(plan);
    h.checker
        .script("errors", "m1", [CheckReply::Pass, CheckReply::Fail]);
    for t in &h.transports {
        t.script("reboot", [Reply::Reboot(Duration::ZERO)]);
    }
    h
}

fn counts(h: &Harness) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for r in h.log.records().into_iter().filter(|r| r.effect) {
        if !r.call.starts_with("check ") {
            *c.entry(format!("{} {}", r.member, r.call)).or_insert(0) += 1;
        }
    }
    c
}

/// The end every run of [`bake_and_rollback`] must reach, resumed or not.
fn assert_rolled_back(h: &Harness, k: usize) {
    let run = h.run_record();
    assert_eq!(run.state, RunState::Halted, "k = {k}: {}", run.message);
    let m1 = h.member("m1");
    assert_eq!(
        m1.state,
        MemberState::RolledBack,
        "k = {k}: {}\n{}",
        m1.reason,
        h.log.dump()
    );
    assert!(
        m1.reason.contains("bake check \"errors\" failed")
            && m1.reason.contains("verify after the rollback passed"),
        "k = {k}: {}",
        m1.reason
    );
    assert_eq!(h.owed("m1"), ["hold", "drain"], "k = {k}");
    assert_eq!(
        h.balancer.truth("m1").1,
        HostState::Stopped,
        "k = {k}: m1 held"
    );
    assert_ne!(h.balancer.truth("m1").0, HostState::Started, "k = {k}");
    assert!(h.log.calls("m2").is_empty(), "k = {k}: m2 untouched");
    assert_eq!(h.transport("m1").boot(), "boot-1", "k = {k}: one reboot");
    let open: Vec<_> = h
        .actions("m1")
        .into_iter()
        .filter(|a| a.outcome.is_none())
        .map(|a| a.name)
        .collect();
    assert!(open.is_empty(), "k = {k}: {open:?}");
}

#[tokio::test]
async fn killed_at_any_operation_of_a_bake_and_rollback_resume_ends_the_same_once() {
    let clean = bake_and_rollback();
    assert_eq!(clean.run().await.exit_code, 1);
    assert_rolled_back(&clean, usize::MAX);
    let want = counts(&clean);
    let n = clean.log.effects();
    assert!(n >= 15, "{}", clean.log.dump());
    for point in [KillPoint::Before, KillPoint::After] {
        let want = want.clone();
        every(n, move |k| {
            let want = want.clone();
            async move {
                let h = bake_and_rollback();
                h.log.interrupt_at(k, point, Interrupt::Kill);
                assert!(
                    matches!(h.start(RunOptions::default()).await, Ended::Killed),
                    "k = {k}"
                );
                let fired = h.log.fired().expect("fired");
                let out = h.resume().await;
                assert_eq!(out.exit_code, 1, "k = {k} ({fired:?}): {}", out.message);
                assert_rolled_back(&h, k);
                // Everything that changes something happened once; only the call the
                // kill fell after may have been made again (its outcome was lost).
                let got = counts(&h);
                let again = format!("{} {}", fired.member, fired.call);
                for (call, n) in &got {
                    let w = want.get(call).copied().unwrap_or(0);
                    let ok =
                        *n == w || (point == KillPoint::After && *call == again && *n == w + 1);
                    assert!(
                        ok,
                        "k = {k} {point:?} {again}: {call} {n} times, want {w}\n{}",
                        h.log.dump()
                    );
                }
                assert_eq!(got.len(), want.len(), "k = {k}: {got:?}");
            }
        })
        .await;
    }
}
