//! The data-plane threads are held to a core each (`pin_threads`, on by default), one
//! core per thread, let go while they accept many short connections and held again
//! after, and left to the kernel with `pin_threads = false`. One test in a
//! binary of its own: it tells the balancer's threads by name, which another balancer
//! in the same process would share.
mod support;

use std::time::{Duration, Instant};

use support::*;

/// Cores in a `Cpus_allowed_list` ("0-3,6").
fn cores(list: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        out.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap());
    }
    out
}

fn allowed(status: &str) -> Vec<usize> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("a Cpus_allowed_list line");
    cores(line)
}

/// The cores each data-plane thread of this process may run on.
fn data_threads() -> Vec<Vec<usize>> {
    data_threads_by_name().into_iter().map(|(_, c)| c).collect()
}

/// Each data-plane thread's number (`ebb-lb-data-N`) and the cores it may run on.
fn data_threads_by_name() -> Vec<(usize, Vec<usize>)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let Some(n) = name.trim().strip_prefix("ebb-lb-data-") else {
            continue;
        };
        if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
            out.push((n.parse().unwrap(), allowed(&status)));
        }
    }
    out
}

/// Waits until `n` data-plane threads run (they start in `Server::run`, after the bind).
async fn wait_threads(n: usize) -> Vec<Vec<usize>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = data_threads();
        if now.len() == n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{} data-plane threads, expected {n}",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_threads_are_held_to_a_core_each_unless_told_otherwise() {
    let process = allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let wanted = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    assert!(data_threads().is_empty(), "no balancer runs yet");

    let pool = write_pool(dir.path(), &[("a", a.addr)], "", SLOW_HEALTH);
    let lb = Lb::start(&pool).await;
    let pinned = wait_threads(wanted).await;
    let mut pinned_by_name = vec![Vec::new(); wanted];
    for (t, cores) in data_threads_by_name() {
        pinned_by_name[t] = cores;
    }
    let mut used: Vec<usize> = pinned.iter().flatten().copied().collect();
    assert!(
        pinned.iter().all(|c| c.len() == 1),
        "each thread on one core: {pinned:?}"
    );
    used.sort();
    used.dedup();
    assert_eq!(used.len(), wanted, "a core of its own each: {pinned:?}");
    assert!(
        used.iter().all(|c| process.contains(c)),
        "cores the process may use ({process:?}): {pinned:?}"
    );
    // Held to their cores, they serve.
    let mut c = Conn::open(lb.listen).await;
    c.echo(b"pinned\n").await;
    drop(c);

    // Many short connections (well above 2,000 a second): each thread is let go of its
    // core while they come, and held to it again once they stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (addr, stop) = (lb.listen, stop.clone());
            tokio::spawn(async move {
                let mut opened = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if tokio::net::TcpStream::connect(addr).await.is_ok() {
                        opened += 1;
                    }
                }
                opened
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    let mut let_go = vec![false; wanted];
    while !let_go.iter().all(|&g| g) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (t, cores) in data_threads_by_name() {
            if cores == process {
                let_go[t] = true;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut opened = 0;
    for c in clients {
        opened += c.await.unwrap();
    }
    assert!(
        let_go.iter().all(|&g| g) || process.len() == 1,
        "every thread let go of its core under {opened} short connections: {let_go:?}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let now = data_threads_by_name();
        if now.iter().all(|(t, cores)| *cores == pinned_by_name[*t]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "held again once the short connections stopped: {now:?}, pinned first {pinned_by_name:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lb.shutdown().await;
    wait_threads(0).await;

    let pool = write_pool(
        dir.path(),
        &[("a", a.addr)],
        "pin_threads = false\n",
        SLOW_HEALTH,
    );
    let lb = Lb::start(&pool).await;
    let free = wait_threads(wanted).await;
    assert!(
        free.iter().all(|c| *c == process),
        "left to the kernel, each may run wherever the process may ({process:?}): {free:?}"
    );
    let mut c = Conn::open(lb.listen).await;
    c.echo(b"free\n").await;
    drop(c);
    lb.shutdown().await;
}
