//! Every run of a pool stays in the journal and is read back by its id (`ebb report --run
//! N`), on SQLite and (with EBB_TEST_ETCD) on etcd.

use ebb_engine::journal::{Outcome, RunState};
use ebb_engine::testing::{Harness, PlanBuilder, Reply};

#[tokio::test]
async fn each_run_is_read_back_by_its_id_with_its_own_members_and_actions() {
    let h = Harness::new(PlanBuilder::new(2).step("install").build());
    h.transport("m2").script("install", [Reply::Exit(3)]);
    let first = h.run().await;
    assert_eq!(first.exit_code, 1, "{}", first.message);
    h.transport("m2").script("install", [Reply::Exit(0)]);
    assert_eq!(h.resume().await.exit_code, 0);
    let second = h.run().await;
    assert_eq!(second.exit_code, 0, "{}", second.message);
    assert_ne!(first.run_id, second.run_id);

    let ids = h.journal.run_ids(Some("fake-pool")).expect("run ids");
    assert_eq!(ids, [first.run_id, second.run_id]);
    assert_eq!(h.journal.run_ids(None).expect("run ids"), ids);
    assert_eq!(
        h.journal.run_ids(Some("other")).expect("run ids"),
        [] as [i64; 0]
    );

    let one = h.journal.run(first.run_id).expect("read").expect("run 1");
    assert_eq!((one.id, one.pool.as_str()), (first.run_id, "fake-pool"));
    assert_eq!(one.state, RunState::Done);
    let two = h.journal.run(second.run_id).expect("read").expect("run 2");
    assert_eq!(two.id, second.run_id);
    // Run 1 holds m2's failed attempt and its retry; run 2 only clean ones.
    let failed = |run: i64| {
        h.journal
            .actions(run, Some("m2"))
            .expect("actions")
            .iter()
            .filter(|a| a.outcome == Some(Outcome::Failed))
            .count()
    };
    assert_eq!((failed(first.run_id), failed(second.run_id)), (1, 0));
    assert!(h
        .journal
        .run(second.run_id + 1_000_000)
        .expect("read")
        .is_none());
    assert!(h.journal.run(-1).expect("read").is_none());
}

/// A run recorded as `running` whose ebb died (kill -9 leaves it so) is shown halted and
/// interrupted, also while a later run of the pool holds the lock: the holder works on
/// the latest run, never on this one. Only the latest run, with a live holder, is running.
#[tokio::test]
async fn a_running_run_whose_ebb_died_is_interrupted_also_while_a_later_run_holds_the_lock() {
    use ebb_engine::run::shown;
    let h = Harness::new(PlanBuilder::new(1).step("install").build());
    let first = h.run().await.run_id;
    let second = h.run().await.run_id;
    let pool = "fake-pool";
    // The later run's ebb holds the lock (this process: alive); the first run's ebb died
    // before it could record how it stopped.
    assert!(h.journal.lock(pool, false).expect("lock").is_ok());
    for id in [first, second] {
        h.journal
            .set_run_state(id, RunState::Running, "")
            .expect("state");
    }
    let read = |id: i64| shown(&h.journal, &h.journal.run(id).expect("read").expect("run"));
    let (state, message) = read(first);
    assert_eq!(state, RunState::Halted, "{message}");
    assert!(message.starts_with("interrupted"), "{message}");
    assert_eq!(read(second), (RunState::Running, String::new()));
    // Its holder gone, the latest run is interrupted too.
    h.journal.unlock(pool).expect("unlock");
    let (state, message) = read(second);
    assert_eq!(state, RunState::Halted, "{message}");
    assert!(message.starts_with("interrupted"), "{message}");
}
