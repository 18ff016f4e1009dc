//! kill -9 of `ebb run` at many different instants, then `ebb resume`: every member ends
//! updated, in service, released from its hold, every undo run, and a step runs twice only
//! when the kill fell inside that very step.

mod support;
use std::time::Duration;
use support::*;

fn report(pool: &std::path::Path) -> serde_json::Value {
    let o = ebb().args(["report", "--json"]).arg(pool).output().unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("report JSON: {e}: {}", stdout(&o)))
}

#[test]
fn kill_9_at_many_instants_then_resume_always_finishes_the_run() {
    let members = ["a", "b", "c"];
    let mut landed_inside_install = 0;
    for delay_ms in (20..900).step_by(45) {
        let f = Fixture::new(&members);
        let pool = f.pool("min_in_service = 2", &members, RUNBOOK);
        let mut child = ebb()
            .args(["run", "--json"])
            .arg(&pool)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Resume; it is never refused here (every step is idempotent).
        let o = ebb().arg("resume").arg(&pool).output().unwrap();
        let err = stderr(&o);
        let code = if err.contains("is done; nothing to resume") {
            // The kill landed after the run finished.
            Some(0)
        } else if err.contains("no run to resume") || err.contains("no journal") {
            // The kill landed before the run was even recorded: start it.
            let o = ebb().arg("run").arg(&pool).output().unwrap();
            assert_eq!(o.status.code(), Some(0), "delay {delay_ms}: {}", stderr(&o));
            Some(0)
        } else {
            o.status.code()
        };
        assert_eq!(code, Some(0), "delay {delay_ms}: resume failed: {err}");
        let st = status(&pool);
        assert_eq!(st["run"]["state"], "done", "delay {delay_ms}: {st}");
        let rep = report(&pool);
        for m in members {
            assert_eq!(f.lb_state(m), "started", "delay {delay_ms}: {m} in service");
            assert_eq!(
                f.lb_initial(m),
                "started",
                "delay {delay_ms}: {m} hold released"
            );
            assert!(
                !f.path(&format!("lb/{m}.maint")).exists(),
                "delay {delay_ms}: {m} undo ran"
            );
            assert_eq!(f.read(&format!("lb/{m}.version")).trim(), "1.1");
            assert_eq!(member(&st, m)["owed_undos"], serde_json::json!([]));
            let log = f.read(&format!("lb/{m}.install.log"));
            let starts = log.lines().filter(|l| *l == "start").count();
            let steps = rep["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == m)
                .unwrap()["steps"]
                .clone();
            let interrupted = steps
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["name"] == "install" && s["outcome"] == "interrupted")
                .count();
            landed_inside_install += interrupted;
            assert!(starts >= 1, "delay {delay_ms}: {m} installed");
            assert!(
                starts <= 1 + interrupted,
                "delay {delay_ms}: {m}'s install ran {starts} times but was interrupted {interrupted} times"
            );
        }
        assert!(
            f.max_out_at_once() <= 1,
            "delay {delay_ms}: {:?}",
            f.transitions()
        );
    }
    // The instants must actually have covered the long step at least once.
    assert!(
        landed_inside_install > 0,
        "no kill fell inside the install step; adjust the delays"
    );
}

#[test]
fn an_interrupted_non_idempotent_step_makes_resume_ask_the_operator() {
    let members = ["a", "b"];
    let f = Fixture::new(&members);
    let rb = RUNBOOK.replace("sleep 0.2", "sleep 2").replace(
        "name = \"install\"",
        "name = \"install\"\nidempotent = false",
    );
    let pool = f.pool("", &members, &rb);
    let mut child = ebb()
        .arg("run")
        .arg(&pool)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed inside a's install, however long a loaded machine takes to get there.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f.path("lb/a.install.log").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached a's install"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let o = ebb().arg("resume").arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--assume-done") && err.contains("--rerun") && err.contains("a:install"),
        "{err}"
    );
    // Nothing was changed by the refused resume.
    assert_eq!(f.lb_state("a"), "stopped");
    // The operator checked: the install had completed.
    std::thread::sleep(Duration::from_millis(2200));
    let o = ebb()
        .args(["resume", "--assume-done", "a:install"])
        .arg(&pool)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        f.read("lb/a.install.log")
            .lines()
            .filter(|l| *l == "start")
            .count(),
        1,
        "not run twice"
    );
    assert_eq!(status(&pool)["run"]["state"], "done");
}
