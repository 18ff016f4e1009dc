//! A minimal HTTP/1.1 client and request reader over tokio.
//!
//! The demo needs very little HTTP: one request per connection (`Connection: close`), short
//! bodies, and precise knowledge of *how* a request failed (could not connect, was cut,
//! timed out), which is what the demo measures. Every wait is bounded by the caller's
//! timeout.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Largest response or request head the demo reads; more is a protocol error.
const MAX_BODY: usize = 4 << 20;
const MAX_HEAD: usize = 16 << 10;

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// No TCP connection could be made (refused, unreachable, connect timeout).
    Connect(String),
    /// Connected, but the connection broke (reset) before the response was complete.
    Cut(String),
    /// The whole exchange took longer than the timeout.
    Timeout,
    /// The peer answered something that is not the HTTP the demo speaks.
    Malformed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "cannot connect: {e}"),
            HttpError::Cut(e) => write!(f, "connection cut: {e}"),
            HttpError::Timeout => write!(f, "timed out"),
            HttpError::Malformed(e) => write!(f, "bad response: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// The body, de-chunked when the server used chunked transfer encoding.
    pub body: Vec<u8>,
    /// Whether the body was complete by the response's own framing (content-length or the
    /// last chunk); `false` when the body was delimited only by the connection closing.
    pub framed: bool,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Splits `http://host:port/path` into (`host:port`, `/path`).
pub fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Malformed(format!("only http:// URLs are supported: {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(HttpError::Malformed(format!("no host in {url}")));
    }
    Ok((host.to_string(), path.to_string()))
}

/// `GET url` with one overall timeout.
pub async fn get_url(url: &str, limit: Duration) -> Result<Response, HttpError> {
    let (host, path) = split_url(url)?;
    get(&host, &path, limit).await
}

/// `GET path` on `addr` (`host:port`) with one overall timeout (connect included).
pub async fn get(addr: &str, path: &str, limit: Duration) -> Result<Response, HttpError> {
    let deadline = Instant::now() + limit;
    let mut stream = match timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => return Err(HttpError::Connect(format!("{addr}: connect timed out"))),
        Ok(Err(e)) => return Err(HttpError::Connect(format!("{addr}: {e}"))),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ebb-demo\r\nConnection: close\r\n\r\n"
    );
    let exchange = async {
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| HttpError::Cut(format!("sending the request: {e}")))?;
        let mut raw = Vec::with_capacity(1024);
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > MAX_BODY {
                        return Err(HttpError::Malformed("response too large".into()));
                    }
                }
                Err(e) => return Err(HttpError::Cut(format!("{e} after {} bytes", raw.len()))),
            }
        }
        parse_response(&raw)
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout),
    }
}

/// Parses a whole `Connection: close` response.
pub fn parse_response(raw: &[u8]) -> Result<Response, HttpError> {
    let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        if raw.is_empty() {
            HttpError::Cut("connection closed before any response".into())
        } else {
            HttpError::Cut("connection closed inside the response head".into())
        }
    })?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| HttpError::Malformed(format!("status line `{status_line}`")))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = &raw[head_end + 4..];
    if chunked {
        let body = dechunk(body)?;
        return Ok(Response {
            status,
            body,
            framed: true,
        });
    }
    if let Some(length) = length {
        if body.len() < length {
            return Err(HttpError::Cut(format!(
                "body ended after {} of {length} bytes",
                body.len()
            )));
        }
        return Ok(Response {
            status,
            body: body[..length].to_vec(),
            framed: true,
        });
    }
    Ok(Response {
        status,
        body: body.to_vec(),
        framed: false,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")
            .ok_or_else(|| HttpError::Cut("chunked body ended without its last chunk".into()))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Malformed(format!("chunk size `{size_text}`")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(HttpError::Cut("chunked body ended inside a chunk".into()));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Reads one request head from a client and returns (method, path). Bounded in size and
/// time so that a slow or hostile client cannot hold a member's task forever.
pub async fn read_request(stream: &mut TcpStream, limit: Duration) -> Option<(String, String)> {
    let read = async {
        let mut raw = Vec::with_capacity(512);
        let mut buf = [0u8; 2048];
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            raw.extend_from_slice(&buf[..n]);
            if find(&raw, b"\r\n\r\n").is_some() || find(&raw, b"\n\n").is_some() {
                break;
            }
            if raw.len() > MAX_HEAD {
                return None;
            }
        }
        let head = String::from_utf8_lossy(&raw).into_owned();
        let first = head.lines().next()?.to_string();
        let mut parts = first.split_whitespace();
        let method = parts.next()?.to_string();
        let path = parts.next()?.to_string();
        Some((method, path))
    };
    timeout(limit, read).await.ok().flatten()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_length_and_chunked() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n1.1").unwrap();
        assert_eq!((r.status, r.text().as_str(), r.framed), (200, "1.1", true));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r.text(), "abcde");
        let r = parse_response(b"HTTP/1.1 503 x\r\n\r\nbusy").unwrap();
        assert_eq!((r.status, r.framed), (503, false));
    }

    #[test]
    fn truncated_bodies_are_cuts() {
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n1.1"),
            Err(HttpError::Cut(_))
        ));
        assert!(matches!(parse_response(b""), Err(HttpError::Cut(_))));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            Err(HttpError::Cut(_))
        ));
    }

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9/members").unwrap(),
            ("127.0.0.1:9".to_string(), "/members".to_string())
        );
        assert_eq!(split_url("http://h:1").unwrap().1, "/");
        assert!(split_url("https://h/").is_err());
    }
}
