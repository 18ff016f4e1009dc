//! Resume after an interruption at every operation of every member: as kill -9 (the run's
//! future dropped where it stands) before or after the call took effect, and as Ctrl-C.

use crate::every;
use ebb_engine::journal::{Outcome, RunState};
use ebb_engine::plan::StepSpec;
use ebb_engine::run::{RunError, RunOptions};
use ebb_engine::testing::{
    assert_ended, maintenance_step, step, Ended, Harness, Interrupt, KillPoint, PlanBuilder, Reply,
};
use std::collections::BTreeMap;

/// Two members, each with every kind of operation: monitoring maintenance, hold, drain, a
/// paired step, a non-idempotent step that asks for a reboot, the reboot, a verify check,
/// return, and the pool check after the rejoin.
fn full_plan() -> PlanBuilder {
    PlanBuilder::new(2)
        .with_step(maintenance_step("silence"))
        .paired("fsc")
        .with_step(StepSpec {
            idempotent: false,
            reboot: ebb_engine::plan::RebootPolicy::IfRequired,
            ..step("install")
        })
        .rebooting()
        .verify("owa")
        .pool_check("pool")
}

fn harness() -> Harness {
    let h = Harness::new(full_plan().build());
    for t in &h.transports {
        t.script("install", [Reply::Exit(3010)]);
        // Back at once with a new boot (the reboot itself is tested in reboot.rs): dozens
        // of runs here must not wait for reboots.
        t.script("reboot", [Reply::Reboot(std::time::Duration::ZERO)]);
    }
    h
}

fn counts(h: &Harness) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for r in h.log.records().into_iter().filter(|r| r.effect) {
        *c.entry(format!("{} {}", r.member, r.call)).or_insert(0) += 1;
    }
    c
}

/// The operations of an uninterrupted run, in order.
async fn clean_run() -> (Vec<String>, BTreeMap<String, usize>) {
    let h = harness();
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    h.assert_all_done();
    (h.log.all_calls(), counts(&h))
}

/// Resumes after the interruption, answering the question about the non-idempotent step
/// as an operator would: `--rerun` when it never ran, `--assume-done` when it did.
async fn resume_after(h: &Harness, point: KillPoint) {
    let fired = h.log.fired().expect("the trip wire fired");
    let mut out = h.try_resume(RunOptions::default()).await;
    if fired.call == "run install" {
        let refused = matches!(&out, Err(RunError::Usage(m))
            if m.contains("idempotent = false") && m.contains(&format!("--assume-done \"{}:install\"", fired.member)));
        assert!(
            refused,
            "resume must refuse to guess about install: {out:?}"
        );
        let named = vec![format!("{}:install", fired.member)];
        let opts = match point {
            KillPoint::Before => RunOptions {
                rerun: named,
                ..Default::default()
            },
            KillPoint::After => RunOptions {
                assume_done: named,
                ..Default::default()
            },
        };
        out = h.try_resume(opts).await;
    }
    match out {
        Ok(o) => assert_eq!(
            o.exit_code,
            0,
            "resume after {fired:?}: {}\n{}",
            o.message,
            h.log.dump()
        ),
        Err(e) => panic!("resume after {fired:?} refused: {e}\n{}", h.log.dump()),
    }
    h.assert_all_done();
}

#[tokio::test]
async fn killed_before_any_operation_resume_does_each_exactly_once() {
    let (ops, clean) = clean_run().await;
    assert!(ops.len() >= 25, "{ops:?}");
    every(ops.len(), |k| {
        let (ops, clean) = (ops.clone(), clean.clone());
        async move {
            let h = harness();
            h.log.interrupt_at(k, KillPoint::Before, Interrupt::Kill);
            assert!(
                matches!(h.start(RunOptions::default()).await, Ended::Killed),
                "k = {k}"
            );
            resume_after(&h, KillPoint::Before).await;
            // Checks may be asked again; everything that changes something happened once.
            let mut got = counts(&h);
            let mut want = clean;
            got.retain(|c, _| !c.contains(" check "));
            want.retain(|c, _| !c.contains(" check "));
            assert_eq!(got, want, "killed before {:?}\n{}", ops[k], h.log.dump());
            for m in ["m1", "m2"] {
                assert_eq!(
                    h.transport(m).boot(),
                    "boot-1",
                    "{m} rebooted once (k = {k})"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn killed_after_any_operation_resume_finishes_and_never_repeats_install() {
    let (ops, _) = clean_run().await;
    every(ops.len(), |k| async move {
        let h = harness();
        h.log.interrupt_at(k, KillPoint::After, Interrupt::Kill);
        assert!(
            matches!(h.start(RunOptions::default()).await, Ended::Killed),
            "k = {k}"
        );
        resume_after(&h, KillPoint::After).await;
        for m in ["m1", "m2"] {
            assert_eq!(
                h.log.count(m, "run install"),
                1,
                "k = {k}\n{}",
                h.log.dump()
            );
            assert_eq!(
                h.transport(m).boot(),
                "boot-1",
                "{m} rebooted once (k = {k})\n{}",
                h.log.dump()
            );
            assert_eq!(h.log.count(m, "begin silence"), 1, "k = {k}");
        }
    })
    .await;
}

#[tokio::test]
async fn ctrl_c_at_any_operation_halts_with_130_and_resume_finishes() {
    // No pool check before the run here: Ctrl-C there is not an operation on a member.
    let plan = full_plan().edit(|p| p.pool.checks.clear()).build();
    let with_scripts = |plan| {
        let h = Harness::new(plan);
        for t in &h.transports {
            t.script("install", [Reply::Exit(3010)]);
            t.script("reboot", [Reply::Reboot(std::time::Duration::ZERO)]);
        }
        h
    };
    let n = {
        let h = with_scripts(plan.clone());
        assert_eq!(h.run().await.exit_code, 0);
        h.log.effects()
    };
    every(n, |k| {
        let h = with_scripts(plan.clone());
        async move {
            h.log
                .interrupt_at(k, KillPoint::Before, Interrupt::Shutdown);
            let out = h.run().await;
            assert_eq!(
                (out.state, out.exit_code),
                (RunState::Halted, 130),
                "k = {k}: {}",
                out.message
            );
            assert_eq!(h.run_record().state, RunState::Halted);
            let fired = h.log.fired().expect("fired");
            // The interrupted operation's intent is in the journal without an outcome.
            let open: Vec<_> = h
                .actions(&fired.member)
                .into_iter()
                .filter(|a| a.outcome.is_none())
                .collect();
            assert_eq!(open.len(), 1, "k = {k} ({fired:?}): {open:?}");
            resume_after(&h, KillPoint::Before).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_interrupted_non_idempotent_step_is_refused_without_a_decision() {
    let h = harness();
    // The pool check on m1 and m2, then m1: begin silence, set-initial stopped, drainstop,
    // run fsc, run install.
    h.log.interrupt_at(6, KillPoint::After, Interrupt::Kill);
    assert!(matches!(
        h.start(RunOptions::default()).await,
        Ended::Killed
    ));
    assert_eq!(h.log.fired().map(|r| r.call), Some("run install".into()));
    let r = h.try_resume(RunOptions::default()).await;
    assert!(
        matches!(&r, Err(RunError::Usage(m)) if m.contains("--rerun \"m1:install\"")),
        "{r:?}"
    );
    let both = RunOptions {
        assume_done: vec!["install".into()],
        rerun: vec!["m1:install".into()],
        ..Default::default()
    };
    let r = h.try_resume(both).await;
    assert!(
        matches!(&r, Err(RunError::Usage(m)) if m.contains("both")),
        "{r:?}"
    );
    assert_eq!(h.log.count("m1", "run install"), 1, "refusals ran nothing");
    let opts = RunOptions {
        rerun: vec!["install".into()],
        ..Default::default()
    };
    assert_eq!(h.try_resume(opts).await.expect("resume").exit_code, 0);
    assert_eq!(h.log.count("m1", "run install"), 2, "--rerun ran it again");
    let outcomes: Vec<Option<Outcome>> = h
        .actions("m1")
        .into_iter()
        .filter(|a| a.name == "install")
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, [Some(Outcome::Interrupted), Some(Outcome::Ok)]);
    h.assert_all_done();
}

#[tokio::test]
async fn a_run_killed_during_its_pool_check_does_the_check_again_before_anything() {
    let h = harness();
    // Killed before the pool check of m2, the second operation of the run.
    h.log.interrupt_at(1, KillPoint::Before, Interrupt::Kill);
    assert!(matches!(
        h.start(RunOptions::default()).await,
        Ended::Killed
    ));
    assert_eq!(
        h.log.fired().map(|r| r.call),
        Some("check pool: pass".into())
    );
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    let checked = h.log.position("m2", "check pool: pass");
    let first_change = h.log.position("m1", "begin silence");
    assert!(
        checked.is_some() && checked < first_change,
        "m2 checked before any change:\n{}",
        h.log.dump()
    );
    h.assert_all_done();
}

#[tokio::test]
async fn resume_refuses_a_runbook_that_changed_under_a_member_in_flight() {
    let mut h = Harness::new(PlanBuilder::new(2).paired("fsc").step("install").build());
    h.transport("m1").script("install", [Reply::Exit(1)]);
    assert_eq!(h.run().await.exit_code, 1);
    let calls = h.log.effects();
    h.replan(
        PlanBuilder::new(2)
            .paired("fsc")
            .step("prepare")
            .step("install")
            .build(),
    );
    let r = h.try_resume(RunOptions::default()).await;
    assert!(
        matches!(&r, Err(RunError::Usage(m)) if m.contains("the steps of member \"m1\" changed") && m.contains("step:prepare")),
        "{r:?}"
    );
    assert_eq!(h.log.effects(), calls, "nothing changed on any server");
    // Fixing the command (same steps) is fine: the run goes on.
    h.replan(PlanBuilder::new(2).paired("fsc").step("install").build());
    h.transport("m1").script("install", [Reply::Exit(0)]);
    assert_eq!(h.resume().await.exit_code, 0);
    h.assert_all_done();
}

#[tokio::test]
async fn resume_after_the_policy_stopped_the_run_starts_where_nothing_was_done() {
    let h = Harness::new(
        PlanBuilder::new(3)
            .capacity_wait(std::time::Duration::from_millis(20))
            .step("install")
            .build(),
    );
    h.balancer
        .set("m3", ebb_engine::interfaces::HostState::Stopped);
    let out = h.run().await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(h.log.effects(), 0);
    // Whoever took m3 out puts it back; the resume does every member.
    h.balancer
        .set("m3", ebb_engine::interfaces::HostState::Started);
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(h.log.order_of("drainstop"), ["m1", "m2", "m3"]);
    h.assert_all_done();
}

#[tokio::test]
async fn a_release_killed_at_any_operation_is_finished_by_releasing_again() {
    fn failed() -> Harness {
        let h = Harness::new(
            PlanBuilder::new(2)
                .with_step(maintenance_step("silence"))
                .paired("fsc")
                .step("install")
                .verify("owa")
                .build(),
        );
        h.transport("m1").script("install", [Reply::Exit(1)]);
        h
    }
    // The operations of a release: verify, the undos, start, hold, the silence's end.
    let h = failed();
    assert_eq!(h.run().await.exit_code, 1);
    let before = h.log.effects();
    assert_eq!(h.release("m1").await.expect("release").exit_code, 0);
    let n = h.log.effects() - before;
    assert_eq!(n, 5, "{}", h.log.dump());
    every(n, |k| async move {
        let h = failed();
        assert_eq!(h.run().await.exit_code, 1);
        h.log
            .interrupt_at(h.log.effects() + k, KillPoint::Before, Interrupt::Kill);
        assert!(
            matches!(h.start_release("m1").await, Ended::Killed),
            "k = {k}"
        );
        let out = h.release("m1").await.expect("release again");
        assert_eq!(out.exit_code, 0, "k = {k}: {}", out.message);
        assert_eq!(h.owed("m1"), Vec::<String>::new());
        for call in [
            "run undo fsc",
            "start",
            "set-initial started",
            "end silence token-1",
        ] {
            assert_eq!(
                h.log.count("m1", call),
                1,
                "{call} once (k = {k})\n{}",
                h.log.dump()
            );
        }
        assert_eq!(
            h.balancer.truth("m1"),
            (
                ebb_engine::interfaces::HostState::Started,
                ebb_engine::interfaces::HostState::Started
            )
        );
    })
    .await;
}

#[tokio::test]
async fn a_member_started_by_someone_while_ebb_was_dead_is_drained_again_before_its_steps() {
    let h = Harness::new(PlanBuilder::new(2).paired("fsc").step("install").build());
    // Killed before fsc, with m1 drained and held; then someone starts m1 again.
    h.log.interrupt_at(2, KillPoint::Before, Interrupt::Kill);
    assert!(matches!(
        h.start(RunOptions::default()).await,
        Ended::Killed
    ));
    h.balancer
        .set("m1", ebb_engine::interfaces::HostState::Started);
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    // No step ran on m1 while it took traffic.
    let started_again = h.log.position("m1", "external started").expect("logged");
    let fsc = h.log.position("m1", "run fsc").expect("ran");
    let drains: Vec<usize> = h
        .log
        .records()
        .iter()
        .filter(|r| r.member == "m1" && r.call == "drainstop")
        .map(|r| r.seq)
        .collect();
    assert!(
        drains.iter().any(|&d| d > started_again && d < fsc),
        "drained again before fsc:\n{}",
        h.log.dump()
    );
    h.assert_all_done();
}

/// Resumes, answering every question about an interrupted non-idempotent `install` as an
/// operator who looked at the member would: `--assume-done` where it ran, `--rerun` where
/// it never started.
async fn resume_answering(h: &Harness) -> ebb_engine::run::RunOutcome {
    match h.try_resume(RunOptions::default()).await {
        Ok(o) => o,
        Err(RunError::Usage(m)) if m.contains("idempotent = false") => {
            let mut opts = RunOptions::default();
            for member in &h.plan.members {
                let named = format!("{}:install", member.name);
                if !m.contains(&format!("\"{named}\"")) {
                    continue;
                }
                if h.log.count(&member.name, "run install") > 0 {
                    opts.assume_done.push(named);
                } else {
                    opts.rerun.push(named);
                }
            }
            h.resume_with(opts).await
        }
        Err(e) => panic!("resume refused: {e}\n{}", h.log.dump()),
    }
}

#[tokio::test]
async fn killed_at_any_operation_with_members_in_parallel_resume_finishes_them_all() {
    fn parallel() -> Harness {
        let h = Harness::new(
            PlanBuilder::new(3)
                .max_unavailable(ebb_engine::plan::MaxUnavailable::Count(2))
                .paired("fsc")
                .with_step(StepSpec {
                    idempotent: false,
                    ..step("install")
                })
                .verify("owa")
                .build(),
        );
        for t in &h.transports {
            t.script(
                "install",
                [Reply::Slow(std::time::Duration::from_millis(3))],
            );
        }
        h
    }
    let n = {
        let h = parallel();
        assert_eq!(h.run().await.exit_code, 0);
        h.log.effects()
    };
    every(n, |k| async move {
        let h = parallel();
        h.log.interrupt_at(k, KillPoint::Before, Interrupt::Kill);
        assert!(
            matches!(h.start(RunOptions::default()).await, Ended::Killed),
            "k = {k}"
        );
        let out = resume_answering(&h).await;
        assert_eq!(
            out.exit_code,
            0,
            "k = {k}: {}\n{}",
            out.message,
            h.log.dump()
        );
        h.assert_all_done();
        assert!(
            h.balancer.max_out() <= 2,
            "k = {k}: {:?}",
            h.balancer.timeline()
        );
        for m in ["m1", "m2", "m3"] {
            for call in [
                "run install",
                "run fsc",
                "run undo fsc",
                "drainstop",
                "start",
            ] {
                assert_eq!(
                    h.log.count(m, call),
                    1,
                    "{m} {call} (k = {k})\n{}",
                    h.log.dump()
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn ctrl_c_while_a_long_step_runs_stops_the_run_at_once() {
    let plan = PlanBuilder::new(2)
        .with_step(StepSpec {
            timeout: std::time::Duration::from_secs(60),
            ..step("install")
        })
        .build();
    let h = Harness::new(plan);
    h.transport("m1").script(
        "install",
        [
            Reply::Slow(std::time::Duration::from_secs(30)),
            Reply::Exit(0),
        ],
    );
    let operator = async {
        while h.log.count("m1", "run install") == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        h.interrupt();
    };
    let (out, ()) = tokio::join!(h.run(), operator);
    assert_ended(&out, RunState::Halted, 130);
    let install = h.actions("m1").into_iter().find(|a| a.name == "install");
    assert_eq!(
        install.map(|a| a.outcome),
        Some(None),
        "intent without outcome"
    );
    // install is idempotent: the resume runs it again and finishes.
    assert_eq!(h.resume().await.exit_code, 0);
    assert_eq!(h.log.count("m1", "run install"), 2);
    h.assert_all_done();
}

#[tokio::test]
async fn a_member_whose_hold_was_lifted_while_ebb_was_dead_is_held_again() {
    let h = Harness::new(PlanBuilder::new(2).paired("fsc").build());
    h.log.interrupt_at(2, KillPoint::Before, Interrupt::Kill);
    assert!(matches!(
        h.start(RunOptions::default()).await,
        Ended::Killed
    ));
    assert_eq!(h.log.fired().map(|r| r.call), Some("run fsc".into()));
    h.balancer
        .set_initial("m1", ebb_engine::interfaces::HostState::Started);
    let out = h.resume().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    assert_eq!(
        h.log.calls("m1"),
        [
            "set-initial stopped",
            "drainstop",
            "set-initial stopped",
            "run fsc",
            "run undo fsc",
            "start",
            "set-initial started"
        ]
    );
    h.assert_all_done();
}
