//! `ebb release` (verify, then unwind) and `ebb abort`.

use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{MemberState, RunState};
use ebb_engine::run::RunError;
use ebb_engine::testing::{CheckReply, Harness, PlanBuilder, Reply};

async fn failed_at_install() -> Harness {
    let h = Harness::new(
        PlanBuilder::new(3)
            .paired("fsc")
            .step("install")
            .verify("owa")
            .build(),
    );
    h.transport("m1").script("install", [Reply::Exit(1)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"]);
    h
}

#[tokio::test]
async fn release_refuses_a_member_whose_verification_fails() {
    let h = failed_at_install().await;
    h.checker.script("owa", "m1", [CheckReply::Fail]);
    let out = h.release("m1").await.expect("release runs");
    assert_eq!(out.exit_code, 1);
    assert!(out.message.contains("stays out"), "{}", out.message);
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"], "nothing unwound");
    assert_eq!(h.log.count("m1", "start"), 0);
    assert_eq!(h.log.count("m1", "run undo fsc"), 0);
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Draining, HostState::Stopped)
    );
    assert_eq!(h.member("m1").state, MemberState::Failed);
}

#[tokio::test]
async fn release_verifies_then_unwinds_and_returns_the_member() {
    let h = failed_at_install().await;
    let before = h.log.records().len();
    let out = h.release("m1").await.expect("release runs");
    assert_eq!(out.exit_code, 0, "{}", out.message);
    let calls: Vec<String> = h.log.records()[before..]
        .iter()
        .map(|r| format!("{} {}", r.member, r.call))
        .collect();
    assert_eq!(
        calls,
        [
            "m1 check owa: pass",
            "m1 run undo fsc",
            "m1 start",
            "m1 set-initial started"
        ]
    );
    assert_eq!(h.owed("m1"), Vec::<String>::new());
    assert_eq!(h.member("m1").state, MemberState::Done);
    assert_eq!(
        h.balancer.truth("m1"),
        (HostState::Started, HostState::Started)
    );
    // Releasing it again is refused: it is done.
    let again = h.release("m1").await;
    assert!(
        matches!(&again, Err(RunError::Usage(m)) if m.contains("already done")),
        "{again:?}"
    );
}

#[tokio::test]
async fn release_of_a_member_never_taken_out_is_refused() {
    let h = failed_at_install().await;
    let r = h.release("m2").await;
    assert!(
        matches!(&r, Err(RunError::Usage(m)) if m.contains("never taken out")),
        "{r:?}"
    );
    let r = h.release("nope").await;
    assert!(
        matches!(&r, Err(RunError::Usage(m)) if m.contains("no member \"nope\"")),
        "{r:?}"
    );
    assert!(h.log.calls("m2").is_empty());
}

#[tokio::test]
async fn abort_leaves_members_where_they_are_and_a_new_run_waits_for_release() {
    let h = failed_at_install().await;
    let calls = h.log.records().len();
    let run = h.abort().await.expect("abort");
    assert_eq!(run.state, RunState::Aborted);
    assert_eq!(h.log.records().len(), calls, "abort touches no server");
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"]);
    // Resume of an aborted run is refused; so is a new run while m1 owes undos.
    let r = h.try_resume(Default::default()).await;
    assert!(
        matches!(&r, Err(RunError::Usage(m)) if m.contains("aborted")),
        "{r:?}"
    );
    let r = h.start(Default::default()).await;
    assert!(
        matches!(&r, ebb_engine::testing::Ended::Finished(Err(RunError::Usage(m))) if m.contains("still owe undos: m1")),
        "{r:?}"
    );
    // Release, then a new run does every member.
    assert_eq!(h.release("m1").await.expect("release").exit_code, 0);
    h.transport("m1").script("install", [Reply::Exit(0)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert!(out.run_id > run.id);
    h.assert_all_done();
    assert_eq!(
        h.log.count("m1", "run undo fsc"),
        2,
        "once by release, once by the new run"
    );
}

#[tokio::test]
async fn an_unfinished_run_refuses_a_new_one_and_abort_of_a_done_run_is_refused() {
    let h = failed_at_install().await;
    let r = h.start(Default::default()).await;
    assert!(
        matches!(&r, ebb_engine::testing::Ended::Finished(Err(RunError::Usage(m))) if m.contains("ebb resume")),
        "{r:?}"
    );
    h.transport("m1").script("install", [Reply::Exit(0)]);
    assert_eq!(h.resume().await.exit_code, 0);
    let r = h.abort().await;
    assert!(
        matches!(&r, Err(RunError::Usage(m)) if m.contains("already done")),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_release_whose_undo_fails_keeps_it_owed_and_the_member_out() {
    let h = failed_at_install().await;
    h.transport("m1").script("undo fsc", [Reply::Exit(3)]);
    let out = h.release("m1").await.expect("release runs");
    assert_eq!(out.exit_code, 1);
    assert!(out.message.contains("still owed"), "{}", out.message);
    // How the undo ended, in words (issue 9 item 10: never `Some(3)`).
    assert!(
        out.message.contains("undo of \"fsc\" failed (exit code 3)")
            && !out.message.contains("Some("),
        "{}",
        out.message
    );
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"]);
    assert_eq!(
        h.log.count("m1", "start"),
        0,
        "not returned with an undo owed"
    );
    assert_eq!(h.member("m1").state, MemberState::Failed);
}

#[tokio::test]
async fn a_member_released_from_an_interrupted_run_is_left_alone_by_the_resume() {
    let plan = PlanBuilder::new(3).paired("fsc").step("install").build();
    let k = crate::operation_index(&plan, "m2", "run install").await;
    let h = Harness::new(plan);
    // Ctrl-C while m2's install runs.
    h.log.interrupt_at(
        k,
        ebb_engine::testing::KillPoint::After,
        ebb_engine::testing::Interrupt::Shutdown,
    );
    let out = h.run().await;
    assert_eq!(out.exit_code, 130, "{}", out.message);
    assert_eq!(h.member("m2").state, MemberState::Out);
    // The operator checked m2 by hand and releases it: verify, unwind, back in service.
    let out = h.release("m2").await.expect("release");
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.member("m2").state, MemberState::Done);
    // The resume does m3 and leaves m1 and m2 alone; the interrupted install is settled.
    let out = h
        .resume_with(ebb_engine::run::RunOptions {
            assume_done: vec!["m2:install".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.count("m2", "run install"), 1);
    assert_eq!(h.log.count("m2", "drainstop"), 1);
    assert_eq!(h.log.count("m3", "drainstop"), 1);
    h.assert_all_done();
}

#[tokio::test]
async fn the_journal_samples_the_pool_as_members_leave_and_return() {
    let h = Harness::new(PlanBuilder::new(3).step("install").build());
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    let samples = h.journal.samples(out.run_id).expect("samples");
    let counts: Vec<usize> = samples.iter().map(|s| s.1).collect();
    assert!(samples.iter().all(|s| s.2 == 3));
    assert_eq!(counts.iter().min(), Some(&2), "{counts:?}");
    assert_eq!(counts.last(), Some(&3), "{counts:?}");
    // One dip per member (written on change only).
    let dips = counts.windows(2).filter(|w| w[0] == 3 && w[1] == 2).count();
    assert_eq!(dips, 3, "{counts:?}");
}

#[tokio::test]
async fn after_a_release_the_runs_message_says_who_released_it_and_which_undos_were_paid() {
    // m1 and m2 fail (on_failure = continue, one failure allowed: the second halts the
    // run); only m1 is released.
    let h = Harness::new(
        PlanBuilder::new(3)
            .on_failure(ebb_engine::plan::OnFailure::Continue, 1)
            .max_unavailable(ebb_engine::plan::MaxUnavailable::Count(2))
            .paired("fsc")
            .step("install")
            .build(),
    );
    h.transport("m1").script("install", [Reply::Exit(1)]);
    h.transport("m2").script("install", [Reply::Exit(2)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1, "{}", out.message);
    let before = h.run_record().message;
    assert!(before.contains("\"m1\" failed at"), "{before}");
    assert!(before.contains("\"m2\" failed at"), "{before}");

    let out = h.release("m1").await.expect("release runs");
    assert_eq!(out.exit_code, 0, "{}", out.message);
    let who = format!("\"m1\" released by {} at ", ebb_engine::journal::operator());
    let paid = "verify passed, undos paid: undo of \"fsc\", start in the balancer, restore initial state started";
    let after = h.run_record();
    assert!(
        !after.message.contains("\"m1\" failed"),
        "{}",
        after.message
    );
    assert!(
        after.message.contains(&who) && after.message.contains(paid),
        "{}",
        after.message
    );
    assert!(
        after.message.contains("UTC: verify passed"),
        "{}",
        after.message
    );
    // What is still true stays said: m2 failed and is still out.
    assert!(
        after.message.contains("\"m2\" failed at"),
        "{}",
        after.message
    );
    assert_eq!(after.state, RunState::Halted);
    assert!(
        out.message.contains(&who) && out.message.contains(paid),
        "{}",
        out.message
    );
}

#[tokio::test]
async fn a_release_after_an_interruption_adds_to_the_runs_message() {
    let plan = PlanBuilder::new(2).step("install").build();
    let k = crate::operation_index(&plan, "m1", "run install").await;
    let h = Harness::new(plan);
    h.log.interrupt_at(
        k,
        ebb_engine::testing::KillPoint::After,
        ebb_engine::testing::Interrupt::Shutdown,
    );
    assert_eq!(h.run().await.exit_code, 130);
    let before = h.run_record().message;
    let out = h.release("m1").await.expect("release");
    assert_eq!(out.exit_code, 0, "{}", out.message);
    let after = h.run_record().message;
    assert!(after.starts_with(&before), "{before} / {after}");
    assert!(
        after.contains("; since then \"m1\" released by")
            && after.contains("undos paid: start in the balancer, restore initial state started"),
        "{after}"
    );
}
