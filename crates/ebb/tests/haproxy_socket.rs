//! Issue 9 items 8 and 17 against a real HAProxy: `ebb check` fails (exit 1) on a socket
//! that is not at admin level instead of warning and letting `run` fail at the first
//! hold, `ebb run` refuses it before anything changes, and a socket error that every
//! member meets is printed once, not once per member and once more.

#[path = "support/haproxy.rs"]
mod haproxy;
mod support;

use haproxy::start_haproxy;
use std::path::Path;
use support::*;

/// A pool of web1..web3 behind the HAProxy in `dir` (socket `socket`), with a local step.
fn pool(dir: &Path, socket: &Path) -> std::path::PathBuf {
    let mut text = format!(
        "[pool]\nname = \"web\"\nmax_unavailable = 1\nmin_in_service = 2\n\n[balancer]\ndriver = \"haproxy\"\nsocket = \"{}\"\nbackend = \"web\"\nstate_file = \"{}\"\n",
        socket.display(),
        dir.join("server-state").display()
    );
    for (i, m) in ["web1", "web2", "web3"].iter().enumerate() {
        text.push_str(&format!(
            "\n[[member]]\nname = \"{m}\"\naddress = \"127.0.0.1:{}\"\n",
            i + 1
        ));
    }
    text.push_str("\n[[runbook.step]]\nname = \"install\"\nrun = \"true\"\n");
    let p = dir.join("pool.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn both(o: &std::process::Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// HAProxy's own view of the servers: (name, operational state, admin state).
fn servers(sock: &Path) -> Vec<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("admin socket");
    s.write_all(b"show servers state web\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("web"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} op {} admin {}", f[3], f[5], f[6])
        })
        .collect()
}

#[test]
fn check_fails_and_run_changes_nothing_on_an_operator_level_socket_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let _h = start_haproxy(dir.path(), "operator");
    let sock = dir.path().join("admin.sock");
    let pool = pool(dir.path(), &sock);
    let before = servers(&sock);
    assert_eq!(before.len(), 3, "{before:?}");

    let o = run(&["check", "--no-members", "pool.toml"], dir.path());
    let out = both(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(out.matches("level \"operator\"").count(), 1, "{out}");
    assert!(out.contains("problem: "), "{out}");

    let o = run(&["run", pool.to_str().unwrap()], dir.path());
    let out = both(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(out.matches("level \"operator\"").count(), 1, "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    assert_eq!(servers(&sock), before, "HAProxy's servers untouched");
}

#[test]
fn a_socket_that_is_not_there_is_one_problem_not_one_per_member() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("missing.sock");
    let pool = pool(dir.path(), &sock);
    let said = sock.display().to_string();

    let o = run(&["check", "--no-members", "pool.toml"], dir.path());
    let out = both(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(out.matches("does not exist").count(), 1, "{out}");
    assert!(out.contains(&said), "{out}");
    assert!(out.contains("any of the 3 members"), "{out}");

    let o = run(&["run", pool.to_str().unwrap()], dir.path());
    let out = both(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert_eq!(out.matches("does not exist").count(), 1, "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
}
