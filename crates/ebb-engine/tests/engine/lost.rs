//! The network failing under a run: a step whose connection to the member dropped while it
//! ran has an unknown outcome (never marked done; the member stays out and held; resume
//! treats the step as interrupted), and a balancer that does not answer for a moment is
//! retried within `balancer_retry`.

use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{MemberState, Outcome, RunState};
use ebb_engine::plan::StepSpec;
use ebb_engine::run::{RunError, RunOptions};
use ebb_engine::testing::{step, BalOp, Harness, PlanBuilder, Reply};
use std::time::Duration;

#[tokio::test]
async fn an_unknown_outcome_halts_held_and_resume_reruns_an_idempotent_step() {
    let h = Harness::new(PlanBuilder::new(2).paired("fsc").step("install").build());
    h.transport("m1")
        .script("install", [Reply::Lost, Reply::Exit(0)]);
    let out = h.run().await;
    assert_eq!((out.state, out.exit_code), (RunState::Halted, 1));
    assert!(
        out.message.contains("outcome is unknown"),
        "{}",
        out.message
    );
    assert_eq!(h.states(), [MemberState::Failed, MemberState::Pending]);
    let install = h
        .actions("m1")
        .into_iter()
        .find(|a| a.name == "install")
        .expect("install recorded");
    assert_eq!(install.outcome, Some(Outcome::Unknown));
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"]);
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Draining, HostState::Stopped)
    );
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.count("m1", "run install"), 2, "{}", h.log.dump());
    assert_eq!(h.log.count("m1", "run undo fsc"), 1);
    h.assert_all_done();
}

#[tokio::test]
async fn an_unknown_outcome_of_a_non_idempotent_step_is_asked_about() {
    let plan = PlanBuilder::new(1)
        .with_step(StepSpec {
            idempotent: false,
            ..step("install")
        })
        .build();
    let h = Harness::new(plan);
    h.transport("m1").script("install", [Reply::Lost]);
    assert_eq!(h.run().await.exit_code, 1);
    match h.try_resume(RunOptions::default()).await {
        Err(RunError::Usage(m)) => assert!(
            m.contains("outcome is unknown") && m.contains("--assume-done \"m1:install\""),
            "{m}"
        ),
        other => panic!("resume must ask: {other:?}"),
    }
    assert_eq!(
        h.log.count("m1", "run install"),
        1,
        "not re-run by the refusal"
    );
    let out = h
        .resume_with(RunOptions {
            assume_done: vec!["m1:install".into()],
            ..RunOptions::default()
        })
        .await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log.count("m1", "run install"),
        1,
        "assumed done, not run again"
    );
    let install = h
        .actions("m1")
        .into_iter()
        .find(|a| a.name == "install")
        .expect("install recorded");
    assert_eq!(install.outcome, Some(Outcome::AssumedDone));
    h.assert_all_done();
}

#[tokio::test]
async fn a_balancer_that_fails_for_a_moment_is_retried_within_balancer_retry() {
    let plan = PlanBuilder::new(2)
        .step("install")
        .balancer_retry(Duration::from_secs(5))
        .build();
    let h = Harness::new(plan);
    h.balancer.fail_next("m1", BalOp::Drainstop, 2);
    h.balancer.fail_next("m2", BalOp::Start, 1);
    h.balancer.fail_next("m2", BalOp::SetInitialState, 1);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log.count("m1", "drainstop (fails)"),
        2,
        "{}",
        h.log.dump()
    );
    assert_eq!(h.log.count("m1", "run install"), 1);
    h.assert_all_done();
}
