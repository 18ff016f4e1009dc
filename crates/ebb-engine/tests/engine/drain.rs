//! Drains: slow ones with live counts, timeouts with each on_timeout, stop mode; steps
//! that hang or cannot reach their member; the alert gate.

use ebb_engine::events::Event;
use ebb_engine::interfaces::{HostState, Transport};
use ebb_engine::journal::MemberState;
use ebb_engine::plan::{DrainMode, OnTimeout, StepSpec};
use ebb_engine::testing::{step, CheckReply, Harness, PlanBuilder, Reply};
use std::time::Duration;

fn drain_counts(h: &Harness, member: &str) -> Vec<u64> {
    h.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::DrainProgress {
                member: m,
                active_connections,
            } if m == member => Some(active_connections),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_slow_drain_shows_each_count_and_waits_for_zero() {
    let h = Harness::new(PlanBuilder::new(2).step("install").build());
    h.balancer.drain_counts("m1", &[3, 3, 2, 1, 0]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(drain_counts(&h, "m1"), [3, 2, 1, 0]);
    assert_eq!(h.log.count("m1", "stop"), 0, "nobody was cut off");
    assert!(h.log.position("m1", "run install") > h.log.position("m1", "drainstop"));
    h.assert_all_done();
}

#[tokio::test]
async fn a_drain_timeout_with_on_timeout_stop_cuts_the_rest_and_goes_on() {
    let plan = PlanBuilder::new(1)
        .drain(
            DrainMode::Drainstop,
            Duration::from_millis(20),
            OnTimeout::Stop,
        )
        .step("install")
        .build();
    let h = Harness::new(plan);
    h.balancer.drain_counts("m1", &[7]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        &h.log.calls("m1")[..4],
        ["set-initial stopped", "drainstop", "stop", "run install"]
    );
    let drain = h
        .actions("m1")
        .into_iter()
        .find(|a| a.kind.as_str() == "drain")
        .expect("drain");
    assert!(
        drain.detail.contains("7 connection(s) cut"),
        "{}",
        drain.detail
    );
    h.assert_all_done();
}

#[tokio::test]
async fn a_drain_timeout_with_on_timeout_abort_fails_the_member_still_draining() {
    let plan = PlanBuilder::new(2)
        .drain(
            DrainMode::Drainstop,
            Duration::from_millis(20),
            OnTimeout::Abort,
        )
        .build();
    let h = Harness::new(plan);
    h.balancer.drain_counts("m1", &[7]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    let m1 = h.member("m1");
    assert_eq!((m1.state, m1.step.as_str()), (MemberState::Failed, "drain"));
    assert!(
        m1.reason.contains("7 connection(s) still open"),
        "{}",
        m1.reason
    );
    assert_eq!(h.log.count("m1", "stop"), 0);
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Draining, HostState::Stopped)
    );
}

#[tokio::test]
async fn on_timeout_wait_keeps_waiting_and_says_so() {
    let plan = PlanBuilder::new(1)
        .drain(
            DrainMode::Drainstop,
            Duration::from_millis(10),
            OnTimeout::Wait,
        )
        .build();
    let h = Harness::new(plan);
    // Many reads at the last count, then the last connection goes.
    let mut counts = vec![4; 12];
    counts.push(0);
    h.balancer.drain_counts("m1", &counts);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.count("m1", "stop"), 0);
    assert!(crate::waits(&h)
        .iter()
        .any(|w| w.contains("on_timeout = \"wait\"")));
    h.assert_all_done();
}

#[tokio::test]
async fn stop_mode_cuts_at_once() {
    let plan = PlanBuilder::new(1)
        .drain(DrainMode::Stop, Duration::from_millis(300), OnTimeout::Stop)
        .build();
    let h = Harness::new(plan);
    h.balancer.drain_counts("m1", &[5]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log.calls("m1"),
        [
            "set-initial stopped",
            "stop",
            "start",
            "set-initial started"
        ]
    );
    h.assert_all_done();
}

#[tokio::test]
async fn a_hanging_step_is_killed_at_its_timeout_and_fails() {
    let plan = PlanBuilder::new(2)
        .with_step(StepSpec {
            timeout: Duration::from_millis(20),
            ..step("install")
        })
        .build();
    let h = Harness::new(plan);
    h.transport("m1").script("install", [Reply::Hang]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert!(
        h.member("m1").reason.contains("timed out after 20ms"),
        "{}",
        h.member("m1").reason
    );
    assert!(h.log.calls("m2").is_empty());
}

#[tokio::test]
async fn an_unreachable_member_fails_its_step_and_resume_retries_once_it_is_back() {
    let h = Harness::new(PlanBuilder::new(1).paired("fsc").build());
    // Long enough that the run surely reaches fsc while it lasts, even on a loaded machine.
    h.transport("m1")
        .unreachable_for(Duration::from_millis(300));
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(
        h.log.count("m1", "run fsc (unreachable)"),
        1,
        "{}",
        h.log.dump()
    );
    assert!(
        h.member("m1").reason.contains("unreachable"),
        "{}",
        h.member("m1").reason
    );
    assert_eq!(
        h.owed("m1"),
        ["hold", "drain", "fsc"],
        "owed: it may have run"
    );
    // Resume once it answers again.
    let back = tokio::time::timeout(Duration::from_secs(5), async {
        while h.transport("m1").boot_id().await.is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(back.await.is_ok(), "m1 never came back");
    assert_eq!(h.resume().await.exit_code, 0);
    h.assert_all_done();
}

#[tokio::test]
async fn a_failing_steps_output_reaches_the_events_and_the_journal() {
    let h = Harness::new(PlanBuilder::new(1).step("install").build());
    h.transport("m1").script(
        "install",
        [Reply::Output(2, "disk full\nrolled back\n".into())],
    );
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    let lines: Vec<String> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Output { step, line, .. } if step == "install" => Some(line),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["disk full", "rolled back"]);
    let a = h
        .actions("m1")
        .into_iter()
        .find(|a| a.name == "install")
        .expect("install");
    assert_eq!(a.exit_code, Some(2));
    assert!(a.output.contains("rolled back"));
}

#[tokio::test]
async fn a_flaky_check_passes_within_its_retries() {
    let plan = PlanBuilder::new(1)
        .verify("owa")
        .edit(|p| p.runbook.verify[0].retries = 2)
        .build();
    let h = Harness::new(plan);
    h.checker.script(
        "owa",
        "m1",
        [CheckReply::Fail, CheckReply::Fail, CheckReply::Pass],
    );
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.count("m1", "check owa: fail"), 2);
    assert_eq!(h.log.count("m1", "check owa: pass"), 1);
    h.assert_all_done();
}

#[tokio::test]
async fn a_failed_verify_keeps_the_member_out_and_nothing_is_unwound() {
    let h = Harness::new(PlanBuilder::new(2).paired("fsc").verify("owa").build());
    h.checker.script("owa", "m1", [CheckReply::Fail]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(h.member("m1").step, "verify");
    assert_eq!(h.log.count("m1", "start"), 0);
    assert_eq!(h.log.count("m1", "run undo fsc"), 0);
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"]);
}

#[tokio::test]
async fn a_hanging_check_times_out() {
    let plan = PlanBuilder::new(1)
        .verify("owa")
        .edit(|p| p.runbook.verify[0].timeout = Duration::from_millis(15))
        .build();
    let h = Harness::new(plan);
    h.checker.script("owa", "m1", [CheckReply::Hang]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert!(
        h.member("m1").reason.contains("timed out after 15ms"),
        "{}",
        h.member("m1").reason
    );
}

#[tokio::test]
async fn the_pool_check_after_a_rejoin_catches_another_member_knocked_out() {
    let h = Harness::new(PlanBuilder::new(3).pool_check("pool").build());
    // m2 passes before the run, then fails once m1 has rejoined.
    h.checker
        .script("pool", "m2", [CheckReply::Pass, CheckReply::Fail]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    let m1 = h.member("m1");
    assert_eq!(
        (m1.state, m1.step.as_str()),
        (MemberState::Failed, "pool-check")
    );
    assert!(m1.reason.contains("failed on \"m2\""), "{}", m1.reason);
    assert!(h.log.order_of("drainstop") == ["m1"]);
}

#[tokio::test]
async fn a_pool_check_failing_before_the_run_changes_nothing() {
    let h = Harness::new(
        PlanBuilder::new(3)
            .step("install")
            .pool_check("pool")
            .build(),
    );
    h.checker.script("pool", "m3", [CheckReply::Fail]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert!(
        out.message.contains("nothing was changed"),
        "{}",
        out.message
    );
    let changes: Vec<String> = h
        .log
        .all_calls()
        .into_iter()
        .filter(|c| !c.contains(" check "))
        .collect();
    assert_eq!(changes, Vec::<String>::new());
}

#[tokio::test]
async fn the_alert_gate_holds_a_member_until_the_alerts_clear() {
    let plan = PlanBuilder::new(1)
        .edit(|p| {
            p.pool.gate = Some(ebb_engine::plan::GateSpec {
                alertmanager: "http://fake.invalid".into(),
                matchers: Default::default(),
                timeout: Duration::from_secs(2),
                poll_interval: Duration::from_millis(2),
            })
        })
        .build();
    let h = Harness::new(plan);
    h.maintenance.gate(vec![
        vec!["HighLatency".into()],
        vec!["HighLatency".into()],
        vec![],
    ]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert!(crate::waits(&h).iter().any(|w| w.contains("HighLatency")));
    h.assert_all_done();
}

#[tokio::test]
async fn a_balancer_that_cannot_count_connections_drains_until_the_timeout_then_stops() {
    let plan = PlanBuilder::new(1)
        .drain(
            DrainMode::Drainstop,
            Duration::from_millis(20),
            OnTimeout::Stop,
        )
        .build();
    let h = Harness::new(plan);
    h.balancer.uncounted("m1");
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert!(drain_counts(&h, "m1").is_empty(), "no made-up counts");
    assert_eq!(&h.log.calls("m1")[1..3], ["drainstop", "stop"]);
    let drain = h
        .actions("m1")
        .into_iter()
        .find(|a| a.kind.as_str() == "drain")
        .expect("drain");
    assert!(
        drain
            .detail
            .contains("an unknown number of connection(s) cut"),
        "{}",
        drain.detail
    );
    h.assert_all_done();
}
