//! WinRM over HTTPS with what `winrm-rs` 1.1.2 cannot do itself: a private CA (`ca_file`)
//! and a client certificate (`winrm_auth = "certificate"`).
//!
//! winrm-rs 1.1.2 builds its own rustls configuration: it trusts only the Mozilla roots,
//! and the client certificate it is given never reaches the handshake (reqwest ignores the
//! identity of a preconfigured TLS backend, which is what winrm-rs hands it). So for those
//! two cases the transport gives winrm-rs an `http://` endpoint and this bridge as its HTTP
//! proxy: a listener on 127.0.0.1 that takes each proxied request, checks the token in its
//! `Proxy-Authorization` (another local user cannot send through it, which matters most
//! when the bridge holds a client certificate), and forwards it over ebb's own TLS
//! ([`crate::tls`]: the Mozilla roots plus `ca_file`, the client certificate) to the
//! member. Each connection from winrm-rs gets its own TLS connection to the member, so
//! NTLM's connection-bound login still holds. Responses are passed back byte for byte.

use crate::tls::TlsOptions;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The `Authorization` a client sends when it logs in with its TLS certificate (the
/// WS-Management `https/mutual` security profile), as pywinrm and PSWSMan send it.
pub const MUTUAL_AUTHORIZATION: &str =
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual";

/// Bound on one request head from winrm-rs (its SOAP bodies come after, counted).
const MAX_HEAD: usize = 64 * 1024;

/// A connection from winrm-rs left idle this long is closed (reqwest drops idle ones
/// after 90 s anyway).
const IDLE: Duration = Duration::from_secs(120);

/// Why the member could not be reached through the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No TCP connection (refused, no route, a name that does not resolve, timed out).
    Unreachable(String),
    /// The TLS handshake failed (an untrusted certificate, a client certificate refused).
    Tls(String),
}

/// One member's bridge. It starts serving on first use and stops when dropped.
pub struct Bridge {
    /// What winrm-rs is given as its proxy (`http://ebb:TOKEN@127.0.0.1:PORT`).
    proxy_url: String,
    inner: Arc<Inner>,
    listener: Mutex<Option<std::net::TcpListener>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

struct Inner {
    /// `host:port` of the member's HTTPS listener.
    authority: String,
    tls: TlsOptions,
    connect_timeout: Duration,
    /// The whole `Proxy-Authorization` value a request must carry.
    proxy_authorization: String,
    /// Add [`MUTUAL_AUTHORIZATION`] to requests that have no `Authorization`.
    mutual: bool,
    last_failure: Mutex<Option<Failure>>,
}

impl Bridge {
    /// Opens the loopback end (no runtime needed yet). `authority` is the member's
    /// `host:port`.
    pub fn bind(
        authority: &str,
        tls: TlsOptions,
        connect_timeout: Duration,
        mutual: bool,
    ) -> Result<Bridge, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| format!("cannot open the loopback end of the TLS bridge: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("the TLS bridge's loopback address: {e}"))?
            .port();
        let token = token()?;
        let proxy_authorization = format!(
            "Basic {}",
            crate::base64::encode(format!("ebb:{token}").as_bytes())
        );
        Ok(Bridge {
            proxy_url: format!("http://ebb:{token}@127.0.0.1:{port}"),
            inner: Arc::new(Inner {
                authority: authority.to_string(),
                tls,
                connect_timeout,
                proxy_authorization,
                mutual,
                last_failure: Mutex::new(None),
            }),
            listener: Mutex::new(Some(listener)),
            task: Mutex::new(None),
        })
    }

    /// The proxy URL for winrm-rs (it holds the token: never print it).
    pub fn proxy_url(&self) -> &str {
        &self.proxy_url
    }

    /// Starts serving, once; must be called from within the tokio runtime.
    pub fn start(&self) -> Result<(), String> {
        let Some(listener) = self.listener.lock().ok().and_then(|mut l| l.take()) else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("the TLS bridge's loopback listener: {e}"))?;
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, inner.clone()));
            }
        });
        if let Ok(mut t) = self.task.lock() {
            *t = Some(task.abort_handle());
        }
        Ok(())
    }

    /// The last failure to reach the member, taken (so it explains one error only).
    pub fn take_failure(&self) -> Option<Failure> {
        self.inner
            .last_failure
            .lock()
            .ok()
            .and_then(|mut f| f.take())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }
}

impl Inner {
    fn fail(&self, f: Failure) {
        if let Ok(mut l) = self.last_failure.lock() {
            *l = Some(f);
        }
    }
}

/// 128 random bits, hex, from the system's generator.
fn token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| format!("the TLS bridge's token (/dev/urandom): {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// One connection from winrm-rs: its requests go, in order, over one TLS connection.
async fn serve(conn: TcpStream, inner: Arc<Inner>) {
    let _ = conn.set_nodelay(true);
    let (cr, mut cw) = conn.into_split();
    let mut cr = BufReader::new(cr);
    let head = match tokio::time::timeout(IDLE, read_head(&mut cr)).await {
        Ok(Ok(Some(h))) => h,
        _ => return,
    };
    let Some(first) = rewrite(&head, &inner) else {
        let _ = cw
            .write_all(&refusal(407, "Proxy Authentication Required", ""))
            .await;
        return;
    };
    let upstream = match connect(&inner).await {
        Ok(s) => s,
        Err(f) => {
            let text = match &f {
                Failure::Unreachable(t) | Failure::Tls(t) => t.clone(),
            };
            inner.fail(f);
            let _ = cw.write_all(&refusal(502, "Bad Gateway", &text)).await;
            return;
        }
    };
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let answers = inner.clone();
    let mut back = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut passed = 0u64;
        loop {
            match ur.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    passed += n as u64;
                }
                Err(e) => {
                    // TLS 1.3: a refused client certificate shows as an alert on the
                    // first read, after the handshake itself went through.
                    if passed == 0 {
                        answers.fail(Failure::Tls(format!(
                            "TLS with {} ended before any answer: {e}",
                            answers.authority
                        )));
                    }
                    break;
                }
            }
        }
        let _ = cw.shutdown().await;
    });
    let requests = async {
        let mut head = first;
        loop {
            forward(&mut cr, &mut uw, &head).await?;
            head = match tokio::time::timeout(IDLE, read_head(&mut cr)).await {
                Ok(Ok(Some(h))) => rewrite(&h, &inner).ok_or(())?,
                _ => return Err::<(), ()>(()),
            };
        }
    };
    // Whichever side ends first ends the pair: winrm-rs gone, or the member closed.
    let member_closed = tokio::select! {
        _ = requests => false,
        _ = &mut back => true,
    };
    let _ = uw.shutdown().await;
    if !member_closed {
        // The member's last answer, or the TLS alert that explains a refusal, may still be
        // on its way back: give it a bounded moment before closing.
        let _ = tokio::time::timeout(inner.connect_timeout, &mut back).await;
    }
    back.abort();
}

/// A request head (its lines, without the blank line), None at a clean end of stream.
async fn read_head<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = (&mut *r)
            .take((MAX_HEAD - total) as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        total += n;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        if total > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if line.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

/// A request as the member must see it: origin-form target, no proxy headers, and the
/// `https/mutual` Authorization for a certificate login. None when the request does not
/// carry the token, or has a body this bridge does not frame (chunked).
struct Head {
    text: String,
    body: u64,
}

fn rewrite(lines: &[String], inner: &Inner) -> Option<Head> {
    let (request_line, fields) = lines.split_first()?;
    let mut parts = request_line.splitn(3, ' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    // `http://host:port/wsman` (absolute-form, as sent to a proxy) → `/wsman`.
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => target,
    };
    let mut text = format!("{method} {target} {version}\r\n");
    let (mut authorized, mut has_authorization, mut body) = (false, false, 0u64);
    for f in fields {
        let (name, value) = f.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "proxy-authorization" => {
                authorized = value == inner.proxy_authorization;
                continue;
            }
            "proxy-connection" => continue,
            "transfer-encoding" => return None,
            "content-length" => body = value.parse().ok()?,
            "authorization" => has_authorization = true,
            _ => {}
        }
        text.push_str(f);
        text.push_str("\r\n");
    }
    if !authorized {
        return None;
    }
    if inner.mutual && !has_authorization {
        text.push_str(&format!("Authorization: {MUTUAL_AUTHORIZATION}\r\n"));
    }
    text.push_str("\r\n");
    Some(Head { text, body })
}

async fn forward<R, W>(cr: &mut BufReader<R>, uw: &mut W, head: &Head) -> Result<(), ()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    uw.write_all(head.text.as_bytes()).await.map_err(|_| ())?;
    let copied = tokio::io::copy(&mut (&mut *cr).take(head.body), uw)
        .await
        .map_err(|_| ())?;
    if copied != head.body {
        return Err(());
    }
    uw.flush().await.map_err(|_| ())
}

/// TCP, then TLS as configured, to the member, within the connect timeout.
async fn connect(inner: &Inner) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let bound = inner.connect_timeout;
    let tcp = match tokio::time::timeout(bound, TcpStream::connect(&inner.authority)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(Failure::Unreachable(format!(
                "cannot connect to {}: {e}",
                inner.authority
            )))
        }
        Err(_) => {
            return Err(Failure::Unreachable(format!(
                "cannot connect to {}: timed out after {}",
                inner.authority,
                ebb_config::format_duration(bound)
            )))
        }
    };
    match tokio::time::timeout(
        bound,
        crate::tls::connect(tcp, &inner.authority, &inner.tls),
    )
    .await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Failure::Tls(e)),
        Err(_) => Err(Failure::Tls(format!(
            "TLS handshake with {} timed out after {}",
            inner.authority,
            ebb_config::format_duration(bound)
        ))),
    }
}

fn refusal(status: u16, reason: &str, text: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner(mutual: bool) -> Inner {
        Inner {
            authority: "cas1.corp.example:5986".into(),
            tls: TlsOptions::default(),
            connect_timeout: Duration::from_secs(1),
            proxy_authorization: "Basic ZWJiOnRva2Vu".into(),
            mutual,
            last_failure: Mutex::new(None),
        }
    }

    fn head(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn a_request_without_the_token_is_not_forwarded() {
        let i = inner(false);
        let base = [
            "POST http://cas1.corp.example:5986/wsman HTTP/1.1",
            "host: cas1.corp.example:5986",
            "content-length: 12",
        ];
        assert!(rewrite(&head(&base), &i).is_none());
        let mut wrong = base.to_vec();
        wrong.push("proxy-authorization: Basic ZWJiOm90aGVy");
        assert!(rewrite(&head(&wrong), &i).is_none());
    }

    #[test]
    fn a_proxied_request_goes_to_the_member_in_origin_form() {
        let h = rewrite(
            &head(&[
                "POST http://cas1.corp.example:5986/wsman HTTP/1.1",
                "host: cas1.corp.example:5986",
                "Proxy-Authorization: Basic ZWJiOnRva2Vu",
                "proxy-connection: keep-alive",
                "content-length: 12",
            ]),
            &inner(true),
        )
        .expect("forwarded");
        assert_eq!(
            h.text,
            format!("POST /wsman HTTP/1.1\r\nhost: cas1.corp.example:5986\r\ncontent-length: 12\r\nAuthorization: {MUTUAL_AUTHORIZATION}\r\n\r\n")
        );
        assert_eq!(h.body, 12);
        // A chunked body is not framed by the bridge: refused rather than garbled.
        assert!(rewrite(
            &head(&[
                "POST /wsman HTTP/1.1",
                "proxy-authorization: Basic ZWJiOnRva2Vu",
                "transfer-encoding: chunked",
            ]),
            &inner(false),
        )
        .is_none());
    }
}
