//! SIGHUP (a closed terminal, a dropped ssh session to the admin host) is a safe-point stop
//! like Ctrl-C: the running step's commands are ended, the run is halted, the exit code is
//! 129. `ebb abort` from another terminal stops the run and the stopped ebb says what is
//! true: aborted, resume will refuse, release each member.

mod support;
use std::time::{Duration, Instant};
use support::*;

/// A step that records the pid of the `sleep` it started, then waits for it.
const STEP: &str = r#"
[[runbook.step]]
name = "install"
run = "echo start >> {var.dir}/lb/{member}.log; sleep 30 & echo $! > {var.dir}/lb/{member}.sleep; wait"
"#;

fn wait_for_file(f: &Fixture, rel: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = f.read(rel);
        if !s.trim().is_empty() {
            return s.trim().to_string();
        }
        assert!(Instant::now() < deadline, "{rel} never written");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[test]
fn sighup_stops_at_a_safe_point_with_no_orphaned_command() {
    let f = Fixture::new(&["a", "b"]);
    let pool = f.pool("", &["a", "b"], STEP);
    let child = spawn(&["run"], &pool);
    let sleep_pid = wait_for_file(&f, "lb/a.sleep");
    assert!(alive(&sleep_pid), "the step's sleep runs");
    // SAFETY: signalling the ebb this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let o = wait_bounded(child, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(129), "{err}");
    assert!(err.contains("SIGHUP"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&sleep_pid) {
        assert!(
            Instant::now() < deadline,
            "the step's sleep {sleep_pid} was left running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "halted", "{st}");
    assert_eq!(member(&st, "a")["state"], "out", "{st}");
    // The journal says where: resume continues (and the step is run again).
    let o = spawn(&["resume"], &pool);
    let sleep2 = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = f.read("lb/a.sleep").trim().to_string();
            if s != sleep_pid && !s.is_empty() {
                break s;
            }
            assert!(Instant::now() < deadline, "resume did not rerun the step");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // SAFETY: as above.
    unsafe { libc::kill(o.id() as i32, libc::SIGTERM) };
    let out = wait_bounded(o, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(&sleep2) {
        assert!(Instant::now() < deadline, "sleep {sleep2} left running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn abort_from_another_terminal_says_what_is_true() {
    let f = Fixture::new(&["a", "b"]);
    let pool = f.pool("", &["a", "b"], STEP);
    let child = spawn(&["run"], &pool);
    wait_for_file(&f, "lb/a.sleep");
    let a = run(&["abort", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    let o = wait_bounded(child, Duration::from_secs(60));
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !err.contains("`ebb resume` continues"),
        "the aborted run is not resumable: {err}"
    );
    assert!(
        err.contains("aborted")
            && err.contains("`ebb resume` will refuse")
            && err.contains("ebb release"),
        "{err}"
    );
    // And it is true: resume refuses, the member waits for release.
    let r = run(&["resume", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("aborted"), "{}", stderr(&r));
}
