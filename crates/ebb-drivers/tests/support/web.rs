//! HTTP members and clients for the nginx and Caddy tests: tiny HTTP/1.1 servers that
//! answer `GET /` with their name and `GET /stream` with an endless event stream, whose
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
/// established connections are not touched.
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
        let task = tokio::spawn(async move {
            let mut current = Some(tokio::spawn(serve(listener, n.clone())));
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match (&current, marker.exists()) {
                    (Some(t), true) => {
                        t.abort();
                        current = None;
                    }
                    (None, false) => {
                        // The port may linger a moment; retry.
                        for _ in 0..100 {
                            if let Ok(l) = TcpListener::bind(addr).await {
                                current = Some(tokio::spawn(serve(l, n.clone())));
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
    if path == "/stream" {
        let h = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n";
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
        let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
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
