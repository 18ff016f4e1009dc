//! A whole rolling run through the engine over members behind a real nginx, under steady
//! HTTP load with long-lived streams: every member is held (`down`), drained (waiting for
//! its stream to close), its service stopped and updated, verified and returned, and not
//! one request fails.

mod support;

use ebb_engine::events::{Event, EventSink};
use ebb_engine::journal::Journal;
use ebb_engine::run::{run, RunOptions};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
        r#"[pool]
name = "web"
max_unavailable = {max_unavailable}
min_in_service = 2
capacity_wait = "20s"

{balancer}
[defaults]
vars = {{ dir = "{dir}", version = "1.1" }}

[runbook]
rejoin_timeout = "10s"

[runbook.drain]
mode = "drainstop"
timeout = "20s"
on_timeout = "abort"
hold = true

[[runbook.step]]
name = "stop service"
run = "touch {{var.dir}}/{{member}}.down"
undo = "rm -f {{var.dir}}/{{member}}.down"

[[runbook.step]]
name = "install"
run = "sleep 0.3; echo {{var.version}} > {{var.dir}}/{{member}}.version"

[[runbook.verify]]
name = "version"
command = "grep -qx {{var.version}} {{var.dir}}/{{member}}.version"

[[pool.check]]
name = "port"
tcp = "{{address}}"
retries = 20
interval = "100ms"

"#,
        balancer = balancer_toml(&nginx),
        dir = d.display()
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

    // Steady short requests, plus long streams opened before the run that outlive the
    // start of their member's drain by more than a second: none may be cut.
    let load = WebLoad::start(&nginx.frontend, 4, Duration::from_millis(5));
    let mut streams = Vec::new();
    for _ in 0..names.len() {
        streams.push(LongStream::open(&nginx.frontend).await.unwrap());
    }
    let stream_task = tokio::spawn(async move {
        // Each stream is checked alive for ~1.5 s, then closed by its client.
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(1500) {
            for s in &streams {
                if !s.alive().await {
                    return Err(format!("the stream to {} was cut", s.member));
                }
            }
        }
        let on: Vec<String> = streams.iter().map(|s| s.member.clone()).collect();
        for s in streams {
            s.close();
        }
        Ok(on)
    });

    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let sink: EventSink = Arc::new(move |e: &Event| {
        ev.lock().unwrap().push(serde_json::to_value(e).unwrap());
    });
    let drivers = ebb_drivers::build(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    let journal = Arc::new(Journal::open(&d.join(".ebb")).unwrap());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let outcome = run(
        Arc::new(plan),
        drivers,
        journal,
        sink,
        RunOptions::default(),
        rx,
    )
    .await
    .unwrap();
    let took = started.elapsed();
    let streams_on = stream_task.await.unwrap();
    let load_errors = load.errors.clone();
    let (ok, failed) = load.finish().await;
    stop_watch.store(true, Ordering::SeqCst);
    watcher.join().unwrap();

    let evs = events.lock().unwrap();
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
        streams_on.iter().any(|m| counted.contains(m)),
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
