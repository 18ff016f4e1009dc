//! Real member HTTP services (`ebb demo-member`) for end-to-end tests: started, and
//! "updated" or rolled back by restarting them with another version, by a script the pool
//! file's steps call. Each restart appends the version to `DIR/MEMBER.versions`: the
//! member's own log of what it ran, for asserting which members were touched.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `restart.sh DIR MEMBER ADDRESS VERSION [FAIL_EVERY]`: stops the member's service (if
/// it runs) and starts it again with VERSION (answering every FAIL_EVERYth `GET /` with a
/// 500; default never); returns once it listens.
pub fn restart_script(ebb: &str) -> String {
    format!(
        r#"#!/bin/sh
d=$1; m=$2; addr=$3; v=$4; fail=${{5:-0}}
if [ -f "$d/$m.pid" ]; then
  p=$(cat "$d/$m.pid"); kill "$p" 2>/dev/null
  i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
fi
mkdir -p "$d/boot"
rm -f "$d/boot/$m"
"{ebb}" demo-member --name "$m" --listen "$addr" --version "$v" --fail-every "$fail" --dir "$d" >/dev/null 2>&1 &
echo $! > "$d/$m.pid"
echo "$v" >> "$d/$m.versions"
i=0; while [ $i -lt 200 ]; do [ -s "$d/boot/$m" ] && exit 0; sleep 0.05; i=$((i+1)); done
echo "$m did not start" >&2; exit 1
"#
    )
}

/// The runbook of a test whose members are these services: install 1.1 (restarting the
/// service, with `install_extra` appended to `restart.sh`'s arguments, e.g. how often to
/// fail), verify `/health`, a bake of `duration` every `interval` with `bake_checks` (TOML
/// tables), and a rollback step that reinstalls 1.0. Placeholders use the pool's
/// `{var.dir}`.
pub fn runbook(install_extra: &str, duration: &str, interval: &str, bake_checks: &str) -> String {
    format!(
        r#"
[runbook.drain]
timeout = "20s"

[[runbook.step]]
name = "install"
run = "{{var.dir}}/restart.sh {{var.dir}} {{member}} {{address}} 1.1 {install_extra}"

[[runbook.verify]]
name = "health"
http = {{ url = "http://{{address}}/health" }}
retries = 40
interval = "100ms"

[runbook.bake]
duration = "{duration}"
interval = "{interval}"
{bake_checks}
[[runbook.rollback]]
name = "reinstall-1.0"
run = "{{var.dir}}/restart.sh {{var.dir}} {{member}} {{address}} 1.0"
"#
    )
}

/// The member services of one test; stopped (those the test or ebb's steps started) on
/// drop.
pub struct Services {
    dir: PathBuf,
    names: Vec<String>,
    /// `DIR/restart.sh`.
    pub script: PathBuf,
}

impl Services {
    /// Writes `restart.sh` into `dir` and starts each (name, address) at version 1.0.
    pub fn start(dir: &Path, members: &[(&str, &str)]) -> Services {
        let script = dir.join("restart.sh");
        std::fs::write(&script, restart_script(env!("CARGO_BIN_EXE_ebb"))).expect("write");
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        let s = Services {
            dir: dir.to_path_buf(),
            names: members.iter().map(|(m, _)| m.to_string()).collect(),
            script,
        };
        for (m, addr) in members {
            let o = std::process::Command::new(&s.script)
                .arg(dir)
                .args([*m, *addr, "1.0"])
                .output()
                .expect("start member");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert_eq!(get(addr, "/version").1, "1.0");
        }
        s
    }

    /// The versions `member` was started with, in order (its own log).
    pub fn versions(&self, member: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("{member}.versions")))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for m in &self.names {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("{m}.pid"))) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// A loopback address nothing listens on now, never one handed out before in this test
/// process (a port closed at once can come back at the next bind, and two members would
/// then share it).
pub fn free_address() -> String {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("address");
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr.to_string();
        }
    }
}

/// `GET path` of the HTTP server at `addr`: (status, body trimmed); status 0 when it
/// could not be asked.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return (0, String::new());
    }
    let mut out = String::new();
    if s.read_to_string(&mut out).is_err() {
        return (0, String::new());
    }
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    (status, body)
}
