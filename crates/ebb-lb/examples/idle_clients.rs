//! Holds many idle keep-alive connections open through a balancer, for the memory part of
//! `bench/lb/run.sh`.
//!
//! Usage: `idle_clients ADDR N`. Opens N connections to ADDR, sends one HTTP/1.1 keep-alive
//! request on each and reads its answer (so every connection has carried traffic through
//! the balancer and reached a backend), prints `ready N` on stdout, then keeps them open
//! until its stdin closes; then closes them all and exits.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: idle_clients ADDR N");
        std::process::exit(2);
    };
    let Ok(n) = n.parse::<usize>() else {
        eprintln!("idle_clients: N must be a number, got {n:?}");
        std::process::exit(2);
    };
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match open(&addr, request.as_bytes()) {
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!("idle_clients: connection {i} of {n} to {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("ready {}", conns.len());
    let _ = std::io::stdout().flush();
    // Hold them until whoever started us closes our stdin.
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {
        line.clear();
    }
    drop(conns);
}

/// Connects, sends the request and reads one whole answer (headers and Content-Length body).
fn open(addr: &str, request: &[u8]) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let got = s.read(&mut chunk)?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a whole answer arrived",
            ));
        }
        buf.extend_from_slice(&chunk[..got]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(s);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
