//! Bake and rollback through the binary: real member HTTP services (`ebb demo-member`),
//! updated to 1.1 by restarting them; an http bake check that 1.1 fails. The first member
//! is pulled back out, rolled back to 1.0 (restarted again), verified, held; the run halts
//! with the failing figures in `status` and `report`, and the second member is never
//! touched.

#[path = "support/members.rs"]
mod members;
mod support;
use members::{free_address, get, runbook, Services};
use std::time::Duration;
use support::*;

fn version(addr: &str) -> String {
    get(addr, "/version").1
}

#[test]
fn a_bake_check_the_update_fails_pulls_the_member_back_rolls_it_back_and_halts() {
    let f = Fixture::new(&["a", "b"]);
    let dir = f.dir.path().display().to_string();
    let addrs = [free_address(), free_address()];
    let services = Services::start(f.dir.path(), &[("a", &addrs[0]), ("b", &addrs[1])]);
    let text = format!(
        r#"[pool]
name = "t"

{balancer}
[defaults]
vars = {{ dir = "{dir}" }}

[[member]]
name = "a"
address = "{a}"

[[member]]
name = "b"
address = "{b}"

{runbook}"#,
        balancer = f.balancer(),
        runbook = runbook(
            "",
            "5s",
            "200ms",
            r#"
[[runbook.bake.check]]
name = "known-good"
http = { url = "http://{address}/version", expect_body_regex = "^1\\.0" }
"#
        ),
        a = addrs[0],
        b = addrs[1],
    );
    let pool = f.path("pool.toml");
    std::fs::write(&pool, text).expect("write pool");
    let check = ebb()
        .args(["check", "--no-members"])
        .arg(&pool)
        .output()
        .expect("check");
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let plan = ebb().arg("plan").arg(&pool).output().expect("plan");
    assert_eq!(
        ops(&stdout(&plan), "a"),
        "hold → drain → install → verify → return → pool-check → bake; if verify or the bake fails: pull-back hold → pull-back → reinstall-1.0 → verify-after-rollback"
    );

    let child = spawn(&["run"], &pool);
    let o = wait_bounded(child, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));

    // Rolled back: serving 1.0 again, restarted twice (update, rollback), held out.
    assert_eq!(version(&addrs[0]), "1.0");
    assert_eq!(services.versions("a"), ["1.0", "1.1", "1.0"]);
    assert_eq!(f.lb_initial("a"), "stopped");
    assert!(
        matches!(f.lb_state("a").as_str(), "draining" | "stopped"),
        "{}",
        f.lb_state("a")
    );
    // The second member was never touched.
    assert_eq!(services.versions("b"), ["1.0"]);
    assert!(
        f.transitions().iter().all(|(_, m, _)| m != "b"),
        "{:?}",
        f.transitions()
    );

    let st = status(&pool);
    assert_eq!(st["run"]["state"], "halted", "{st}");
    let a = member(&st, "a");
    assert_eq!(a["state"], "rolled-back", "{st}");
    let reason = a["reason"].as_str().unwrap_or_default();
    for want in [
        "bake check \"known-good\" failed",
        "it was: 1.1",
        "rolled back (reinstall-1.0); verify after the rollback passed",
    ] {
        assert!(reason.contains(want), "{want:?} in {reason}");
    }
    assert_eq!(member(&st, "b")["state"], "pending");

    let doc = report(&pool);
    let steps = doc["members"][0]["steps"]
        .as_array()
        .expect("steps")
        .clone();
    let bake = steps
        .iter()
        .find(|s| s["kind"] == "bake")
        .expect("a bake step");
    assert_eq!(bake["outcome"], "failed", "{bake}");
    assert!(
        bake["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("it was: 1.1"),
        "{bake}"
    );
    let kinds: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "hold",
            "drain",
            "install",
            "verify",
            "return",
            "pool-check",
            "bake",
            "pull-back hold",
            "pull-back",
            "reinstall-1.0",
            "verify-after-rollback"
        ]
    );

    // A person decides: resume refuses until the member is released.
    let resumed = ebb().arg("resume").arg(&pool).output().expect("resume");
    assert_eq!(resumed.status.code(), Some(2), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("rolled back and is held"),
        "{}",
        stderr(&resumed)
    );
}
