//! After `kill -9` of ebb, the step it was running goes on by itself. `ebb resume` must
//! find that very process (the journal recorded it), and wait for it to end, or with
//! `--kill-running` stop it, before anything else touches the member: never two copies of
//! a step on one member.

mod support;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

/// The issue's recipe: each run of the step logs `start PID` and `end PID`. The first
/// copy on `a` sleeps SLEEP seconds (long enough to be still running however loaded the machine
/// is when resume looks), later copies a moment.
const STEP: &str = r#"
[[runbook.step]]
name = "install"
run = "echo start $$ >> {var.dir}/lb/{member}.log; if [ {member} = a ] && [ ! -f {var.dir}/lb/a.first ]; then touch {var.dir}/lb/a.first; sleep SLEEP; else sleep 0.2; fi; echo end $$ >> {var.dir}/lb/{member}.log"
timeout = "1m"
"#;

/// Starts `ebb run`, waits until member `a`'s step has started, and kills ebb with
/// SIGKILL: the step's shell goes on without it.
fn run_and_kill_9(f: &Fixture, pool: &std::path::Path) {
    let mut child = ebb()
        .arg("run")
        .arg(pool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ebb");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f.read("lb/a.log").contains("start") {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    child.wait().expect("wait");
}

fn log_lines(f: &Fixture) -> Vec<(String, String)> {
    f.read("lb/a.log")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(w, p)| (w.to_string(), p.to_string()))
        .collect()
}

#[test]
fn resume_waits_for_the_step_a_killed_ebb_left_running() {
    let f = Fixture::new(&["a", "b"]);
    let pool = f.pool("", &["a", "b"], &STEP.replace("SLEEP", "4"));
    run_and_kill_9(&f, &pool);
    // At once: the first copy is still sleeping.
    let o = ebb().arg("resume").arg(&pool).output().expect("resume");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("still running") && err.contains("waiting for it to end"),
        "resume says that it waits: {err}"
    );
    assert!(err.contains("ended after ebb waited"), "{err}");
    let log = log_lines(&f);
    assert_eq!(log.len(), 4, "{log:?}");
    let (a, b) = (&log[0].1, &log[2].1);
    assert_ne!(a, b, "two different runs of the step: {log:?}");
    assert_eq!(
        log,
        [
            ("start".to_string(), a.clone()),
            ("end".to_string(), a.clone()),
            ("start".to_string(), b.clone()),
            ("end".to_string(), b.clone()),
        ],
        "the second copy starts only after the first ended"
    );
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "done", "{st}");
    assert_eq!(f.lb_state("a"), "started");
    // The interrupted step's time ends when it ended, not when resume ran on.
    let rep = ebb()
        .args(["report", "--json"])
        .arg(&pool)
        .output()
        .expect("report");
    let rep: serde_json::Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    let steps = rep["members"][0]["steps"]
        .as_array()
        .expect("steps")
        .clone();
    let first = steps
        .iter()
        .find(|s| s["name"] == "install")
        .expect("install");
    assert_eq!(first["outcome"], "interrupted", "{first}");
    let took = first["ended_ms"].as_i64().unwrap() - first["started_ms"].as_i64().unwrap();
    assert!(
        (3_500..15_000).contains(&took),
        "the first copy ran ~4 s, recorded {took} ms"
    );
}

#[test]
fn resume_with_kill_running_stops_the_left_over_step_first() {
    let f = Fixture::new(&["a", "b"]);
    let pool = f.pool("", &["a", "b"], &STEP.replace("SLEEP", "30"));
    run_and_kill_9(&f, &pool);
    let o = ebb()
        .args(["resume", "--kill-running"])
        .arg(&pool)
        .output()
        .expect("resume");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("stopping it (--kill-running)"), "{err}");
    let log = log_lines(&f);
    let a = log[0].1.clone();
    assert!(
        !log.contains(&("end".to_string(), a.clone())),
        "the first copy was killed, it never ended by itself: {log:?}"
    );
    assert_eq!(log.iter().filter(|l| l.0 == "start").count(), 2, "{log:?}");
    assert_eq!(status(&pool)["run"]["state"], "done");
    assert!(!f.read("lb/a.log").contains(&format!("end {a}")));
}
