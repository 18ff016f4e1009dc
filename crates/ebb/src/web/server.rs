//! The web view's HTTP server: hyper, HTTP/1.1, GET and HEAD only.

use super::live::{poll_balancer, Feed, Published};
use super::WebOptions;
use bytes::Bytes;
use ebb_engine::interfaces::Balancer;
use ebb_engine::plan::Plan;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// The page, its script and its style, embedded in the binary (no CDN, no build step).
const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// An idle event stream gets a comment this often, so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(10);

use ebb_lb::http_api::Body;

/// A running web view; stops when dropped.
pub struct WebServer {
    addr: SocketAddr,
    views: watch::Receiver<Arc<Published>>,
    shutdown: watch::Sender<bool>,
}

struct Shared {
    token: Option<String>,
    views: watch::Receiver<Arc<Published>>,
}

impl WebServer {
    /// Binds `opts.addr` and serves the view of `feed`. Fails (before anything else has
    /// started) when the address cannot be bound or the journal cannot be opened.
    pub async fn start(opts: &WebOptions, feed: Feed) -> Result<WebServer, String> {
        let listener = TcpListener::bind(opts.addr)
            .await
            .map_err(|e| format!("--web {}: cannot listen there: {e}", opts.addr))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("--web {}: {e}", opts.addr))?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let views = feed.start(shutdown_rx.clone())?;
        let shared = Arc::new(Shared {
            token: opts.token.clone(),
            views: views.clone(),
        });
        let handle = move |req| {
            let answer = handle(&shared, req);
            async move { answer }
        };
        // An event stream never ends by itself: a short grace on shutdown.
        let grace = Duration::from_millis(200);
        tokio::spawn(ebb_lb::http_api::serve(
            listener,
            "web view",
            grace,
            shutdown_rx,
            handle,
        ));
        Ok(WebServer {
            addr,
            views,
            shutdown,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// For `ebb watch`: fills in the connection counts of draining members from the
    /// balancer itself.
    pub fn poll_balancer(
        &self,
        counts: super::ConnectionCounts,
        balancer: Arc<dyn Balancer>,
        plan: Arc<Plan>,
    ) {
        poll_balancer(
            counts,
            balancer,
            plan,
            self.views.clone(),
            self.shutdown.subscribe(),
        );
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "the web view is read-only: GET and HEAD only\n".into(),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path();
    match path {
        "/" | "/index.html" => return page(PAGE, "text/html; charset=utf-8"),
        "/page.js" => return page(SCRIPT, "text/javascript; charset=utf-8"),
        "/page.css" => return page(STYLE, "text/css; charset=utf-8"),
        "/state" | "/events" | "/metrics" => {}
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                format!(
                "no {path} here: the page is /, its data /state and /events, metrics /metrics\n"
            ),
            )
        }
    }
    if let Some(denied) = check_token(shared, &req) {
        return denied;
    }
    let current = shared.views.borrow().clone();
    match path {
        "/state" => text(StatusCode::OK, "application/json", current.json.clone()),
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(&current.snapshot),
        ),
        _ => events(shared.views.clone()),
    }
}

/// `Authorization: Bearer TOKEN` or `?token=TOKEN`, when a token is set.
fn check_token(shared: &Shared, req: &Request<Incoming>) -> Option<Response<Body>> {
    let token = shared.token.as_deref()?;
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(ebb_lb::auth::bearer_token)
        .map(str::to_string);
    let query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(percent_decode)
    });
    let given = header.or(query);
    match given {
        Some(t) if ebb_lb::auth::token_matches(&t, token) => None,
        Some(_) => Some(text(
            StatusCode::UNAUTHORIZED,
            "text/plain; charset=utf-8",
            "wrong token (the one given to ebb with --web-token or EBB_WEB_TOKEN)\n".into(),
        )),
        None => Some(text(
            StatusCode::UNAUTHORIZED,
            "text/plain; charset=utf-8",
            "this web view requires its token: open /?token=TOKEN, or send `Authorization: Bearer TOKEN`\n".into(),
        )),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/events`: the current view at once, then one `view` event per change.
fn events(mut views: watch::Receiver<Arc<Published>>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    r = views.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    _ = tx.closed() => return,
                }
            }
            first = false;
            let json = views.borrow_and_update().json.clone();
            // The server's clock goes along, so elapsed times are right in a browser whose
            // clock is off.
            let chunk = Bytes::from(format!(
                "event: view\ndata: {{\"now_ms\":{},\"view\":{json}}}\n\n",
                ebb_engine::events::now_ms()
            ));
            // A client that does not read is dropped rather than buffered for.
            match tokio::time::timeout(KEEPALIVE, tx.send(chunk)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });
    ebb_lb::http_api::event_stream(rx)
}

fn page(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
        ),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
