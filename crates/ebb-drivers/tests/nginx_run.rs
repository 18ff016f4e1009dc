//! A whole rolling run through the engine over members behind a real nginx, under steady
//! HTTP load with long-lived streams: every member is held (`down`), drained (waiting for
//! its stream to close), its service stopped and updated, verified and returned, and not
//! one request fails.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::nginx::{balancer_toml, Nginx};
use support::web::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_run_behind_nginx_under_load_fails_no_request() {
    rolling_run(&["web1", "web2", "web3"], 1).await;
}

/// Two members out at once: their changes to the one upstream file are serialized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_at_a_time_behind_nginx_under_load_fails_no_request() {
    rolling_run(&["web1", "web2", "web3", "web4"], 2).await;
}

/// How many `server` lines of the upstream file carry `down`.
fn down_lines(file: &std::path::Path) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    Some(
        text.lines()
            .filter(|l| l.trim_start().starts_with("server "))
            .filter(|l| {
                l.split(|c: char| c.is_whitespace() || c == ';')
                    .any(|w| w == "down")
            })
            .count(),
    )
}

/// Whether the member's line (`# NAME` at its end) carries `down`.
fn member_down(file: &std::path::Path, name: &str) -> bool {
    std::fs::read_to_string(file).is_ok_and(|t| {
        t.lines()
            .any(|l| l.ends_with(&format!("# {name}")) && l.contains(" down;"))
    })
}

async fn rolling_run(names: &[&str], max_unavailable: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut members = Vec::new();
    for m in names.iter().copied() {
        members.push(WebMember::start(m, d.join(format!("{m}.down"))).await);
    }
    let upstream: String = members
        .iter()
        .map(|m| {
            format!(
                "server {} max_fails=1 fail_timeout=2s;  # {}\n",
                m.addr, m.name
            )
        })
        .collect();
    let nginx = Nginx::start(d, &upstream);
    let mut toml = format!(
        "[pool]\nname = \"web\"\nmax_unavailable = {max_unavailable}\nmin_in_service = 2\ncapacity_wait = \"20s\"\n\n{}\n{}",
        balancer_toml(&nginx),
        rolling_runbook(d)
    );
    for m in &members {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            m.name, m.addr
        );
    }
    let plan = plan(d, &toml);

    // An independent observer: how many members the upstream file has `down`, every 50 ms.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let max_out = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, max_out, file) = (
            stop_watch.clone(),
            max_out.clone(),
            nginx.upstream_file.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(n) = down_lines(&file) {
                    max_out.fetch_max(n, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Steady short requests, plus long streams opened before the run, each kept open
    // until a second after its member went `down`: none may be cut, and each member's
    // drain must wait for its stream.
    let load = web_load(&nginx.frontend, 4, Duration::from_millis(5));
    let mut streams = Vec::new();
    for _ in 0..names.len() {
        streams.push((LongStream::open(&nginx.frontend).await.unwrap(), None));
    }
    let file = nginx.upstream_file.clone();
    let stream_task = tokio::spawn(async move {
        let mut on = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !streams.is_empty() {
            if Instant::now() > deadline {
                return Err("streams still open after 60 s".to_string());
            }
            for (s, since) in streams.iter_mut() {
                if !s.alive().await {
                    return Err(format!("the stream to {} was cut", s.member));
                }
                if since.is_none() && member_down(&file, &s.member) {
                    *since = Some(Instant::now());
                }
            }
            let (done, rest): (Vec<_>, Vec<_>) = streams.into_iter().partition(|(_, since)| {
                since.is_some_and(|t: Instant| t.elapsed() > Duration::from_secs(1))
            });
            for (s, _) in done {
                on.push(s.member.clone());
                s.close();
            }
            streams = rest;
        }
        Ok(on)
    });

    let (outcome, evs, took) = run_engine(plan, d).await;
    let streams_on = stream_task.await.unwrap();
    let load_errors = load.errors.clone();
    let (ok, failed) = load.finish().await;
    stop_watch.store(true, Ordering::SeqCst);
    watcher.join().unwrap();

    let failures: Vec<_> = evs.iter().filter(|e| e["outcome"] == "failed").collect();
    assert_eq!(outcome.exit_code, 0, "{}: {failures:#?}", outcome.message);
    let streams_on = streams_on.unwrap_or_else(|e| panic!("{e}"));
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
    // The drains waited for the streams: a member holding one showed it while draining.
    let counted: Vec<_> = evs
        .iter()
        .filter(|e| e["event"] == "drain_progress" && e["active_connections"].as_u64() > Some(0))
        .map(|e| e["member"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        streams_on.iter().all(|m| counted.contains(m)),
        "no drain saw a stream's connection: streams on {streams_on:?}, counted {counted:?}"
    );
    // Everything back: the file is the user's again, byte for byte.
    assert_eq!(nginx.upstream(), upstream);
    for m in names {
        assert_eq!(
            std::fs::read_to_string(d.join(format!("{m}.version")))
                .unwrap()
                .trim(),
            "1.1"
        );
        assert!(!d.join(format!("{m}.down")).exists());
    }
    let drains: Vec<_> = evs
        .iter()
        .filter(|e| e["step"] == "drain" && e["event"] == "step_finished")
        .map(|e| e["detail"].to_string())
        .collect();
    println!(
        "rolling run behind nginx: {} members in {:.1}s, {ok} requests, {failed} failed, max out of service {}, streams on {streams_on:?}; drains: {drains:?}",
        names.len(),
        took.as_secs_f64(),
        max_out.load(Ordering::SeqCst)
    );
}
