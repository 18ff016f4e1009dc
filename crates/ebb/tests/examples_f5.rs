//! `examples/exchange-2010-cas-f5.toml`, the tutorial's Exchange CAS array behind an F5
//! BIG-IP: `ebb plan` shows the tutorial's procedure with the f5 driver, and `ebb check`
//! validates the whole file and then reports the BIG-IP it cannot reach (this machine has
//! none), naming what it tried, with exit code 1, not 2.

mod support;
use std::path::Path;
use support::*;

#[test]
fn the_f5_exchange_example_plans_and_checks() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/exchange-2010-cas-f5.toml");
    let o = ebb().arg("plan").arg(&file).output().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains(
            "pool cas-array (3 members, balancer f5): at most 1 out at once, at least 2 in service"
        ),
        "{out}"
    );
    assert_eq!(
        ops(&out, "cas1"),
        "monitoring → hold → drain → forefront → backup → update rollup → reboot → verify → return → pool-check"
    );
    assert_eq!(
        ops(&out, "cas3"),
        "monitoring → hold → drain → forefront → update rollup → reboot → verify → return → pool-check"
    );

    // Tests reach nothing but loopback: the BIG-IP becomes a closed port.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("https://bigip.corp.example", "https://127.0.0.1:1");
    let local = dir.path().join("exchange-2010-cas-f5.toml");
    std::fs::write(&local, text).unwrap();
    let o = ebb()
        .args(["check", "--no-members", "--json"])
        .arg(&local)
        .env("EBB_F5_PASSWORD", "not-used")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    let e = v["members"][0]["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(
            "BIG-IP pool member /Common/exchange_cas_https 10.1.0.11:443 at https://127.0.0.1:1"
        ) && e.contains("cannot connect to 127.0.0.1:1"),
        "{v}"
    );
}
