//! A client for HAProxy's runtime API (the "stats socket" CLI): one command per connection,
//! over a unix socket or TCP, each connect and each answer bounded by a timeout.
//!
//! HAProxy answers a command and closes the connection (non-interactive mode), so the
//! answer is everything read until EOF. Errors name the socket and say what to do.

use std::fmt;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where HAProxy's runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddr {
    /// A unix socket path (`stats socket /run/haproxy/admin.sock level admin`).
    Unix(PathBuf),
    /// `tcp://HOST:PORT` (`stats socket ipv4@127.0.0.1:9999 level admin`).
    Tcp(String),
}

impl SocketAddr {
    /// Parses the `socket` setting: a path, or `tcp://HOST:PORT`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            if rest
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                Ok(SocketAddr::Tcp(rest.to_string()))
            } else {
                Err(format!("\"{s}\" is not tcp://HOST:PORT"))
            }
        } else if s.is_empty() {
            Err("expected a unix socket path or tcp://HOST:PORT".into())
        } else if s.contains("://") {
            Err(format!(
                "\"{s}\": only unix socket paths and tcp://HOST:PORT are supported"
            ))
        } else {
            Ok(SocketAddr::Unix(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for SocketAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddr::Unix(p) => write!(f, "{}", p.display()),
            SocketAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// HAProxy's runtime API at one socket.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    addr: SocketAddr,
    timeout: Duration,
}

impl RuntimeApi {
    /// A client for `addr`; `timeout` bounds the connect and the whole answer.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        RuntimeApi { addr, timeout }
    }

    /// The socket, for messages.
    pub fn addr(&self) -> &SocketAddr {
        &self.addr
    }

    /// Sends one command and returns HAProxy's whole answer.
    pub async fn command(&self, cmd: &str) -> Result<String, String> {
        let fut = async {
            match &self.addr {
                SocketAddr::Unix(path) => {
                    let s = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| self.connect_error(e))?;
                    self.exchange(s, cmd).await
                }
                SocketAddr::Tcp(a) => {
                    let s = tokio::net::TcpStream::connect(a)
                        .await
                        .map_err(|e| self.connect_error(e))?;
                    self.exchange(s, cmd).await
                }
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "HAProxy runtime API at {} did not answer `{cmd}` within {:?}: is HAProxy overloaded or is something else listening there?",
                self.addr, self.timeout
            )),
        }
    }

    /// Sends a command that answers nothing on success (`set server`, `shutdown sessions`):
    /// any text in the answer is HAProxy's error line.
    pub async fn action(&self, cmd: &str) -> Result<(), String> {
        let answer = self.command(cmd).await?;
        let text = answer.trim();
        if text.is_empty() {
            Ok(())
        } else {
            Err(self.answer_error(cmd, text))
        }
    }

    /// Explains an error line HAProxy answered to `cmd`.
    pub fn answer_error(&self, cmd: &str, text: &str) -> String {
        let first = text.lines().next().unwrap_or("").trim();
        let hint = if first.starts_with("Permission denied") {
            ": the socket is not at admin level; give its `stats socket` line `level admin`"
        } else if first.starts_with("Unknown command") {
            ": this HAProxy does not know the command (ebb needs HAProxy 1.8 or later)"
        } else {
            ""
        };
        format!(
            "HAProxy at {} answered `{cmd}` with \"{first}\"{hint}",
            self.addr
        )
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: S,
        cmd: &str,
    ) -> Result<String, String> {
        let io = |e: std::io::Error| {
            format!(
                "HAProxy runtime API at {}: sending `{cmd}` failed: {e}",
                self.addr
            )
        };
        s.write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(io)?;
        s.flush().await.map_err(io)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(io)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn connect_error(&self, e: std::io::Error) -> String {
        let what = match e.kind() {
            ErrorKind::NotFound => {
                "does not exist: is HAProxy running, and does its global section have `stats socket <this path> level admin`?".to_string()
            }
            ErrorKind::PermissionDenied => {
                "permission denied: run ebb as a user allowed to use the socket (its `stats socket` line sets `mode`, `user` and `group`), e.g. in the haproxy group with `mode 660`".to_string()
            }
            ErrorKind::ConnectionRefused => match self.addr {
                SocketAddr::Unix(_) => "refused the connection: the socket file is there but no HAProxy listens on it (stale socket: is HAProxy running?)".to_string(),
                SocketAddr::Tcp(_) => "refused the connection: is HAProxy running with `stats socket ipv4@HOST:PORT level admin`?".to_string(),
            },
            _ => format!("cannot be reached: {e}"),
        };
        format!("HAProxy runtime API socket {}: {what}", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_settings() {
        assert_eq!(
            SocketAddr::parse("/run/haproxy/admin.sock"),
            Ok(SocketAddr::Unix("/run/haproxy/admin.sock".into()))
        );
        assert_eq!(
            SocketAddr::parse("tcp://127.0.0.1:9999"),
            Ok(SocketAddr::Tcp("127.0.0.1:9999".into()))
        );
        assert!(SocketAddr::parse("tcp://127.0.0.1").is_err());
        assert!(SocketAddr::parse("http://x:1").is_err());
        assert!(SocketAddr::parse("").is_err());
    }
}
