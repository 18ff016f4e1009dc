//! The owed-undo stack: pushed before its step, unwound newest first, still owed after a
//! failure, paid exactly once.

use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{MemberState, RunState};
use ebb_engine::testing::{maintenance_step, Harness, Interrupt, KillPoint, PlanBuilder, Reply};

#[tokio::test]
async fn an_undo_is_owed_before_its_step_runs() {
    let h = Harness::new(PlanBuilder::new(1).paired("fsc").build());
    // Die just before the command reaches the member.
    let k = 2; // set-initial stopped, drainstop, run fsc
    h.log.interrupt_at(k, KillPoint::Before, Interrupt::Kill);
    let ended = h.start(Default::default()).await;
    assert!(matches!(ended, ebb_engine::testing::Ended::Killed));
    assert_eq!(h.log.fired().map(|r| r.call), Some("run fsc".to_string()));
    assert_eq!(h.log.count("m1", "run fsc"), 0, "the step never ran");
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"]);
}

#[tokio::test]
async fn the_stack_unwinds_newest_first_and_monitoring_returns_last() {
    let plan = PlanBuilder::new(1)
        .with_step(maintenance_step("silence"))
        .paired("a")
        .paired("b")
        .paired("c")
        .build();
    let h = Harness::new(plan);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log.calls("m1"),
        [
            "begin silence",
            "set-initial stopped",
            "drainstop",
            "run a",
            "run b",
            "run c",
            "run undo c",
            "run undo b",
            "run undo a",
            "start",
            "set-initial started",
            "end silence token-1",
        ]
    );
    h.assert_all_done();
}

#[tokio::test]
async fn a_failed_undo_stays_owed_and_the_rest_waits_behind_it() {
    let h = Harness::new(PlanBuilder::new(2).paired("a").paired("b").build());
    h.transport("m1").script(
        "undo a",
        [Reply::Output(5, "cannot enable\n".into()), Reply::Exit(0)],
    );
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    let m1 = h.member("m1");
    assert_eq!(
        (m1.state, m1.step.as_str()),
        (MemberState::Failed, "return")
    );
    assert!(m1.reason.contains("still owed"), "{}", m1.reason);
    // b was undone and paid; a is owed, and so are the drain and hold under it.
    assert_eq!(h.owed("m1"), ["hold", "drain", "a"]);
    assert_eq!(
        h.log.count("m1", "start"),
        0,
        "not returned with an undo owed"
    );
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Draining, HostState::Stopped)
    );
    assert!(h.log.calls("m2").is_empty());

    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.count("m1", "run undo b"), 1, "paid once, not again");
    assert_eq!(h.log.count("m1", "run undo a"), 2, "failed once, then paid");
    assert_eq!(h.log.count("m1", "start"), 1);
    assert_eq!(h.log.count("m1", "set-initial started"), 1);
    h.assert_all_done();
}

#[tokio::test]
async fn a_failed_maintenance_end_stays_owed_after_the_member_is_back() {
    let plan = PlanBuilder::new(1)
        .with_step(maintenance_step("silence"))
        .paired("a")
        .build();
    let h = Harness::new(plan);
    h.maintenance.fail_end(1);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(h.owed("m1"), ["silence"]);
    // Everything above it in the stack was paid: the member serves again.
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Started, HostState::Started)
    );
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log
            .calls("m1")
            .into_iter()
            .filter(|c| c.starts_with("end silence"))
            .collect::<Vec<_>>(),
        ["end silence token-1 (fails)", "end silence token-1"],
        "the end is retried with the token the begin recorded"
    );
    assert_eq!(h.log.count("m1", "run undo a"), 1);
    h.assert_all_done();
}

#[tokio::test]
async fn without_hold_nothing_about_the_initial_state_is_owed_or_changed() {
    let h = Harness::new(PlanBuilder::new(2).hold(false).paired("a").build());
    let out = h.run().await;
    assert_eq!(out.exit_code, 0);
    for m in ["m1", "m2"] {
        assert_eq!(
            h.log.calls(m),
            ["drainstop", "run a", "run undo a", "start"]
        );
    }
    h.assert_all_done();
}

#[tokio::test]
async fn a_failed_maintenance_begin_changes_nothing_on_the_balancer_and_its_end_is_owed() {
    let plan = PlanBuilder::new(2)
        .with_step(maintenance_step("silence"))
        .step("install")
        .build();
    let h = Harness::new(plan);
    h.maintenance.fail_begin(1);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(h.log.calls("m1"), ["begin silence (fails)"]);
    // It may have been created before the error: its end is owed.
    assert_eq!(h.owed("m1"), ["silence"]);
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Started, HostState::Started)
    );
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    h.assert_all_done();
}

#[tokio::test]
async fn a_member_held_before_the_run_is_held_again_after_it() {
    let h = Harness::new(PlanBuilder::new(2).step("install").build());
    h.balancer.set_initial("m2", HostState::Stopped);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log.calls("m2"),
        [
            "set-initial stopped",
            "drainstop",
            "run install",
            "start",
            "set-initial stopped"
        ],
        "the prior initial state is restored, not forced to started"
    );
    assert_eq!(
        h.balancer.truth("m2"),
        (HostState::Started, HostState::Stopped)
    );
    assert_eq!(h.owed("m2"), Vec::<String>::new());
}

#[tokio::test]
async fn a_failed_restore_of_the_initial_state_stays_owed_with_the_member_serving() {
    let h = Harness::new(PlanBuilder::new(2).paired("a").build());
    let bal = std::sync::Arc::clone(&h.balancer);
    // Fails only on the way back (the hold itself worked).
    h.log.on("m1", "start", move || {
        bal.fail_next("m1", ebb_engine::testing::BalOp::SetInitialState, 1)
    });
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(h.owed("m1"), ["hold"]);
    let m1 = h.member("m1");
    assert_eq!(
        (m1.state, m1.step.as_str()),
        (MemberState::Failed, "return")
    );
    // Started, but still held: a reboot would keep it out. Listed until paid.
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Started, HostState::Stopped)
    );
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.count("m1", "start"), 1, "only what is owed is redone");
    assert_eq!(h.log.count("m1", "run undo a"), 1);
    h.assert_all_done();
}

#[tokio::test]
async fn a_paired_step_that_fails_still_owes_its_undo_and_release_pays_it() {
    // It may have changed something before failing: its undo is owed all the same.
    let h = Harness::new(PlanBuilder::new(2).paired("a").paired("b").build());
    h.transport("m1").script("b", [Reply::Exit(2)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(h.owed("m1"), ["hold", "drain", "a", "b"]);
    let out = h.release("m1").await.expect("release");
    assert_eq!(out.exit_code, 0, "{}", out.message);
    let tail: Vec<String> = h.log.calls("m1").split_off(4);
    assert_eq!(
        tail,
        ["run undo b", "run undo a", "start", "set-initial started"]
    );
    assert_eq!(h.owed("m1"), Vec::<String>::new());
}
