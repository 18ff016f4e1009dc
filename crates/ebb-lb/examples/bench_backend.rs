//! A tiny HTTP/1.1 backend for `bench/lb/run.sh`: answers every request with a fixed
//! 200, honours keep-alive and `Connection: close`. Fast enough that the balancer in
//! front of it, not the backend, is what the benchmark measures.
//!
//! Usage: `bench_backend ADDR [ADDR...]` (e.g. 127.0.0.1:18081 127.0.0.1:18082).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEEP: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";
const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello, world\n";

fn main() -> std::io::Result<()> {
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    if addrs.is_empty() {
        eprintln!("usage: bench_backend ADDR [ADDR...]");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for a in addrs {
            let l = TcpListener::bind(&a).await?;
            eprintln!("bench_backend: listening on {a}");
            tasks.push(tokio::spawn(async move {
                loop {
                    if let Ok((s, _)) = l.accept().await {
                        tokio::spawn(serve(s));
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

async fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        let n = match s.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        let mut start = 0;
        let mut close = false;
        while let Some(end) = find(&buf[start..have], b"\r\n\r\n") {
            let req = &buf[start..start + end];
            close = contains_ci(req, b"connection: close");
            out.extend_from_slice(if close { CLOSE } else { KEEP });
            start += end + 4;
            if close {
                break;
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            let _ = s.shutdown().await;
            return;
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if have == buf.len() {
            return; // a header block larger than 8 KiB: not from wrk
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn contains_ci(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}
