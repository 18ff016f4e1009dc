//! Output errors never stop or fail a run: `ebb run pool.toml 2>&1 | head -3`, quitting
//! `less`, a closed terminal. The rollout goes on and finishes; `ebb report | head` exits
//! quietly.

mod support;
use std::io::{BufRead, BufReader};
use std::time::Duration;
use support::*;

#[test]
fn a_run_whose_output_pipes_are_closed_finishes_every_member() {
    let members = ["a", "b", "c"];
    let f = Fixture::new(&members);
    // Steps that talk, so the renderer writes while members are in flight.
    let rb = RUNBOOK.replace(
        "sleep 0.2;",
        "for i in 1 2 3 4 5; do echo progress $i; done; sleep 0.2;",
    );
    let pool = f.pool("max_unavailable = 2\nmin_in_service = 1", &members, &rb);
    // `ebb run pool.toml 2>&1 | head -1`: read one line, then the reader goes away.
    let mut child = spawn(&["run"], &pool);
    let mut first = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut first)
        .expect("first line");
    // Both readers are gone now (the BufReader was dropped with its pipe).
    drop(child.stdout.take());
    let exit = wait_bounded(child, Duration::from_secs(60));
    assert_eq!(exit.status.code(), Some(0), "first line was {first:?}");
    let st = status(&pool);
    assert_eq!(st["run"]["state"], "done", "{st}");
    for m in members {
        assert_eq!(member(&st, m)["state"], "done", "{st}");
        assert_eq!(f.lb_state(m), "started", "{m} back in service");
        assert_eq!(f.lb_initial(m), "started", "{m} hold released");
    }

    // `ebb report pool.toml | head -0`: stdout closed before it writes anything.
    for args in [&["report"][..], &["report", "--json"][..], &["status"][..]] {
        let mut child = spawn(args, &pool);
        drop(child.stdout.take());
        let out = wait_bounded(child, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // And through a real shell pipeline, as an operator types it.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' report '{}' | head -1 >/dev/null",
            env!("CARGO_BIN_EXE_ebb"),
            pool.display()
        ))
        .output()
        .expect("sh");
    assert_eq!(o.status.code(), Some(0));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
