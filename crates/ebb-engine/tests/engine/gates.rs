//! Drain gates (`[runbook.drain] until`): a drained member keeps draining until its gates
//! pass, bounded by the drain timeout and its `on_timeout`.

use crate::{plain_calls, waits};
use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{MemberState, RunState};
use ebb_engine::plan::{DrainMode, OnTimeout};
use ebb_engine::testing::{assert_ended, CheckReply, Harness, PlanBuilder};
use std::time::Duration;

fn gated(timeout: Duration, on_timeout: OnTimeout) -> PlanBuilder {
    PlanBuilder::new(2)
        .drain(DrainMode::Drainstop, timeout, on_timeout)
        .drain_until("queue")
        .drain_until("jobs")
        .step("install")
}

#[tokio::test]
async fn a_drained_member_is_held_until_each_gate_passes_then_goes_on() {
    let h = Harness::new(gated(Duration::from_secs(5), OnTimeout::Abort).build());
    use CheckReply::*;
    h.checker.script("queue", "m1", [Fail, Fail, Fail, Pass]);
    h.checker.script("jobs", "m1", [Fail, Pass]);
    let out = h.run().await;
    assert_ended(&out, RunState::Done, 0);
    h.assert_all_done();
    // The gates were asked after the drain, until they passed, before the step ran.
    let calls = h.log.calls("m1");
    let drain = calls.iter().position(|c| c == "drainstop").unwrap();
    let install = calls.iter().position(|c| c == "run install").unwrap();
    let queue: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].contains("queue"))
        .collect();
    assert_eq!(queue.len(), 4, "{calls:?}");
    assert!(queue.iter().all(|&i| drain < i && i < install), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| c.contains("jobs")).count(), 2);
    // The live output named each closed gate once.
    let w = waits(&h);
    assert_eq!(
        w.iter()
            .filter(|r| r.contains("drain gate \"queue\" is still closed"))
            .count(),
        1,
        "{w:?}"
    );
    assert!(w
        .iter()
        .any(|r| r.contains("drain gate \"jobs\" is still closed")));
    let drain_detail = h
        .actions("m1")
        .into_iter()
        .find(|a| a.kind.as_str() == "drain")
        .unwrap()
        .detail;
    assert!(
        drain_detail.contains("drain gates open: queue, jobs"),
        "{drain_detail}"
    );
    // m2's gates passed at once: no wait announced for it.
    assert_eq!(
        h.log.calls("m2").first().map(String::as_str),
        Some("set-initial stopped")
    );
}

#[tokio::test]
async fn a_gate_that_never_opens_hits_on_timeout_abort() {
    let h = Harness::new(gated(Duration::from_millis(100), OnTimeout::Abort).build());
    h.checker.script("queue", "m1", [CheckReply::Fail]);
    let out = h.run().await;
    assert_ended(&out, RunState::Halted, 1);
    let m1 = h.member("m1");
    assert_eq!((m1.state, m1.step.as_str()), (MemberState::Failed, "drain"));
    assert!(
        m1.reason.contains("drain gate \"queue\" still closed"),
        "{}",
        m1.reason
    );
    assert_eq!(h.log.count("m1", "run install"), 0);
    assert!(h.log.calls("m2").is_empty());
    assert_eq!(h.balancer.truth("m1").1, HostState::Stopped);
}

#[tokio::test]
async fn a_gate_that_never_opens_with_skip_returns_the_member_and_goes_on() {
    let h = Harness::new(gated(Duration::from_millis(100), OnTimeout::Skip).build());
    h.checker.script("jobs", "m1", [CheckReply::Fail]);
    let out = h.run().await;
    assert_ended(&out, RunState::Done, 0);
    assert_eq!(h.states(), [MemberState::Skipped, MemberState::Done]);
    assert_eq!(h.log.count("m1", "run install"), 0);
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Started, HostState::Started)
    );
    let calls: Vec<String> = h
        .log
        .calls("m2")
        .into_iter()
        .filter(|c| !c.contains("queue") && !c.contains("jobs"))
        .collect();
    assert_eq!(calls, plain_calls(&["install"]));
}
