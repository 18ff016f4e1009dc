//! The engine in process: the scheduler, the policy, the owed-undo stack, resume, release
//! and abort, driven against the scripted fakes of `ebb_engine::testing` with a real
//! journal. Every test asserts on what the fakes recorded and on the journal.

mod bake;
mod controls;
mod cost;
mod drain;
mod failure;
mod gates;
mod liar;
mod lost;
mod reboot;
mod release;
mod resume;
mod rollback;
mod runs;
mod scheduler;
mod undo;
mod windows;

use ebb_engine::events::Event;
use ebb_engine::testing::Harness;

/// The calls every member receives in a plain run with hold and the given step commands.
pub fn plain_calls(steps: &[&str]) -> Vec<String> {
    let mut v = vec!["set-initial stopped".to_string(), "drainstop".to_string()];
    v.extend(steps.iter().map(|s| format!("run {s}")));
    v.push("start".into());
    v.push("set-initial started".into());
    v
}

/// The index of `member`'s first `call` among the operations of an uninterrupted run of
/// `plan`, for arming the trip wire there.
pub async fn operation_index(plan: &ebb_engine::plan::Plan, member: &str, call: &str) -> usize {
    let h = Harness::new(plan.clone());
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    let effects: Vec<_> = h.log.records().into_iter().filter(|r| r.effect).collect();
    match effects
        .iter()
        .position(|r| r.member == member && r.call == call)
    {
        Some(k) => k,
        None => panic!("no {member} {call} in\n{}", h.log.dump()),
    }
}

/// The `waiting` events' reasons.
pub fn waits(h: &Harness) -> Vec<String> {
    h.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Waiting { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

/// Runs `case(k)` for every `k` in `0..n` side by side (each has its own harness and
/// journal, so their waits overlap), and fails with the first case that failed.
pub async fn every<F, Fut>(n: usize, case: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for k in 0..n {
        set.spawn(case(k));
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
