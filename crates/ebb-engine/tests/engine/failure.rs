//! on_failure halt/continue and max_failed; what a failed member is left as.

use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{MemberState, RunState};
use ebb_engine::plan::{MaxUnavailable, OnFailure};
use ebb_engine::testing::{assert_ended, Harness, PlanBuilder, Reply};
use std::time::Duration;

#[tokio::test]
async fn halt_stops_at_the_first_failure_and_leaves_the_member_out_and_held() {
    let h = Harness::new(PlanBuilder::new(3).paired("fsc").step("install").build());
    h.transport("m1").script("install", [Reply::Exit(4)]);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(
        out.message.contains("\"m1\" failed at install"),
        "{}",
        out.message
    );
    assert_eq!(
        h.log.calls("m1"),
        ["set-initial stopped", "drainstop", "run fsc", "run install"]
    );
    assert!(h.log.calls("m2").is_empty() && h.log.calls("m3").is_empty());
    assert_eq!(
        h.states(),
        [
            MemberState::Failed,
            MemberState::Pending,
            MemberState::Pending
        ]
    );
    let m1 = h.member("m1");
    assert_eq!(m1.step, "install");
    assert!(m1.reason.contains("exited with code 4"), "{}", m1.reason);
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"]);
    // Out of service and held: a reboot would not bring it back.
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Draining, HostState::Stopped)
    );
}

#[tokio::test]
async fn continue_goes_on_with_the_others_within_max_failed_and_the_policy() {
    // m2 fails and stays out, holding one of the two slots; the others go on in the other.
    let plan = PlanBuilder::new(4)
        .max_unavailable(MaxUnavailable::Count(2))
        .on_failure(OnFailure::Continue, 1)
        .step("install")
        .build();
    let h = Harness::new(plan);
    h.transport("m2").script("install", [Reply::Exit(1)]);
    let out = h.run().await;
    assert_ended(&out, RunState::Halted, 1);
    assert!(
        out.message.contains("1 member(s) failed"),
        "{}",
        out.message
    );
    assert_eq!(
        h.states(),
        [
            MemberState::Done,
            MemberState::Failed,
            MemberState::Done,
            MemberState::Done
        ]
    );
    assert_eq!(h.balancer.max_out(), 2, "{:?}", h.balancer.timeline());
    assert_eq!(h.owed("m2"), ["hold", "drain"]);
    assert_eq!(
        h.balancer.truth("m2"),
        (HostState::Draining, HostState::Stopped)
    );
}

#[tokio::test]
async fn with_continue_a_failed_member_keeps_its_slot() {
    // max_unavailable = 1 and the failed member still out: nobody else may go.
    let plan = PlanBuilder::new(3)
        .on_failure(OnFailure::Continue, 1)
        .capacity_wait(Duration::from_millis(30))
        .step("install")
        .build();
    let h = Harness::new(plan);
    h.transport("m1").script("install", [Reply::Exit(1)]);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(
        out.message.contains("out of service now: m1"),
        "{}",
        out.message
    );
    assert_eq!(h.log.order_of("drainstop"), ["m1"]);
    assert_eq!(h.balancer.max_out(), 1);
}

#[tokio::test]
async fn continue_starts_nothing_new_once_max_failed_is_exceeded() {
    let plan = PlanBuilder::new(5)
        .max_unavailable(MaxUnavailable::Count(3))
        .on_failure(OnFailure::Continue, 1)
        .step("install")
        .build();
    let h = Harness::new(plan);
    h.transport("m1").script("install", [Reply::Exit(1)]);
    h.transport("m2").script("install", [Reply::Exit(1)]);
    h.transport("m3")
        .script("install", [Reply::Slow(Duration::from_millis(30))]);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(out.message.contains("\"m1\" failed") && out.message.contains("\"m2\" failed"));
    let mut drained = h.log.order_of("drainstop");
    drained.sort();
    assert_eq!(
        drained,
        ["m1", "m2", "m3"],
        "nothing new after the second failure"
    );
    assert_eq!(
        h.states(),
        [
            MemberState::Failed,
            MemberState::Failed,
            MemberState::Done,
            MemberState::Pending,
            MemberState::Pending
        ],
        "the member in flight finished"
    );
}

#[tokio::test]
async fn a_failed_step_is_retried_by_resume_and_the_run_finishes() {
    let h = Harness::new(PlanBuilder::new(2).paired("fsc").step("install").build());
    h.transport("m2")
        .script("install", [Reply::Exit(1), Reply::Exit(0)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    let out = h.resume().await;
    assert_ended(&out, RunState::Done, 0);
    assert_eq!(h.log.count("m2", "run install"), 2);
    assert_eq!(
        h.log.count("m2", "run fsc"),
        1,
        "steps before the failure are not redone"
    );
    assert_eq!(h.log.count("m2", "drainstop"), 1);
    assert_eq!(
        h.log.count("m1", "drainstop"),
        1,
        "m1 was done and stays done"
    );
    h.assert_all_done();
}

#[tokio::test]
async fn after_max_failed_is_exceeded_a_waiting_member_does_not_wait_out_capacity_wait() {
    // capacity_wait is far longer than the harness's bound on a run: waiting it out fails
    // the test.
    let plan = PlanBuilder::new(4)
        .max_unavailable(MaxUnavailable::Count(2))
        .on_failure(OnFailure::Continue, 0)
        .capacity_wait(Duration::from_secs(600))
        .step("install")
        .build();
    let mut h = Harness::new(plan);
    h.bound = Duration::from_secs(5);
    // Someone else holds one slot: m1 takes the other, m2 waits for one.
    h.balancer.set("m4", HostState::Stopped);
    h.transport("m1").script("install", [Reply::Exit(1)]);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(!out.message.contains("capacity_wait"), "{}", out.message);
    assert_eq!(h.log.order_of("drainstop"), ["m1"]);
    assert_eq!(h.member("m2").state, MemberState::Pending);
}

#[tokio::test]
async fn halt_lets_the_members_in_flight_finish_and_starts_no_new_one() {
    let plan = PlanBuilder::new(4)
        .max_unavailable(MaxUnavailable::Count(2))
        .step("install")
        .build();
    let h = Harness::new(plan);
    h.transport("m1").script("install", [Reply::Exit(1)]);
    h.transport("m2")
        .script("install", [Reply::Slow(Duration::from_millis(20))]);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert_eq!(
        h.states(),
        [
            MemberState::Failed,
            MemberState::Done,
            MemberState::Pending,
            MemberState::Pending
        ],
        "m2 was not abandoned out of service"
    );
    assert_eq!(
        h.balancer.truth("m2"),
        (HostState::Started, HostState::Started)
    );
    assert!(h.log.calls("m3").is_empty() && h.log.calls("m4").is_empty());
}
