//! Smaller controls: step retries, `stop_after`, and `on_timeout = "skip"`.

use crate::plain_calls;
use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{MemberState, Outcome, RunState};
use ebb_engine::plan::{DrainMode, OnTimeout, StepSpec};
use ebb_engine::run::RunOptions;
use ebb_engine::testing::{assert_ended, step, Ended, Harness, PlanBuilder, Reply};
use std::time::Duration;

fn retrying(name: &str, retries: u32) -> StepSpec {
    StepSpec {
        retries,
        ..step(name)
    }
}

#[tokio::test]
async fn a_failed_step_is_tried_again_up_to_its_retries_and_each_attempt_is_journaled() {
    let h = Harness::new(
        PlanBuilder::new(2)
            .with_step(retrying("install", 2))
            .build(),
    );
    // m1 fails twice, then succeeds on its last allowed attempt.
    h.transport("m1")
        .script("install", [Reply::Exit(4), Reply::Hang, Reply::Exit(0)]);
    let out = h.run().await;
    assert_ended(&out, RunState::Done, 0);
    h.assert_all_done();
    let attempts: Vec<(String, Option<i32>)> = h
        .actions("m1")
        .into_iter()
        .filter(|a| a.name == "install")
        .map(|a| {
            (
                a.outcome.map(|o| o.to_string()).unwrap_or_default(),
                a.exit_code,
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            ("failed".to_string(), Some(4)),
            ("failed".to_string(), None),
            ("ok".to_string(), Some(0))
        ]
    );
    assert_eq!(h.log.count("m1", "run install"), 3);
    assert_eq!(h.log.calls("m2"), plain_calls(&["install"]));
}

#[tokio::test]
async fn a_step_that_keeps_failing_fails_the_member_after_its_last_attempt() {
    let h = Harness::new(
        PlanBuilder::new(2)
            .with_step(retrying("install", 1))
            .build(),
    );
    h.transport("m1").script("install", [Reply::Exit(3)]);
    let out = h.run().await;
    assert_ended(&out, RunState::Halted, 1);
    assert_eq!(h.log.count("m1", "run install"), 2);
    assert!(h.log.calls("m2").is_empty());
    assert_eq!(h.member("m1").state, MemberState::Failed);
    let failed = h
        .actions("m1")
        .iter()
        .filter(|a| a.name == "install" && a.outcome == Some(Outcome::Failed))
        .count();
    assert_eq!(failed, 2);
}

#[tokio::test]
async fn without_retries_a_failed_step_runs_once() {
    let h = Harness::new(PlanBuilder::new(1).step("install").build());
    h.transport("m1")
        .script("install", [Reply::Exit(3), Reply::Exit(0)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1, "{}", out.message);
    assert_eq!(h.log.count("m1", "run install"), 1);
}

#[tokio::test]
async fn stop_after_pauses_before_the_next_member_and_resume_goes_on() {
    // Each member's step takes longer than stop_after: m1 runs to its end, m2 never starts.
    let plan = PlanBuilder::new(3)
        .stop_after(Duration::from_millis(500))
        .step("install")
        .build();
    let mut h = Harness::new(plan.clone());
    h.transport("m1")
        .script("install", [Reply::Slow(Duration::from_millis(800))]);
    let out = h.run().await;
    assert_ended(&out, RunState::Paused, 0);
    assert!(out.message.contains("stop_after 500ms"), "{}", out.message);
    assert_eq!(h.member("m1").state, MemberState::Done);
    assert!(h.log.calls("m2").is_empty(), "{}", h.log.dump());
    assert_eq!(h.run_record().state, RunState::Paused);
    // A resume gets its own stop_after, counted from the resume: with a generous one
    // (a slow journal, such as etcd on a loaded machine, must not pause it again) it
    // finishes.
    let mut longer = plan;
    longer.runbook.stop_after = Some(Duration::from_secs(60));
    h.replan(longer);
    let out = h.resume().await;
    assert_ended(&out, RunState::Done, 0);
    h.assert_all_done();
    assert_eq!(h.log.count("m1", "run install"), 1);
}

fn skipping(members: usize) -> PlanBuilder {
    PlanBuilder::new(members)
        .drain(
            DrainMode::Drainstop,
            Duration::from_millis(20),
            OnTimeout::Skip,
        )
        .paired("fsc")
        .step("install")
}

#[tokio::test]
async fn on_timeout_skip_returns_the_member_untouched_and_goes_on() {
    let h = Harness::new(skipping(3).build());
    h.balancer.drain_counts("m2", &[5]);
    let out = h.run().await;
    assert_ended(&out, RunState::Done, 0);
    assert!(
        out.message.contains("1 member(s) skipped") && out.message.contains("m2"),
        "{}",
        out.message
    );
    assert_eq!(
        h.states(),
        [MemberState::Done, MemberState::Skipped, MemberState::Done]
    );
    // Drained, then returned: no step ran on it, nothing owed, back in service, unheld.
    assert_eq!(
        h.log.calls("m2"),
        [
            "set-initial stopped",
            "drainstop",
            "start",
            "set-initial started"
        ]
    );
    assert!(h.owed("m2").is_empty());
    assert_eq!(
        h.balancer.truth("m2"),
        (HostState::Started, HostState::Started)
    );
    assert_eq!(
        h.log.calls("m3"),
        plain_calls(&["fsc", "install", "undo fsc"])
    );
    assert!(h.member("m2").reason.contains("on_timeout = \"skip\""));
}

#[tokio::test]
async fn only_skipped_runs_just_the_members_the_last_run_skipped() {
    let h = Harness::new(skipping(3).build());
    h.balancer.drain_counts("m2", &[5]);
    let first = h.run().await;
    assert_eq!(first.exit_code, 0, "{}", first.message);
    // The connections are gone by now: the skipped member drains.
    h.balancer.drain_counts("m2", &[0]);
    let before = h.log.calls("m1").len();
    let out = match h
        .start(RunOptions {
            only_skipped: true,
            ..Default::default()
        })
        .await
    {
        Ended::Finished(Ok(o)) => o,
        Ended::Finished(Err(e)) => panic!("refused: {e}"),
        Ended::Killed => panic!("killed"),
    };
    assert_ended(&out, RunState::Done, 0);
    assert!(out.run_id > first.run_id);
    assert_eq!(h.member("m2").state, MemberState::Done);
    assert_eq!(h.log.calls("m1").len(), before, "m1 was touched again");
    assert_eq!(h.log.count("m2", "run install"), 1);
    // Nothing skipped in that run: another --only-skipped has nothing to do.
    let again = h
        .start(RunOptions {
            only_skipped: true,
            ..Default::default()
        })
        .await;
    assert!(
        matches!(&again, Ended::Finished(Err(e)) if e.to_string().contains("skipped no member")),
        "{again:?}"
    );
}
