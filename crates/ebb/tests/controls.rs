//! Issue 14's smaller controls through the binary: a drain that does not end is skipped
//! (`on_timeout = "skip"`), `status`/`report` list the skipped member, and
//! `ebb run --only-skipped` updates it later; a step with `retries` is tried again.

mod support;
use support::*;

#[test]
fn a_skipped_member_is_listed_by_status_and_report_and_done_by_only_skipped() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    std::fs::write(f.path("lb/a.conns"), "3\n").unwrap();
    let rb = RUNBOOK.replace(
        "timeout = \"10s\"",
        "timeout = \"1s\"\non_timeout = \"skip\"",
    );
    let pool = f.pool("", &members, &rb);
    let o = ebb().arg("run").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // a went back untouched, b was updated.
    assert_eq!(f.lb_state("a"), "started");
    assert_eq!(f.lb_initial("a"), "started");
    assert!(!f.path("lb/a.version").exists());
    assert_eq!(f.read("lb/b.version").trim(), "1.1");
    let st = status(&pool);
    assert_eq!(st["skipped"], serde_json::json!(["a"]), "{st}");
    assert_eq!(member(&st, "a")["state"], "skipped");
    let human = ebb().arg("status").arg(&pool).output().unwrap();
    assert!(
        stdout(&human).contains("skipped, not updated: a"),
        "{}",
        stdout(&human)
    );
    let report = ebb().arg("report").arg(&pool).output().unwrap();
    assert!(
        stdout(&report).contains("a (skipped)"),
        "{}",
        stdout(&report)
    );

    // The connections are gone: a run of only the skipped members updates a, not b.
    std::fs::remove_file(f.path("lb/a.conns")).unwrap();
    let b_runs = f.read("lb/b.install.log").lines().count();
    let o = ebb()
        .args(["run", "--only-skipped"])
        .arg(&pool)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(f.read("lb/a.version").trim(), "1.1");
    assert_eq!(f.read("lb/b.install.log").lines().count(), b_runs);
    let st = status(&pool);
    assert_eq!(member(&st, "a")["state"], "done", "{st}");
    assert_eq!(st["skipped"], serde_json::json!([]), "{st}");
}

#[test]
fn a_step_with_retries_succeeds_on_a_later_attempt() {
    let members = ["a"];
    let f = Fixture::new(&members);
    // Fails on its first run, succeeds on the second.
    let rest = r#"
[[runbook.step]]
name = "flaky"
run = "if [ -f {var.dir}/lb/{member}.tried ]; then exit 0; fi; touch {var.dir}/lb/{member}.tried; exit 7"
retries = 2
retry_interval = "0s"
"#;
    let pool = f.pool("", &members, rest);
    let o = ebb().arg("run").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("attempt 2 of 3") || stdout(&o).contains("attempt 2 of 3"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let report = ebb()
        .args(["report", "--json"])
        .arg(&pool)
        .output()
        .unwrap();
    let text = stdout(&report);
    assert_eq!(text.matches("\"flaky\"").count(), 2, "{text}");
}

fn gated_runbook(timeout: &str) -> String {
    format!(
        r#"
[runbook.drain]
timeout = "{timeout}"
on_timeout = "abort"
until = [ {{ name = "queue", command = "test ! -s {{var.dir}}/lb/{{member}}.queue", interval = "100ms" }} ]

[[runbook.step]]
name = "install"
run = "test ! -s {{var.dir}}/lb/{{member}}.queue && echo 1.1 > {{var.dir}}/lb/{{member}}.version"
"#
    )
}

fn events(o: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_member_whose_queue_empties_later_is_held_in_the_drain_until_it_does() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let queue = f.path("lb/a.queue");
    std::fs::write(&queue, "3 messages\n").unwrap();
    let pool = f.pool("", &members, &gated_runbook("60s"));
    let child = spawn(&["run", "--json"], &pool);
    // Empty the queue once ebb shows a drained and waiting on the gate.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while f.lb_state("a") != "stopped" {
        assert!(std::time::Instant::now() < deadline, "a never drained");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !f.path("lb/a.version").exists(),
        "a went on with its queue full"
    );
    std::fs::write(&queue, "").unwrap();
    let o = wait_bounded(child, std::time::Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(f.read("lb/a.version").trim(), "1.1");
    assert_eq!(f.read("lb/b.version").trim(), "1.1");
    let ev = events(&o);
    assert!(
        ev.iter().any(|e| e["event"] == "waiting"
            && e["member"] == "a"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("drain gate \"queue\" is still closed"))),
        "{}",
        stdout(&o)
    );
    assert!(!ev
        .iter()
        .any(|e| e["event"] == "waiting" && e["member"] == "b"));
}

#[test]
fn a_queue_that_never_empties_hits_the_drain_timeout_and_on_timeout() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    std::fs::write(f.path("lb/a.queue"), "3 messages\n").unwrap();
    let pool = f.pool("", &members, &gated_runbook("1s"));
    let o = ebb().arg("run").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let st = status(&pool);
    let a = member(&st, "a");
    assert_eq!(a["state"], "failed", "{st}");
    assert_eq!(a["step"], "drain", "{st}");
    assert!(
        a["reason"]
            .as_str()
            .is_some_and(|r| r.contains("drain gate \"queue\" still closed")),
        "{st}"
    );
    assert!(!f.path("lb/a.version").exists());
    assert_eq!(member(&st, "b")["state"], "pending");
}
