//! Real servers for the transport, check and maintenance tests, each started by the test on
//! a free loopback port in its own temp dir, and stopped when dropped: OpenSSH's `sshd`
//! and Prometheus Alertmanager. A missing server fails the test with what to install.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Waits until something accepts connections on `port`.
pub fn wait_listening(port: u16, what: &str, log: &Path) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "{what} did not listen on 127.0.0.1:{port} within 10 s; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every descendant of `pid` (children first found through /proc), deepest last.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Fields after the ")" that ends the command name: state, ppid, ...
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            if let Some(pp) = after.split_whitespace().nth(1).and_then(|x| x.parse().ok()) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(x) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == x && !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// Kills `child` and every process it started (sshd's per-connection processes are in
/// sessions of their own, so a process group kill would miss them).
pub fn kill_tree(child: &mut Child) {
    let pid = child.id();
    // Stopped first, so it accepts no new connection while its children go.
    // SAFETY: signalling processes this test started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    // TERM first: a login shell killed outright can leave its startup files' locks behind
    // (pyenv's rehash lock, for one), which would hang every later session.
    let kids = descendants(pid);
    for d in &kids {
        // SAFETY: as above.
        unsafe { libc::kill(*d as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while kids.iter().any(|d| alive(*d)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in kids {
        // SAFETY: as above.
        unsafe { libc::kill(d as i32, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether process `pid` still exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The user running the tests.
pub fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An OpenSSH server on loopback with a host key and a user key made for the test, and a
/// "boot identity" file the member's boot_id command reads.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

pub const SSHD: &str = "/usr/sbin/sshd";

impl Sshd {
    /// Starts sshd (keys, config and known_hosts in a new temp dir).
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install the Debian package openssh-server (scripts/test.sh does)"
        );
        let which = Command::new("sh")
            .args(["-c", "command -v ssh ssh-keygen"])
            .output();
        assert!(
            which.is_ok_and(|o| o.status.success()),
            "the OpenSSH client (ssh, ssh-keygen) is missing: install openssh-client"
        );
        // sshd refuses to start without its privilege separation folder.
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for key in ["host_key", "user_key", "other_host_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "ebb-test", "-f"])
                .arg(d.join(key)));
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).expect("copy");
        let port = free_port();
        let pubkey = |f: &str| {
            let k = std::fs::read_to_string(d.join(f)).expect("read key");
            k.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
        };
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", pubkey("host_key.pub")),
        )
        .expect("write");
        std::fs::write(
            d.join("wrong_known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", pubkey("other_host_key.pub")),
        )
        .expect("write");
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
                 StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nLogLevel ERROR\nMaxSessions 50\nMaxStartups 50\n\
                 SetEnv HOME={home}\n",
                hk = d.join("host_key").display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
                home = d.join("home").display(),
            ),
        )
        .expect("write");
        std::fs::write(d.join("boot_id"), "boot-1\n").expect("write");
        // Sessions get a home of their own: the test user's real start-up files (a
        // shell's rc taking global locks, say) are not what is being tested, and a
        // session killed inside them must not leave anything behind.
        std::fs::create_dir_all(d.join("home")).expect("mkdir home");
        let mut s = Sshd {
            dir,
            port,
            child: None,
        };
        s.start_again();
        s
    }

    /// Starts the (stopped) server again on the same port.
    pub fn start_again(&mut self) {
        let d = self.dir.path();
        let log = d.join("sshd.log");
        let logf = std::fs::File::create(&log).expect("log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
        self.child = Some(child);
        wait_listening(self.port, "sshd", &log);
    }

    /// Stops the server and every session it serves (a member going down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_tree(&mut c);
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The member keys for a pool file: this server, the test's key and known_hosts.
    pub fn member_keys(&self) -> String {
        format!(
            "transport = \"ssh\"\nssh_user = \"{}\"\nssh_port = {}\nssh_key = \"{}\"\nssh_known_hosts = \"{}\"\n",
            whoami(),
            self.port,
            self.path("user_key").display(),
            self.path("known_hosts").display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A balancer made of state files for the `command` driver (as in the engine's tests).
pub const FILE_LB: &str = r#"#!/bin/sh
d=$1; op=$2; m=$3
log() { echo "$(date +%s%N) $m $1" >> "$d/transitions.log"; }
case $op in
  drainstop|stop) echo stopped > "$d/$m.state"; log out ;;
  start) echo started > "$d/$m.state"; log in ;;
  state) cat "$d/$m.state" ;;
  initial) echo "$4" > "$d/$m.initial"; log "initial=$4" ;;
  get-initial) cat "$d/$m.initial" ;;
esac
"#;

/// Writes the file balancer into `dir/lb` for `members` (all started) and returns the
/// `[balancer]` table for it.
pub fn file_balancer(dir: &Path, members: &[&str]) -> String {
    let lb = dir.join("lb");
    std::fs::create_dir_all(&lb).expect("mkdir");
    for m in members {
        std::fs::write(lb.join(format!("{m}.state")), "started\n").expect("write");
        std::fs::write(lb.join(format!("{m}.initial")), "started\n").expect("write");
    }
    let script = dir.join("lb.sh");
    std::fs::write(&script, FILE_LB).expect("write");
    run(Command::new("chmod").arg("+x").arg(&script));
    let s = script.display();
    let l = lb.display();
    format!(
        "[balancer]\ndriver = \"command\"\ndrainstop = \"{s} {l} drainstop {{lb_name}}\"\nstop = \"{s} {l} stop {{lb_name}}\"\n\
         start = \"{s} {l} start {{lb_name}}\"\nstate = \"{s} {l} state {{lb_name}}\"\n\
         initial_state = \"{s} {l} initial {{lb_name}} {{state}}\"\nget_initial_state = \"{s} {l} get-initial {{lb_name}}\"\n"
    )
}

/// Parses a pool file written to `dir/pool.toml`, panicking with every error.
pub fn load_plan(dir: &Path, text: &str) -> ebb_engine::plan::Plan {
    let p = dir.join("pool.toml");
    std::fs::write(&p, text).expect("write pool");
    match ebb_engine::config::load(&p, &ebb_drivers::registry()) {
        Ok(plan) => plan,
        Err(e) => panic!("pool file invalid:\n{e}\n---\n{text}"),
    }
}

/// Runs a whole rollout of `plan` through the engine; returns (exit code, events as text).
pub async fn rollout(
    plan: ebb_engine::plan::Plan,
    state_dir: &Path,
) -> (i32, String, std::sync::Arc<ebb_engine::journal::Journal>) {
    rollout_with(plan, state_dir, ebb_engine::run::RunOptions::default()).await
}

/// [`rollout`] with options (`resume`, ...).
pub async fn rollout_with(
    plan: ebb_engine::plan::Plan,
    state_dir: &Path,
    opts: ebb_engine::run::RunOptions,
) -> (i32, String, std::sync::Arc<ebb_engine::journal::Journal>) {
    use std::sync::{Arc, Mutex};
    let drivers = match ebb_drivers::build(&plan) {
        Ok(d) => d,
        Err(e) => panic!("drivers: {e:?}"),
    };
    let journal = Arc::new(ebb_engine::journal::Journal::open(state_dir).expect("journal"));
    let log: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let l2 = log.clone();
    let sink: ebb_engine::events::EventSink = Arc::new(move |e| {
        if let Ok(mut l) = l2.lock() {
            l.push_str(&format!("{e:?}\n"));
        }
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    if let Some(after) = opts_interrupt_after(state_dir) {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(true);
        });
    } else {
        std::mem::forget(tx);
    }
    let out = ebb_engine::run::run(Arc::new(plan), drivers, journal.clone(), sink, opts, rx).await;
    let text = log.lock().map(|l| l.clone()).unwrap_or_default();
    match out {
        Ok(o) => (o.exit_code, format!("{}\n{text}", o.message), journal),
        Err(e) => (2, format!("{e}\n{text}"), journal),
    }
}

/// Prometheus Alertmanager on loopback, clustering off, storage in a temp dir.
pub struct Alertmanager {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

impl Alertmanager {
    pub fn start() -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: install the Debian package prometheus-alertmanager (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("alertmanager.yml"),
            "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
        )
        .expect("write");
        let port = free_port();
        let log = d.join("alertmanager.log");
        let logf = std::fs::File::create(&log).expect("log");
        let child = Command::new(ALERTMANAGER)
            .arg(format!(
                "--config.file={}",
                d.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ALERTMANAGER}: {e}"));
        let am = Alertmanager {
            dir,
            port,
            child: Some(child),
        };
        wait_listening(port, "alertmanager", &log);
        am
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Makes the next rollout in `state_dir` stop (as Ctrl-C does) after `after`.
pub fn interrupt_after(state_dir: &Path, after: std::time::Duration) {
    std::fs::write(
        state_dir.join("interrupt-after-ms"),
        after.as_millis().to_string(),
    )
    .expect("write");
}

fn opts_interrupt_after(state_dir: &Path) -> Option<std::time::Duration> {
    let f = state_dir.join("interrupt-after-ms");
    let ms = std::fs::read_to_string(&f).ok()?.trim().parse().ok()?;
    let _ = std::fs::remove_file(&f);
    Some(std::time::Duration::from_millis(ms))
}
