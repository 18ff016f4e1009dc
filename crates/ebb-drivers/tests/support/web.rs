//! HTTP members and clients for the nginx and Caddy tests: tiny HTTP/1.1 servers that
//! answer `GET /` with their name and `GET /stream` (or a WebSocket upgrade) with an
//! endless event stream, whose
//! port closes while a marker file exists (the service stopped for an update); clients
//! that go through the balancer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP member. `GET /` answers its name; `GET /stream` sends `data: NAME N` every
/// 100 ms until the client goes away. While `marker` exists its port is closed;
/// established connections are not touched. `marker` with extension `up` exists while it
/// listens.
pub struct WebMember {
    pub name: String,
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WebMember {
    pub async fn start(name: &str, marker: PathBuf) -> WebMember {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let n = name.to_string();
        let up = marker.with_extension("up");
        std::fs::write(&up, "").unwrap();
        let task = tokio::spawn(async move {
            let mut current = Some(tokio::spawn(serve(listener, n.clone())));
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match (&current, marker.exists()) {
                    (Some(t), true) => {
                        t.abort();
                        current = None;
                        let _ = std::fs::remove_file(&up);
                    }
                    (None, false) => {
                        // The port may linger a moment; retry.
                        for _ in 0..100 {
                            if let Ok(l) = TcpListener::bind(addr).await {
                                current = Some(tokio::spawn(serve(l, n.clone())));
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
        WebMember {
            name: name.to_string(),
            addr,
            task,
        }
    }
}

impl Drop for WebMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One member per name, each with its marker `dir/NAME.down`.
pub async fn start_members(dir: &std::path::Path, names: &[&str]) -> Vec<WebMember> {
    let mut members = Vec::new();
    for m in names {
        members.push(WebMember::start(m, dir.join(format!("{m}.down"))).await);
    }
    members
}

async fn serve(listener: TcpListener, name: String) {
    // Connections run in their own tasks: closing the port leaves them alone.
    while let Ok((s, _)) = listener.accept().await {
        tokio::spawn(answer(s, name.clone()));
    }
}

async fn answer(mut s: TcpStream, name: String) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let path = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let upgrade = String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .contains("\r\nupgrade: websocket");
    if path == "/stream" || upgrade {
        // A WebSocket handshake (no framing: the tests only need an upgraded connection
        // that carries bytes both ways), or an event stream.
        let h = if upgrade {
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        } else {
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
        };
        if s.write_all(h.as_bytes()).await.is_err() {
            return;
        }
        for i in 0u64.. {
            let ev = format!("data: {name} {i}\n\n");
            if s.write_all(ev.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        let r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
            name.len()
        );
        let _ = s.write_all(r.as_bytes()).await;
        let _ = s.shutdown().await;
    }
}

/// One `GET /` through the balancer; returns the member's name (the body) when the status
/// is 200.
pub async fn get(addr: &str) -> Result<String, String> {
    let work = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.split_whitespace().nth(1).unwrap_or("");
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        if status == "200" && !body.is_empty() {
            Ok(body.to_string())
        } else {
            Err(format!(
                "answer: {}",
                text.lines().next().unwrap_or("(nothing)")
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "no answer within 5s".to_string())?
}

/// `n` requests through the balancer: the names that answered, in order.
pub async fn names(addr: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(addr).await.unwrap_or_else(|e| format!("error: {e}")));
    }
    out
}

/// Opens long streams (or upgraded connections) through the balancer until one lands on
/// `member` (round robin: a few tries).
pub async fn long_to(frontend: &str, member: &str, upgraded: bool) -> LongStream {
    for _ in 0..12 {
        let s = if upgraded {
            LongStream::open_upgraded(frontend).await.unwrap()
        } else {
            LongStream::open(frontend).await.unwrap()
        };
        if s.member == member {
            return s;
        }
    }
    panic!("nothing reached {member}");
}

/// Whether requests through the balancer avoid `name`: 6 in a row, all answered, within
/// 5 s (a reload takes a moment to replace nginx's workers).
pub async fn avoided(frontend: &str, name: &str) -> bool {
    super::eventually(Duration::from_secs(5), || async {
        let answers = names(frontend, 6).await;
        answers.iter().all(|n| n != name && !n.starts_with("error"))
    })
    .await
}

/// A `GET /stream` through the balancer, read in the background: `events` goes up while
/// the connection is alive.
pub struct LongStream {
    pub member: String,
    events: Arc<AtomicU64>,
    ended: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LongStream {
    pub async fn open(addr: &str) -> Result<LongStream, String> {
        Self::send(addr, "GET /stream HTTP/1.1\r\nHost: test\r\n\r\n").await
    }

    /// An upgraded (WebSocket) connection instead of a long response.
    pub async fn open_upgraded(addr: &str) -> Result<LongStream, String> {
        Self::send(
            addr,
            "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
    }

    async fn send(addr: &str, request: &str) -> Result<LongStream, String> {
        let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // Up to the first event: it names the member.
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let member = loop {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .map_err(|_| "no event within 5s".to_string())?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!(
                    "closed before the first event: {}",
                    String::from_utf8_lossy(&seen)
                ));
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some(ev) = text.split("data: ").nth(1) {
                if let Some(name) = ev.split_whitespace().next().filter(|_| ev.contains('\n')) {
                    break name.to_string();
                }
            }
        };
        let events = Arc::new(AtomicU64::new(1));
        let ended = Arc::new(AtomicBool::new(false));
        let task = {
            let (events, ended) = (events.clone(), ended.clone());
            tokio::spawn(async move {
                loop {
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => {
                            let k = buf[..n].windows(6).filter(|w| w == b"data: ").count();
                            events.fetch_add(k as u64, Ordering::SeqCst);
                        }
                        _ => break,
                    }
                }
                ended.store(true, Ordering::SeqCst);
            })
        };
        Ok(LongStream {
            member,
            events,
            ended,
            task,
        })
    }

    /// Whether new events keep arriving: at least two more within 5 s.
    pub async fn alive(&self) -> bool {
        let start = self.events.load(Ordering::SeqCst);
        for _ in 0..100 {
            if self.events.load(Ordering::SeqCst) >= start + 2 {
                return true;
            }
            if self.ended.load(Ordering::SeqCst) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Whether the balancer closed it.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Closes it from the client side.
    pub fn close(self) {
        self.task.abort();
    }
}

impl Drop for LongStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Steady `GET /` load through the balancer from `workers` loops.
pub fn web_load(addr: &str, workers: usize, pause: Duration) -> super::Load {
    super::Load::with(addr, workers, pause, |a| async move {
        get(&a).await.map(|_| ())
    })
}

/// Names of the members the balancer has out of rotation now, read independently of the
/// driver (the upstream file, the admin API); `None` when it cannot be read this time.
pub type OutNow = Arc<dyn Fn() -> Option<Vec<String>> + Send + Sync>;

/// What a whole rolling run behind a balancer measured.
pub struct RunReport {
    pub outcome: ebb_engine::run::RunOutcome,
    pub events: Vec<serde_json::Value>,
    pub took: Duration,
    pub ok: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    /// The most members out at any 50 ms sample.
    pub max_out: usize,
    /// The members the long streams were on (each closed a second after its member went
    /// out), or which stream was cut.
    pub streams_on: Result<Vec<String>, String>,
}

/// Runs the pool file `pool_toml` (with [`super::rolling_runbook`] in it) through the
/// engine while 4 clients loop on `GET /` through `frontend` and one long stream per
/// member stays open until a second after `out_now` shows its member out.
pub async fn rolling_run_under_load(
    d: &std::path::Path,
    frontend: &str,
    pool_toml: &str,
    members: usize,
    out_now: OutNow,
) -> RunReport {
    let plan = super::plan(d, pool_toml);
    let stop_watch = Arc::new(AtomicBool::new(false));
    let max_out = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let (stop, max_out, out_now) = (stop_watch.clone(), max_out.clone(), out_now.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(out) = out_now() {
                    max_out.fetch_max(out.len(), Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let load = web_load(frontend, 4, Duration::from_millis(5));
    let mut streams = Vec::new();
    for _ in 0..members {
        streams.push((LongStream::open(frontend).await.unwrap(), None));
    }
    let stream_task = tokio::spawn(async move {
        let mut on = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !streams.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err("streams still open after 60 s".to_string());
            }
            let out = out_now().unwrap_or_default();
            for (s, since) in streams.iter_mut() {
                if !s.alive().await {
                    return Err(format!("the stream to {} was cut", s.member));
                }
                if since.is_none() && out.contains(&s.member) {
                    *since = Some(std::time::Instant::now());
                }
            }
            let (done, rest): (Vec<_>, Vec<_>) = streams.into_iter().partition(|(_, since)| {
                since.is_some_and(|t: std::time::Instant| t.elapsed() > Duration::from_secs(1))
            });
            for (s, _) in done {
                on.push(s.member.clone());
                s.close();
            }
            streams = rest;
        }
        Ok(on)
    });
    let (outcome, events, took) = super::run_engine(plan, d).await;
    let streams_on = stream_task.await.unwrap();
    let errors = load.errors.lock().unwrap().clone();
    let (ok, failed) = load.finish().await;
    stop_watch.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    RunReport {
        outcome,
        events,
        took,
        ok,
        failed,
        errors,
        max_out: max_out.load(Ordering::SeqCst),
        streams_on,
    }
}

impl RunReport {
    /// What every balancer must show: the run done, no request failed, never more than
    /// `max_unavailable` out, no stream cut and every drain of a member with a stream
    /// waiting for it, each member updated and its service back.
    pub fn assert_clean(&self, d: &std::path::Path, names: &[&str], max_unavailable: usize) {
        self.assert_clean_but(d, names, max_unavailable, None)
    }

    /// [`Self::assert_clean`], except that failed requests whose error contains `known`
    /// are allowed (a balancer's own documented behaviour, counted in the summary).
    pub fn assert_clean_but(
        &self,
        d: &std::path::Path,
        names: &[&str],
        max_unavailable: usize,
        known: Option<&str>,
    ) {
        let failures: Vec<_> = self
            .events
            .iter()
            .filter(|e| e["outcome"] == "failed")
            .collect();
        assert_eq!(
            self.outcome.exit_code, 0,
            "{}: {failures:#?}",
            self.outcome.message
        );
        let streams_on = self.streams_on.clone().unwrap_or_else(|e| panic!("{e}"));
        let unexplained: Vec<_> = self
            .errors
            .iter()
            .filter(|e| known.is_none_or(|k| !e.contains(k)))
            .collect();
        assert!(
            unexplained.is_empty(),
            "{} of {} requests failed: {:?}",
            self.failed,
            self.ok + self.failed,
            self.errors
        );
        assert!(
            self.ok > 100,
            "too little load to mean anything: {}",
            self.ok
        );
        assert_eq!(self.max_out, max_unavailable, "max_unavailable");
        let counted: Vec<_> = self
            .events
            .iter()
            .filter(|e| {
                e["event"] == "drain_progress" && e["active_connections"].as_u64() > Some(0)
            })
            .map(|e| e["member"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(
            streams_on.iter().all(|m| counted.contains(m)),
            "a drain did not wait for its stream: streams on {streams_on:?}, counted {counted:?}"
        );
        super::assert_updated(d, names);
    }

    /// One line for the test output (the numbers in the docs come from it).
    pub fn summary(&self, what: &str, members: usize) -> String {
        let drains: Vec<_> = self
            .events
            .iter()
            .filter(|e| e["step"] == "drain" && e["event"] == "step_finished")
            .map(|e| e["detail"].to_string())
            .collect();
        format!(
            "rolling run behind {what}: {members} members in {:.1}s, {} requests, {} failed, max out of service {}, streams on {:?}; drains: {drains:?}",
            self.took.as_secs_f64(),
            self.ok,
            self.failed,
            self.max_out,
            self.streams_on
        )
    }
}
