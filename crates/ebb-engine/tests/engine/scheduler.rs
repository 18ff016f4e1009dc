//! Plan order, waves, pause_after, parallel members under max_unavailable (count and
//! percent), min_in_service, capacity_wait, and members someone else took out.

use crate::{plain_calls, waits};
use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{MemberState, RunState};
use ebb_engine::plan::MaxUnavailable;
use ebb_engine::testing::{assert_ended, wave, Harness, PlanBuilder, Reply};
use std::time::Duration;

#[tokio::test]
async fn members_go_one_at_a_time_in_plan_order() {
    let h = Harness::new(PlanBuilder::new(3).step("install").build());
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Done, 0));
    assert_eq!(h.log.order_of("drainstop"), ["m1", "m2", "m3"]);
    for m in ["m1", "m2", "m3"] {
        assert_eq!(h.log.calls(m), plain_calls(&["install"]));
    }
    // Each member is back before the next one leaves.
    assert!(
        h.log.position("m1", "set-initial started") < h.log.position("m2", "set-initial stopped")
    );
    assert!(
        h.log.position("m2", "set-initial started") < h.log.position("m3", "set-initial stopped")
    );
    assert_eq!(h.balancer.max_out(), 1);
    h.assert_all_done();
}

#[tokio::test]
async fn waves_go_in_order_and_pause_after_stops_until_resume() {
    let plan = PlanBuilder::new(4)
        .step("install")
        .waves(vec![
            wave("canary", &[2], true),
            wave("rest", &[0, 1, 3], false),
        ])
        .build();
    let h = Harness::new(plan);
    let out = h.run().await;
    assert_ended(&out, RunState::Paused, 0);
    assert!(out.message.contains("\"rest\""), "{}", out.message);
    assert_eq!(h.log.order_of("drainstop"), ["m3"]);
    assert_eq!(
        h.states(),
        [
            MemberState::Pending,
            MemberState::Pending,
            MemberState::Done,
            MemberState::Pending
        ]
    );
    let out = h.resume().await;
    assert_ended(&out, RunState::Done, 0);
    assert_eq!(h.log.order_of("drainstop"), ["m3", "m1", "m2", "m4"]);
    assert_eq!(
        h.log.count("m3", "drainstop"),
        1,
        "the canary is not done twice"
    );
    h.assert_all_done();
}

#[tokio::test]
async fn parallel_members_stay_within_max_unavailable_as_a_count() {
    let plan = PlanBuilder::new(6)
        .max_unavailable(MaxUnavailable::Count(2))
        .step("install")
        .build();
    let h = Harness::new(plan);
    for t in &h.transports {
        t.script("install", [Reply::Slow(Duration::from_millis(15))]);
    }
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.balancer.max_out(),
        2,
        "timeline {:?}",
        h.balancer.timeline()
    );
    h.assert_all_done();
}

#[tokio::test]
async fn parallel_members_stay_within_max_unavailable_as_a_percentage() {
    // 30 % of 10 members: 3 at a time.
    let plan = PlanBuilder::new(10)
        .max_unavailable(MaxUnavailable::Percent(30))
        .step("install")
        .build();
    let h = Harness::new(plan);
    for t in &h.transports {
        t.script("install", [Reply::Slow(Duration::from_millis(15))]);
    }
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.balancer.max_out(),
        3,
        "timeline {:?}",
        h.balancer.timeline()
    );
    h.assert_all_done();
}

#[tokio::test]
async fn min_in_service_holds_back_parallel_members() {
    // max_unavailable would allow 3, but 3 of 4 must stay in service: one at a time.
    let plan = PlanBuilder::new(4)
        .max_unavailable(MaxUnavailable::Count(3))
        .min_in_service(3)
        .capacity_wait(Duration::from_secs(5))
        .step("install")
        .build();
    let h = Harness::new(plan);
    for t in &h.transports {
        t.script("install", [Reply::Slow(Duration::from_millis(5))]);
    }
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.balancer.max_out(),
        1,
        "timeline {:?}",
        h.balancer.timeline()
    );
    h.assert_all_done();
}

#[tokio::test]
async fn a_member_someone_else_took_out_counts_as_out() {
    let plan = PlanBuilder::new(3)
        .capacity_wait(Duration::from_millis(50))
        .step("install")
        .build();
    let h = Harness::new(plan);
    h.balancer.set("m3", HostState::Stopped);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(
        out.message.contains("out of service now: m3"),
        "{}",
        out.message
    );
    assert!(out.message.contains("capacity_wait"), "{}", out.message);
    assert!(
        h.log.order_of("drainstop").is_empty(),
        "nothing was drained: {}",
        h.log.dump()
    );
    assert!(
        waits(&h).iter().any(|w| w.contains("\"m1\"")),
        "the wait was shown"
    );
    assert_eq!(h.states(), [MemberState::Pending; 3]);
}

#[tokio::test]
async fn the_run_goes_on_once_the_other_member_is_back() {
    // The policy is read again at the latest when capacity_wait ends.
    let plan = PlanBuilder::new(3)
        .capacity_wait(Duration::from_millis(150))
        .step("install")
        .build();
    let h = Harness::new(plan);
    h.balancer
        .set_for("m3", HostState::Stopped, Duration::from_millis(30));
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    // Never m3 (someone else's) and one of ours out together.
    assert_eq!(
        h.balancer.max_out(),
        1,
        "timeline {:?}",
        h.balancer.timeline()
    );
    let first = h
        .log
        .records()
        .into_iter()
        .find(|r| r.call == "set-initial stopped");
    assert!(first.is_some_and(|r| r.at >= Duration::from_millis(30)));
    h.assert_all_done();
}

#[tokio::test]
async fn min_in_service_that_cannot_be_met_ends_the_run_after_capacity_wait() {
    let plan = PlanBuilder::new(3)
        .min_in_service(2)
        .capacity_wait(Duration::from_millis(50))
        .step("install")
        .build();
    let h = Harness::new(plan);
    // m2 fails the balancer's health checks: only m1 and m3 serve.
    h.balancer.set_healthy("m2", Some(false));
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(
        out.message.contains("min_in_service = 2"),
        "{}",
        out.message
    );
    assert!(
        out.message.contains("out of service now: m2"),
        "{}",
        out.message
    );
    assert_eq!(h.log.all_calls(), Vec::<String>::new(), "nothing changed");
}

#[tokio::test]
async fn members_start_in_plan_order_when_a_slot_frees() {
    let plan = PlanBuilder::new(4)
        .max_unavailable(MaxUnavailable::Count(2))
        .capacity_wait(Duration::from_secs(5))
        .step("install")
        .build();
    let h = Harness::new(plan);
    // Someone else holds one of the two slots until m1 is back in service: m1 takes the
    // other, m2 waits. (An event, not a timer: with a slow journal a timer could put m4
    // back in the middle of its own drain.)
    h.balancer.set("m4", HostState::Stopped);
    let bal = h.balancer.clone();
    h.log
        .on("m1", "start", move || bal.set("m4", HostState::Started));
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log.order_of("drainstop"),
        ["m1", "m2", "m3", "m4"],
        "{}",
        h.log.dump()
    );
    assert!(h.balancer.max_out() <= 2);
}

#[tokio::test]
async fn a_first_only_step_runs_on_the_first_member_of_the_first_wave() {
    let plan = PlanBuilder::new(3)
        .with_step(ebb_engine::plan::StepSpec {
            when: ebb_engine::plan::When::First,
            ..ebb_engine::testing::step("backup")
        })
        .step("install")
        .waves(vec![
            wave("canary", &[1], false),
            wave("rest", &[0, 2], false),
        ])
        .build();
    let h = Harness::new(plan);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.calls("m2"), plain_calls(&["backup", "install"]));
    assert_eq!(h.log.calls("m1"), plain_calls(&["install"]));
    assert_eq!(h.log.calls("m3"), plain_calls(&["install"]));
    h.assert_all_done();
}

#[tokio::test]
async fn pause_after_the_last_wave_ends_the_run_done() {
    let plan = PlanBuilder::new(2)
        .waves(vec![wave("a", &[0], false), wave("b", &[1], true)])
        .build();
    let h = Harness::new(plan);
    let out = h.run().await;
    assert_ended(&out, RunState::Done, 0);
    h.assert_all_done();
}

#[tokio::test]
async fn with_continue_a_failure_in_a_wave_is_warned_and_the_next_wave_goes_on() {
    let plan = PlanBuilder::new(3)
        .on_failure(ebb_engine::plan::OnFailure::Continue, 1)
        .max_unavailable(MaxUnavailable::Count(2))
        .step("install")
        .waves(vec![
            wave("canary", &[0], false),
            wave("rest", &[1, 2], false),
        ])
        .build();
    let h = Harness::new(plan);
    h.transport("m1").script("install", [Reply::Exit(1)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(
        h.states(),
        [MemberState::Failed, MemberState::Done, MemberState::Done]
    );
    let warned = h.events().into_iter().any(|e| {
        matches!(e, ebb_engine::events::Event::Warning { message } if message.contains("wave \"canary\" finished with failures"))
    });
    assert!(warned);
    // m1 stayed out, so m2 and m3 went one at a time.
    assert_eq!(h.balancer.max_out(), 2, "{:?}", h.balancer.timeline());
}

#[tokio::test]
async fn the_alert_gate_that_never_opens_ends_the_run_before_the_member_is_touched() {
    let plan = PlanBuilder::new(2)
        .edit(|p| {
            p.pool.gate = Some(ebb_engine::plan::GateSpec {
                alertmanager: "http://fake.invalid".into(),
                matchers: Default::default(),
                timeout: Duration::from_millis(20),
                poll_interval: Duration::from_millis(2),
            })
        })
        .build();
    let h = Harness::new(plan);
    h.maintenance.gate(vec![vec!["DiskFull on m2".into()]]);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(
        out.message.contains("pool.gate.timeout") && out.message.contains("DiskFull"),
        "{}",
        out.message
    );
    assert_eq!(h.log.effects(), 0);
    assert_eq!(h.states(), [MemberState::Pending; 2]);
}

#[tokio::test]
async fn ctrl_c_during_the_pool_check_before_the_run_is_an_interruption() {
    let h = Harness::new(PlanBuilder::new(2).pool_check("pool").build());
    h.log.interrupt_at(
        1,
        ebb_engine::testing::KillPoint::Before,
        ebb_engine::testing::Interrupt::Shutdown,
    );
    let out = h.run().await;
    assert_ended(&out, RunState::Halted, 130);
    assert!(!out.message.contains("failed"), "{}", out.message);
    assert_eq!(h.resume().await.exit_code, 0);
    h.assert_all_done();
}

#[tokio::test]
async fn a_group_only_step_runs_on_that_group_alone() {
    let plan = PlanBuilder::new(3)
        .with_step(ebb_engine::plan::StepSpec {
            only_group: Some("mailbox".into()),
            ..ebb_engine::testing::step("dag-pause")
        })
        .step("install")
        .edit(|p| p.members[1].group = Some("mailbox".into()))
        .build();
    let h = Harness::new(plan);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.calls("m2"), plain_calls(&["dag-pause", "install"]));
    assert_eq!(h.log.calls("m1"), plain_calls(&["install"]));
    assert_eq!(h.log.calls("m3"), plain_calls(&["install"]));
}

#[tokio::test]
async fn a_small_percentage_of_a_small_pool_still_lets_one_member_go() {
    // 10 % of 4 members rounds down to 0: one at a time, never none.
    let plan = PlanBuilder::new(4)
        .max_unavailable(MaxUnavailable::Percent(10))
        .step("install")
        .build();
    let h = Harness::new(plan);
    for t in &h.transports {
        t.script("install", [Reply::Slow(Duration::from_millis(3))]);
    }
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.balancer.max_out(), 1, "{:?}", h.balancer.timeline());
    h.assert_all_done();
}

#[tokio::test]
async fn a_wave_ends_before_the_next_one_starts_even_with_free_slots() {
    let plan = PlanBuilder::new(3)
        .max_unavailable(MaxUnavailable::Count(2))
        .step("install")
        .waves(vec![wave("a", &[0, 1], false), wave("b", &[2], false)])
        .build();
    let h = Harness::new(plan);
    h.transport("m1")
        .script("install", [Reply::Slow(Duration::from_millis(30))]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    // m2 was back long before m1; m3 still waited for all of wave "a".
    assert!(h.log.position("m2", "set-initial started") < h.log.position("m1", "start"));
    assert!(
        h.log.position("m1", "set-initial started") < h.log.position("m3", "set-initial stopped"),
        "{}",
        h.log.dump()
    );
    h.assert_all_done();
}
