//! Drainstop and stop under real TCP traffic.
mod support;

use std::time::{Duration, Instant};

use ebb_lb::HostState;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drainstop_keeps_existing_connection_and_reports_the_end_of_the_drain() {
    let (_dir, _a, _b, lb) = two_members_up(FAST_HEALTH).await;

    let mut long = conn_to(lb.listen, "a").await;
    long.make_long_lived().await;
    long.echo(b"before drain").await;
    let mut events = lb.client.events().await.unwrap();

    let st = lb.client.drainstop("a").await.unwrap();
    assert_eq!(st.state, HostState::Draining);
    assert_eq!(st.active_connections, 1);

    // Every new connection goes elsewhere while the old one keeps carrying data.
    for i in 0..8 {
        let mut c = Conn::open(lb.listen).await;
        assert_eq!(
            c.member, "b",
            "new connection {i} went to the draining member"
        );
        c.echo(b"x").await;
        long.echo(format!("during drain {i}").as_bytes()).await;
    }
    let st = lb.member("a").await;
    assert_eq!(st.state, HostState::Draining);
    assert_eq!(st.active_connections, 1);

    // The draining event came first.
    let ev = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((ev.name.as_str(), ev.state), ("a", HostState::Draining));

    // Close the last connection: the member is stopped and the stream says so in 100 ms.
    drop(long);
    let closed_at = Instant::now();
    let stopped = loop {
        let ev = tokio::time::timeout(Duration::from_secs(2), events.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("good event");
        if ev.name == "a" && ev.state == HostState::Stopped {
            break closed_at.elapsed();
        }
    };
    assert!(
        stopped < Duration::from_millis(100),
        "end of drain pushed after {stopped:?}"
    );
    let st = lb.member("a").await;
    assert_eq!(st.state, HostState::Stopped);
    assert_eq!(st.active_connections, 0);
    assert!(st.bytes_in > 0 && st.bytes_out > 0, "{st:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drainstop_without_connections_stops_at_once_and_start_brings_it_back() {
    let (_dir, _a, _b, lb) = two_members_up(FAST_HEALTH).await;
    let st = lb.client.drainstop("a").await.unwrap();
    assert_eq!(st.state, HostState::Stopped);
    for _ in 0..4 {
        assert_eq!(Conn::open(lb.listen).await.member, "b");
    }
    assert_eq!(
        lb.client.start("a").await.unwrap().state,
        HostState::Started
    );
    conn_to(lb.listen, "a").await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_cuts_open_connections() {
    let (_dir, _a, _b, lb) = two_members_up(FAST_HEALTH).await;
    let mut on_a = conn_to(lb.listen, "a").await;
    let mut long_on_a = conn_to(lb.listen, "a").await;
    let mut on_b = conn_to(lb.listen, "b").await;
    on_a.echo(b"hi").await;
    long_on_a.make_long_lived().await;
    on_b.make_long_lived().await;

    let st = lb.client.stop("a").await.unwrap();
    assert_eq!(st.state, HostState::Stopped);
    assert_eq!(
        st.active_connections, 0,
        "stop answered before its connections closed"
    );
    on_a.closed_within(Duration::from_secs(1)).await;
    long_on_a.closed_within(Duration::from_secs(1)).await;
    // The other member's connection is untouched.
    on_b.echo(b"still here").await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_passed_on_and_the_other_direction_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let pool = write_pool(dir.path(), &[("a", a.addr)], "", SLOW_HEALTH);
    let lb = Lb::start(&pool).await;
    let mut c = Conn::open(lb.listen).await;
    c.stream.write_all(b"abc").await.unwrap();
    c.stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, c.stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    // The backend saw our FIN (it wrote EOF) and its answer still reached us.
    assert_eq!(rest, b"abcEOF\n");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let pool = write_pool(
        dir.path(),
        &[("a", a.addr)],
        "idle_timeout = \"300ms\"\n",
        SLOW_HEALTH,
    );
    let lb = Lb::start(&pool).await;
    let mut short = Conn::open(lb.listen).await;
    let mut long = Conn::open(lb.listen).await;
    long.make_long_lived().await;
    // Traffic keeps them open past the timeout...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        short.echo(b"ping").await;
        long.echo(b"ping").await;
    }
    // ...silence closes them.
    let quiet_since = Instant::now();
    for c in [&mut short, &mut long] {
        c.closed_within(Duration::from_secs(2)).await;
        let took = quiet_since.elapsed();
        assert!(
            took >= Duration::from_millis(250),
            "closed too early: {took:?}"
        );
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_that_closes_during_a_drain_is_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let pool = write_pool(dir.path(), &[("a", a.addr), ("b", b.addr)], "", SLOW_HEALTH);
    let lb = Lb::start(&pool).await;
    let mut on_a = Vec::new();
    for _ in 0..3 {
        on_a.push(conn_to(lb.listen, "a").await);
    }
    lb.wait_member("b", "idle", |s| s.active_connections == 0)
        .await;
    let mut events = lb.client.events().await.unwrap();
    lb.client.drainstop("a").await.unwrap();
    let mut seen = Vec::new();
    async fn next(events: &mut ebb_lb::client::EventStream) -> (HostState, u64) {
        let ev = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("event in time");
        let ev = ev.expect("stream open").expect("good event");
        (ev.state, ev.active_connections)
    }
    seen.push(next(&mut events).await);
    while let Some(c) = on_a.pop() {
        drop(c);
        seen.push(next(&mut events).await);
    }
    assert_eq!(
        seen,
        vec![
            (HostState::Draining, 3),
            (HostState::Draining, 2),
            (HostState::Draining, 1),
            (HostState::Stopped, 0),
        ]
    );
    lb.shutdown().await;
}

/// A connection that lives for many round trips (past the polls after which it goes to
/// its thread's copy loop) still carries every byte both ways, with bursts larger than
/// one read, and its half-close still reaches the member and the member's last words the
/// client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_flows_both_ways_to_the_half_close() {
    long_conversation("").await;
}

/// The same without the copy loop: the connection stays on its task (where, past the
/// same polls, each direction gets its own waker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_on_its_task_flows_both_ways_to_the_half_close() {
    long_conversation("copy_loop = false\n").await;
}

async fn long_conversation(balancer: &str) {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let pool = write_pool(dir.path(), &[("a", a.addr)], balancer, SLOW_HEALTH);
    let lb = Lb::start(&pool).await;
    let mut c = Conn::open(lb.listen).await;
    for i in 0..300u32 {
        c.echo(format!("ping {i}\n").as_bytes()).await;
    }
    let burst: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    c.echo(&burst).await;
    c.echo(b"last\n").await;
    c.stream.shutdown().await.unwrap();
    assert_eq!(read_line(&mut c.stream).await, "EOF");
    let st = lb.member("a").await;
    assert!(st.bytes_in >= 60_000, "{st:?}");
    lb.shutdown().await;
}
