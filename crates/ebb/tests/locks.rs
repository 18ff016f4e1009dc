//! One run per pool: the host-wide lock by pool name (across state dirs), and members the
//! balancer shows held by someone else's run are refused before anything changes.

mod support;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn a_copy_of_the_pool_file_with_another_state_dir_is_refused_while_the_pool_runs() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    // The install step waits (bounded) for a go-ahead, so the first run is surely inside it.
    let rb = RUNBOOK.replace(
        "sleep 0.2;",
        "i=0; while [ ! -f {var.dir}/go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done;",
    );
    let pool = f.pool("", &members, &rb);
    let copy = f.path("copy.toml");
    std::fs::copy(&pool, &copy).unwrap();
    let locks = f.path("locks");
    let mut first = ebb()
        .arg("run")
        .arg(&pool)
        .env("EBB_LOCK_DIR", &locks)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f.path("lb/a.install.log").exists() {
        assert!(
            Instant::now() < deadline,
            "the first run never reached a's install"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = ebb()
        .arg("run")
        .arg(&copy)
        .arg("--state-dir")
        .arg(f.path("other"))
        .env("EBB_LOCK_DIR", &locks)
        .output()
        .unwrap();
    std::fs::write(f.path("go"), "").unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("ebb pid {} on this host", first.id())) && err.contains("pool \"t\""),
        "{err}"
    );
    assert!(err.contains(&f.path(".ebb").display().to_string()), "{err}");
    assert_eq!(first.wait().unwrap().code(), Some(0));
    // Only the first run touched the balancer: each member out and in once.
    let outs = f.transitions().iter().filter(|t| t.2 == "out").count();
    assert_eq!(outs, 2, "{:?}", f.transitions());
    // With the first run gone the lock is free again.
    let o = ebb()
        .arg("run")
        .arg(&copy)
        .arg("--state-dir")
        .arg(f.path("other"))
        .env("EBB_LOCK_DIR", &locks)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_member_held_by_someone_elses_run_is_refused_before_hold_or_drain() {
    let members = ["a", "b"];
    for hold in ["true", "false"] {
        let f = Fixture::new(&members);
        // Another run (another admin host, another pool name) holds a and has drained it.
        std::fs::write(f.path("lb/a.initial"), "stopped\n").unwrap();
        std::fs::write(f.path("lb/a.state"), "stopped\n").unwrap();
        let rest = RUNBOOK.replace(
            "timeout = \"10s\"",
            &format!("timeout = \"10s\"\nhold = {hold}"),
        );
        let pool = f.pool("max_unavailable = 1", &members, &rest);
        let o = run(&["run", pool.to_str().unwrap()], f.dir.path());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "hold = {hold}: {err}");
        assert!(
            err.contains("held (initial state stopped) by someone else"),
            "{err}"
        );
        let st = status(&pool);
        let a = member(&st, "a");
        assert_eq!(a["state"], "failed", "hold = {hold}");
        assert_eq!(a["owed_undos"], serde_json::json!([]), "hold = {hold}");
        assert_eq!(member(&st, "b")["state"], "pending", "hold = {hold}");
        // Nothing changed in the balancer: a stays held and out, as the other run left it.
        assert!(f.transitions().is_empty(), "{:?}", f.transitions());
        assert_eq!(f.lb_initial("a"), "stopped");
        assert_eq!(f.lb_state("a"), "stopped");
    }
}
