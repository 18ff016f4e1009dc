//! A small blocking client for etcd's v3 JSON gateway (`POST /v3/...` on the client port):
//! HTTP/1.1 over `std::net` (TLS for `https://` endpoints), one kept-alive connection,
//! every wait bounded, the endpoints tried in turn.

use super::tls::Stream;
use rustls::ClientConfig;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// No endpoint answered (each one's problem listed).
    Unreachable(String),
    /// etcd answered with an error (gRPC code and message).
    Server {
        /// gRPC status code.
        code: i64,
        /// etcd's message.
        message: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "etcd unreachable: {m}"),
            CallError::Server { code, message } => write!(f, "etcd: {message} (code {code})"),
        }
    }
}

/// One client URL: `http://HOST:PORT` or `https://HOST:PORT`.
#[derive(Clone)]
struct Endpoint {
    /// As the user wrote it (for messages).
    url: String,
    /// `HOST:PORT`.
    authority: String,
    /// Whether it is `https://`.
    tls: bool,
}

impl Endpoint {
    fn parse(url: &str) -> Endpoint {
        let url = url.trim_end_matches('/').to_string();
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, url.trim_start_matches("http://")),
        };
        Endpoint {
            authority: rest.to_string(),
            tls,
            url,
        }
    }

    /// The host part, without brackets (the TLS server name).
    fn host(&self) -> &str {
        self.authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.authority)
            .trim_start_matches('[')
            .trim_end_matches(']')
    }
}

/// Client of one etcd cluster.
pub struct Client {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    auth: Option<(String, String)>,
    tls: Option<Arc<ClientConfig>>,
    conn: Mutex<Conn>,
}

#[derive(Default)]
struct Conn {
    current: usize,
    stream: Option<Stream>,
    token: Option<String>,
}

/// gRPC codes worth another endpoint: unavailable, deadline exceeded, unknown (etcd's
/// "no leader" / "request timed out" when a member has lost its quorum).
fn retryable(code: i64) -> bool {
    matches!(code, 2 | 4 | 14)
}

impl Client {
    /// A client of `endpoints` (`http://HOST:PORT` or, with `tls`, `https://HOST:PORT`);
    /// each request waits at most `timeout`.
    pub fn new(
        endpoints: &[String],
        timeout: Duration,
        auth: Option<(String, String)>,
        tls: Option<Arc<ClientConfig>>,
    ) -> Client {
        Client {
            endpoints: endpoints.iter().map(|e| Endpoint::parse(e)).collect(),
            timeout,
            auth,
            tls,
            conn: Mutex::new(Conn::default()),
        }
    }

    /// Another client of the same cluster, with the same credentials, on a connection of
    /// its own (the lease keepalive thread's).
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            endpoints: self.endpoints.clone(),
            timeout,
            auth: self.auth.clone(),
            tls: self.tls.clone(),
            conn: Mutex::new(Conn::default()),
        }
    }

    /// `POST path` with `body`, on the current endpoint, then on each other one; passes
    /// over all of them repeat (a leader election takes about a second) until `timeout`.
    pub fn call(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.endpoints.len();
        let deadline = std::time::Instant::now() + self.timeout;
        let mut problems = Vec::new();
        loop {
            problems.clear();
            let start = conn.current;
            for i in 0..n {
                let idx = (start + i) % n;
                if idx != conn.current {
                    conn.stream = None;
                    conn.token = None;
                    conn.current = idx;
                }
                // A kept-alive connection may have been closed by the server: one retry.
                let mut result = self.once(&mut conn, path, body);
                if matches!(result, Err(CallError::Unreachable(_))) {
                    conn.stream = None;
                    result = self.once(&mut conn, path, body);
                }
                match result {
                    Ok(v) => return Ok(v),
                    Err(CallError::Server { code, message }) if !retryable(code) => {
                        return Err(CallError::Server { code, message })
                    }
                    Err(e) => {
                        conn.stream = None;
                        let m = match e {
                            CallError::Unreachable(m) => m,
                            e => e.to_string(),
                        };
                        problems.push(format!("{}: {m}", self.endpoints[idx].url));
                    }
                }
            }
            if std::time::Instant::now() + Duration::from_millis(250) >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(CallError::Unreachable(format!(
            "tried {}",
            problems.join("; ")
        )))
    }

    fn once(&self, conn: &mut Conn, path: &str, body: &Value) -> Result<Value, CallError> {
        let fresh = conn.token.is_none();
        if fresh {
            self.authenticate(conn)?;
        }
        let token = conn.token.clone();
        match self.post(conn, path, body, token.as_deref()) {
            // etcd forgets a token after --auth-token-ttl (5 minutes) idle, or on restart:
            // a new one, once.
            Err(CallError::Server { message, .. })
                if !fresh && token.is_some() && message.contains("invalid auth token") =>
            {
                conn.token = None;
                self.authenticate(conn)?;
                let token = conn.token.clone();
                self.post(conn, path, body, token.as_deref())
            }
            Err(CallError::Server { code, message })
                if self.auth.is_none() && message.contains("user name is empty") =>
            {
                Err(CallError::Server {
                    code,
                    message: format!("{message}: this etcd has authentication on; set username in [state] (or EBB_STATE_USERNAME) and the password in EBB_STATE_PASSWORD"),
                })
            }
            r => r,
        }
    }

    /// Trades the user name and password for a token (the password goes nowhere else, and
    /// no message carries it).
    fn authenticate(&self, conn: &mut Conn) -> Result<(), CallError> {
        let Some((user, pass)) = &self.auth else {
            return Ok(());
        };
        let v = self
            .post(
                conn,
                "/v3/auth/authenticate",
                &json!({"name": user, "password": pass}),
                None,
            )
            .map_err(|e| match e {
                CallError::Server { code, message } => CallError::Server {
                    code,
                    message: format!("user \"{user}\": {message} (check username and the password, EBB_STATE_PASSWORD or [state] password)"),
                },
                e => e,
            })?;
        conn.token = v["token"].as_str().map(String::from);
        Ok(())
    }

    fn post(
        &self,
        conn: &mut Conn,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, CallError> {
        let ep = &self.endpoints[conn.current];
        // Name TLS as the culprit when the trouble is in it (a refused certificate shows up
        // as an alert on the first read under TLS 1.3).
        let io = |e: std::io::Error| {
            CallError::Unreachable(if ep.tls {
                format!("TLS: {e}{}", super::tls::hint(&e.to_string()))
            } else {
                e.to_string()
            })
        };
        if conn.stream.is_none() {
            let addr = ep
                .authority
                .to_socket_addrs()
                .map_err(io)?
                .next()
                .ok_or_else(|| {
                    CallError::Unreachable(format!("{} resolves to nothing", ep.authority))
                })?;
            let s = TcpStream::connect_timeout(&addr, self.timeout).map_err(io)?;
            s.set_read_timeout(Some(self.timeout)).map_err(io)?;
            s.set_write_timeout(Some(self.timeout)).map_err(io)?;
            s.set_nodelay(true).map_err(io)?;
            conn.stream = Some(match (&self.tls, ep.tls) {
                (_, false) => Stream::Plain(s),
                (Some(config), true) => {
                    Stream::tls(config, ep.host(), s).map_err(CallError::Unreachable)?
                }
                (None, true) => {
                    return Err(CallError::Unreachable(
                        "an https:// endpoint needs the TLS settings".into(),
                    ))
                }
            });
        }
        let Some(stream) = conn.stream.as_mut() else {
            return Err(CallError::Unreachable("no connection".into()));
        };
        let text = body.to_string();
        let auth = token
            .map(|t| format!("Authorization: {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{text}",
            ep.authority,
            text.len()
        );
        stream.write_all(req.as_bytes()).map_err(io)?;
        stream.flush().map_err(io)?;
        let (status, body) = read_response(stream).map_err(io)?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            CallError::Unreachable(format!("answer is not JSON ({e}), HTTP {status}"))
        })?;
        if let Some(msg) = v.get("error").and_then(Value::as_str).or_else(|| {
            v.get("message")
                .and_then(Value::as_str)
                .filter(|_| status != 200)
        }) {
            return Err(CallError::Server {
                code: v["code"].as_i64().unwrap_or(2),
                message: msg.to_string(),
            });
        }
        if status != 200 {
            return Err(CallError::Server {
                code: 2,
                message: format!("HTTP {status} from {}", ep.url),
            });
        }
        Ok(v)
    }
}

fn read_response(stream: &mut impl Read) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(bad("connection closed"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP answer"))?;
    let (mut len, mut chunked) = (None, false);
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                len = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
        // A streamed answer (lease keepalive) is one JSON object per line: keep the first.
        if let Some(end) = body.iter().position(|b| *b == b'\n') {
            body.truncate(end);
        }
    } else {
        let n = len.ok_or_else(|| bad("answer without length"))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    Ok((status, body))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (etcd's JSON encoding of bytes).
pub fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on a bad character.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for ch in text.bytes().filter(|b| *b != b'=') {
        let v = B64.iter().position(|c| *c == ch)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "abcd", "/ebb/web/lock"] {
            assert_eq!(unb64(&b64(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(b64(b"/t/a"), "L3QvYQ==");
        assert_eq!(unb64("aGVsbG8=").unwrap(), b"hello");
    }
}
