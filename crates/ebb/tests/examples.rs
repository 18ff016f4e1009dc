//! The README's example pool (examples/local-command) checks, plans and runs as documented.

mod support;
use support::*;

#[test]
fn the_local_command_example_runs_a_real_rollout_on_one_machine() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/local-command");
    let dir = tempfile::tempdir().unwrap();
    for f in ["pool.toml", "lb.sh"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    for cmd in [
        &["check", "pool.toml"][..],
        &["plan", "pool.toml"],
        &["run", "pool.toml"],
    ] {
        let o = run(cmd, dir.path());
        assert_eq!(
            o.status.code(),
            Some(0),
            "{cmd:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    let st = status(&dir.path().join("pool.toml"));
    assert_eq!(st["run"]["state"], "done");
    for m in ["web1", "web2", "web3"] {
        let v = std::fs::read_to_string(dir.path().join(format!("state/{m}.version"))).unwrap();
        assert_eq!(v.trim(), "1.1");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(format!("state/{m}.state")))
                .unwrap()
                .trim(),
            "started"
        );
        assert!(!dir.path().join(format!("state/{m}.silenced")).exists());
    }
    // `when = "first"`: only web1 was backed up.
    let o = run(&["report", "--json", "pool.toml"], dir.path());
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let has_backup = |m: &str| {
        rep["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == m)
            .unwrap()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "backup")
    };
    assert!(has_backup("web1") && !has_backup("web2") && !has_backup("web3"));
}
