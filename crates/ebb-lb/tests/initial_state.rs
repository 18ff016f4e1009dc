//! Initial state and the state file: holds survive recovery and balancer restarts.
mod support;

use ebb_lb::{Health, HostState, InitialState};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_state_stopped_keeps_a_recovered_member_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let pool = write_pool(
        dir.path(),
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        "",
        FAST_HEALTH,
    );
    let lb = Lb::start(&pool).await;
    lb.wait_all_up().await;
    // a is held; c is not (the control case: it must come back started).
    let st = lb
        .client
        .set_initial_state("a", InitialState::Stopped)
        .await
        .unwrap();
    assert_eq!(
        (st.state, st.initial_state),
        (HostState::Started, InitialState::Stopped)
    );

    let a_addr = a.kill().await;
    let c_addr = c.kill().await;
    lb.wait_member("a", "down", |s| s.health == Health::Down)
        .await;
    lb.wait_member("c", "down", |s| s.health == Health::Down)
        .await;
    let _a = Backend::start_at("a", a_addr).await;
    let _c = Backend::start_at("c", c_addr).await;
    let st = lb.wait_member("a", "up", |s| s.health == Health::Up).await;
    assert_eq!(
        st.state,
        HostState::Stopped,
        "a held member came back: {st:?}"
    );
    let st = lb.wait_member("c", "up", |s| s.health == Health::Up).await;
    assert_eq!(st.state, HostState::Started);

    for _ in 0..9 {
        assert_ne!(Conn::open(lb.listen).await.member, "a");
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_survive_a_balancer_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let pool = write_pool(
        dir.path(),
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        "",
        FAST_HEALTH,
    );
    let lb = Lb::start(&pool).await;
    lb.wait_all_up().await;
    // a: held but still started now. b: stopped by hand. c: untouched.
    lb.client
        .set_initial_state("a", InitialState::Stopped)
        .await
        .unwrap();
    lb.client.stop("b").await.unwrap();
    lb.shutdown().await;
    assert!(dir.path().join("pool.lb-state.json").exists());

    let lb = Lb::start(&pool).await;
    let a_st = lb.member("a").await;
    assert_eq!(
        (a_st.state, a_st.initial_state),
        (HostState::Stopped, InitialState::Stopped)
    );
    let b_st = lb.member("b").await;
    assert_eq!(
        (b_st.state, b_st.initial_state),
        (HostState::Stopped, InitialState::Started)
    );
    assert_eq!(lb.member("c").await.state, HostState::Started);
    lb.wait_all_up().await;
    for _ in 0..6 {
        assert_eq!(Conn::open(lb.listen).await.member, "c");
    }
    // Starting them after the restart works and is itself kept.
    lb.client.start("a").await.unwrap();
    lb.client
        .set_initial_state("a", InitialState::Started)
        .await
        .unwrap();
    lb.shutdown().await;
    let lb = Lb::start(&pool).await;
    assert_eq!(lb.member("a").await.state, HostState::Started);
    assert_eq!(lb.member("b").await.state, HostState::Stopped);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_ends_by_itself_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let pool = write_pool(dir.path(), &[("a", a.addr), ("b", b.addr)], "", FAST_HEALTH);
    let lb = Lb::start(&pool).await;
    lb.wait_all_up().await;
    let conn = conn_to(lb.listen, "a").await;
    lb.client.drainstop("a").await.unwrap();
    drop(conn);
    lb.wait_member("a", "stopped", |s| s.state == HostState::Stopped)
        .await;
    lb.shutdown().await;
    let lb = Lb::start(&pool).await;
    assert_eq!(lb.member("a").await.state, HostState::Stopped);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let pool = write_pool(dir.path(), &[("a", a.addr)], "", SLOW_HEALTH);
    std::fs::write(dir.path().join("pool.lb-state.json"), "{oops").unwrap();
    let config = ebb_lb::LbConfig::from_pool_file(&pool).unwrap();
    let err = ebb_lb::Server::bind(config).await.err().expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("pool.lb-state.json") && msg.contains("delete it"),
        "{msg}"
    );
}
