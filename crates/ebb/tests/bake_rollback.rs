//! Bake and rollback through the binary: real member HTTP services (`ebb demo-member`),
//! updated to 1.1 by restarting them; an http bake check that 1.1 fails. The first member
//! is pulled back out, rolled back to 1.0 (restarted again), verified, held; the run halts
//! with the failing figures in `status` and `report`, and the second member is never
//! touched.

mod support;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;
use support::*;

/// `restart.sh DIR MEMBER ADDRESS VERSION`: stops the member's service (if it runs) and
/// starts it again with VERSION; returns once it listens.
fn restart_script(ebb: &str) -> String {
    format!(
        r#"#!/bin/sh
d=$1; m=$2; addr=$3; v=$4
if [ -f "$d/$m.pid" ]; then
  p=$(cat "$d/$m.pid"); kill "$p" 2>/dev/null
  i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
fi
mkdir -p "$d/boot"
rm -f "$d/boot/$m"
"{ebb}" demo-member --name "$m" --listen "$addr" --version "$v" --dir "$d" >/dev/null 2>&1 &
echo $! > "$d/$m.pid"
echo "$v" >> "$d/$m.versions"
i=0; while [ $i -lt 200 ]; do [ -s "$d/boot/$m" ] && exit 0; sleep 0.05; i=$((i+1)); done
echo "$m did not start" >&2; exit 1
"#
    )
}

/// Stops the member services the test (or ebb's steps) started.
struct Services(std::path::PathBuf, Vec<&'static str>);

impl Drop for Services {
    fn drop(&mut self) {
        for m in &self.1 {
            if let Ok(pid) = std::fs::read_to_string(self.0.join(format!("{m}.pid"))) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

fn free_address() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").to_string()
}

/// `GET /version` of the service at `addr`.
fn version(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn a_bake_check_the_update_fails_pulls_the_member_back_rolls_it_back_and_halts() {
    let f = Fixture::new(&["a", "b"]);
    let dir = f.dir.path().display().to_string();
    let script = f.path("restart.sh");
    std::fs::write(&script, restart_script(env!("CARGO_BIN_EXE_ebb"))).expect("write");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    let _services = Services(f.dir.path().to_path_buf(), vec!["a", "b"]);
    let addrs = [free_address(), free_address()];
    for (m, addr) in ["a", "b"].iter().zip(&addrs) {
        let o = std::process::Command::new(&script)
            .args([&dir, *m, addr, "1.0"])
            .output()
            .expect("start member");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(version(addr), "1.0");
    }
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

[runbook.drain]
timeout = "10s"

[[runbook.step]]
name = "install"
run = "{{var.dir}}/restart.sh {{var.dir}} {{member}} {{address}} 1.1"

[[runbook.verify]]
name = "health"
http = {{ url = "http://{{address}}/health" }}
retries = 20
interval = "100ms"

[runbook.bake]
duration = "5s"
interval = "200ms"

[[runbook.bake.check]]
name = "known-good"
http = {{ url = "http://{{address}}/version", expect_body_regex = "^1\\.0" }}

[[runbook.rollback]]
name = "reinstall-1.0"
run = "{{var.dir}}/restart.sh {{var.dir}} {{member}} {{address}} 1.0"
"#,
        balancer = f.balancer(),
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
    assert_eq!(
        f.read("a.versions").split_whitespace().collect::<Vec<_>>(),
        ["1.0", "1.1", "1.0"]
    );
    assert_eq!(f.lb_initial("a"), "stopped");
    assert!(
        matches!(f.lb_state("a").as_str(), "draining" | "stopped"),
        "{}",
        f.lb_state("a")
    );
    // The second member was never touched.
    assert_eq!(f.read("b.versions").trim(), "1.0");
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

    let report = ebb()
        .args(["report", "--json"])
        .arg(&pool)
        .output()
        .expect("report");
    let doc: serde_json::Value = serde_json::from_slice(&report.stdout).expect("report JSON");
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
