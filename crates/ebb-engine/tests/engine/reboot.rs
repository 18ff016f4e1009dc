//! Reboots: if-required (exit 3010) and always, a new boot identity, a member that never
//! comes back.

use ebb_engine::interfaces::HostState;
use ebb_engine::journal::{ActionKind, MemberState, Outcome};
use ebb_engine::plan::{RebootPolicy, StepSpec};
use ebb_engine::testing::{step, Harness, PlanBuilder, Reply};
use std::time::Duration;

fn plan(policy: RebootPolicy) -> PlanBuilder {
    PlanBuilder::new(2)
        .with_step(StepSpec {
            reboot: policy,
            ..step("install")
        })
        .rebooting()
}

fn short_reboot(p: &mut ebb_engine::plan::Plan) {
    if let Some(r) = &mut p.runbook.reboot {
        r.timeout = Duration::from_millis(40);
    }
}

fn reboot_detail(h: &Harness, member: &str) -> (Option<Outcome>, String) {
    let a = h
        .actions(member)
        .into_iter()
        .find(|a| a.kind.as_str() == "reboot")
        .expect("a reboot action");
    (a.outcome, a.detail)
}

#[tokio::test]
async fn if_required_reboots_on_3010_and_waits_for_a_new_boot() {
    let h = Harness::new(plan(RebootPolicy::IfRequired).build());
    h.transport("m1").script("install", [Reply::Exit(3010)]);
    h.transport("m1")
        .script("reboot", [Reply::Reboot(Duration::from_millis(20))]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log.calls("m1"),
        [
            "set-initial stopped",
            "drainstop",
            "run install",
            "run reboot",
            "start",
            "set-initial started"
        ]
    );
    let (outcome, detail) = reboot_detail(&h, "m1");
    assert_eq!(outcome, Some(Outcome::Ok));
    assert!(detail.contains("boot-0 → boot-1"), "{detail}");
    assert_eq!(h.transport("m1").boot(), "boot-1");
    // m2 exited 0: no reboot, and the journal says why.
    assert_eq!(h.log.count("m2", "run reboot"), 0);
    let (outcome, detail) = reboot_detail(&h, "m2");
    assert_eq!(outcome, Some(Outcome::Skipped));
    assert!(detail.contains("did not ask for a reboot"), "{detail}");
    assert_eq!(h.transport("m2").boot(), "boot-0");
    h.assert_all_done();
}

#[tokio::test]
async fn always_reboots_after_a_clean_exit() {
    let h = Harness::new(plan(RebootPolicy::Always).build());
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    for m in ["m1", "m2"] {
        assert_eq!(h.log.count(m, "run reboot"), 1);
        assert_eq!(h.transport(m).boot(), "boot-1");
    }
    h.assert_all_done();
}

#[tokio::test]
async fn a_3010_with_reboot_never_is_a_failure() {
    let h = Harness::new(plan(RebootPolicy::Never).build());
    h.transport("m1").script("install", [Reply::Exit(3010)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert!(h.member("m1").reason.contains("exited with code 3010"));
    assert_eq!(h.log.count("m1", "run reboot"), 0);
}

#[tokio::test]
async fn a_member_that_never_comes_back_fails_and_stays_held() {
    let h = Harness::new(plan(RebootPolicy::Always).edit(short_reboot).build());
    h.transport("m1").script("reboot", [Reply::RebootForever]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    let m1 = h.member("m1");
    assert_eq!(
        (m1.state, m1.step.as_str()),
        (MemberState::Failed, "reboot")
    );
    assert!(
        m1.reason.contains("did not come back") && m1.reason.contains("it went down"),
        "{}",
        m1.reason
    );
    assert!(m1.reboot_pending);
    assert_eq!(h.owed("m1"), ["hold", "drain"]);
    assert_eq!(h.balancer.truth("m1").1, HostState::Stopped, "held");
    assert!(h.log.calls("m2").is_empty());
}

#[tokio::test]
async fn a_reboot_command_that_does_not_reboot_fails_saying_it_never_went_down() {
    let h = Harness::new(plan(RebootPolicy::Always).edit(short_reboot).build());
    h.transport("m1").script("reboot", [Reply::Exit(0)]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    let reason = h.member("m1").reason;
    assert!(reason.contains("never went down"), "{reason}");
    assert_eq!(h.transport("m1").boot(), "boot-0");
}

#[tokio::test]
async fn a_step_assumed_done_that_may_ask_for_a_reboot_is_followed_by_one() {
    // The process died after install ran but before its exit code (3010) was recorded:
    // the operator says it completed, ebb cannot know whether it asked for a reboot.
    let plan = plan(RebootPolicy::IfRequired)
        .edit(|p| p.runbook.steps[0].idempotent = false)
        .build();
    let h = Harness::new(plan);
    h.transport("m1").script("install", [Reply::Exit(3010)]);
    h.log.interrupt_at(
        2,
        ebb_engine::testing::KillPoint::After,
        ebb_engine::testing::Interrupt::Kill,
    );
    let ended = h.start(Default::default()).await;
    assert!(matches!(ended, ebb_engine::testing::Ended::Killed));
    assert_eq!(h.log.fired().map(|r| r.call), Some("run install".into()));
    let out = h
        .resume_with(ebb_engine::run::RunOptions {
            assume_done: vec!["m1:install".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.count("m1", "run install"), 1);
    assert_eq!(h.log.count("m1", "run reboot"), 1, "{}", h.log.dump());
    assert_eq!(h.transport("m1").boot(), "boot-1");
    h.assert_all_done();
}

#[tokio::test]
async fn a_reboot_that_completes_after_its_timeout_is_not_done_again_on_resume() {
    use ebb_engine::interfaces::Transport;
    let h = Harness::new(plan(RebootPolicy::Always).edit(short_reboot).build());
    // Down far longer than the 40 ms reboot timeout, then back with a new boot.
    h.transport("m1")
        .script("reboot", [Reply::Reboot(Duration::from_millis(400))]);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1, "{}", out.message);
    let first = h
        .actions("m1")
        .into_iter()
        .find(|a| a.kind == ActionKind::Reboot)
        .expect("a reboot action");
    assert_eq!(first.outcome, Some(Outcome::Failed));
    // The boot it started from is a typed field of the journal, not text in the detail.
    assert_eq!(first.boot_before.as_deref(), Some("boot-0"));
    // Wait (bounded) until the member is back, as an operator would before resuming.
    let back = tokio::time::timeout(Duration::from_secs(30), async {
        while h.transport("m1").boot_id().await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "the member never came back");
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.count("m1", "run reboot"), 1, "{}", h.log.dump());
    let (outcome, detail) = h
        .actions("m1")
        .into_iter()
        .rev()
        .find(|a| a.kind == ActionKind::Reboot)
        .map(|a| (a.outcome, a.detail))
        .expect("the resumed reboot");
    assert_eq!(outcome, Some(Outcome::Ok));
    assert!(
        detail.contains("already rebooted (boot boot-0 → boot-1)"),
        "{detail}"
    );
    h.assert_all_done();
}
