//! Real servers for the driver tests: HAProxy (the Debian package) with an admin socket in
//! a temp dir, tiny TCP backends that say who they are and echo, and clients and load that
//! go through HAProxy. Everything binds to 127.0.0.1 on free ports; tests run in parallel.
#![allow(dead_code)]

pub mod caddy;
pub mod nginx;
pub mod nlb;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The HAProxy binary (Debian puts it in /usr/sbin).
pub fn haproxy_bin() -> String {
    for p in [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("haproxy is not installed (apt-get install haproxy; scripts/test.sh does it): the HAProxy tests need the real thing")
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A backend: answers each connection with its name and a newline, then echoes lines.
pub struct Backend {
    pub name: String,
    pub addr: std::net::SocketAddr,
    /// Connections open now.
    pub active: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0").await
    }

    pub async fn start_on(name: &str, addr: &str) -> Backend {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(name, listener)
    }

    /// Listens on `addr` again (None while the port cannot be bound).
    pub async fn try_start_on(name: String, addr: std::net::SocketAddr) -> Option<Backend> {
        let listener = tokio::net::TcpListener::bind(addr).await.ok()?;
        Some(Self::serve(&name, listener))
    }

    fn serve(name: &str, listener: tokio::net::TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let active = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (n, a, c) = (name.to_string(), active.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (n, a) = (n.clone(), a.clone());
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    a.fetch_add(1, Ordering::SeqCst);
                    let (r, mut w) = s.split();
                    if w.write_all(format!("{n}\n").as_bytes()).await.is_ok() {
                        let mut lines = BufReader::new(r).lines();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if w.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                    a.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            active,
            accepted,
            task,
        }
    }

    /// Stops listening (new connections are refused; health checks fail).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend whose service goes down while the file `marker` exists (its port is closed,
/// so health checks fail, as when the service is stopped for an update) and comes back on
/// the same port when the file is removed. Established connections are not touched. The
/// file `marker` with extension `up` exists while it listens.
pub struct ControlledBackend {
    pub name: String,
    pub addr: std::net::SocketAddr,
    watcher: tokio::task::JoinHandle<()>,
}

impl ControlledBackend {
    pub async fn start(name: &str, marker: PathBuf) -> ControlledBackend {
        let first = Backend::start(name).await;
        let addr = first.addr;
        let n = name.to_string();
        let up = marker.with_extension("up");
        std::fs::write(&up, "").unwrap();
        let watcher = tokio::spawn(async move {
            let mut current = Some(first);
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let down = marker.exists();
                match (&current, down) {
                    (Some(_), true) => {
                        current = None;
                        let _ = std::fs::remove_file(&up);
                    }
                    (None, false) => {
                        // The port may linger a moment; retry.
                        for _ in 0..50 {
                            if let Some(b) = Backend::try_start_on(n.clone(), addr).await {
                                current = Some(b);
                                let _ = std::fs::write(&up, "");
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    _ => {}
                }
            }
        });
        ControlledBackend {
            name: name.to_string(),
            addr,
            watcher,
        }
    }
}

impl Drop for ControlledBackend {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// A connection through the balancer that stays open.
pub struct LongConn {
    pub backend: String,
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl LongConn {
    pub async fn open(addr: &str) -> std::io::Result<LongConn> {
        let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        let (r, w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        let backend = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .map_err(|_| std::io::Error::other("no greeting within 5s"))??
            .ok_or_else(|| std::io::Error::other("closed before the greeting"))?;
        Ok(LongConn { backend, lines, w })
    }

    /// Sends a line and reads it back: proves the connection still works end to end.
    pub async fn ping(&mut self, text: &str) -> std::io::Result<()> {
        self.w.write_all(format!("{text}\n").as_bytes()).await?;
        let back = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .map_err(|_| std::io::Error::other("no echo within 5s"))??;
        match back {
            Some(l) if l == text => Ok(()),
            Some(l) => Err(std::io::Error::other(format!("echo was {l:?}"))),
            None => Err(std::io::Error::other("connection closed")),
        }
    }
}

/// One short request through the balancer: connect, greeting, one echo, close. Returns the
/// backend's name.
pub async fn hello(addr: &str) -> std::io::Result<String> {
    let mut c = LongConn::open(addr).await?;
    c.ping("ping").await?;
    Ok(c.backend)
}

/// Steady load through the balancer: `workers` loops of [`hello`].
pub struct Load {
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub errors: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: &str, workers: usize, pause: Duration) -> Load {
        Load::with(addr, workers, pause, |a| async move {
            hello(&a).await.map(|_| ()).map_err(|e| e.to_string())
        })
    }

    /// `workers` loops of `request(addr)`, each followed by `pause`.
    pub fn with<F, Fut>(addr: &str, workers: usize, pause: Duration, request: F) -> Load
    where
        F: Fn(String) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|_| {
                let (addr, ok, failed, errors, stop, request) = (
                    addr.to_string(),
                    ok.clone(),
                    failed.clone(),
                    errors.clone(),
                    stop.clone(),
                    request.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match request(addr.clone()).await {
                            Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(e) => {
                                errors.lock().unwrap().push(e);
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load {
            ok,
            failed,
            errors,
            stop,
            tasks,
        }
    }

    /// Stops the load and returns (ok, failed).
    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// Options for [`Haproxy::start`].
#[derive(Default, Clone)]
pub struct HaproxyOptions {
    /// Configure `server-state-file` + `load-server-state-from-file global`.
    pub state_file: bool,
    /// Health checks on the servers (`check inter 100ms`).
    pub checks: bool,
    /// An extra `stats socket` at `level user` (user.sock).
    pub user_socket: bool,
    /// An extra admin socket on TCP (`stats socket ipv4@127.0.0.1:PORT level admin`).
    pub tcp_socket: bool,
}

/// A real HAProxy in master-worker mode, in a temp dir, in front of `servers`.
pub struct Haproxy {
    pub dir: PathBuf,
    pub admin_sock: PathBuf,
    pub state_file: PathBuf,
    /// `127.0.0.1:PORT` of the frontend.
    pub frontend: String,
    /// `tcp://127.0.0.1:PORT` of the TCP admin socket, with `tcp_socket`.
    pub tcp_admin: Option<String>,
    child: Child,
}

impl Haproxy {
    /// Starts HAProxy with backend `app` holding `servers` (name, address).
    pub fn start(
        dir: &Path,
        servers: &[(&str, std::net::SocketAddr)],
        o: HaproxyOptions,
    ) -> Haproxy {
        let admin_sock = dir.join("admin.sock");
        let state_file = dir.join("server-state");
        let port = free_port();
        let mut cfg = format!(
            "global\n  stats socket {} mode 600 level admin\n",
            admin_sock.display()
        );
        if o.user_socket {
            cfg += &format!(
                "  stats socket {} mode 600 level user\n",
                dir.join("user.sock").display()
            );
        }
        let tcp_admin = o.tcp_socket.then(|| format!("127.0.0.1:{}", free_port()));
        if let Some(a) = &tcp_admin {
            cfg += &format!("  stats socket ipv4@{a} level admin\n");
        }
        if o.state_file {
            cfg += &format!("  server-state-file {}\n", state_file.display());
        }
        cfg += "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n";
        if o.state_file {
            cfg += "  load-server-state-from-file global\n";
        }
        cfg += &format!(
            "frontend fe\n  bind 127.0.0.1:{port}\n  default_backend app\nbackend app\n  balance roundrobin\n"
        );
        for (name, addr) in servers {
            cfg += &format!(
                "  server {name} {addr}{}\n",
                if o.checks {
                    " check inter 100ms fall 2 rise 1"
                } else {
                    ""
                }
            );
        }
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new(haproxy_bin())
            .args(["-W", "-f"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .unwrap();
        let h = Haproxy {
            dir: dir.to_path_buf(),
            admin_sock,
            state_file,
            frontend: format!("127.0.0.1:{port}"),
            tcp_admin: tcp_admin.map(|a| format!("tcp://{a}")),
            child,
        };
        h.wait_ready(None);
        h
    }

    /// Sends a command on the admin socket (blocking; for test set-up only).
    pub fn cli(&self, cmd: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.admin_sock).unwrap();
        s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn worker_pid(&self) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.admin_sock).ok()?;
        s.write_all(b"show info\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .map(|p| p.trim().to_string())
    }

    fn wait_ready(&self, old_worker: Option<&str>) {
        if !self.poll_ready(old_worker, Duration::from_secs(10)) {
            panic!(
                "haproxy did not become ready: {}",
                std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
            );
        }
    }

    fn poll_ready(&self, old_worker: Option<&str>, max: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < max {
            if let Some(pid) = self.worker_pid() {
                if Some(pid.as_str()) != old_worker
                    && std::net::TcpStream::connect(&self.frontend).is_ok()
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Reloads the configuration as `systemctl reload haproxy` does (SIGUSR2 to the
    /// master): a new worker starts from the configuration (and the state file, if any).
    pub fn reload(&self) {
        let old = self.worker_pid();
        // A master that has just started may not have its signal handlers yet (the
        // signal is then lost): send again until a new worker answers.
        for _ in 0..5 {
            // SAFETY: signalling the master process this test started.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR2) };
            if self.poll_ready(old.as_deref(), Duration::from_secs(2)) {
                return;
            }
        }
        self.wait_ready(old.as_deref());
    }

    /// The `status` column of `show stat` for a server of backend `app`.
    pub fn status(&self, server: &str) -> String {
        let out = self.cli("show stat app 4 -1");
        let mut lines = out.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let i = header.iter().position(|c| *c == "status").unwrap();
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&server))
            .map(|f| f[i].to_string())
            .unwrap_or_else(|| panic!("no server {server} in {out}"))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SAFETY: the master this test started; SIGTERM stops it and its workers.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `pool.toml` into `dir` and loads it as the engine would.
pub fn plan(dir: &Path, toml_text: &str) -> ebb_engine::plan::Plan {
    let path = dir.join("pool.toml");
    std::fs::write(&path, toml_text).unwrap();
    match ebb_engine::config::load(&path, &ebb_drivers::registry()) {
        Ok(p) => p,
        Err(e) => panic!("pool file invalid: {e:?}"),
    }
}

/// Polls `f` until it is true, at most `max`.
pub async fn eventually<F, Fut>(max: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    loop {
        if f().await {
            return true;
        }
        if t.elapsed() > max {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The runbook of the rolling-run tests: each member's service stopped (its port closed
/// while `DIR/MEMBER.down` exists) and updated, verified, and the pool's ports checked
/// after each return. `dir` holds the markers and version files; the service's undo
/// returns once the member listens again (`MEMBER.up`), as `systemctl start` does.
pub fn rolling_runbook(dir: &Path) -> String {
    format!(
        r#"[defaults]
vars = {{ dir = "{dir}", version = "1.1" }}

[runbook]
rejoin_timeout = "10s"

[runbook.drain]
mode = "drainstop"
timeout = "20s"
on_timeout = "abort"
hold = true

[[runbook.step]]
name = "stop service"
run = "touch {{var.dir}}/{{member}}.down"
undo = "rm -f {{var.dir}}/{{member}}.down; i=0; while [ ! -e {{var.dir}}/{{member}}.up ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done"

[[runbook.step]]
name = "install"
run = "sleep 0.3; echo {{var.version}} > {{var.dir}}/{{member}}.version"

[[runbook.verify]]
name = "version"
command = "grep -qx {{var.version}} {{var.dir}}/{{member}}.version"

[[pool.check]]
name = "port"
tcp = "{{address}}"
retries = 20
interval = "100ms"

"#,
        dir = dir.display()
    )
}

/// After a run of [`rolling_runbook`]: every member has version 1.1 and its service back.
pub fn assert_updated(dir: &Path, names: &[&str]) {
    for m in names {
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("{m}.version")))
                .unwrap()
                .trim(),
            "1.1"
        );
        assert!(!dir.join(format!("{m}.down")).exists());
    }
}

/// A whole `ebb run` of `plan` through the engine with the real drivers, its journal in
/// `dir/.ebb`: the outcome, every event as JSON, and how long it took.
pub async fn run_engine(
    plan: ebb_engine::plan::Plan,
    dir: &Path,
) -> (
    ebb_engine::run::RunOutcome,
    Vec<serde_json::Value>,
    Duration,
) {
    use ebb_engine::events::{Event, EventSink};
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    let sink: EventSink = Arc::new(move |e: &Event| {
        ev.lock().unwrap().push(serde_json::to_value(e).unwrap());
    });
    let drivers = ebb_drivers::build(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    let journal = Arc::new(ebb_engine::journal::Journal::open(&dir.join(".ebb")).unwrap());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let outcome = ebb_engine::run::run(
        Arc::new(plan),
        drivers,
        journal,
        sink,
        ebb_engine::run::RunOptions::default(),
        rx,
    )
    .await
    .unwrap();
    let took = started.elapsed();
    let events = events.lock().unwrap().clone();
    (outcome, events, took)
}
