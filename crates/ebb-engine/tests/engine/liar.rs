//! A balancer that lies about a member, loses one, or fails an operation.

use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{MemberState, RunState};
use ebb_engine::run::RunError;
use ebb_engine::testing::{BalOp, Ended, Harness, PlanBuilder};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_member_reported_out_while_serving_counts_as_out() {
    let h = Harness::new(
        PlanBuilder::new(3)
            .capacity_wait(Duration::from_millis(30))
            .step("install")
            .build(),
    );
    h.balancer.lie("m3", Some(HostState::Stopped));
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(
        out.message.contains("out of service now: m3"),
        "{}",
        out.message
    );
    assert_eq!(h.log.all_calls(), Vec::<String>::new(), "nothing changed");
    assert_eq!(h.balancer.max_out(), 0);
}

#[tokio::test]
async fn a_member_reported_started_while_draining_fails_the_drain() {
    let h = Harness::new(PlanBuilder::new(2).step("install").build());
    h.balancer.lie("m1", Some(HostState::Started));
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    let m1 = h.member("m1");
    assert_eq!((m1.state, m1.step.as_str()), (MemberState::Failed, "drain"));
    assert!(m1.reason.contains("started again"), "{}", m1.reason);
    assert_eq!(
        h.log.count("m1", "run install"),
        0,
        "no step on a member that may serve"
    );
    assert_eq!(h.owed("m1"), ["hold", "drain"]);
    assert!(h.log.calls("m2").is_empty());
}

#[tokio::test]
async fn a_start_the_balancer_ignores_fails_the_rejoin() {
    let plan = PlanBuilder::new(2)
        .step("install")
        .edit(|p| p.runbook.rejoin_timeout = Duration::from_millis(30))
        .build();
    let h = Harness::new(plan);
    h.balancer.ignore("m1", BalOp::Start);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    let m1 = h.member("m1");
    assert_eq!(
        (m1.state, m1.step.as_str()),
        (MemberState::Failed, "pool-check")
    );
    assert!(m1.reason.contains("not in service"), "{}", m1.reason);
    assert!(
        h.log.calls("m2").is_empty(),
        "the next member waits for a proven rejoin"
    );
}

#[tokio::test]
async fn a_member_the_balancer_does_not_know_refuses_the_run_before_anything() {
    let h = Harness::new(PlanBuilder::new(3).step("install").build());
    h.balancer.lose("m2", true);
    let r = h.start(Default::default()).await;
    assert!(
        matches!(&r, Ended::Finished(Err(RunError::Usage(m))) if m.contains("member \"m2\"") && m.contains("nothing was changed")),
        "{r:?}"
    );
    assert_eq!(
        h.journal.latest_run(None).expect("journal").map(|r| r.id),
        None
    );
    assert_eq!(h.log.effects(), 0);
}

#[tokio::test]
async fn a_member_lost_while_out_fails_and_the_run_stops() {
    let h = Harness::new(PlanBuilder::new(2).step("install").build());
    let bal = Arc::clone(&h.balancer);
    h.log.on("m1", "run install", move || bal.lose("m1", true));
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    let m1 = h.member("m1");
    assert_eq!(m1.state, MemberState::Failed);
    assert!(m1.reason.contains("no member \"m1\""), "{}", m1.reason);
    assert!(
        !h.owed("m1").is_empty(),
        "its undos stay owed: {:?}",
        h.owed("m1")
    );
    assert!(h.log.calls("m2").is_empty());
}

#[tokio::test]
async fn a_failing_drainstop_leaves_the_member_held_with_the_drain_owed() {
    let h = Harness::new(PlanBuilder::new(2).build());
    // A drain is retried within its timeout (300 ms here, a retry every 500 ms): failing
    // twice outlasts it.
    h.balancer.fail_next("m1", BalOp::Drainstop, 2);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert!(
        out.message.contains("the drain could not be confirmed"),
        "{}",
        out.message
    );
    assert_eq!(
        h.log.calls("m1"),
        [
            "set-initial stopped",
            "drainstop (fails)",
            "drainstop (fails)"
        ]
    );
    assert_eq!(h.owed("m1"), ["hold", "drain"]);
    // A resume retries the drain (now answered) and finishes.
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log.count("m1", "set-initial stopped"),
        1,
        "the hold is not redone"
    );
    h.assert_all_done();
}

#[tokio::test]
async fn someone_else_taking_a_member_out_mid_run_blocks_the_next() {
    let h = Harness::new(
        PlanBuilder::new(3)
            .capacity_wait(Duration::from_millis(30))
            .step("install")
            .build(),
    );
    let bal = Arc::clone(&h.balancer);
    h.log.on("m1", "run install", move || {
        bal.set("m3", HostState::Stopped)
    });
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(
        out.message.contains("\"m2\"") && out.message.contains("out of service now: m3"),
        "{}",
        out.message
    );
    assert_eq!(h.member("m1").state, MemberState::Done);
    assert!(h.log.calls("m2").is_empty());
    // m1 and m3 were out together only while m1 was already out (not ebb's choice).
    assert_eq!(h.balancer.max_out(), 2);
}

#[tokio::test]
async fn a_member_reported_in_service_while_out_lets_ebb_take_another_out() {
    // ebb can only be as right as the balancer: the true timeline shows what it missed.
    let h = Harness::new(PlanBuilder::new(3).step("install").build());
    h.balancer.set("m3", HostState::Stopped);
    h.balancer.lie("m3", Some(HostState::Started));
    // The balancer tells the truth again once m1 and m2 are done.
    let bal = Arc::clone(&h.balancer);
    h.log
        .on("m2", "set-initial started", move || bal.lie("m3", None));
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.balancer.max_out(), 2, "{:?}", h.balancer.timeline());
    assert_eq!(h.log.order_of("drainstop"), ["m1", "m2", "m3"]);
    h.assert_all_done();
}
