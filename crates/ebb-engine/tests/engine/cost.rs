//! What a run costs as the pool grows, counted rather than timed: the records a run reads
//! from its journal must grow with the pool only as its members do (a constant number per
//! member), so a transition's cost does not depend on the pool's size. A read of every
//! member at each check (what made bench/engine/run.sh quadratic again) fails this.

use ebb_engine::testing::{Harness, PlanBuilder};
use std::time::Duration;

/// Journal records read per member and whole-run member reads, for a run of `n` members
/// through the benchmark's runbook (hold, drain, a paired step, a plain step, verify,
/// return).
async fn reads(n: usize) -> (f64, usize) {
    let mut h = Harness::new(
        PlanBuilder::new(n)
            .paired("pause")
            .step("update")
            .verify("ok")
            .build(),
    );
    // The etcd pass of CI writes slowly: many members need more than the default bound.
    h.bound = Duration::from_secs(300);
    let out = h.run().await;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    // Before assert_all_done, which reads every member's records itself.
    let read = (h.reads.records() as f64 / n as f64, h.reads.member_lists());
    h.assert_all_done();
    read
}

#[tokio::test]
async fn journal_reads_per_member_do_not_grow_with_the_pool() {
    let (small, small_lists) = reads(8).await;
    let (large, large_lists) = reads(40).await;
    // 5x the members: a read of the whole pool per member would make this about 2.5x.
    assert!(
        large <= small * 1.2,
        "records read per member: {small:.1} at 8 members, {large:.1} at 40"
    );
    assert_eq!(
        small_lists, large_lists,
        "reads of every member of the run: {small_lists} at 8 members, {large_lists} at 40"
    );
}
