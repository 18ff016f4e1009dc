//! Shared helpers for the engine's end-to-end tests: a balancer made of state files that
//! logs every transition with a timestamp, pool files, and running the real `ebb` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

thread_local! {
    /// Each test (thread) has its own host-wide lock dir: parallel tests use the same pool
    /// names for pools that have nothing to do with each other.
    static LOCK_DIR: tempfile::TempDir = tempfile::tempdir().expect("lock dir");
}

/// The `ebb` binary under test.
pub fn ebb() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ebb"));
    c.env("EBB_PLAIN", "1");
    LOCK_DIR.with(|d| c.env("EBB_LOCK_DIR", d.path()));
    c
}

/// A temp dir with a file-backed balancer in `lb/`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

pub const FAKE_LB: &str = r#"#!/bin/sh
# fakelb.sh DIR OP MEMBER [STATE]: a balancer made of state files; logs every transition.
d=$1; op=$2; m=$3
log() { echo "$(date +%s%N) $m $1" >> "$d/transitions.log"; }
conns() { if [ -f "$d/$m.conns" ]; then cat "$d/$m.conns"; else echo 0; fi; }
# Replaced, never rewritten in place: a concurrent `state` must not read a truncated file.
put() { echo "$1" > "$d/$m.state.$$"; mv "$d/$m.state.$$" "$d/$m.state"; }
# `down`: the balancer cannot be reached at all; `MEMBER.refuse`: it refuses changes to that
# member (an HAProxy socket at operator level).
if [ -f "$d/down" ]; then echo "connection refused" >&2; exit 1; fi
case $op in drainstop|stop|start|initial)
  if [ -f "$d/$m.refuse" ]; then echo "Permission denied" >&2; exit 1; fi ;;
esac
case $op in
  drainstop) put draining; log out ;;
  stop) put stopped; rm -f "$d/$m.conns"; log out ;;
  start) put started; log in ;;
  state) s=$(cat "$d/$m.state"); if [ "$s" = draining ] && [ "$(conns)" = 0 ]; then put stopped; s=stopped; fi; echo "$s" ;;
  connections) conns ;;
  initial) echo "$4" > "$d/$m.initial"; log "initial=$4" ;;
  get-initial) cat "$d/$m.initial" ;;
esac
"#;

impl Fixture {
    /// A fixture with `members` members, all started with initial state started.
    pub fn new(members: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let lb = dir.path().join("lb");
        std::fs::create_dir_all(&lb).expect("mkdir lb");
        for m in members {
            std::fs::write(lb.join(format!("{m}.state")), "started\n").expect("write");
            std::fs::write(lb.join(format!("{m}.initial")), "started\n").expect("write");
        }
        let script = dir.path().join("fakelb.sh");
        std::fs::write(&script, FAKE_LB).expect("write script");
        Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        Fixture { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// The `[balancer]` table for the file-backed balancer.
    pub fn balancer(&self) -> String {
        let d = self.dir.path().display();
        format!(
            r#"[balancer]
driver = "command"
drainstop = "{d}/fakelb.sh {d}/lb drainstop {{lb_name}}"
stop = "{d}/fakelb.sh {d}/lb stop {{lb_name}}"
start = "{d}/fakelb.sh {d}/lb start {{lb_name}}"
state = "{d}/fakelb.sh {d}/lb state {{lb_name}}"
connections = "{d}/fakelb.sh {d}/lb connections {{lb_name}}"
initial_state = "{d}/fakelb.sh {d}/lb initial {{lb_name}} {{state}}"
get_initial_state = "{d}/fakelb.sh {d}/lb get-initial {{lb_name}}"
"#
        )
    }

    /// Writes `pool.toml` = `[pool]` + balancer + members + `rest`.
    pub fn pool(&self, pool: &str, members: &[&str], rest: &str) -> PathBuf {
        let mut text = format!(
            "[pool]\nname = \"t\"\n{pool}\n\n{}\n[defaults]\nvars = {{ dir = \"{}\" }}\n\n",
            self.balancer(),
            self.dir.path().display()
        );
        for (i, m) in members.iter().enumerate() {
            text.push_str(&format!(
                "[[member]]\nname = \"{m}\"\naddress = \"127.0.0.1:{}\"\n\n",
                10_000 + i
            ));
        }
        text.push_str(rest);
        let p = self.path("pool.toml");
        std::fs::write(&p, text).expect("write pool");
        p
    }

    /// `other.toml`: a copy of `pool` naming another pool ("u"), for a state dir that
    /// holds runs of two pools.
    pub fn other_pool(&self, pool: &Path) -> PathBuf {
        let other = self.path("other.toml");
        let text = std::fs::read_to_string(pool).expect("read pool");
        std::fs::write(&other, text.replace("name = \"t\"", "name = \"u\"")).expect("write");
        other
    }

    /// Transitions logged by the balancer: (ns, member, what).
    pub fn transitions(&self) -> Vec<(u128, String, String)> {
        self.read("lb/transitions.log")
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((
                    it.next()?.parse().ok()?,
                    it.next()?.to_string(),
                    it.next()?.to_string(),
                ))
            })
            .collect()
    }

    /// The most members out of service at once, from the transition log.
    pub fn max_out_at_once(&self) -> usize {
        let mut out = std::collections::BTreeSet::new();
        let mut max = 0;
        for (_, m, what) in self.transitions() {
            match what.as_str() {
                "out" => {
                    out.insert(m);
                }
                "in" => {
                    out.remove(&m);
                }
                _ => {}
            }
            max = max.max(out.len());
        }
        max
    }

    pub fn lb_state(&self, m: &str) -> String {
        self.read(&format!("lb/{m}.state")).trim().to_string()
    }

    pub fn lb_initial(&self, m: &str) -> String {
        self.read(&format!("lb/{m}.initial")).trim().to_string()
    }
}

/// Runs `ebb ARGS` and returns its output.
pub fn run(args: &[&str], cwd: &Path) -> Output {
    ebb().args(args).current_dir(cwd).output().expect("run ebb")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ebb status --json` of the fixture's pool.
pub fn status(pool: &Path) -> serde_json::Value {
    let o = ebb()
        .args(["status", "--json"])
        .arg(pool)
        .output()
        .expect("status");
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", stdout(&o)))
}

/// `ebb report --json` of the fixture's pool.
pub fn report(pool: &Path) -> serde_json::Value {
    let o = ebb()
        .args(["report", "--json"])
        .arg(pool)
        .output()
        .expect("report");
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {}", stdout(&o)))
}

/// Member `name` from a status document.
pub fn member<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no member {name} in {status}"))
}

/// A runbook with a paired step (maint) and an update that records each run of itself.
pub const RUNBOOK: &str = r#"
[runbook.drain]
timeout = "10s"

[[runbook.step]]
name = "maint"
run = "echo on > {var.dir}/lb/{member}.maint"
undo = "rm -f {var.dir}/lb/{member}.maint"

[[runbook.step]]
name = "install"
run = "echo start >> {var.dir}/lb/{member}.install.log; sleep 0.2; echo 1.1 > {var.dir}/lb/{member}.version; echo end >> {var.dir}/lb/{member}.install.log"

[[runbook.verify]]
name = "version"
command = "grep -q 1.1 {var.dir}/lb/{member}.version"
"#;

/// The operations `ebb plan` lists for `member` (`hold → drain → ...`).
pub fn ops(plan_out: &str, member: &str) -> String {
    plan_out
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{member} ")))
        .unwrap_or_else(|| panic!("no line for {member} in:\n{plan_out}"))
        .trim_start()[member.len()..]
        .trim()
        .to_string()
}

/// Starts `ebb ARGS POOL` in the background, its stdout and stderr piped.
pub fn spawn(args: &[&str], pool: &Path) -> std::process::Child {
    ebb()
        .args(args)
        .arg(pool)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ebb")
}

/// Waits for `child` to exit, at most `max` (then kills it and fails the test).
pub fn wait_bounded(child: std::process::Child, max: std::time::Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(max) {
        Ok(o) => o.expect("wait for ebb"),
        Err(_) => {
            // SAFETY: killing the ebb this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("ebb did not finish within {max:?}");
        }
    }
}

/// A receiver on loopback that answers 200 and keeps each body it was sent.
pub fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok() {
                g.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}
