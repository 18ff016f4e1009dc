//! A small HTTP/1.1 client for checks and drivers: one request per connection, every step
//! bounded by a timeout. Plain `http://` only.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use tokio::net::TcpStream;

/// A parsed `http://host:port/path` URL.
#[derive(Debug, Clone)]
pub struct Url {
    /// `host:port`.
    pub authority: String,
    /// `/path?query`.
    pub path: String,
}

/// Parses an `http://` URL.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("\"{url}\" is not an http:// URL"))?;
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
    } else {
        format!("{auth}:80")
    };
    Ok(Url {
        authority,
        path: path.to_string(),
    })
}

/// An HTTP response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body as text (lossy).
    pub body: String,
}

/// Sends one request and reads the whole response, within `timeout`.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, String)],
    timeout: Duration,
) -> Result<Response, String> {
    match tokio::time::timeout(timeout, request_inner(method, url, body, headers)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{method} {url}: no answer within {}",
            ebb_engine::duration::format_duration(timeout)
        )),
    }
}

async fn request_inner(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, String)],
) -> Result<Response, String> {
    let u = parse_url(url)?;
    let stream = TcpStream::connect(&u.authority)
        .await
        .map_err(|e| format!("{method} {url}: cannot connect to {}: {e}", u.authority))?;
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
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?
        .to_bytes();
    driver.abort();
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}
