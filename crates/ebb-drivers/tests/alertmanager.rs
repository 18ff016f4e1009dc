//! Monitoring maintenance against a real Prometheus Alertmanager on loopback (started by the
//! test, clustering off): a silence per member while it is out, expired on return; a resumed
//! run expires the silence the journal recorded (and only that one); `[pool.gate]` holds
//! members while matching alerts fire, bounded; webhooks with JSON-escaped bodies.

mod support_issue6;
use support_issue6::*;

use ebb_drivers::http::request;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const T: Duration = Duration::from_secs(5);

async fn silences(am: &Alertmanager) -> Vec<Value> {
    let r = request(
        "GET",
        &format!("{}/api/v2/silences", am.url()),
        None,
        &[],
        T,
    )
    .await
    .expect("GET silences");
    serde_json::from_str::<Value>(&r.body)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn post_alert(am: &Alertmanager, labels: Value, lasts: Duration) {
    let now = SystemTime::now();
    let body = json!([{
        "labels": labels,
        "annotations": {"summary": "test alert"},
        "startsAt": ebb_drivers::maintenance::rfc3339(now - Duration::from_secs(1)),
        "endsAt": ebb_drivers::maintenance::rfc3339(now + lasts),
    }]);
    let r = request(
        "POST",
        &format!("{}/api/v2/alerts", am.url()),
        Some(&body.to_string()),
        &[],
        T,
    )
    .await
    .expect("POST alerts");
    assert_eq!(r.status, 200, "{}", r.body);
}

fn ms_of(rfc: &str) -> i64 {
    ebb_drivers::check::logs::line_time(rfc).expect("time") * 1000
}

fn pool(dir: &Path, pool_extra: &str, steps: &str) -> String {
    format!(
        "[pool]\nname = \"am\"\nmax_unavailable = 1\n{pool_extra}\n{}\n[[member]]\nname = \"web1\"\naddress = \"127.0.0.1:8081\"\n\n[[member]]\nname = \"web2\"\naddress = \"127.0.0.1:8082\"\n\n{steps}",
        file_balancer(dir, &["web1", "web2"])
    )
}

fn silence_step(am: &Alertmanager) -> String {
    format!(
        "[[runbook.step]]\nname = \"silence\"\nalertmanager = {{ url = \"{}\", matchers = {{ instance = \"{{address}}\", job = \"web\" }}, duration = \"1h\" }}\n\n",
        am.url()
    )
}

#[tokio::test]
async fn a_silence_covers_each_member_while_it_is_out_and_expires_on_return() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let text = pool(
        dir.path(),
        "",
        &format!(
            "{}[[runbook.step]]\nname = \"install\"\nrun = \"sleep 0.3\"\n",
            silence_step(&am)
        ),
    );
    let state = tempfile::tempdir().unwrap();
    let (code, log, journal) = rollout(load_plan(dir.path(), &text), state.path()).await;
    assert_eq!(code, 0, "{log}");
    let all = silences(&am).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    let run = journal.latest_run(Some("am")).unwrap().unwrap();
    for (m, addr) in [("web1", "127.0.0.1:8081"), ("web2", "127.0.0.1:8082")] {
        let acts = journal.actions(run.id, Some(m)).unwrap();
        let step = acts.iter().find(|a| a.name == "silence").unwrap();
        let id = step
            .detail
            .strip_prefix("silence ")
            .expect("silence id in the journal");
        let s = all
            .iter()
            .find(|s| s["id"] == id)
            .expect("that silence exists");
        assert_eq!(s["status"]["state"], "expired", "{s:#}");
        let matchers = s["matchers"].as_array().unwrap();
        assert!(matchers
            .iter()
            .any(|x| x["name"] == "instance" && x["value"] == addr && x["isRegex"] == false));
        assert!(s["comment"]
            .as_str()
            .unwrap()
            .contains(&format!("member {m} step silence")));
        // Silenced from before the update until after the member was back.
        let install = acts.iter().find(|a| a.name == "install").unwrap();
        let ret = acts.iter().find(|a| a.kind.as_str() == "return").unwrap();
        let (starts, ends) = (
            ms_of(s["startsAt"].as_str().unwrap()),
            ms_of(s["endsAt"].as_str().unwrap()),
        );
        assert!(
            starts <= install.started_ms + 1000,
            "{m}: silenced before the install"
        );
        assert!(
            ends >= install.ended_ms.unwrap() - 1000,
            "{m}: until after it"
        );
        assert!(
            ends <= ret.ended_ms.unwrap() + 1000,
            "{m}: expired on return"
        );
    }
}

#[tokio::test]
async fn a_resumed_run_expires_the_silence_recorded_in_the_journal_and_only_it() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed");
    // Someone else's silence on the same instance must survive ebb's return.
    let now = SystemTime::now();
    let decoy = json!({
        "matchers": [{"name": "instance", "value": "127.0.0.1:8081", "isRegex": false, "isEqual": true}],
        "startsAt": ebb_drivers::maintenance::rfc3339(now),
        "endsAt": ebb_drivers::maintenance::rfc3339(now + Duration::from_secs(3600)),
        "createdBy": "someone", "comment": "disk replacement",
    });
    let r = request(
        "POST",
        &format!("{}/api/v2/silences", am.url()),
        Some(&decoy.to_string()),
        &[],
        T,
    )
    .await
    .unwrap();
    let decoy_id = serde_json::from_str::<Value>(&r.body).unwrap()["silenceID"]
        .as_str()
        .unwrap()
        .to_string();
    let text = pool(
        dir.path(),
        "",
        &format!(
            "{}[[runbook.step]]\nname = \"install\"\nrun = \"test -f {}\"\n",
            silence_step(&am),
            fixed.display()
        ),
    );
    let state = tempfile::tempdir().unwrap();
    let (code, log, journal) = rollout(load_plan(dir.path(), &text), state.path()).await;
    assert_eq!(code, 1, "install fails first: {log}");
    let run = journal.latest_run(Some("am")).unwrap().unwrap();
    let id = journal
        .actions(run.id, Some("web1"))
        .unwrap()
        .into_iter()
        .find(|a| a.name == "silence")
        .unwrap()
        .detail
        .strip_prefix("silence ")
        .unwrap()
        .to_string();
    let state_of = |all: &[Value], id: &str| {
        all.iter()
            .find(|s| s["id"] == id)
            .map(|s| s["status"]["state"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        state_of(&silences(&am).await, &id).as_deref(),
        Some("active"),
        "the failed member stays silenced"
    );
    drop(journal);
    std::fs::write(&fixed, "").unwrap();
    let opts = ebb_engine::run::RunOptions {
        resume: true,
        ..Default::default()
    };
    let (code, log, _) = rollout_with(load_plan(dir.path(), &text), state.path(), opts).await;
    assert_eq!(code, 0, "{log}");
    let all = silences(&am).await;
    assert_eq!(state_of(&all, &id).as_deref(), Some("expired"), "{all:#?}");
    assert_eq!(state_of(&all, &decoy_id).as_deref(), Some("active"));
    // One silence per member made by ebb: the resume did not silence web1 twice.
    let ebb_made = all.iter().filter(|s| s["createdBy"] == "ebb").count();
    assert_eq!(ebb_made, 2, "{all:#?}");
}

#[tokio::test]
async fn the_gate_holds_members_while_matching_alerts_fire() {
    let am = Alertmanager::start();
    // A matching alert that lasts: the run stops before anything is drained.
    post_alert(
        &am,
        json!({"alertname": "HighErrorRate", "severity": "critical", "service": "web"}),
        Duration::from_secs(600),
    )
    .await;
    // Not matching (severity), and matching but silenced: neither holds the gate.
    post_alert(
        &am,
        json!({"alertname": "DiskFilling", "severity": "warning"}),
        Duration::from_secs(600),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let gate = |timeout: &str| {
        format!(
            "\n[pool.gate]\nalertmanager = \"{}\"\nmatchers = {{ severity = \"critical\", alertname = \"~High.*\" }}\ntimeout = \"{timeout}\"\npoll_interval = \"200ms\"\n",
            am.url()
        )
    };
    let steps = "[[runbook.step]]\nname = \"install\"\nrun = \"true\"\n";
    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, log, _) = rollout(
        load_plan(dir.path(), &pool(dir.path(), &gate("1s"), steps)),
        state.path(),
    )
    .await;
    let held = started.elapsed();
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("[pool.gate] holds \"web1\": 1 alert(s) firing"),
        "{log}"
    );
    assert!(log.contains("HighErrorRate{"), "the alert is named: {log}");
    assert!(!log.contains("DiskFilling"), "{log}");
    assert!(
        !dir.path().join("lb/transitions.log").exists(),
        "nothing was drained: {log}"
    );
    assert!(
        held >= Duration::from_secs(1) && held < Duration::from_secs(5),
        "{held:?}"
    );

    // The alert resolves while the member waits: the run goes on.
    let am2 = Alertmanager::start();
    post_alert(
        &am2,
        json!({"alertname": "HighErrorRate", "severity": "critical"}),
        Duration::from_secs(2),
    )
    .await;
    // Matching but silenced: does not hold.
    post_alert(
        &am2,
        json!({"alertname": "HighLatency", "severity": "critical", "silenced": "yes"}),
        Duration::from_secs(600),
    )
    .await;
    let am_silence = ebb_drivers::maintenance::Alertmanager::new(&am2.url());
    let mut m = std::collections::BTreeMap::new();
    m.insert("silenced".to_string(), "yes".to_string());
    am_silence
        .create_silence(&m, Duration::from_secs(600), "test")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = pool(dir.path(), &gate("30s"), steps).replace(&am.url(), &am2.url());
    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, log, _) = rollout(load_plan(dir.path(), &text), state.path()).await;
    let waited = started.elapsed();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("Waiting"), "{log}");
    assert!(
        !log.contains("HighLatency"),
        "a silenced alert does not hold: {log}"
    );
    eprintln!("gate: held 1 s then stopped in {held:?}; opened after the alert resolved: run took {waited:?}");
}

/// A small HTTP server that records each request: method, path, headers and body.
async fn recorder() -> (u16, Arc<Mutex<Vec<(String, String, String)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            let first = head.lines().next().unwrap_or("").to_string();
                            seen.lock()
                                .unwrap()
                                .push((first, head.to_string(), body.to_string()));
                            break;
                        }
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_webhook_begins_and_ends_maintenance_with_json_escaped_values() {
    let (port, seen) = recorder().await;
    let dir = tempfile::tempdir().unwrap();
    let steps = format!(
        "[[runbook.step]]\nname = \"monitoring\"\nwebhook = {{ url = \"http://127.0.0.1:{port}/maintenance/{{member}}\", body = '{{{{\"host\": \"{{member}}\", \"note\": \"{{var.note}}\", \"on\": true}}}}', undo_body = {{ host = \"{{member}}\", on = false }}, headers = {{ authorization = \"Bearer t0k\" }} }}\n\n\
         [[runbook.step]]\nname = \"install\"\nrun = \"true\"\n"
    );
    let text = pool(dir.path(), "", &steps).replacen(
        "[[member]]",
        "[defaults]\nvars = { note = 'say \"hi\"\\back' }\n\n[[member]]",
        1,
    );
    let state = tempfile::tempdir().unwrap();
    let (code, log, _) = rollout(load_plan(dir.path(), &text), state.path()).await;
    assert_eq!(code, 0, "{log}");
    let seen = seen.lock().unwrap().clone();
    let calls: Vec<(String, Value)> = seen
        .iter()
        .map(|(first, head, body)| {
            assert!(
                head.to_ascii_lowercase()
                    .contains("authorization: bearer t0k"),
                "{head}"
            );
            (
                first.clone(),
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")),
            )
        })
        .collect();
    assert_eq!(calls.len(), 4, "{calls:#?}");
    assert_eq!(calls[0].0, "POST /maintenance/web1 HTTP/1.1");
    assert_eq!(
        calls[0].1,
        json!({"host": "web1", "note": "say \"hi\"\\back", "on": true})
    );
    assert_eq!(calls[1].1, json!({"host": "web1", "on": false}));
    assert_eq!(calls[2].1["host"], "web2");
    assert_eq!(calls[3].1, json!({"host": "web2", "on": false}));
}

#[tokio::test]
async fn an_interrupted_run_resumes_without_a_second_silence_and_expires_the_first() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let text = pool(
        dir.path(),
        "",
        &format!(
            "{}[[runbook.step]]\nname = \"install\"\nrun = \"sleep 3\"\n",
            silence_step(&am)
        ),
    );
    let state = tempfile::tempdir().unwrap();
    interrupt_after(state.path(), Duration::from_millis(1500));
    let (code, log, _) = rollout(load_plan(dir.path(), &text), state.path()).await;
    assert_eq!(code, 130, "interrupted during web1's install: {log}");
    let active: Vec<Value> = silences(&am)
        .await
        .into_iter()
        .filter(|s| s["status"]["state"] == "active")
        .collect();
    assert_eq!(
        active.len(),
        1,
        "web1 stays silenced while interrupted: {active:#?}"
    );
    let opts = ebb_engine::run::RunOptions {
        resume: true,
        ..Default::default()
    };
    let (code, log, _) = rollout_with(load_plan(dir.path(), &text), state.path(), opts).await;
    assert_eq!(code, 0, "{log}");
    let all = silences(&am).await;
    assert_eq!(all.len(), 2, "one silence per member: {all:#?}");
    assert!(
        all.iter().all(|s| s["status"]["state"] == "expired"),
        "{all:#?}"
    );
}

#[tokio::test]
async fn a_begin_repeated_after_a_crash_reuses_its_silence_and_an_end_without_an_id_finds_it() {
    use ebb_engine::registry::MaintenanceKind;
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let text = pool(dir.path(), "", &silence_step(&am));
    let plan = load_plan(dir.path(), &text);
    let spec = plan.runbook.steps[0].maintenance.clone().unwrap();
    let m = &plan.members[0];
    let driver = ebb_drivers::maintenance::alertmanager::AlertmanagerKind
        .build(&plan, &spec)
        .unwrap();
    let key = "ebb pool am run 7 member web1 step silence";
    let first = driver.begin(m, key).await.unwrap();
    let again = driver.begin(m, key).await.unwrap();
    assert_eq!(first, again, "the repeated begin found its silence");
    let other = driver
        .begin(
            &plan.members[1],
            "ebb pool am run 7 member web2 step silence",
        )
        .await
        .unwrap();
    assert_ne!(first, other);
    // ebb died before the id reached the journal: the end finds the silence by its key.
    let ended = driver.end(m, key, "").await.unwrap();
    assert_eq!(ended, format!("expired {first}"));
    let all = silences(&am).await;
    let state = |tok: &str| {
        let id = tok.strip_prefix("silence ").unwrap();
        all.iter().find(|s| s["id"] == id).unwrap()["status"]["state"].clone()
    };
    assert_eq!(state(&first), "expired");
    assert_eq!(
        state(&other),
        "active",
        "another member's silence is not touched"
    );
    // Ending twice is fine.
    driver.end(m, key, &first).await.unwrap();
}
