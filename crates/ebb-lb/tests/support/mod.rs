//! Helpers that start real servers on 127.0.0.1 port 0: tagged echo backends and the
//! balancer itself, in-process.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_lb::client::ControlClient;
use ebb_lb::{LbConfig, MemberStatus, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(5);

/// A backend that greets each connection with `NAME\n`, echoes what it gets, and on the
/// client's end of input writes `EOF\n` and closes (to show half-close works).
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_at(name, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_at(name: &str, addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = connections.clone();
        let greeting = format!("{name}\n");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    if s.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) => {
                                let _ = s.write_all(b"EOF\n").await;
                                let _ = s.shutdown().await;
                                return;
                            }
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            connections,
            task,
        }
    }

    /// Closes the listening socket: new connections are refused (existing ones go on).
    pub async fn kill(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

/// Writes a pool file with the given members, extra `[balancer]` lines and a
/// `[balancer.health]` section, in `dir`.
pub fn write_pool(
    dir: &Path,
    members: &[(&str, SocketAddr)],
    balancer_extra: &str,
    health: &str,
) -> PathBuf {
    let mut s = String::from(
        "[pool]\nname = \"test\"\nmax_unavailable = 1\n\n[balancer]\ndriver = \"builtin\"\nlisten = \"127.0.0.1:0\"\ncontrol = \"http://127.0.0.1:0\"\n",
    );
    s.push_str(balancer_extra);
    s.push_str("\n[balancer.health]\n");
    s.push_str(health);
    s.push('\n');
    for (name, addr) in members {
        s.push_str(&format!(
            "\n[[member]]\nname = \"{name}\"\naddress = \"{addr}\"\ntransport = \"local\"\n"
        ));
    }
    let path = dir.join("pool.toml");
    std::fs::write(&path, s).unwrap();
    path
}

/// Fast health checks for tests.
pub const FAST_HEALTH: &str = "interval = \"50ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n";
/// Health checks that effectively never run again after the first.
pub const SLOW_HEALTH: &str = "interval = \"1h\"\ntimeout = \"1s\"\n";

/// The balancer, running in this process.
pub struct Lb {
    pub listen: SocketAddr,
    pub control_url: String,
    pub client: ControlClient,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Lb {
    pub async fn start(pool_file: &Path) -> Lb {
        let config = LbConfig::from_pool_file(pool_file).unwrap();
        Self::start_config(config).await
    }

    pub async fn start_config(config: LbConfig) -> Lb {
        let token = config.token.clone();
        let server = Server::bind(config).await.unwrap();
        let listen = server.listen_addrs()[0];
        let control_url = server.control_url();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let client = ControlClient::new(&control_url, token).unwrap();
        Lb {
            listen,
            control_url,
            client,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .expect("balancer shut down in time")
                .unwrap()
                .unwrap();
        }
    }

    pub async fn member(&self, name: &str) -> MemberStatus {
        self.client.member(name).await.unwrap()
    }

    /// Waits until `f` holds for member `name`; panics with its last status otherwise.
    pub async fn wait_member(
        &self,
        name: &str,
        what: &str,
        f: impl Fn(&MemberStatus) -> bool,
    ) -> MemberStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = self.member(name).await;
            if f(&st) {
                return st;
            }
            if Instant::now() > deadline {
                panic!("member {name} never became {what}: {st:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every member's health is up.
    pub async fn wait_all_up(&self) {
        for m in self.client.members().await.unwrap() {
            self.wait_member(&m.name, "up", |s| s.health == ebb_lb::Health::Up)
                .await;
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A client connection through the balancer, knowing which member answered.
pub struct Conn {
    pub stream: TcpStream,
    pub member: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let member = read_line(&mut stream).await;
        Conn { stream, member }
    }

    /// Sends `data` and expects it echoed back.
    pub async fn echo(&mut self, data: &[u8]) {
        self.stream.write_all(data).await.unwrap();
        let mut got = vec![0u8; data.len()];
        tokio::time::timeout(WAIT, self.stream.read_exact(&mut got))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(got, data);
    }

    /// Enough round trips that the balancer takes the connection for long-lived: from
    /// its 32nd wake-up on, its data thread's copy loop copies it (`balancer.copy_loop`).
    pub async fn make_long_lived(&mut self) {
        for i in 0..40 {
            self.echo(format!("round trip {i}\n").as_bytes()).await;
        }
    }

    /// Waits for the balancer to close the connection; returns how long it took.
    pub async fn closed_within(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(limit, self.stream.read(&mut buf)).await {
                Err(_) => panic!("connection to {} still open after {limit:?}", self.member),
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// Reads one `\n`-terminated line (the backend's greeting).
pub async fn read_line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .expect("line in time")
            .expect("read line");
        if n == 0 || b[0] == b'\n' {
            return String::from_utf8(out).unwrap();
        }
        out.push(b[0]);
    }
}

/// Opens a connection until one lands on `member`.
pub async fn conn_to(addr: SocketAddr, member: &str) -> Conn {
    for _ in 0..50 {
        let c = Conn::open(addr).await;
        if c.member == member {
            return c;
        }
    }
    panic!("no connection landed on {member}");
}

/// A listening socket that never accepts, with its queue full: connecting to it hangs
/// until the connect timeout, as a hung or firewalled member does.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _filler: std::net::TcpStream,
}

impl Blackhole {
    pub fn start() -> Blackhole {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = sock.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let filler = std::net::TcpStream::connect(addr).unwrap();
        Blackhole {
            addr,
            _listener: listener,
            _filler: filler,
        }
    }
}

/// A raw HTTP/1.1 request to the balancer's control API; returns status and body.
pub async fn http(
    lb: &Lb,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let addr = lb.control_url.trim_start_matches("http://").to_string();
    raw_http(
        &addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default(),
            body.len()
        ),
    )
    .await
}

/// Sends `request` as is; returns status and body.
pub async fn raw_http(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    let out = String::from_utf8_lossy(&out).to_string();
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Two members `a` and `b` behind a balancer started from a pool file in a temp dir, both
/// seen up by the health checks. Keep the temp dir and the backends alive while testing.
pub async fn two_members_up(health: &str) -> (tempfile::TempDir, Backend, Backend, Lb) {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let pool = write_pool(dir.path(), &[("a", a.addr), ("b", b.addr)], "", health);
    let lb = Lb::start(&pool).await;
    lb.wait_all_up().await;
    (dir, a, b, lb)
}
