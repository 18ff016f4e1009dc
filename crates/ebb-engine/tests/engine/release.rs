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
    assert_eq!(h.owed("m1"), ["hold", "drain", "fsc"]);
    assert_eq!(
        h.log.count("m1", "start"),
        0,
        "not returned with an undo owed"
    );
    assert_eq!(h.member("m1").state, MemberState::Failed);
}
