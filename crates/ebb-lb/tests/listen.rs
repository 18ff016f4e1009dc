//! The listening port with one thread per core: every thread accepts from the same socket
//! (one queue for new connections), a second balancer on the same address is refused, and
//! the connections end up even over the threads (a thread leaves new ones to another that
//! serves fewer) and all carry traffic.
mod support;

use ebb_lb::{LbConfig, Server};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_balancer_on_the_same_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let pool = write_pool(dir.path(), &[("a", a.addr)], "", SLOW_HEALTH);
    let lb = Lb::start(&pool).await;

    // The same port, state file elsewhere: only the listener can clash.
    let dir2 = tempfile::tempdir().unwrap();
    let pool2 = write_pool(dir2.path(), &[("a", a.addr)], "", SLOW_HEALTH);
    let text = std::fs::read_to_string(&pool2).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", lb.listen),
    );
    std::fs::write(&pool2, text).unwrap();
    let config = LbConfig::from_pool_file(&pool2).unwrap();
    let err = match Server::bind(config).await {
        Ok(_) => panic!(
            "a second balancer could bind {}, which the first one serves",
            lb.listen
        ),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("balancer.listen") && err.contains(&lb.listen.to_string()),
        "the error names the key and the address: {err}"
    );

    // The first balancer still serves.
    let mut c = Conn::open(lb.listen).await;
    assert_eq!(c.member, "a");
    c.echo(b"still here\n").await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_on_every_thread_carry_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let pool = write_pool(dir.path(), &[("a", a.addr), ("b", b.addr)], "", SLOW_HEALTH);
    let lb = Lb::start(&pool).await;
    lb.wait_all_up().await;

    // Long-lived connections, opened one after the other: whichever thread wakes first
    // would take each, but a thread that serves more than a few above another leaves it.
    let mut conns = Vec::new();
    for _ in 0..64 {
        conns.push(Conn::open(lb.listen).await);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.echo(format!("request {i}\n").as_bytes()).await;
    }
    let on_a = conns.iter().filter(|c| c.member == "a").count();
    assert_eq!(
        on_a, 32,
        "round robin over two members, whichever thread accepted"
    );
    let (status, metrics) = http(&lb, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    let per_thread: Vec<u64> = metrics
        .lines()
        .filter(|l| l.starts_with("ebb_lb_thread_active_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(per_thread.len(), threads, "one line per thread: {metrics}");
    assert_eq!(per_thread.iter().sum::<u64>(), 64, "{metrics}");
    let (min, max) = (per_thread.iter().min(), per_thread.iter().max());
    assert!(
        max.unwrap() - min.unwrap() <= 5,
        "the threads serve about as many each: {per_thread:?}"
    );
    drop(conns);
    lb.shutdown().await;
}

/// Bursts of short connections while long-lived ones keep the threads' counts uneven: the
/// threads leave connections to each other, and none may be left in the queue. (A first
/// version stalled here: a thread woken by another to take waiting connections took one
/// batch, then waited for a new connection that never came, with the queue full.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_of_short_connections_are_all_served() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let pool = write_pool(dir.path(), &[("a", a.addr), ("b", b.addr)], "", SLOW_HEALTH);
    let lb = Lb::start(&pool).await;
    lb.wait_all_up().await;
    for round in 0..20 {
        let mut held = Vec::new();
        for _ in 0..(round % 12) {
            held.push(Conn::open(lb.listen).await);
        }
        let burst: Vec<_> = (0..64)
            .map(|i| {
                let addr = lb.listen;
                tokio::spawn(async move {
                    // `open` and `echo` fail the test if not served within their bound.
                    let mut c = Conn::open(addr).await;
                    c.echo(format!("round {round} connection {i}\n").as_bytes())
                        .await;
                })
            })
            .collect();
        for c in burst {
            c.await.expect("every connection of the burst is served");
        }
        drop(held);
    }
    lb.shutdown().await;
}
