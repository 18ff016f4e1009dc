//! The two example pool files of issue 5 check and plan with the real `ebb` binary:
//! `examples/haproxy-apt.toml` against a real HAProxy set up as the file's comment says,
//! and `examples/exchange-2010-cas-array.toml`, whose Windows members this machine cannot
//! reach: `ebb check` validates the whole file (exit 2 if anything in it is wrong), then
//! reports every member unreachable and exits 1, naming what it tried.

#[path = "support/haproxy.rs"]
mod haproxy;
mod support;

use haproxy::start_haproxy;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

#[test]
fn haproxy_apt_example_plans_and_checks_against_a_real_haproxy() {
    let o = ebb()
        .args(["plan"])
        .arg(example("haproxy-apt.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("pool web (3 members, balancer haproxy)"),
        "{out}"
    );
    for m in ["web1", "web2", "web3"] {
        assert_eq!(
            ops(&out, m),
            "hold → drain → apt update → apt upgrade → reboot if required → reboot → verify → return → pool-check → bake; if verify or the bake fails: pull-back hold → pull-back"
        );
    }

    // The same file, with only the socket and state file moved into a temp dir.
    let dir = tempfile::tempdir().unwrap();
    let _h = start_haproxy(dir.path(), "admin");
    let text = std::fs::read_to_string(example("haproxy-apt.toml"))
        .unwrap()
        .replace(
            "/run/haproxy/admin.sock",
            &dir.path().join("admin.sock").display().to_string(),
        )
        .replace(
            "/var/lib/haproxy/server-state",
            &dir.path().join("server-state").display().to_string(),
        )
        // Tests reach nothing but loopback.
        .replace("192.0.2.", "127.0.0.");
    std::fs::write(dir.path().join("haproxy-apt.toml"), text).unwrap();
    // The members are not there: ask the balancer only.
    let o = run(&["check", "--no-members", "haproxy-apt.toml"], dir.path());
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("haproxy-apt.toml: valid (3 members, balancer haproxy)"),
        "{out}"
    );
    assert_eq!(out.matches("started   in service").count(), 3, "{out}");
    assert!(!out.contains("warning:"), "{out}");
    let o = run(
        &["check", "--no-members", "--json", "haproxy-apt.toml"],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["members"][1]["detail"], "no check");
}

#[test]
fn exchange_example_plans_the_tutorials_procedure_and_check_reports_unreachable_members() {
    let file = example("exchange-2010-cas-array.toml");
    let o = ebb().arg("plan").arg(&file).output().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("pool cas-array (3 members, balancer nlb): at most 1 out at once, at least 2 in service"), "{out}");
    // The tutorial's order; the backup only on the first member.
    assert_eq!(
        ops(&out, "cas1"),
        "monitoring → hold → drain → forefront → backup → update rollup → reboot → verify → return → pool-check"
    );
    for m in ["cas2", "cas3"] {
        assert_eq!(
            ops(&out, m),
            "monitoring → hold → drain → forefront → update rollup → reboot → verify → return → pool-check"
        );
    }

    // check: the file is valid; the members (Windows, over ssh) cannot be reached from
    // here, so each is reported with why, and the exit code is 1, not 2.
    // Tests reach nothing but loopback: the members' names become 127.0.0.1 with a closed
    // ssh port.
    let local = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(
            "ssh_user = \"ebb-maint\"",
            "ssh_user = \"ebb-maint\"\nssh_port = 1",
        )
        .replace("address = \"cas1.corp.example\"", "address = \"127.0.0.1\"")
        .replace("address = \"cas2.corp.example\"", "address = \"127.0.0.1\"")
        .replace("address = \"cas3.corp.example\"", "address = \"127.0.0.1\"");
    let file = local.path().join("exchange-2010-cas-array.toml");
    std::fs::write(&file, text).unwrap();
    let t = Instant::now();
    let o = ebb().args(["check", "--json"]).arg(&file).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"].as_array().unwrap().len(), 3, "{v}");
    for (i, m) in ["cas1", "cas2", "cas3"].iter().enumerate() {
        let e = v["members"][i]["error"].as_str().unwrap();
        assert!(
            e.contains(&format!("NLB node \"{}\"", m.to_uppercase()))
                && e.contains(&format!("could not be read on \"{m}\""))
                && e.contains("ssh")
                && e.contains("nor on any other member"),
            "{e}"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(40));
    let o = ebb().arg("check").arg(&file).output().unwrap();
    assert!(stdout(&o).contains("exchange-2010-cas-array.toml: valid (3 members, balancer nlb)"));

    // What check validates before it reaches out: a copy that breaks the nlb driver's
    // requirement is refused with exit 2 and the reason.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("shell = \"powershell\"", "shell = \"sh\"");
    std::fs::write(dir.path().join("pool.toml"), text).unwrap();
    let o = run(&["check", "pool.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("set shell = \"powershell\""),
        "{}",
        stderr(&o)
    );
}
