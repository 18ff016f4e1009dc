//! Test hosts in network namespaces (`scripts/testnet.sh` does the work): members with
//! their own address, sshd and HTTP service and a boot identity, a host for the balancer
//! and one for ebb, all on a bridge of their own in 10.231.77.0/24. Links are cut with
//! `ip link set eth0 down` on the host's side.
//!
//! Traffic never leaves the machine: the root namespace has an `unreachable` route for the
//! subnet and no host has a default route; [`TestNet::up`] asserts both before a test
//! starts. A net is named `ebbt<PID>n<N>` (unique per test; tests run in parallel) and is
//! deleted when its [`TestNet`] is dropped, a panicking test included; nets left by a test
//! process that died (SIGKILL) are swept by the next [`TestNet::up`]. If namespaces cannot
//! be created the test fails and says why: nothing is skipped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The one subnet every test host lives in.
pub const SUBNET: &str = "10.231.77.0/24";
/// The balancer host's address.
pub const LB_ADDR: &str = "10.231.77.3";
/// The control API token of the builtin balancer (required off loopback).
pub const LB_TOKEN: &str = "netfaults-token";

static NETS: AtomicUsize = AtomicUsize::new(0);

/// `scripts/testnet.sh`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testnet.sh")
}

/// A member's address (`m1` → 10.231.77.11).
pub fn addr(host: &str) -> String {
    match host {
        "ebb" => "10.231.77.2".into(),
        "lb" => LB_ADDR.into(),
        m => {
            let k: u32 = m
                .strip_prefix('m')
                .and_then(|k| k.parse().ok())
                .unwrap_or_else(|| panic!("not a host name: {m}"));
            format!("10.231.77.{}", 10 + k)
        }
    }
}

fn sh(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A net of test hosts; deleted on drop.
pub struct TestNet {
    /// `ebbt<PID>n<N>`; host H is namespace `NAME-H`.
    pub name: String,
    /// Keys, known_hosts, each member's folder (`DIR/mK`: its logs, boot id, home).
    pub dir: tempfile::TempDir,
    /// Number of members (m1..mN).
    pub members: usize,
}

impl TestNet {
    /// Creates a net with `members` members, after sweeping nets of dead test processes.
    pub fn up(members: usize) -> TestNet {
        let sweep = sh(Command::new(script()).arg("sweep"));
        assert!(
            sweep.status.success(),
            "testnet.sh sweep: {}",
            text(&sweep.stderr)
        );
        let name = format!(
            "ebbt{}n{}",
            std::process::id(),
            NETS.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let net = TestNet { name, dir, members };
        let o = sh(Command::new(script())
            .args(["up", &net.name])
            .arg(net.dir.path())
            .arg(members.to_string())
            .env("EBB", env!("CARGO_BIN_EXE_ebb")));
        assert!(
            o.status.success(),
            "the test hosts could not be created (network namespaces need root and iproute2; \
             sshd needs openssh-server): {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        net.assert_isolated();
        net
    }

    /// Asserts that nothing sent to the test subnet can leave the machine: the root
    /// namespace has an `unreachable` route for it, and no host (ebb's above all) has a
    /// default route.
    pub fn assert_isolated(&self) {
        let r = text(&sh(Command::new("ip").args(["route", "show", SUBNET])).stdout);
        assert!(
            r.trim_start().starts_with("unreachable"),
            "the root namespace must have `unreachable {SUBNET}`, has: {r:?}"
        );
        let mut hosts = vec!["ebb".to_string(), "lb".to_string()];
        hosts.extend((1..=self.members).map(|k| format!("m{k}")));
        for h in hosts {
            let o = sh(Command::new("ip").args(["-n", &self.ns(&h), "route", "show", "default"]));
            assert!(o.status.success(), "{}: {}", self.ns(&h), text(&o.stderr));
            assert!(
                text(&o.stdout).trim().is_empty(),
                "{} has a default route: {}",
                self.ns(&h),
                text(&o.stdout)
            );
        }
    }

    /// The namespace of host `h`.
    pub fn ns(&self, h: &str) -> String {
        format!("{}-{h}", self.name)
    }

    /// A path in the net's folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A file of the net's folder, or "" when it does not exist.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    fn script_op(&self, op: &str, host: &str) {
        let o = sh(Command::new(script())
            .args([op, &self.name, host])
            .env("EBB", env!("CARGO_BIN_EXE_ebb")));
        assert!(
            o.status.success(),
            "testnet.sh {op} {host}: {}",
            text(&o.stderr)
        );
    }

    /// Takes host `h`'s link down.
    pub fn cut(&self, h: &str) {
        self.script_op("cut", h);
    }

    /// Brings host `h`'s link back up.
    pub fn restore(&self, h: &str) {
        self.script_op("restore", h);
    }

    /// Reboots member `h`: every process in it killed, a new boot id, services started.
    pub fn reboot(&self, h: &str) {
        self.script_op("reboot", h);
    }

    /// `program` run inside host `h`.
    pub fn cmd_in(&self, h: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(h)]).arg(program);
        c
    }

    /// The `ebb` binary run inside ebb's host.
    pub fn ebb(&self) -> Command {
        let mut c = self.cmd_in("ebb", env!("CARGO_BIN_EXE_ebb"));
        c.env("EBB_PLAIN", "1");
        c
    }

    /// `[defaults]` keys reaching the members over ssh with the net's keys.
    pub fn ssh_defaults(&self) -> String {
        format!(
            "transport = \"ssh\"\nssh_user = \"root\"\nssh_key = \"{}\"\nssh_known_hosts = \"{}\"\nssh_connect_timeout = \"2s\"\nboot_id = \"cat {}/{{member}}/boot/{{member}}\"\n",
            self.path("user_key").display(),
            self.path("known_hosts").display(),
            self.dir.path().display()
        )
    }

    /// `[[member]]` tables for m1..mN (their HTTP service is the address).
    pub fn member_tables(&self) -> String {
        (1..=self.members)
            .map(|k| {
                format!(
                    "[[member]]\nname = \"m{k}\"\naddress = \"{}:8080\"\n\n",
                    addr(&format!("m{k}"))
                )
            })
            .collect()
    }

    /// Starts `ebb lb serve POOL` in the balancer's host (its log in `lb.log`).
    pub fn start_builtin(&self, pool: &Path) -> Proc {
        let log = self.path("lb.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("lb.log");
        let child = self
            .cmd_in("lb", env!("CARGO_BIN_EXE_ebb"))
            .args(["lb", "serve"])
            .arg(pool)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("start ebb lb serve");
        let p = Proc {
            child: Some(child),
            what: "ebb lb serve".into(),
        };
        self.wait_listening("lb", &format!("{LB_ADDR}:9900"), &log);
        p
    }

    /// Starts HAProxy in the balancer's host in front of the members' HTTP services, with
    /// its runtime API on `tcp://10.231.77.3:9999` and `server-state-file` `DIR/hap-state`.
    pub fn start_haproxy(&self) -> Proc {
        let cfg = self.path("haproxy.cfg");
        if !cfg.exists() {
            let mut c = format!(
                "global\n  stats socket ipv4@{LB_ADDR}:9999 level admin\n  server-state-file {}\n\
                 defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  load-server-state-from-file global\n\
                 frontend fe\n  bind {LB_ADDR}:80\n  default_backend app\nbackend app\n  balance roundrobin\n",
                self.path("hap-state").display()
            );
            for k in 1..=self.members {
                c += &format!(
                    "  server m{k} {}:8080 check inter 200ms fall 2 rise 1\n",
                    addr(&format!("m{k}"))
                );
            }
            std::fs::write(&cfg, c).expect("haproxy.cfg");
        }
        let log = self.path("haproxy.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("haproxy.log");
        let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("haproxy is not installed (apt-get install haproxy; scripts/test.sh does it)");
        let child = self
            .cmd_in("lb", bin)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start haproxy");
        let p = Proc {
            child: Some(child),
            what: "haproxy".into(),
        };
        self.wait_listening("lb", &format!("{LB_ADDR}:9999"), &log);
        p
    }

    /// Waits until something in host `h` accepts connections on `addr`.
    pub fn wait_listening(&self, h: &str, addr: &str, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (host, port) = addr.split_once(':').expect("HOST:PORT");
        while Instant::now() < deadline {
            let o = sh(self
                .cmd_in(h, "bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{host}/{port}")])
                .stderr(Stdio::null()));
            if o.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nothing listens on {addr} in {} after 10 s; log:\n{}",
            self.ns(h),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Lines of member `m`'s own log (`DIR/m/member.log`, written by the runbook).
    pub fn member_log(&self, m: &str) -> Vec<String> {
        self.read(&format!("{m}/member.log"))
            .lines()
            .map(String::from)
            .collect()
    }

    /// How many lines of member `m`'s log are exactly `line`.
    pub fn count(&self, m: &str, line: &str) -> usize {
        self.member_log(m).iter().filter(|l| *l == line).count()
    }

    /// Member `m`'s current boot id.
    pub fn boot_id(&self, m: &str) -> String {
        self.read(&format!("{m}/boot/{m}")).trim().to_string()
    }

    /// Runs a closure on a thread that has entered host `h`'s network namespace (only
    /// that thread: the test itself stays where it is).
    pub fn thread_in<T: Send + 'static>(
        &self,
        h: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns(h));
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }

    /// Samples the builtin balancer's members every 50 ms from ebb's host until stopped.
    pub fn sample_builtin(&self) -> Sampler {
        self.sample(builtin_members)
    }

    /// Samples HAProxy's servers (`show servers state`) every 50 ms from ebb's host.
    pub fn sample_haproxy(&self) -> Sampler {
        self.sample(haproxy_members)
    }

    /// Every 50 ms: the balancer's view of the members (`read`), then which members are
    /// in the middle of their maintenance by their own logs (a `maint-on` line not yet
    /// followed by `maint-off`). In that order, so a member seen in rotation while its
    /// log shows it still in maintenance really was in rotation early.
    fn sample(&self, read: fn() -> Option<Vec<MemberView>>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let (s2, st2) = (samples.clone(), stop.clone());
        let (dir, n) = (self.dir.path().to_path_buf(), self.members);
        let handle = self.thread_in("ebb", move || {
            let t = Instant::now();
            while !st2.load(Ordering::SeqCst) {
                if let Some(members) = read() {
                    let in_maintenance = (1..=n)
                        .map(|k| format!("m{k}"))
                        .filter(|m| {
                            let log = std::fs::read_to_string(dir.join(m).join("member.log"))
                                .unwrap_or_default();
                            let on = log.lines().filter(|l| *l == "maint-on").count();
                            let off = log.lines().filter(|l| *l == "maint-off").count();
                            on > off
                        })
                        .collect();
                    s2.lock().unwrap().push(Sample {
                        at: t.elapsed(),
                        members,
                        in_maintenance,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            samples,
            handle: Some(handle),
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let o = Command::new(script()).args(["down", &self.name]).output();
        match o {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("testnet.sh down {}: {}", self.name, text(&o.stderr)),
            Err(e) => eprintln!("testnet.sh down {}: {e}", self.name),
        }
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A balancer's view of one member at one instant.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub name: String,
    /// The builtin balancer's initial state (`stopped`: held); empty for HAProxy.
    pub initial_state: String,
    /// `started`, `draining`, `stopped` (HAProxy: READY → started, DRAIN → draining,
    /// MAINT → stopped).
    pub state: String,
    /// Whether it would take new connections now.
    pub in_rotation: bool,
}

/// One sample of the balancer.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    pub members: Vec<MemberView>,
    /// Members whose own log shows them between `maint-on` and `maint-off`.
    pub in_maintenance: Vec<String>,
}

/// A balancer sampled every 50 ms.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Stops sampling; returns every sample taken.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("sampler thread");
        }
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn http_get(addr: &str, path: &str, token: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The builtin balancer's members, as its control API shows them (from ebb's host).
pub fn builtin_members() -> Option<Vec<MemberView>> {
    let body = http_get(&format!("{LB_ADDR}:9900"), "/members", LB_TOKEN)?;
    // The body may be chunked: take the JSON object inside.
    let json = &body[body.find('{')?..=body.rfind('}')?];
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(
        v["members"]
            .as_array()?
            .iter()
            .map(|m| {
                let state = m["state"].as_str().unwrap_or("").to_string();
                MemberView {
                    name: m["name"].as_str().unwrap_or("").to_string(),
                    initial_state: m["initial_state"].as_str().unwrap_or("").to_string(),
                    in_rotation: state == "started",
                    state,
                }
            })
            .collect(),
    )
}

/// HAProxy's servers of backend `app`, from its runtime API (from ebb's host).
pub fn haproxy_members() -> Option<Vec<MemberView>> {
    let mut s = TcpStream::connect_timeout(
        &format!("{LB_ADDR}:9999").parse().ok()?,
        Duration::from_millis(300),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"show servers state app\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    // Version line "1", a "# be_id be_name srv_id srv_name srv_addr srv_op_state
    // srv_admin_state ..." header, then one line per server.
    let views: Vec<MemberView> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let admin: u32 = f.get(6)?.parse().ok()?;
            let name = f.get(3)?.to_string();
            // srv_admin_state bits: 0x01/0x02/0x04/0x20/0x40 maintenance (forced,
            // inherited, configured, resolution, health), 0x08/0x10 drain.
            let state = if admin & 0x67 != 0 {
                "stopped"
            } else if admin & 0x18 != 0 {
                "draining"
            } else {
                "started"
            };
            Some(MemberView {
                name,
                initial_state: String::new(),
                in_rotation: state == "started",
                state: state.into(),
            })
        })
        .collect();
    (!views.is_empty()).then_some(views)
}

/// A process started in a host; killed (SIGKILL) when dropped.
pub struct Proc {
    child: Option<Child>,
    what: String,
}

impl Proc {
    /// Kills it now (SIGKILL: no chance to save anything).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 50 ms until it is true, at most `max`.
pub fn wait_for(max: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < max, "waited {max:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
