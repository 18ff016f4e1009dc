//! Balancing: refused members, weights, least connections, source-ip affinity.
mod support;

use std::collections::HashMap;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use ebb_lb::HostState;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_member_does_not_fail_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    // Health checks see both up once, then not again for an hour: the balancer still
    // believes in a when it starts refusing.
    let pool = write_pool(dir.path(), &[("a", a.addr), ("b", b.addr)], "", SLOW_HEALTH);
    let lb = Lb::start(&pool).await;
    lb.wait_all_up().await;
    a.kill().await;
    for i in 0..10 {
        let mut c = Conn::open(lb.listen).await;
        assert_eq!(c.member, "b", "connection {i}");
        c.echo(b"ok").await;
    }
    let metrics = metrics(&lb).await;
    assert!(
        metrics.contains("ebb_lb_listener_refused_total{listener="),
        "{metrics}"
    );
    assert!(metrics.contains("} 0\n"), "{metrics}");
    lb.shutdown().await;
}

/// Accepts connections, greets with `r\n`, and on the first bytes from the client resets
/// the connection (RST: zero linger) instead of answering.
async fn resetting_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                if s.write_all(b"r\n").await.is_err() {
                    return;
                }
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
                s.set_zero_linger().unwrap();
                drop(s);
            });
        }
    });
    addr
}

/// The per-member error counters the `balancer` bake check reads: connections a member
/// refused and connections it reset are counted against it (in `GET /members/NAME` and
/// `/metrics`), none against the healthy member, and the clients of the refusing member
/// are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_and_resets_are_counted_per_member() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let r = resetting_backend().await;
    let pool = write_pool(
        dir.path(),
        &[("a", a.addr), ("b", b.addr), ("r", r)],
        "",
        SLOW_HEALTH,
    );
    let lb = Lb::start(&pool).await;
    lb.wait_all_up().await;
    a.kill().await;
    let mut reset = 0;
    for _ in 0..12 {
        let mut c = Conn::open(lb.listen).await;
        if c.member == "r" {
            // Ours to send; the member resets instead of answering.
            c.stream.write_all(b"x").await.unwrap();
            c.closed_within(WAIT).await;
            reset += 1;
        } else {
            assert_eq!(c.member, "b");
            c.echo(b"ok").await;
        }
    }
    assert!(reset > 0, "no client reached the resetting member");
    let refused = lb.member("a").await.connect_failures;
    assert!(refused > 0, "{:?}", lb.member("a").await);
    let st = lb
        .wait_member("r", "counted its resets", |s| s.resets == reset)
        .await;
    assert_eq!(st.connect_failures, 0, "{st:?}");
    let healthy = lb.member("b").await;
    assert_eq!(
        (healthy.connect_failures, healthy.resets),
        (0, 0),
        "{healthy:?}"
    );
    assert_eq!(lb.member("a").await.resets, 0);
    let m = metrics(&lb).await;
    for want in [
        format!("ebb_lb_member_connect_failures_total{{member=\"a\"}} {refused}\n"),
        format!("ebb_lb_member_resets_total{{member=\"r\"}} {reset}\n"),
        "ebb_lb_member_resets_total{member=\"b\"} 0\n".to_string(),
    ] {
        assert!(m.contains(&want), "{want} in {m}");
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_times_out_does_not_fail_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start("b").await;
    let hole = Blackhole::start();
    let pool = write_pool(
        dir.path(),
        &[("hole", hole.addr), ("b", b.addr)],
        "connect_timeout = \"200ms\"\n",
        SLOW_HEALTH,
    );
    let lb = Lb::start(&pool).await;
    for _ in 0..3 {
        let c = tokio::time::timeout(Duration::from_secs(2), Conn::open(lb.listen))
            .await
            .expect("client served within the connect timeout");
        assert_eq!(c.member, "b");
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_member_available_closes_the_client_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let pool = write_pool(dir.path(), &[("a", a.addr)], "", SLOW_HEALTH);
    let lb = Lb::start(&pool).await;
    lb.client.stop("a").await.unwrap();
    let mut s = tokio::net::TcpStream::connect(lb.listen).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut s, &mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    let m = metrics(&lb).await;
    assert!(
        m.contains("ebb_lb_listener_refused_total{listener=\"") && m.contains("} 1\n"),
        "{m}"
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let pool_text = format!(
        "[balancer]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\n[balancer.health]\ninterval = \"1h\"\n\
         [[member]]\nname = \"a\"\naddress = \"{}\"\nweight = 3\n[[member]]\nname = \"b\"\naddress = \"{}\"\n",
        a.addr, b.addr
    );
    let pool = dir.path().join("pool.toml");
    std::fs::write(&pool, pool_text).unwrap();
    let lb = Lb::start(&pool).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        *counts
            .entry(Conn::open(lb.listen).await.member)
            .or_default() += 1;
    }
    assert_eq!(counts["a"], 30, "{counts:?}");
    assert_eq!(counts["b"], 10, "{counts:?}");
    lb.shutdown().await;
}

/// Three members `a`, `b`, `c` with the given weights, balanced by `balance`; health
/// checks run once. Keep the temp dir and the backends alive while testing.
async fn three_weighted(weights: [u32; 3], balance: &str) -> (tempfile::TempDir, Vec<Backend>, Lb) {
    let dir = tempfile::tempdir().unwrap();
    let mut backends = Vec::new();
    let mut text = format!(
        "[balancer]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nbalance = \"{balance}\"\n\
         [balancer.health]\ninterval = \"1h\"\n"
    );
    for (name, w) in ["a", "b", "c"].into_iter().zip(weights) {
        let b = Backend::start(name).await;
        text.push_str(&format!(
            "[[member]]\nname = \"{name}\"\naddress = \"{}\"\nweight = {w}\n",
            b.addr
        ));
        backends.push(b);
    }
    let pool = dir.path().join("pool.toml");
    std::fs::write(&pool, text).unwrap();
    let lb = Lb::start(&pool).await;
    (dir, backends, lb)
}

/// Drainstops `name` and waits until it is stopped.
async fn take_out(lb: &Lb, name: &str) {
    lb.client.drainstop(name).await.unwrap();
    lb.wait_member(name, "stopped", |s| s.state == HostState::Stopped)
        .await;
}

/// Opens `n` connections one after another (each closed before the next) and counts
/// where they landed.
async fn count_sequential(lb: &Lb, n: usize) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..n {
        *counts
            .entry(Conn::open(lb.listen).await.member)
            .or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_splits_evenly_while_a_member_is_out() {
    let (_dir, _backends, lb) = three_weighted([1, 1, 1], "round-robin").await;
    // The member after the one that is out must not inherit its turns, wherever it is.
    take_out(&lb, "c").await;
    let counts = count_sequential(&lb, 30).await;
    assert_eq!(counts.get("a"), Some(&15), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&15), "{counts:?}");
    lb.client.start("c").await.unwrap();
    take_out(&lb, "a").await;
    let counts = count_sequential(&lb, 30).await;
    assert_eq!(counts.get("b"), Some(&15), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&15), "{counts:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_weights_hold_while_a_member_is_out() {
    let (_dir, _backends, lb) = three_weighted([2, 1, 1], "round-robin").await;
    take_out(&lb, "b").await;
    let counts = count_sequential(&lb, 30).await;
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&10), "{counts:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_weights_hold_while_a_member_is_out() {
    let (_dir, _backends, lb) = three_weighted([1, 1, 2], "least-connections").await;
    take_out(&lb, "a").await;
    // Held open: each new connection goes to the fewest connections per weight.
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(Conn::open(lb.listen).await);
    }
    let on = |m: &str| held.iter().filter(|c| c.member == m).count();
    assert_eq!((on("a"), on("b"), on("c")), (0, 10, 20));
    drop(held);
    for m in ["b", "c"] {
        lb.wait_member(m, "idle", |s| s.active_connections == 0)
            .await;
    }
    // Idle members (equal load) share connections by weight too, not by position.
    let counts = count_sequential_idle(&lb, 30).await;
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&20), "{counts:?}");
    lb.shutdown().await;
}

/// As `count_sequential`, but waits after each connection until the balancer has let go
/// of it, so that every pick sees all members idle.
async fn count_sequential_idle(lb: &Lb, n: usize) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..n {
        let c = Conn::open(lb.listen).await;
        let member = c.member.clone();
        drop(c);
        lb.wait_member(&member, "idle", |s| s.active_connections == 0)
            .await;
        *counts.entry(member).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_idle_member() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let pool = write_pool(
        dir.path(),
        &[("a", a.addr), ("b", b.addr)],
        "balance = \"least-connections\"\n",
        SLOW_HEALTH,
    );
    let lb = Lb::start(&pool).await;
    // Held connections split 2/2; then b's close, leaving a with 2 and b with none.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(Conn::open(lb.listen).await);
    }
    held.retain(|c| c.member == "a");
    assert_eq!(held.len(), 2);
    lb.wait_member("b", "idle", |s| s.active_connections == 0)
        .await;
    for _ in 0..2 {
        let c = Conn::open(lb.listen).await;
        assert_eq!(c.member, "b");
        held.push(c);
    }
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_affinity_keeps_a_client_on_its_member_while_it_is_started() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let pool = write_pool(
        dir.path(),
        &[("a", a.addr), ("b", b.addr)],
        "affinity = \"source-ip\"\n",
        SLOW_HEALTH,
    );
    let lb = Lb::start(&pool).await;
    let first = Conn::open(lb.listen).await.member;
    for _ in 0..6 {
        assert_eq!(Conn::open(lb.listen).await.member, first);
    }
    lb.client.drainstop(&first).await.unwrap();
    // The test's closed connections may still be unwinding in the balancer.
    lb.wait_member(&first, "stopped", |s| s.state == HostState::Stopped)
        .await;
    let other = Conn::open(lb.listen).await.member;
    assert_ne!(other, first);
    // Back in service, the client stays where it now is.
    lb.client.start(&first).await.unwrap();
    for _ in 0..6 {
        assert_eq!(Conn::open(lb.listen).await.member, other);
    }
    lb.shutdown().await;
}

async fn metrics(lb: &Lb) -> String {
    http(lb, "GET", "/metrics", None, "").await.1
}
