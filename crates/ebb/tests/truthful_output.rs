//! What ebb prints must be true: a FAILED line says where the member was left (held or
//! not, still in service when the balancer refused), how a command ended (never a Rust
//! `Option`), an unreachable balancer is not "0 in service", an interrupted step's time
//! ends when it stopped, and `status` says what to do next.

mod support;
use std::time::{Duration, Instant};
use support::*;

fn failing(step_run: &str) -> String {
    format!("\n[[runbook.step]]\nname = \"install\"\nrun = \"{step_run}\"\n")
}

fn failed_line(err: &str, member: &str) -> String {
    err.lines()
        .find(|l| l.contains(&format!("{member}: FAILED")))
        .unwrap_or_else(|| panic!("no FAILED line for {member} in:\n{err}"))
        .to_string()
}

#[test]
fn the_failed_line_says_whether_the_member_is_held_and_what_it_owes() {
    let f = Fixture::new(&["a", "b"]);
    let rb = failing("exit 4");
    // hold = false: not held.
    let pool = f.pool(
        "",
        &["a", "b"],
        &format!("[runbook.drain]\nhold = false\n{rb}"),
    );
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(1));
    let line = failed_line(&stderr(&o), "a");
    assert!(line.contains("exited with code 4"), "{line}");
    assert!(line.contains("it stays out of service"), "{line}");
    assert!(line.contains("not held"), "{line}");
    assert!(line.contains("owed undos: start in the balancer"), "{line}");
    assert!(!line.contains("held (initial"), "{line}");

    // With the hold (the default): held, and the hold is owed too.
    let f = Fixture::new(&["a", "b"]);
    let pool = f.pool("", &["a", "b"], &rb);
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    let line = failed_line(&stderr(&o), "a");
    assert!(line.contains("held (initial state stopped)"), "{line}");
    assert!(
        line.contains("start in the balancer, restore initial state started"),
        "{line}"
    );
    // `ebb status`, run where `.ebb/` is, finds the journal and says what to do next.
    let st = run(&["status"], f.dir.path());
    assert_eq!(st.status.code(), Some(0), "{}", stderr(&st));
    let out = stdout(&st);
    assert!(
        out.contains("start in the balancer") && !out.contains(" drain, hold"),
        "{out}"
    );
    assert!(
        out.contains("ebb resume") && out.contains("ebb release a"),
        "{out}"
    );
}

#[test]
fn when_the_balancer_refuses_the_member_is_said_to_be_still_in_service() {
    let f = Fixture::new(&["a", "b"]);
    std::fs::write(f.path("lb/a.refuse"), "").unwrap();
    let pool = f.pool("", &["a", "b"], &failing("true"));
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let line = failed_line(&stderr(&o), "a");
    assert!(line.contains("Permission denied"), "{line}");
    assert!(line.contains("it is still in service"), "{line}");
    assert!(line.contains("not held"), "{line}");
    assert_eq!(f.lb_state("a"), "started");
}

#[test]
fn a_command_killed_by_a_signal_says_which_never_an_option() {
    let f = Fixture::new(&["a"]);
    let pool = f.pool("", &["a"], &failing("kill -9 $$"));
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    let err = stderr(&o);
    assert!(err.contains("killed by signal 9 (SIGKILL)"), "{err}");
    for rust in ["Some(", "None"] {
        assert!(!err.contains(rust), "{rust} in: {err}");
    }
}

#[test]
fn an_unreachable_balancer_is_not_shown_as_nobody_in_service() {
    let members = ["a", "b", "c"];
    let f = Fixture::new(&members);
    // While a's step runs, the balancer cannot be reached for a while.
    let rb = failing(&format!(
        "touch {0}/lb/down; sleep 1.5; rm {0}/lb/down",
        f.dir.path().display()
    ));
    let pool = f.pool("max_unavailable = 1", &members, &rb);
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("pool: balancer unreachable"), "{err}");
    assert!(!err.contains("pool: 0 of 3 in service"), "{err}");
    let rep = run(&["report", "--json", pool.to_str().unwrap()], f.dir.path());
    let rep: serde_json::Value = serde_json::from_slice(&rep.stdout).unwrap();
    let fewest = rep["in_service"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["in_service"].as_u64())
        .min();
    assert_eq!(fewest, Some(2), "one member out at a time: {rep}");
}

/// Now, in ms since the Unix epoch, as ebb records times in its journal.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit")
}

/// Resumes the one-member pool with a step that succeeds; when the report says the
/// interrupted first run of "install" started and ended (unix ms).
fn resume_then_interrupted_install(f: &Fixture) -> (i64, i64) {
    let pool = f.pool("", &["a"], &failing("true"));
    let r = run(&["resume", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    let rep = run(&["report", "--json", pool.to_str().unwrap()], f.dir.path());
    let rep: serde_json::Value = serde_json::from_slice(&rep.stdout).unwrap();
    let first = rep["members"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "install")
        .cloned()
        .unwrap();
    assert_eq!(first["outcome"], "interrupted", "{first}");
    (
        first["started_ms"].as_i64().unwrap(),
        first["ended_ms"].as_i64().unwrap(),
    )
}

#[test]
fn an_interrupted_steps_time_ends_when_it_stopped_not_at_the_resume() {
    let f = Fixture::new(&["a"]);
    let rb = failing(&format!(
        "echo x >> {}/lb/started; sleep 30",
        f.dir.path().display()
    ));
    let pool = f.pool("", &["a"], &rb);
    let child = spawn(&["run"], &pool);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f.path("lb/started").exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling the ebb this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = wait_bounded(child, Duration::from_secs(30));
    // By the clock, not by a bound on how long a loaded machine takes to stop: the stopped
    // ebb recorded the step's end before it exited; the resume comes 3 s after that.
    let exited_ms = now_ms();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    // The operator comes back later.
    std::thread::sleep(Duration::from_secs(3));
    let (started, ended) = resume_then_interrupted_install(&f);
    assert!(
        started <= ended && ended <= exited_ms,
        "the step ran from {started} to {ended}; ebb had exited by {exited_ms}, the resume came 3 s later"
    );
}

#[test]
fn the_verdict_is_on_stdout_and_an_unnamed_wave_is_not_wave_wave() {
    let f = Fixture::new(&["a", "b"]);
    let pool = f.pool(
        "",
        &["a", "b"],
        "[[wave]]\nmembers = [\"a\"]\n\n[[wave]]\nmembers = [\"b\"]\n",
    );
    // `ebb report` and `ebb status` answer a journal without a run the same way.
    let other = f.other_pool(&pool);
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // `ebb run pool.toml > run.log` keeps the verdict.
    assert!(stdout(&o).contains("run 1 done"), "stdout: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("wave 2: b"), "{err}");
    assert!(!err.contains("wave wave"), "{err}");
    let plan = run(&["plan", pool.to_str().unwrap()], f.dir.path());
    assert!(!stdout(&plan).contains("wave wave"), "{}", stdout(&plan));
    for cmd in ["status", "report"] {
        let o = run(
            &[
                cmd,
                other.to_str().unwrap(),
                "--state-dir",
                f.path(".ebb").to_str().unwrap(),
            ],
            f.dir.path(),
        );
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", stderr(&o));
        assert!(stdout(&o).contains("no run yet"), "{cmd}: {}", stdout(&o));
    }
}

#[test]
fn after_a_release_status_and_report_no_longer_say_the_member_failed() {
    let f = Fixture::new(&["a", "b"]);
    let pool = f.pool("", &["a", "b"], &failing("exit 4"));
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(status(&pool)["run"]["message"]
        .as_str()
        .unwrap()
        .contains("\"a\" failed at"));
    let r = run(&["release", "a", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    let paid = "verify passed, undos paid: start in the balancer, restore initial state started";
    assert!(
        stdout(&r).contains("\"a\" released by ") && stdout(&r).contains(paid),
        "{}",
        stdout(&r)
    );
    assert_eq!(f.lb_state("a"), "started");
    let st = run(&["status", pool.to_str().unwrap()], f.dir.path());
    let report = run(&["report", pool.to_str().unwrap()], f.dir.path());
    for out in [stdout(&st), stdout(&report)] {
        let first = out.lines().next().unwrap_or_default();
        assert!(!first.contains("failed"), "{out}");
        assert!(
            first.contains("\"a\" released by ")
                && first.contains(" UTC: ")
                && first.contains(paid),
            "{out}"
        );
    }
}

#[test]
fn after_kill_9_with_nothing_left_running_an_interrupted_steps_time_ends_by_the_last_heartbeat() {
    let f = Fixture::new(&["a"]);
    // The step's shell records its pid, so that the test can end it as a crash of the
    // whole admin host would: ebb and the step both gone.
    let rb = failing(&format!(
        "echo $$ > {0}/lb/step.pid; exec sleep 60",
        f.dir.path().display()
    ));
    let pool = f.pool("", &["a"], &rb);
    let mut child = spawn(&["run"], &pool);
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Ok(p) = f.read("lb/step.pid").trim().parse::<i32>() {
            break p;
        }
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("kill -9 ebb");
    child.wait().expect("wait");
    let killed_ms = now_ms();
    // SAFETY: the step's own process (it exec'd sleep), started by this test's ebb.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // The operator comes back later.
    std::thread::sleep(Duration::from_secs(4));
    let (started, ended) = resume_then_interrupted_install(&f);
    // The killed ebb heartbeat at most 5 s before it died (here: when it took the lock,
    // just before the step, or once more while the step ran); the resume came 4 s after
    // the kill. Judged by the clock, so a slow machine cannot fail it.
    assert!(
        started <= ended && ended <= killed_ms,
        "ended by the last heartbeat, not at the resume: the step ran from {started} to {ended}; ebb was killed by {killed_ms}, the resume came 4 s later"
    );
}
