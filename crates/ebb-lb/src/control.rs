//! The control API: HTTP/1.1 + JSON on its own listener (default 127.0.0.1:9900).
//!
//! `GET /members`, `GET /members/{name}`, `POST /members/{name}/drainstop|stop|start`,
//! `POST /members/{name}/initial-state` (`{"initial_state":"stopped"}`), `GET /events`
//! (Server-Sent Events), `GET /metrics` (Prometheus text), `GET /healthz`. With a token
//! configured, every path but `/healthz` needs `Authorization: Bearer TOKEN`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

use crate::auth::{bearer_token, token_matches};
use crate::http_api::{self, Body};
use crate::metrics;
use crate::pool::{Cursor, Pool};
use crate::proxy::ListenerStats;
use crate::status::{InitialState, MemberStatus};

/// How often an idle event stream gets a `: keepalive` comment.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// Bound on reading a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
const BODY_LIMIT: usize = 64 * 1024;
/// How long `stop` waits for the member's connections to be gone before it answers.
const STOP_SETTLE: Duration = Duration::from_secs(1);

/// What the control API serves from.
pub(crate) struct Control {
    pub pool: Arc<Pool>,
    pub listeners: Vec<Arc<ListenerStats>>,
    /// The threads serving each listener's connections (for their counts in the metrics).
    pub threads: Vec<Arc<crate::proxy::Threads>>,
    pub token: Option<String>,
}

/// Serves the control API until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    ctl: Arc<Control>,
    shutdown: watch::Receiver<bool>,
) {
    let handle = move |req| {
        let ctl = ctl.clone();
        async move { handle(&ctl, req).await }
    };
    http_api::serve(
        listener,
        "control API",
        Duration::from_secs(1),
        shutdown,
        handle,
    )
    .await;
}

async fn handle(ctl: &Control, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let decoded = path_segments(&path);
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if segs == ["healthz"] {
        return match *req.method() {
            Method::GET | Method::HEAD => text(StatusCode::OK, "text/plain", "ok\n".into()),
            _ => method_not_allowed(&path, "GET"),
        };
    }
    if let Some(resp) = check_token(ctl, &req) {
        return resp;
    }
    let method = req.method().clone();
    match segs.as_slice() {
        ["members"] => {
            if method != Method::GET {
                return method_not_allowed(&path, "GET");
            }
            let since = match since_query(req.uri().query()) {
                Ok(c) => c,
                Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
            };
            let (members, cursor) = ctl.pool.changed_since(since);
            json(
                StatusCode::OK,
                &crate::status::Members {
                    members,
                    cursor: Some(cursor.to_string()),
                },
            )
        }
        ["members", name] => {
            if method != Method::GET {
                return method_not_allowed(&path, "GET");
            }
            match member_index(ctl, name) {
                Ok(i) => json(StatusCode::OK, &ctl.pool.status(i)),
                Err(msg) => error(StatusCode::NOT_FOUND, msg),
            }
        }
        ["members", name, action] => {
            let i = match member_index(ctl, name) {
                Ok(i) => i,
                Err(msg) => return error(StatusCode::NOT_FOUND, msg),
            };
            if !["drainstop", "stop", "start", "initial-state"].contains(action) {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no action {action:?} for member {name:?}; POST one of drainstop, stop, start, initial-state"),
                );
            }
            if method != Method::POST {
                return method_not_allowed(&path, "POST");
            }
            member_action(ctl, i, action, req).await
        }
        ["events"] => {
            if method != Method::GET {
                return method_not_allowed(&path, "GET");
            }
            events(ctl)
        }
        ["metrics"] => {
            if method != Method::GET {
                return method_not_allowed(&path, "GET");
            }
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics::render(&ctl.pool, &ctl.listeners, &crate::proxy::Threads::total(&ctl.threads)),
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such path {path:?}; the control API serves /members, /members/{{name}}, /members/{{name}}/drainstop|stop|start|initial-state, /events, /metrics and /healthz"),
        ),
    }
}

async fn member_action(
    ctl: &Control,
    i: usize,
    action: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let pool = &ctl.pool;
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    if action != "initial-state" {
        if let Err(msg) = no_fields(&body, action) {
            return error(StatusCode::BAD_REQUEST, msg);
        }
    }
    let status = match action {
        "drainstop" => pool.drainstop(i),
        "start" => pool.start(i),
        "stop" => {
            pool.stop(i);
            // Let the cut connections unwind so the answer shows what is left.
            let deadline = tokio::time::Instant::now() + STOP_SETTLE;
            while pool.status(i).active_connections > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            pool.status(i)
        }
        _ => {
            let initial = match initial_state(&body) {
                Ok(s) => s,
                Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
            };
            pool.set_initial(i, initial)
        }
    };
    tracing::info!(member = %status.name, action, state = %status.state, initial_state = %status.initial_state, "control API changed member");
    // Durable before we answer: the engine relies on a hold surviving a restart.
    let p = pool.clone();
    let saved = tokio::task::spawn_blocking(move || p.save()).await;
    match saved {
        Ok(Ok(())) => json(StatusCode::OK, &status),
        Ok(Err(msg)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the member changed to {} but {msg}; it may not survive a balancer restart",
                status.state
            ),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("saving the state file failed: {e}"),
        ),
    }
}

/// The request body, bounded in size and time.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, String> {
    let body = Limited::new(req.into_body(), BODY_LIMIT);
    match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Err(_) => Err("timed out reading the request body".into()),
        Ok(Err(e)) => Err(format!("cannot read the request body: {e}")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// The body of `POST .../initial-state`; any other field is refused by name.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InitialStateBody {
    initial_state: String,
}

/// The body of the other actions: none, or an object without fields.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

pub(crate) fn initial_state(body: &[u8]) -> Result<InitialState, String> {
    let expected =
        r#"expected a JSON body {"initial_state":"started"} or {"initial_state":"stopped"}"#;
    let b: InitialStateBody =
        serde_json::from_slice(body).map_err(|e| format!("{}; {expected}", body_error(&e)))?;
    InitialState::parse(&b.initial_state)
        .ok_or_else(|| format!("initial_state: {expected}, found {:?}", b.initial_state))
}

/// A field sent to an action that takes none would be ignored: refuse it by name.
pub(crate) fn no_fields(body: &[u8], action: &str) -> Result<(), String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    serde_json::from_slice::<NoFields>(body)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{}; {action} takes no body (or an empty JSON object)",
                body_error(&e)
            )
        })
}

/// serde's words for a body that does not fit: the field it did not expect, or the one
/// that is missing; or that it is no JSON at all.
fn body_error(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => format!("the body does not fit: {e}"),
        _ => format!("the body is not valid JSON ({e})"),
    }
}

fn check_token(ctl: &Control, req: &Request<Incoming>) -> Option<Response<Body>> {
    let token = ctl.token.as_deref()?;
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(bearer_token);
    match given {
        Some(t) if token_matches(t, token) => None,
        Some(_) => Some(error(
            StatusCode::UNAUTHORIZED,
            "wrong token; send the balancer's token as `Authorization: Bearer TOKEN` (ebb lb: --token or EBB_LB_TOKEN)".into(),
        )),
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "this balancer requires a token; send `Authorization: Bearer TOKEN` (ebb lb: --token or EBB_LB_TOKEN)".into(),
        )),
    }
}

/// `since=CURSOR` of `GET /members` (no other parameter is taken).
fn since_query(query: Option<&str>) -> Result<Option<Cursor>, String> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let expected =
        "GET /members takes one parameter, since=CURSOR (the `cursor` of an earlier answer)";
    let Some(value) = q.strip_prefix("since=") else {
        return Err(format!("unknown query {q:?}; {expected}"));
    };
    Cursor::parse(value)
        .map(Some)
        .ok_or_else(|| format!("since={value:?} is no cursor; {expected}"))
}

/// A request path's segments, each `%XX`-decoded (`/members/web%201/` → members, web 1);
/// a segment that does not decode is kept as written.
pub(crate) fn path_segments(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .map(|seg| percent_decode(seg).unwrap_or_else(|| seg.to_string()))
        .collect()
}

/// Decodes `%XX` escapes (member names may hold characters a URL path cannot).
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The member's index, or the 404 message naming the members there are.
fn member_index(ctl: &Control, name: &str) -> Result<usize, String> {
    ctl.pool.index(name).ok_or_else(|| {
        let names: Vec<&str> = ctl.pool.members.iter().map(|m| m.name.as_str()).collect();
        format!(
            "no member named {name:?} in the balancer; its members are: {}",
            names.join(", ")
        )
    })
}

/// `GET /events`: subscribe before answering so nothing after the answer is missed.
fn events(ctl: &Control) -> Response<Body> {
    let mut rx = ctl.pool.subscribe();
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        loop {
            let chunk = tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(st) => sse_event(&st),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        Bytes::from(format!(": lagged, {n} events dropped; GET /members for the current state\n\n"))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                _ = tx.closed() => return,
            };
            // A client that does not read for 10 s is dropped rather than buffered for.
            match tokio::time::timeout(KEEPALIVE, tx.send(chunk)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });
    http_api::event_stream(body_rx)
}

fn sse_event(st: &MemberStatus) -> Bytes {
    let json = serde_json::to_string(st).unwrap_or_default();
    Bytes::from(format!("event: member\ndata: {json}\n\n"))
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn method_not_allowed(path: &str, allowed: &'static str) -> Response<Body> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{path} accepts only {allowed}"),
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    resp
}
