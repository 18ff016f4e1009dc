//! A whole rolling run through the engine over three members behind a real HAProxy, under
//! steady load: every member is held, drained, its service stopped and updated, verified
//! and returned, and not one request fails.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_run_behind_haproxy_under_load_fails_no_request() {
    rolling_run(&["web1", "web2", "web3"], 1).await;
}

/// Two members out at once: their drains, holds and state-file writes overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_at_a_time_behind_haproxy_under_load_fails_no_request() {
    rolling_run(&["web1", "web2", "web3", "web4"], 2).await;
}

async fn rolling_run(names: &[&str], max_unavailable: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut backends = Vec::new();
    for m in names.iter().copied() {
        backends.push(ControlledBackend::start(m, d.join(format!("{m}.down"))).await);
    }
    let servers: Vec<_> = backends.iter().map(|b| (b.name.as_str(), b.addr)).collect();
    let hap = Haproxy::start(
        d,
        &servers,
        HaproxyOptions {
            state_file: true,
            checks: true,
            ..Default::default()
        },
    );
    let mut toml = format!(
        r#"[pool]
name = "web"
max_unavailable = {max_unavailable}
min_in_service = 2
capacity_wait = "20s"

[balancer]
driver = "haproxy"
socket = "{sock}"
backend = "app"
state_file = "server-state"
start_timeout = "10s"

{runbook}"#,
        sock = hap.admin_sock.display(),
        runbook = rolling_runbook(d)
    );
    for b in &backends {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            b.name, b.addr
        );
    }
    let plan = plan(d, &toml);
    assert!(
        eventually(Duration::from_secs(5), || async {
            names.iter().all(|m| hap.status(m) == "UP")
        })
        .await
    );

    // An independent observer: how many servers HAProxy has out of rotation, every 50 ms.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let max_out = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, max_out, sock) = (stop_watch.clone(), max_out.clone(), hap.admin_sock.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(out) = stat_statuses(&sock) {
                    let n = out.iter().filter(|s| s.as_str() != "UP").count();
                    max_out.fetch_max(n, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Steady short requests, plus one long connection per member that outlives the start
    // of its drain by a second: none may be cut.
    let load = Load::start(&hap.frontend, 4, Duration::from_millis(5));
    let mut longs = Vec::new();
    for _ in 0..3 {
        longs.push(LongConn::open(&hap.frontend).await.unwrap());
    }
    let long_task = tokio::spawn(async move {
        let mut pings = 0;
        for _ in 0..10 {
            for c in longs.iter_mut() {
                c.ping("alive")
                    .await
                    .map_err(|e| format!("{}: {e}", c.backend))?;
                pings += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, String>(pings)
    });

    let (outcome, evs, took) = run_engine(plan, d).await;
    let pings = long_task.await.unwrap();
    let load_errors = load.errors.clone();
    let (ok, failed) = load.finish().await;
    stop_watch.store(true, Ordering::SeqCst);
    watcher.join().unwrap();

    let failures: Vec<_> = evs.iter().filter(|e| e["outcome"] == "failed").collect();
    assert_eq!(outcome.exit_code, 0, "{}: {failures:#?}", outcome.message);
    assert_eq!(pings, Ok(30), "a long connection was cut");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {:?}",
        ok + failed,
        load_errors.lock().unwrap()
    );
    assert!(ok > 100, "too little load to mean anything: {ok}");
    assert_eq!(
        max_out.load(Ordering::SeqCst),
        max_unavailable,
        "max_unavailable"
    );
    for m in names.iter().copied() {
        assert_eq!(hap.status(m), "UP");
    }
    assert_updated(d, names);
    // The state file says what a reload must restore: every server in service.
    let saved = std::fs::read_to_string(&hap.state_file).unwrap();
    assert!(
        saved
            .lines()
            .skip(2)
            .filter(|l| !l.is_empty())
            .all(|l| l.split(' ').nth(6) == Some("0")),
        "{saved}"
    );
    let drains: Vec<_> = evs
        .iter()
        .filter(|e| e["step"] == "drain" && e["event"] == "step_finished")
        .map(|e| e["detail"].to_string())
        .collect();
    println!(
        "rolling run behind HAProxy: {} members in {:.1}s, {ok} requests, {failed} failed, max out of service {}, long-connection pings {pings:?}; drains: {drains:?}",
        names.len(),
        took.as_secs_f64(),
        max_out.load(Ordering::SeqCst)
    );
}

/// The `status` column of every server of backend `app`.
fn stat_statuses(sock: &std::path::Path) -> Option<Vec<String>> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.write_all(b"show stat app 4 -1\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let i = header.iter().position(|c| *c == "status")?;
    Some(
        lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split(',').nth(i).map(String::from))
            .collect(),
    )
}
