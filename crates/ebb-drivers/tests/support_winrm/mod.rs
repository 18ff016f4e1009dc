//! A fake WinRM (WS-Management) endpoint on loopback: HTTP (or HTTPS, optionally requiring
//! a client certificate) with Basic, NTLM (over HTTPS) or certificate logins, answering
//! Create / Command / Receive / Signal / Delete with the bodies in
//! `tests/fixtures/winrm/` (MS-WSMV shapes). It does not run PowerShell: it decodes the
//! `-EncodedCommand` ebb sent, records it, and answers with the scripted reply whose key
//! the script contains, printing the wrapper's pid and exit markers on stderr as
//! PowerShell would.
#![allow(dead_code)]

pub mod ntlm;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

// By way of ebb-drivers: the `ebb` crate's tests include this file too.
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../ebb-drivers/tests/fixtures/winrm/"
);

/// The `Authorization` of a certificate login (MS-WSMV's `https/mutual` profile).
pub const MUTUAL: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}{name}")).expect("winrm fixture")
}

/// What the fake answers to a command whose script contains `key`.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub stdout: String,
    pub stderr: String,
    pub exit: i32,
    /// Never finishes: every Receive answers "Running" with no output.
    pub hang: bool,
    /// The member goes away mid-command (a reboot, a cut link): the first Receive's
    /// connection is closed without an answer, and so is every later one.
    pub vanish: bool,
}

impl Reply {
    pub fn out(stdout: &str, exit: i32) -> Reply {
        Reply {
            stdout: stdout.into(),
            exit,
            ..Reply::default()
        }
    }
}

/// How requests log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// HTTP Basic with the fake's account.
    Basic,
    /// The client certificate the TLS acceptor required, and MS-WSMV's `https/mutual`
    /// Authorization.
    Certificate,
    /// NTLMv2 with the fake's account (see [`ntlm`]); over HTTPS only (no sealing).
    Ntlm,
}

/// What the fake saw.
#[derive(Default)]
pub struct Seen {
    /// Decoded PowerShell scripts, in order.
    pub scripts: Vec<String>,
    /// The `rsp:Command` of each Command (e.g. `powershell`) with its arguments.
    pub command_lines: Vec<Vec<String>>,
    /// Signal codes received (`.../signal/terminate`).
    pub signals: Vec<String>,
    pub shells_created: usize,
    pub shells_deleted: usize,
    /// Requests refused with 401.
    pub refused: usize,
    /// The `Host` of each request.
    pub hosts: Vec<String>,
    /// NTLM logins whose response proved the password.
    pub ntlm_logins: usize,
}

/// Answers a command (the one ebb wrapped, taken back out of the wrapper) by itself.
pub type Responder = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>
        + Send
        + Sync,
>;

struct State {
    responder: Option<Responder>,
    user: String,
    password: String,
    login: Login,
    replies: Vec<(String, Reply)>,
    running: HashMap<String, (Reply, bool)>,
    seen: Seen,
    next: u64,
}

/// The fake endpoint; stops when dropped.
pub struct FakeWinrm {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWinrm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWinrm {
    /// Starts it with the account `user` / `password`.
    pub async fn start(user: &str, password: &str) -> FakeWinrm {
        Self::serve(user, password, None, Login::Basic).await
    }

    /// Starts it over TLS with `acceptor`, requests logging in by `login`.
    pub async fn start_tls(
        user: &str,
        password: &str,
        acceptor: tokio_rustls::TlsAcceptor,
        login: Login,
    ) -> FakeWinrm {
        Self::serve(user, password, Some(acceptor), login).await
    }

    async fn serve(
        user: &str,
        password: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        login: Login,
    ) -> FakeWinrm {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            responder: None,
            user: user.into(),
            password: password.into(),
            login,
            replies: Vec::new(),
            running: HashMap::new(),
            seen: Seen::default(),
            next: 1,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    // An NTLM challenge belongs to its connection.
                    let challenge = Arc::new(Mutex::new(None));
                    let svc = service_fn(move |req| answer(st.clone(), challenge.clone(), req));
                    match tls {
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                        Some(a) => {
                            let Ok(stream) = a.accept(stream).await else {
                                return;
                            };
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        FakeWinrm { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/wsman`.
    pub fn url(&self) -> String {
        format!("http://{}/wsman", self.addr)
    }

    /// `https://127.0.0.1:PORT/wsman`.
    pub fn https_url(&self) -> String {
        format!("https://{}/wsman", self.addr)
    }

    /// Answers scripts containing `key` with `reply` (later ones win).
    pub fn script(&self, key: &str, reply: Reply) {
        let mut s = self.state.lock().unwrap();
        s.replies.retain(|(k, _)| k != key);
        s.replies.push((key.into(), reply));
    }

    /// Answers every command through `r` (instead of the scripted replies).
    pub fn respond(&self, r: Responder) {
        self.state.lock().unwrap().responder = Some(r);
    }

    pub fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.state.lock().unwrap().seen)
    }
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = s.bytes().filter_map(val).collect();
    let mut out = Vec::new();
    for c in digits.chunks(4) {
        let mut n = 0u32;
        for (i, d) in c.iter().enumerate() {
            n |= d << (18 - 6 * i);
        }
        for i in 0..c.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The texts of every `<prefix:name ...>text</prefix:name>` (any prefix).
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let tag_end = rest.find(['>', ' ', '/']).unwrap_or(rest.len());
        let tag = &rest[..tag_end];
        let local = tag.rsplit(':').next().unwrap_or(tag);
        if tag.starts_with('/') || local != name {
            continue;
        }
        let Some(gt) = rest.find('>') else { break };
        if rest[..gt].ends_with('/') {
            continue;
        }
        let body = &rest[gt + 1..];
        let Some(end) = body.find("</") else { break };
        out.push(body[..end].trim());
        rest = &body[end..];
    }
    out
}

fn reply_xml(name: &str, request: &str, fill: &[(&str, &str)]) -> String {
    let mut x = fixture(name);
    let id = elements(request, "MessageID")
        .first()
        .copied()
        .unwrap_or("");
    x = x.replace("{RELATES_TO}", id);
    x = x.replace("{MESSAGE_ID}", "00000000-0000-0000-0000-000000000001");
    for (k, v) in fill {
        x = x.replace(&format!("{{{k}}}"), v);
    }
    x
}

async fn answer(
    state: Arc<Mutex<State>>,
    challenge: Arc<Mutex<Option<[u8; 8]>>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body).to_string();
    let logged_in = {
        let mut s = state.lock().unwrap();
        s.seen.hosts.push(host);
        match s.login {
            Login::Certificate => auth.as_deref() == Some(MUTUAL),
            Login::Basic => {
                let basic = b64(format!("{}:{}", s.user, s.password).as_bytes());
                auth.as_deref() == Some(format!("Basic {basic}").as_str())
            }
            Login::Ntlm => match ntlm::step(auth.as_deref(), &challenge, &s.user, &s.password) {
                ntlm::Step::LoggedIn => {
                    s.seen.ntlm_logins += 1;
                    true
                }
                ntlm::Step::Refused => false,
                ntlm::Step::Challenge(c) => {
                    return Ok(Response::builder()
                        .status(401)
                        .header("WWW-Authenticate", c)
                        .body(Full::new(Bytes::new()))
                        .unwrap())
                }
            },
        }
    };
    if !logged_in {
        state.lock().unwrap().seen.refused += 1;
        return Ok(Response::builder()
            .status(401)
            .header("WWW-Authenticate", "Basic realm=\"WSMAN\"")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let action = elements(&body, "Action")
        .first()
        .copied()
        .unwrap_or("")
        .to_string();
    let xml = if action.ends_with("/transfer/Create") {
        let mut s = state.lock().unwrap();
        s.seen.shells_created += 1;
        let id = format!("SHELL-{}", s.next);
        s.next += 1;
        reply_xml("create-response.xml", &body, &[("SHELL_ID", &id)])
    } else if action.ends_with("/shell/Command") {
        let cmd: Vec<String> = elements(&body, "Command")
            .iter()
            .map(|s| s.to_string())
            .collect();
        let args: Vec<String> = elements(&body, "Arguments")
            .iter()
            .map(|s| s.to_string())
            .collect();
        let script = args
            .iter()
            .position(|a| a == "-EncodedCommand")
            .and_then(|i| args.get(i + 1))
            .map(|e| {
                let b = unb64(e);
                let u: Vec<u16> = b
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                    .collect();
                String::from_utf16_lossy(&u)
            })
            .unwrap_or_default();
        let responder = state.lock().unwrap().responder.clone();
        let answered = match responder {
            Some(r) => Some(r(wrapped_command(&script)).await),
            None => None,
        };
        let mut s = state.lock().unwrap();
        let reply = answered
            .or_else(|| {
                s.replies
                    .iter()
                    .rev()
                    .find(|(k, _)| script.contains(k.as_str()))
                    .map(|(_, r)| r.clone())
            })
            .unwrap_or(Reply {
                stderr: "The term is not recognized as the name of a cmdlet (no scripted reply)\n"
                    .into(),
                exit: 1,
                ..Reply::default()
            });
        let mut line = cmd;
        line.extend(args);
        s.seen.command_lines.push(line);
        s.seen.scripts.push(script);
        let id = format!("CMD-{}", s.next);
        s.next += 1;
        s.running.insert(id.clone(), (reply, false));
        reply_xml("command-response.xml", &body, &[("COMMAND_ID", &id)])
    } else if action.ends_with("/shell/Receive") {
        let id = elements(&body, "DesiredStream")
            .first()
            .map(|_| ())
            .and_then(|_| {
                body.split("CommandId=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let got = state.lock().unwrap().running.get(&id).cloned();
        match got {
            // An error from the service makes hyper drop the connection unanswered.
            Some((r, _)) if r.vanish => return Err("the member went away".into()),
            Some((r, _)) if r.hang => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                reply_xml(
                    "receive-response.xml",
                    &body,
                    &[
                        ("STREAMS", ""),
                        ("COMMAND_ID", &id),
                        ("STATE", "Running"),
                        ("EXIT", ""),
                    ],
                )
            }
            Some((r, _)) => {
                let stderr = format!("__ebb_pid__ 4242\n{}__ebb_exit__ {}\n", r.stderr, r.exit);
                let streams = format!(
                    "      <rsp:Stream Name=\"stdout\" CommandId=\"{id}\">{}</rsp:Stream>\n      <rsp:Stream Name=\"stderr\" CommandId=\"{id}\">{}</rsp:Stream>\n      <rsp:Stream Name=\"stdout\" CommandId=\"{id}\" End=\"true\"></rsp:Stream>",
                    b64(r.stdout.as_bytes()),
                    b64(stderr.as_bytes())
                );
                let exit = format!("<rsp:ExitCode>{}</rsp:ExitCode>", r.exit);
                reply_xml(
                    "receive-response.xml",
                    &body,
                    &[
                        ("STREAMS", &streams),
                        ("COMMAND_ID", &id),
                        ("STATE", "Done"),
                        ("EXIT", &exit),
                    ],
                )
            }
            None => return Ok(fault(&format!("no command {id}"))),
        }
    } else if action.ends_with("/shell/Signal") {
        let code = elements(&body, "Code")
            .first()
            .copied()
            .unwrap_or("")
            .to_string();
        state.lock().unwrap().seen.signals.push(code);
        reply_xml("signal-response.xml", &body, &[])
    } else if action.ends_with("/transfer/Delete") {
        state.lock().unwrap().seen.shells_deleted += 1;
        reply_xml("delete-response.xml", &body, &[])
    } else {
        return Ok(fault(&format!("unexpected action {action}")));
    };
    Ok(Response::builder()
        .status(200)
        .header("Content-Type", "application/soap+xml;charset=UTF-8")
        .body(Full::new(Bytes::from(xml)))
        .unwrap())
}

/// The command inside ebb's PowerShell wrapper (see `command_line::powershell_script`).
pub fn wrapped_command(script: &str) -> String {
    let start = "$global:LASTEXITCODE = 0\n";
    let end = "\n$ebbOk = $?\n";
    match (script.find(start), script.rfind(end)) {
        (Some(a), Some(b)) if a + start.len() <= b => script[a + start.len()..b].to_string(),
        _ => String::new(),
    }
}

fn fault(why: &str) -> Response<Full<Bytes>> {
    let xml = format!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason><s:Text xml:lang=\"en-US\">{why}</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"
    );
    Response::builder()
        .status(500)
        .header("Content-Type", "application/soap+xml;charset=UTF-8")
        .body(Full::new(Bytes::from(xml)))
        .unwrap()
}
