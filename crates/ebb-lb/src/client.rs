//! A client for the control API, used by `ebb lb` and by the engine's `builtin` driver.
//!
//! One TCP connection per request; every request is bounded by a timeout (5 s by default).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::parse_control_url;
pub use crate::status::{Health, HostState, InitialState, MemberStatus};

/// Default bound on one control request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// An event stream that carries nothing (not even the 10 s keepalive) for this long is
/// considered dead.
pub const EVENT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the balancer. Messages name the control URL and the member
/// and say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control URL cannot be used.
    #[error("bad control URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
    /// Nothing answered at the control URL.
    #[error("cannot reach the balancer's control API at {url}{}: {detail}; is `ebb lb serve` running there? (its address is `control` under [balancer] in the pool file; for `ebb lb` commands, --control URL, --pool FILE or EBB_LB_CONTROL)", for_member(.member))]
    Unreachable {
        url: String,
        member: Option<String>,
        detail: String,
    },
    /// The balancer did not answer in time.
    #[error("the balancer's control API at {url} did not answer within {timeout:?}{}; is it overloaded or hung? Check `ebb lb serve`'s log", for_member(.member))]
    Timeout {
        url: String,
        member: Option<String>,
        timeout: Duration,
    },
    /// The token is missing or wrong.
    #[error("the balancer at {url} refused the request: {message}")]
    Unauthorized { url: String, message: String },
    /// No such member in the balancer.
    #[error("the balancer at {url}: {message} (member {member:?}; `ebb lb status` lists them)")]
    UnknownMember {
        url: String,
        member: String,
        message: String,
    },
    /// The balancer rejected the request as malformed (HTTP 4xx).
    #[error("the balancer at {url} rejected the request{} (HTTP {status}): {message}", for_member(.member))]
    Rejected {
        url: String,
        member: Option<String>,
        status: u16,
        message: String,
    },
    /// The balancer failed (HTTP 5xx).
    #[error("the balancer at {url} failed{} (HTTP {status}): {message}", for_member(.member))]
    Server {
        url: String,
        member: Option<String>,
        status: u16,
        message: String,
    },
    /// The answer was not what an ebb balancer sends.
    #[error("unexpected answer from {url}{}: {detail}; is that address an `ebb lb serve` control API?", for_member(.member))]
    Protocol {
        url: String,
        member: Option<String>,
        detail: String,
    },
}

fn for_member(m: &Option<String>) -> String {
    match m {
        Some(m) => format!(" (member {m:?})"),
        None => String::new(),
    }
}

impl ClientError {
    /// True when the fault is in the request (unknown member, bad value, wrong token)
    /// rather than in reaching or running the balancer.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ClientError::BadUrl { .. }
                | ClientError::Unauthorized { .. }
                | ClientError::UnknownMember { .. }
                | ClientError::Rejected { .. }
        )
    }
}

/// Talks to one balancer's control API.
#[derive(Debug, Clone)]
pub struct ControlClient {
    url: String,
    host: String,
    port: u16,
    token: Option<String>,
    timeout: Duration,
}

impl ControlClient {
    /// A client for the control API at `control_url` (`http://HOST:PORT`).
    pub fn new(control_url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let (host, port) =
            parse_control_url(control_url).map_err(|message| ClientError::BadUrl {
                url: control_url.to_string(),
                message,
            })?;
        let url = if host.contains(':') {
            format!("http://[{host}]:{port}")
        } else {
            format!("http://{host}:{port}")
        };
        Ok(ControlClient {
            url,
            host,
            port,
            token: token.filter(|t| !t.is_empty()),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets the bound on each request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The normalized control URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// All members.
    pub async fn members(&self) -> Result<Vec<MemberStatus>, ClientError> {
        let body = self.call(Method::GET, "/members", None, None).await?;
        let m: crate::status::Members = self.decode(&body, None)?;
        Ok(m.members)
    }

    /// The members that changed since `cursor` (the `cursor` of an earlier answer), or
    /// all of them for `None`, with the cursor to ask from next. A balancer restarted
    /// since answers with every member; one older than cursors answers without one.
    pub async fn members_since(
        &self,
        cursor: Option<&str>,
    ) -> Result<crate::status::Members, ClientError> {
        let path = match cursor {
            Some(c) => format!("/members?since={}", percent_encode(c)),
            None => "/members".to_string(),
        };
        let body = self.call(Method::GET, &path, None, None).await?;
        self.decode(&body, None)
    }

    /// One member.
    pub async fn member(&self, name: &str) -> Result<MemberStatus, ClientError> {
        self.member_call(Method::GET, name, "", None).await
    }

    /// Drainstop: no new connections; the member stops when its last connection closes.
    pub async fn drainstop(&self, name: &str) -> Result<MemberStatus, ClientError> {
        self.member_call(Method::POST, name, "/drainstop", None)
            .await
    }

    /// Stop: no traffic; its connections are closed now.
    pub async fn stop(&self, name: &str) -> Result<MemberStatus, ClientError> {
        self.member_call(Method::POST, name, "/stop", None).await
    }

    /// Start: the member takes new connections.
    pub async fn start(&self, name: &str) -> Result<MemberStatus, ClientError> {
        self.member_call(Method::POST, name, "/start", None).await
    }

    /// Sets the state the member takes on recovery and on balancer restart.
    pub async fn set_initial_state(
        &self,
        name: &str,
        state: InitialState,
    ) -> Result<MemberStatus, ClientError> {
        let body = serde_json::json!({ "initial_state": state }).to_string();
        self.member_call(Method::POST, name, "/initial-state", Some(body))
            .await
    }

    /// Subscribes to member changes. Events after this returns are not missed.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let fut = async {
            let mut sender = self.connect(None).await?;
            let req = self.request(Method::GET, "/events", None, None)?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| self.unreachable(None, e))?;
            Ok::<_, ClientError>((sender, resp))
        };
        let (sender, resp) = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r?,
            Err(_) => return Err(self.timed_out(None)),
        };
        let status = resp.status();
        if status != StatusCode::OK {
            let body = tokio::time::timeout(self.timeout, resp.into_body().collect())
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(self.status_error(status, &body, None));
        }
        Ok(EventStream {
            url: self.url.clone(),
            body: resp.into_body(),
            buf: Vec::new(),
            done: false,
            _sender: sender,
        })
    }

    async fn member_call(
        &self,
        method: Method,
        name: &str,
        action: &str,
        body: Option<String>,
    ) -> Result<MemberStatus, ClientError> {
        if name.is_empty() {
            return Err(ClientError::UnknownMember {
                url: self.url.clone(),
                member: String::new(),
                message:
                    "the member name is empty; give its name in the balancer (lb_name, or name)"
                        .into(),
            });
        }
        let path = format!("/members/{}{action}", percent_encode(name));
        let bytes = self.call(method, &path, body, Some(name)).await?;
        self.decode(&bytes, Some(name))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        member: Option<&str>,
    ) -> Result<Bytes, ClientError> {
        let fut = async {
            let mut sender = self.connect(member).await?;
            let req = self.request(method, path, body, member)?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| self.unreachable(member, e))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(member, e))?
                .to_bytes();
            if status == StatusCode::OK {
                Ok(bytes)
            } else {
                Err(self.status_error(status, &bytes, member))
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out(member)),
        }
    }

    async fn connect(
        &self,
        member: Option<&str>,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unreachable(member, e))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(member, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        member: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.url.trim_start_matches("http://"))
            .header(ACCEPT, "application/json");
        if let Some(t) = &self.token {
            b = b.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        b.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol {
                url: self.url.clone(),
                member: member.map(str::to_string),
                detail: format!("cannot build the request: {e}"),
            })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        body: &[u8],
        member: Option<&str>,
    ) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| ClientError::Protocol {
            url: self.url.clone(),
            member: member.map(str::to_string),
            detail: format!("bad JSON ({e})"),
        })
    }

    fn status_error(&self, status: StatusCode, body: &[u8], member: Option<&str>) -> ClientError {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
        let url = self.url.clone();
        let member = member.map(str::to_string);
        match status.as_u16() {
            401 | 403 => ClientError::Unauthorized { url, message },
            404 if member.is_some() && message.contains("no member") => {
                ClientError::UnknownMember {
                    url,
                    member: member.unwrap_or_default(),
                    message,
                }
            }
            s @ 400..=499 => ClientError::Rejected {
                url,
                member,
                status: s,
                message,
            },
            s => ClientError::Server {
                url,
                member,
                status: s,
                message,
            },
        }
    }

    fn unreachable(&self, member: Option<&str>, e: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            url: self.url.clone(),
            member: member.map(str::to_string),
            detail: e.to_string(),
        }
    }

    fn timed_out(&self, member: Option<&str>) -> ClientError {
        ClientError::Timeout {
            url: self.url.clone(),
            member: member.map(str::to_string),
            timeout: self.timeout,
        }
    }
}

/// Escapes everything but unreserved URL characters (one path segment).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Member changes as the balancer reports them (`GET /events`).
pub struct EventStream {
    url: String,
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
    // Keeps the connection's request side alive for as long as the stream is read.
    _sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl EventStream {
    /// The next member change; `None` when the balancer closed the stream. An error when
    /// the stream broke or carried nothing (not even a keepalive) for 30 s.
    pub async fn next(&mut self) -> Option<Result<MemberStatus, ClientError>> {
        loop {
            if let Some(ev) = self.take_event() {
                return Some(ev);
            }
            if self.done {
                return None;
            }
            match tokio::time::timeout(EVENT_IDLE_TIMEOUT, self.body.frame()).await {
                Err(_) => {
                    self.done = true;
                    return Some(Err(ClientError::Timeout {
                        url: self.url.clone(),
                        member: None,
                        timeout: EVENT_IDLE_TIMEOUT,
                    }));
                }
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Ok(Some(Err(e))) => {
                    self.done = true;
                    return Some(Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        member: None,
                        detail: format!("the event stream broke: {e}"),
                    }));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Takes the next complete `member` event out of the buffer, skipping comments.
    fn take_event(&mut self) -> Option<Result<MemberStatus, ClientError>> {
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block).replace('\r', "");
            let mut event = "message";
            let mut data = String::new();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = if v.trim() == "member" {
                        "member"
                    } else {
                        "other"
                    };
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if event != "member" || data.is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(&data).map_err(|e| ClientError::Protocol {
                    url: self.url.clone(),
                    member: None,
                    detail: format!("bad event data ({e}): {data}"),
                }),
            );
        }
    }
}
