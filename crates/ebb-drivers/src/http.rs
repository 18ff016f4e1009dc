//! A small HTTP/1.1 client for checks and drivers: one request per connection, every step
//! bounded by a timeout. `http://` and `https://` (rustls; the Mozilla roots, plus a CA
//! file of the user's, or no verification at all when asked for a self-signed server).

use crate::tls::TlsOptions;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use tokio::net::TcpStream;

/// A parsed `http(s)://host:port/path` URL.
#[derive(Debug, Clone)]
pub struct Url {
    /// `host:port`.
    pub authority: String,
    /// `/path?query`.
    pub path: String,
    /// `https://`.
    pub tls: bool,
}

/// Parses an `http://` or `https://` URL.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => return Err(format!("\"{url}\" is not an http:// or https:// URL")),
    };
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if auth.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    let authority = if auth
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        && !auth.ends_with(']')
    {
        auth.to_string()
    } else if tls {
        format!("{auth}:443")
    } else {
        format!("{auth}:80")
    };
    Ok(Url {
        authority,
        path: path.to_string(),
        tls,
    })
}

/// An HTTP response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body as text (lossy).
    pub body: String,
    /// Header fields and trailer fields, names in lower case, in order.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first header (or trailer) field named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request and reads the whole response, within `timeout`.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, String)],
    timeout: Duration,
) -> Result<Response, String> {
    request_tls(method, url, body, headers, timeout, &TlsOptions::default()).await
}

/// [`request`], with how an `https://` server is verified.
pub async fn request_tls(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, String)],
    timeout: Duration,
    tls: &TlsOptions,
) -> Result<Response, String> {
    match tokio::time::timeout(timeout, request_inner(method, url, body, headers, tls)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{method} {url}: no answer within {}",
            ebb_config::format_duration(timeout)
        )),
    }
}

async fn request_inner(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, String)],
    tls: &TlsOptions,
) -> Result<Response, String> {
    let u = parse_url(url)?;
    let stream = TcpStream::connect(&u.authority)
        .await
        .map_err(|e| format!("{method} {url}: cannot connect to {}: {e}", u.authority))?;
    if u.tls {
        let stream = crate::tls::connect(stream, &u.authority, tls)
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        exchange(stream, &u, method, url, body, headers).await
    } else {
        exchange(stream, &u, method, url, body, headers).await
    }
}

async fn exchange<S>(
    stream: S,
    u: &Url,
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, String)],
) -> Result<Response, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(&u.path)
        .header("host", &u.authority)
        .header("user-agent", concat!("ebb/", env!("CARGO_PKG_VERSION")));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let mut fields = field_list(resp.headers());
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    if let Some(t) = collected.trailers() {
        fields.extend(field_list(t));
    }
    let bytes = collected.to_bytes();
    driver.abort();
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        headers: fields,
    })
}

fn field_list(h: &hyper::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
