//! `[runbook.bake]`: checks run round after round while a returned member takes traffic;
//! the next member waits for the bake; a failed bake pulls the member back out.

use ebb_engine::events::{Event, WaitKind};
use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{ActionKind, MemberState, Outcome, RunState};
use ebb_engine::plan::OnFailure;
use ebb_engine::testing::{assert_ended, step, CheckReply, Harness, PlanBuilder};
use std::time::Duration;

fn baking(members: usize) -> PlanBuilder {
    PlanBuilder::new(members)
        .paired("fsc")
        .step("install")
        .verify("owa")
        .bake(
            Duration::from_millis(120),
            Duration::from_millis(20),
            &["errors"],
        )
}

#[tokio::test]
async fn a_passing_bake_lets_the_next_member_go_only_after_it() {
    let h = Harness::new(baking(3).build());
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    h.assert_all_done();
    for (m, next) in [("m1", "m2"), ("m2", "m3")] {
        let calls = h.log.calls(m);
        // Checked while in service: after its return, several rounds.
        let back = calls.iter().position(|c| c == "set-initial started");
        let first_bake = calls.iter().position(|c| c == "check errors: pass");
        assert!(back < first_bake, "{m}: {calls:?}");
        let rounds = h.log.count(m, "check errors: pass");
        assert!(rounds >= 3, "{m} baked {rounds} round(s)\n{}", h.log.dump());
        // The next member's first operation comes after this member's last bake round.
        let records = h.log.records();
        let last_round = records
            .iter()
            .rposition(|r| r.member == m && r.call == "check errors: pass");
        let next_starts = h.log.position(next, "set-initial stopped");
        assert!(
            last_round < next_starts,
            "{next} started during {m}'s bake\n{}",
            h.log.dump()
        );
    }
    let bake = h
        .actions("m1")
        .into_iter()
        .find(|a| a.kind == ActionKind::Bake)
        .expect("a bake action");
    assert_eq!(bake.outcome, Some(Outcome::Ok));
    assert!(
        bake.detail
            .contains("round(s) passed: errors (fake check passed)"),
        "{}",
        bake.detail
    );
    let baking_waits = h
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::Waiting {
                    kind: WaitKind::Bake,
                    ..
                }
            )
        })
        .count();
    assert_eq!(baking_waits, 3);
}

#[tokio::test]
async fn a_failed_bake_pulls_back_rolls_back_holds_and_halts_with_no_later_member_touched() {
    let plan = baking(3)
        .rollback(step("reinstall"))
        // Whatever on_failure says, a rolled-back member halts the run.
        .on_failure(OnFailure::Continue, 5)
        .build();
    let h = Harness::new(plan);
    h.checker
        .script("errors", "m1", [CheckReply::Pass, CheckReply::Fail]);
    let out = h.run().await;
    assert_ended(&out, RunState::Halted, 1);
    assert_eq!(
        h.log.calls("m1"),
        [
            "set-initial stopped",
            "drainstop",
            "run fsc",
            "run install",
            "check owa: pass",
            "run undo fsc",
            "start",
            "set-initial started",
            "check errors: pass",
            "check errors: fail",
            "set-initial stopped",
            "drainstop",
            "run reinstall",
            "check owa: pass",
        ]
    );
    assert!(h.log.calls("m2").is_empty() && h.log.calls("m3").is_empty());
    assert_eq!(
        h.states(),
        [
            MemberState::RolledBack,
            MemberState::Pending,
            MemberState::Pending
        ]
    );
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Draining, HostState::Stopped)
    );
    assert_eq!(h.owed("m1"), ["hold", "drain"]);
    // The failing figures: which check, in which round, what it said.
    let m1 = h.member("m1");
    for want in [
        "bake check \"errors\" failed",
        "(round 2)",
        "fake check failed (scripted)",
        "rolled back (reinstall); verify after the rollback passed",
        "ebb release m1",
    ] {
        assert!(m1.reason.contains(want), "{want:?} in {}", m1.reason);
    }
    let bake = h
        .actions("m1")
        .into_iter()
        .find(|a| a.kind == ActionKind::Bake)
        .expect("a bake action");
    assert_eq!(bake.outcome, Some(Outcome::Failed));
    assert!(bake.output.contains("fake check failed"), "{}", bake.output);
    let finished: Vec<String> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::MemberFinished { member, state, .. } => Some(format!("{member} {state}")),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ["m1 rolled-back"]);
}

#[tokio::test]
async fn a_failed_bake_without_rollback_steps_pulls_back_and_holds() {
    let h = Harness::new(baking(2).hold(true).build());
    h.checker.script("errors", "m1", [CheckReply::Fail]);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    let calls = h.log.calls("m1");
    assert_eq!(
        calls[calls.len() - 3..],
        ["check errors: fail", "set-initial stopped", "drainstop"]
    );
    assert!(h.log.calls("m2").is_empty());
    let m1 = h.member("m1");
    assert_eq!(m1.state, MemberState::RolledBack);
    assert!(
        m1.reason
            .contains("pulled back out; there are no rollback steps"),
        "{}",
        m1.reason
    );
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Draining, HostState::Stopped)
    );
}

#[tokio::test]
async fn resume_refuses_a_rolled_back_member_until_it_is_released() {
    let h = Harness::new(baking(2).rollback(step("reinstall")).build());
    h.checker.script("errors", "m1", [CheckReply::Fail]);
    assert_eq!(h.run().await.exit_code, 1);
    let refused = h
        .try_resume(Default::default())
        .await
        .expect_err("a person decides");
    assert!(
        refused
            .to_string()
            .contains("\"m1\" was rolled back and is held"),
        "{refused}"
    );
    assert!(h.log.calls("m2").is_empty(), "the refusal touched nothing");
    let released = h.release("m1").await.expect("release");
    assert_eq!(released.exit_code, 0, "{}", released.message);
    assert_eq!(h.member("m1").state, MemberState::Done);
    h.checker.script("errors", "m2", [CheckReply::Pass]);
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    h.assert_all_done();
    assert_eq!(h.log.count("m1", "run reinstall"), 1);
}
