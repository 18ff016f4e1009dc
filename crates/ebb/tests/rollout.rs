//! End-to-end rollouts through the real `ebb` binary against a balancer made of state files
//! (`tests/support`: every transition logged with a timestamp): the order of operations, the
//! policy, failure holds, release, abort, the lock, drains and reboots as a user sees them,
//! through the CLI, the pool-file reader, the journal and the `local` transport together.
//! The scheduler's own logic is tested in process, instant by instant, in
//! `crates/ebb-engine/tests/engine/`.

mod support;
use support::*;

#[test]
fn a_full_run_updates_every_member_one_at_a_time_and_pays_every_undo() {
    let members = ["a", "b", "c", "d"];
    let f = Fixture::new(&members);
    let pool = f.pool("max_unavailable = 1\nmin_in_service = 3", &members, RUNBOOK);
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(f.max_out_at_once(), 1, "transitions: {:?}", f.transitions());
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "done");
    for m in members {
        assert_eq!(f.lb_state(m), "started", "{m} back in service");
        assert_eq!(f.lb_initial(m), "started", "{m} hold released");
        assert_eq!(f.read(&format!("lb/{m}.version")).trim(), "1.1");
        assert!(
            !f.path(&format!("lb/{m}.maint")).exists(),
            "{m}: maint undo ran"
        );
        let mm = member(&st, m);
        assert_eq!(mm["state"], "done");
        assert_eq!(mm["owed_undos"].as_array().map(|a| a.len()), Some(0));
    }
    // The hold goes on before the drain and comes off after the start, for each member.
    let t: Vec<String> = f
        .transitions()
        .iter()
        .filter(|x| x.1 == "a")
        .map(|x| x.2.clone())
        .collect();
    assert_eq!(t, ["initial=stopped", "out", "in", "initial=started"]);
}

#[test]
fn a_failed_update_leaves_that_member_held_with_its_undos_owed_and_the_rest_untouched() {
    let members = ["a", "b", "c"];
    let f = Fixture::new(&members);
    let rb = RUNBOOK.replace(
        "echo start >>",
        "if [ {member} = b ] && [ ! -f {var.dir}/fixed ]; then echo broken >&2; exit 7; fi; echo start >>",
    );
    let pool = f.pool("min_in_service = 1", &members, &rb);
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("exited with code 7"), "{}", stderr(&o));
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "halted");
    let b = member(&st, "b");
    assert_eq!(b["state"], "failed");
    assert_eq!(b["step"], "install");
    assert_eq!(
        b["owed_undos"],
        serde_json::json!(["maint", "drain", "hold"])
    );
    assert_eq!(f.lb_state("b"), "stopped");
    assert_eq!(f.lb_initial("b"), "stopped", "held");
    assert!(f.path("lb/b.maint").exists(), "undo still owed, not run");
    assert_eq!(member(&st, "c")["state"], "pending");
    assert!(
        f.transitions().iter().all(|t| t.1 != "c"),
        "c untouched: {:?}",
        f.transitions()
    );
    // `ebb report` lists the failed step with its exit code.
    let r = run(&["report", pool.to_str().unwrap()], f.dir.path());
    assert!(
        stdout(&r).contains("failed") && stdout(&r).contains("exit 7"),
        "{}",
        stdout(&r)
    );

    // Fix the cause; resume retries from the failed step and finishes.
    std::fs::write(f.path("fixed"), "").unwrap();
    let o = run(&["resume", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "done");
    for m in members {
        assert_eq!(f.lb_state(m), "started");
        assert_eq!(f.lb_initial(m), "started");
        assert!(!f.path(&format!("lb/{m}.maint")).exists());
    }
    assert_eq!(f.max_out_at_once(), 1);
}

#[test]
fn release_verifies_then_unwinds_a_failed_member_and_refuses_when_verify_fails() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let rb = RUNBOOK.replace(
        "echo start >>",
        "if [ {member} = a ]; then exit 3; fi; echo start >>",
    );
    let pool = f.pool("", &members, &rb);
    let p = pool.to_str().unwrap();
    assert_eq!(run(&["run", p], f.dir.path()).status.code(), Some(1));
    // The version file is missing: verification fails, the member stays out.
    let o = run(&["release", "a", p], f.dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(f.lb_state("a"), "stopped");
    assert_eq!(
        member(&status(&pool), "a")["owed_undos"],
        serde_json::json!(["maint", "drain", "hold"])
    );
    // Fixed by hand: release returns it.
    std::fs::write(f.path("lb/a.version"), "1.1\n").unwrap();
    let o = run(&["release", "a", p], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(f.lb_state("a"), "started");
    assert_eq!(f.lb_initial("a"), "started");
    assert!(!f.path("lb/a.maint").exists());
    let st = status(&pool);
    assert_eq!(member(&st, "a")["state"], "done");
    assert_eq!(member(&st, "a")["owed_undos"], serde_json::json!([]));
}

#[test]
fn capacity_with_one_member_already_out_drains_nothing_and_exits_1() {
    let members = ["a", "b", "c"];
    let f = Fixture::new(&members);
    // Someone else took c out.
    std::fs::write(f.path("lb/c.state"), "stopped\n").unwrap();
    let pool = f.pool(
        "min_in_service = 2\ncapacity_wait = \"1s\"",
        &members,
        RUNBOOK,
    );
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // The verdict is on stdout, the progress on stderr.
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        err.contains("out of service now: c"),
        "names the member that is out: {err}"
    );
    assert!(err.contains("capacity_wait"), "{err}");
    assert!(
        f.transitions().is_empty(),
        "nothing drained: {:?}",
        f.transitions()
    );
}

#[test]
fn max_unavailable_two_runs_members_in_parallel_never_more_than_two() {
    let members = ["a", "b", "c", "d", "e"];
    let f = Fixture::new(&members);
    let pool = f.pool("max_unavailable = 2\nmin_in_service = 2", &members, RUNBOOK);
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        f.max_out_at_once(),
        2,
        "parallel up to the bound: {:?}",
        f.transitions()
    );
}

#[test]
fn a_wave_with_pause_after_stops_with_exit_0_until_resume() {
    let members = ["a", "b", "c"];
    let f = Fixture::new(&members);
    let rest =
        format!("{RUNBOOK}\n[[wave]]\nname = \"canary\"\nmembers = [\"a\"]\npause_after = true\n");
    let pool = f.pool("", &members, &rest);
    let p = pool.to_str().unwrap();
    let o = run(&["run", p], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "paused");
    assert_eq!(member(&st, "a")["state"], "done");
    assert_eq!(member(&st, "b")["state"], "pending");
    // A new run is refused while this one is unfinished.
    let o = run(&["run", p], f.dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ebb resume"), "{}", stderr(&o));
    let o = ebb()
        .args(["resume", "--state-dir"])
        .arg(f.path(".ebb"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(status(&pool)["run"]["state"], "done");
}

#[test]
fn a_second_run_on_a_locked_pool_is_refused_with_the_holders_pid() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let rb = RUNBOOK.replace("sleep 0.2", "sleep 3");
    let pool = f.pool("", &members, &rb);
    let p = pool.to_str().unwrap().to_string();
    let mut first = ebb()
        .args(["run", &p])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first run holds the lock (it is inside the install step).
    for _ in 0..100 {
        if f.path("lb/a.install.log").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = run(&["resume", &p], f.dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("pid {}", first.id())),
        "{}",
        stderr(&o)
    );
    // Ctrl-C stops it at a safe point; the journal says where.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    let code = first.wait().unwrap().code();
    assert_eq!(code, Some(130));
    assert_eq!(status(&pool)["run"]["state"], "halted");
    let o = run(&["resume", &p], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn abort_leaves_members_where_they_are_and_lists_what_they_owe() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let rb = RUNBOOK.replace("echo start >>", "exit 1; echo start >>");
    let pool = f.pool("", &members, &rb);
    let p = pool.to_str().unwrap();
    assert_eq!(run(&["run", p], f.dir.path()).status.code(), Some(1));
    let o = run(&["abort", p, "--json"], f.dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["run"]["state"], "aborted");
    assert_eq!(
        member(&v, "a")["owed_undos"],
        serde_json::json!(["maint", "drain", "hold"])
    );
    assert_eq!(f.lb_state("a"), "stopped", "left where it was");
    // A new run is refused until the member is released.
    let o = run(&["run", p], f.dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ebb release"), "{}", stderr(&o));
}

#[test]
fn a_drain_that_never_ends_is_cut_by_on_timeout_stop_or_fails_with_abort() {
    let members = ["a", "b"];
    for (policy, code) in [("stop", 0), ("abort", 1)] {
        let f = Fixture::new(&members);
        std::fs::write(f.path("lb/a.conns"), "3\n").unwrap();
        let rb = RUNBOOK.replace(
            "timeout = \"10s\"",
            &format!("timeout = \"1s\"\non_timeout = \"{policy}\""),
        );
        let pool = f.pool("", &members, &rb);
        let o = ebb().args(["run", "--json"]).arg(&pool).output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{policy}: {}", stderr(&o));
        let events: Vec<serde_json::Value> = stdout(&o)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(
            events.iter().any(|e| e["event"] == "drain_progress"
                && e["member"] == "a"
                && e["active_connections"] == 3),
            "live connection count shown"
        );
        if policy == "stop" {
            assert_eq!(f.lb_state("a"), "started");
            let drain = events
                .iter()
                .find(|e| e["event"] == "step_finished" && e["step"] == "drain")
                .unwrap();
            assert!(
                drain["detail"]
                    .as_str()
                    .unwrap()
                    .contains("3 connection(s) cut"),
                "{drain}"
            );
        } else {
            assert_eq!(f.lb_state("a"), "draining");
            assert_eq!(member(&status(&pool), "a")["state"], "failed");
        }
    }
}

#[test]
fn reboot_if_required_follows_a_reboot_required_exit_code_and_waits_for_a_new_boot() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    for m in members {
        std::fs::write(f.path(&format!("lb/{m}.boot")), format!("{m}-boot-1\n")).unwrap();
    }
    let rest = r#"
[runbook.drain]
timeout = "5s"

[[runbook.step]]
name = "patch"
# Unix exit codes stop at 255, so 3010 (Windows) cannot be used here: configure one.
run = "if [ {member} = a ]; then exit 100; fi; exit 0"
reboot = "if-required"
reboot_required_exit_codes = [100]

[runbook.reboot]
command = "rm {var.dir}/lb/{member}.boot; (sleep 0.5; echo {member}-boot-2 > {var.dir}/lb/{member}.boot) > /dev/null 2>&1 &"
timeout = "10s"
poll_interval = "100ms"
"#;
    let text = std::fs::read_to_string(f.pool("", &members, rest))
        .unwrap()
        .replace(
            "[defaults]\n",
            &format!(
                "[defaults]\nboot_id = \"cat {}/lb/{{member}}.boot\"\n",
                f.dir.path().display()
            ),
        );
    let pool = f.path("pool.toml");
    std::fs::write(&pool, text).unwrap();
    let o = ebb().args(["run", "--json"]).arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stderr(&o), stdout(&o));
    let events: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let reboot = |m: &str| {
        events
            .iter()
            .find(|e| e["event"] == "step_finished" && e["step"] == "reboot" && e["member"] == m)
            .cloned()
            .unwrap()
    };
    assert_eq!(reboot("a")["outcome"], "ok");
    assert!(
        reboot("a")["detail"]
            .as_str()
            .unwrap()
            .contains("a-boot-1 → a-boot-2"),
        "{}",
        reboot("a")
    );
    assert_eq!(reboot("b")["outcome"], "skipped", "b exited 0: no reboot");
    assert_eq!(f.read("lb/b.boot").trim(), "b-boot-1");
}

#[test]
fn on_failure_continue_goes_on_with_other_members_within_max_failed_and_the_policy() {
    let members = ["a", "b", "c", "d"];
    let f = Fixture::new(&members);
    let rb = RUNBOOK.replace(
        "echo start >>",
        "if [ {member} = a ]; then exit 5; fi; echo start >>",
    );
    let rest = format!("[runbook]\non_failure = \"continue\"\nmax_failed = 1\n{rb}");
    // a fails and stays out: with max_unavailable = 2 one slot is left for the others.
    let pool = f.pool("max_unavailable = 2\nmin_in_service = 1", &members, &rest);
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(1), "a member failed: {}", stderr(&o));
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "halted");
    assert_eq!(member(&st, "a")["state"], "failed");
    for m in ["b", "c", "d"] {
        assert_eq!(member(&st, m)["state"], "done", "{m} went on");
        assert_eq!(f.lb_state(m), "started");
    }
    assert_eq!(f.lb_state("a"), "stopped");
    assert_eq!(f.lb_initial("a"), "stopped");
    assert!(f.max_out_at_once() <= 2, "{:?}", f.transitions());

    // With max_failed = 0 the first failure halts: members not yet started stay untouched.
    let f = Fixture::new(&members);
    let rest = format!("[runbook]\non_failure = \"continue\"\nmax_failed = 0\n{rb}");
    let pool = f.pool("max_unavailable = 1", &members, &rest);
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(1));
    let st = status(&pool);
    for m in ["b", "c", "d"] {
        assert_eq!(member(&st, m)["state"], "pending");
    }
}

#[test]
fn an_unreachable_balancer_is_refused_before_anything_changes() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let pool = f.pool("", &members, RUNBOOK);
    // The balancer's state command now fails.
    std::fs::remove_file(f.path("lb/b.state")).unwrap();
    let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("member \"b\"") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(f.transitions().is_empty(), "{:?}", f.transitions());
    assert_eq!(f.lb_initial("a"), "started");
}

/// The events of `ebb run --json`.
fn json_events(o: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Milliseconds from the last `member_finished` to `run_finished`. With `capacity_wait`
/// set to 60 s, anything near that means the run sat waiting after it had already failed.
fn end_lag_ms(events: &[serde_json::Value]) -> i64 {
    let ts = |e: &serde_json::Value| e["ts_ms"].as_i64().expect("ts_ms");
    let last_member = events
        .iter()
        .filter(|e| e["event"] == "member_finished")
        .map(ts)
        .max()
        .expect("a member finished");
    let finished = events
        .iter()
        .find(|e| e["event"] == "run_finished")
        .map(ts)
        .expect("run_finished");
    finished - last_member
}

#[test]
fn on_failure_continue_starts_members_in_plan_order_and_ends_once_max_failed_is_exceeded() {
    // The issue's scenario: web3's step fails, web5's drain aborts, web4 waits for capacity
    // (web2 is slow, so web4 is already waiting when web5 comes into line).
    let members = ["web1", "web2", "web3", "web4", "web5"];
    let f = Fixture::new(&members);
    std::fs::write(f.path("lb/web5.conns"), "3\n").unwrap();
    let rb = RUNBOOK
        .replace(
            "timeout = \"10s\"",
            "timeout = \"1s\"\non_timeout = \"abort\"",
        )
        .replace(
            "echo start >>",
            "if [ {member} = web3 ]; then exit 5; fi; if [ {member} = web2 ]; then sleep 1.5; fi; echo start >>",
        );
    let rest = format!("[runbook]\non_failure = \"continue\"\nmax_failed = 1\n{rb}");
    let pool = f.pool(
        "max_unavailable = 2\nmin_in_service = 1\ncapacity_wait = \"60s\"",
        &members,
        &rest,
    );
    let o = ebb().args(["run", "--json"]).arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let events = json_events(&o);
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "member_started")
        .filter_map(|e| e["member"].as_str())
        .collect();
    assert_eq!(started, members, "members start in plan order");
    let lag = end_lag_ms(&events);
    assert!(
        lag < 30_000,
        "run_finished came {lag} ms after the last member finished"
    );
    let st = status(&pool);
    assert_eq!(member(&st, "web3")["state"], "failed");
    assert_eq!(member(&st, "web4")["state"], "done");
    assert_eq!(member(&st, "web5")["state"], "failed");
    assert!(f.max_out_at_once() <= 2, "{:?}", f.transitions());
}

#[test]
fn once_max_failed_is_exceeded_members_waiting_for_capacity_are_not_started() {
    // a fails at once and stays out; c waits for a slot while b works, then b fails too.
    let members = ["a", "b", "c", "d"];
    let f = Fixture::new(&members);
    let rb = RUNBOOK.replace(
        "echo start >>",
        "if [ {member} = a ]; then exit 5; fi; if [ {member} = b ]; then sleep 1; exit 6; fi; echo start >>",
    );
    let rest = format!("[runbook]\non_failure = \"continue\"\nmax_failed = 1\n{rb}");
    let pool = f.pool(
        "max_unavailable = 2\nmin_in_service = 1\ncapacity_wait = \"60s\"",
        &members,
        &rest,
    );
    let o = ebb().args(["run", "--json"]).arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let events = json_events(&o);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "waiting" && e["member"] == "c"),
        "c waited for capacity: {events:?}"
    );
    let lag = end_lag_ms(&events);
    assert!(
        lag < 30_000,
        "run_finished came {lag} ms after the last member finished"
    );
    let st = status(&pool);
    for m in ["c", "d"] {
        assert_eq!(member(&st, m)["state"], "pending", "{m} never started");
        assert_eq!(f.lb_state(m), "started");
    }
    let msg = st["run"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!msg.contains("capacity_wait"), "{msg}");
}
