//! iControl REST as the f5 driver uses it: token login (`POST /mgmt/shared/authn/login`,
//! then `X-F5-Auth-Token`), one request at a time, a new token when BIG-IP says the old
//! one is gone, and BIG-IP's error bodies (`{"code": 404, "message": "..."}`) turned into
//! sentences that say what to do.

use crate::http::{request_tls, Response};
use crate::tls::TlsOptions;
use serde_json::Value;
use std::time::Duration;

/// How ebb logs in and reaches the BIG-IP.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `https://HOST[:PORT]`, without a trailing slash.
    pub url: String,
    /// The user ebb logs in as.
    pub username: String,
    /// The environment variable holding the password.
    pub password_env: String,
    /// How the management certificate is verified.
    pub tls: TlsOptions,
    /// Bound on each request.
    pub timeout: Duration,
}

/// A failed iControl REST request: the HTTP status (0 when there was no answer) and what
/// BIG-IP (or the connection) said.
#[derive(Debug, Clone)]
pub struct RestError {
    /// HTTP status; 0 when there was none.
    pub status: u16,
    /// `METHOD PATH`.
    pub request: String,
    /// BIG-IP's `message`, or the transport's error.
    pub message: String,
}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = self.request.split(' ').next().unwrap_or("");
        if self.status == 0 && self.message.starts_with(&format!("{method} ")) {
            // The transport's error already names the request.
            write!(f, "{}", self.message)
        } else if self.status == 0 {
            write!(f, "{}: {}", self.request, self.message)
        } else {
            write!(
                f,
                "BIG-IP answered {} with {}: {}",
                self.request, self.status, self.message
            )
        }
    }
}

/// A logged-in session (the token is fetched on first use and again when it expires).
pub struct Client {
    conn: Connection,
    token: tokio::sync::Mutex<Option<String>>,
}

impl Client {
    /// A client; nothing is sent yet.
    pub fn new(conn: Connection) -> Client {
        Client {
            conn,
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection settings.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// `POST /mgmt/shared/authn/login` with the user's name and the password from the
    /// environment; the token.
    async fn login(&self) -> Result<String, RestError> {
        let path = "/mgmt/shared/authn/login";
        let err = |status, message| RestError {
            status,
            request: format!("POST {path}"),
            message,
        };
        let password = std::env::var(&self.conn.password_env).map_err(|_| {
            err(
                0,
                format!(
                    "the BIG-IP password is read from the environment variable {}, which is not set (balancer.password_env names it)",
                    self.conn.password_env
                ),
            )
        })?;
        let body = serde_json::json!({
            "username": self.conn.username,
            "password": password,
            "loginProviderName": "tmos",
        })
        .to_string();
        let r = self.send("POST", path, Some(&body), None).await?;
        if !(200..300).contains(&r.status) {
            return Err(err(r.status, message_of(&r)));
        }
        serde_json::from_str::<Value>(&r.body)
            .ok()
            .and_then(|v| {
                v.pointer("/token/token")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .ok_or_else(|| err(r.status, format!("no token in the answer: {:.200}", r.body)))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> Result<Response, RestError> {
        let url = format!("{}{path}", self.conn.url);
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(("x-f5-auth-token", t.to_string()));
        }
        request_tls(
            method,
            &url,
            body,
            &headers,
            self.conn.timeout,
            &self.conn.tls,
        )
        .await
        .map_err(|message| RestError {
            status: 0,
            request: format!("{method} {path}"),
            message,
        })
    }

    /// One request with the session's token; on a 401 the token is renewed once (tokens
    /// expire after 20 minutes by default, and a run can be longer). A non-2xx answer is
    /// a [`RestError`] with BIG-IP's message.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RestError> {
        let body = body.map(Value::to_string);
        let mut token = self.token.lock().await;
        for attempt in 0..2 {
            let t = match token.as_ref() {
                Some(t) => t.clone(),
                None => {
                    let t = self.login().await?;
                    *token = Some(t.clone());
                    t
                }
            };
            let r = self.send(method, path, body.as_deref(), Some(&t)).await?;
            if r.status == 401 && attempt == 0 {
                *token = None;
                continue;
            }
            if !(200..300).contains(&r.status) {
                return Err(RestError {
                    status: r.status,
                    request: format!("{method} {path}"),
                    message: message_of(&r),
                });
            }
            if r.body.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&r.body).map_err(|e| RestError {
                status: r.status,
                request: format!("{method} {path}"),
                message: format!("the answer is not JSON ({e}): {:.200}", r.body),
            });
        }
        Err(RestError {
            status: 401,
            request: format!("{method} {path}"),
            message: "a fresh token was refused too".to_string(),
        })
    }
}

/// BIG-IP's `message` from an error body, or the body itself.
fn message_of(r: &Response) -> String {
    serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| r.body.trim().chars().take(200).collect())
}
