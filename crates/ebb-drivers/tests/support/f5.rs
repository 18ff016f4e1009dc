//! A fake BIG-IP: the iControl REST requests the f5 driver sends, answered over HTTPS
//! with the documented shapes in `tests/fixtures/f5/` (see its README for where each comes
//! from). It keeps one pool's members (session, state, connections, availability), the
//! tokens it issued, and a log of every request, so tests assert on exact requests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One pool member as the fake BIG-IP holds it.
#[derive(Debug, Clone)]
pub struct FakeMember {
    pub address: String,
    pub session: String,
    pub state: String,
    pub conns: u64,
    /// `available`, `offline` or `unknown`.
    pub availability: String,
}

/// A request the fake received: method, path (with query), token header, body.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub token: Option<String>,
    pub body: Option<serde_json::Value>,
}

#[derive(Default)]
pub struct FakeState {
    pub partition: String,
    pub pool: String,
    pub username: String,
    pub password: String,
    pub members: BTreeMap<String, FakeMember>,
    pub tokens: Vec<String>,
    pub log: Vec<Logged>,
    /// Answer the next PATCH with 409 (error-409.json).
    pub conflict_next_patch: bool,
    issued: u64,
}

/// The fake BIG-IP, on `https://127.0.0.1:PORT` with a self-signed certificate.
pub struct FakeBigIp {
    pub url: String,
    /// The certificate to trust (`ca_file`).
    pub cert: PathBuf,
    pub state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBigIp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/f5")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `fixture` with each `{{key}}` replaced.
fn fill(name: &str, vars: &[(&str, String)]) -> String {
    let mut t = fixture(name);
    for (k, v) in vars {
        t = t.replace(&format!("{{{{{k}}}}}"), v);
    }
    t
}

impl FakeBigIp {
    /// Pool `/Common/POOL` with `members` (name → member), user `username`/`password`.
    pub async fn start(
        dir: &Path,
        pool: &str,
        username: &str,
        password: &str,
        members: &[(&str, FakeMember)],
    ) -> FakeBigIp {
        let (cert, key) = crate::tls::self_signed(dir);
        let state = Arc::new(Mutex::new(FakeState {
            partition: "Common".into(),
            pool: pool.into(),
            username: username.into(),
            password: password.into(),
            members: members
                .iter()
                .map(|(n, m)| (n.to_string(), m.clone()))
                .collect(),
            ..Default::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = crate::tls::acceptor(&cert, &key);
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &st).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        FakeBigIp {
            url: format!("https://127.0.0.1:{port}"),
            cert,
            state,
            task,
        }
    }

    /// The requests so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Forgets the log.
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Expires every token (as after 20 minutes).
    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    /// A member as the fake holds it now.
    pub fn member(&self, name: &str) -> FakeMember {
        self.state.lock().unwrap().members[name].clone()
    }

    /// Changes a member (connections, availability, states set by someone else).
    pub fn set(&self, name: &str, f: impl FnOnce(&mut FakeMember)) {
        f(self.state.lock().unwrap().members.get_mut(name).unwrap());
    }
}

type Body = http_body_util::Full<bytes::Bytes>;

fn reply(status: u16, body: String) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Body::new(bytes::Bytes::from(body)))
        .unwrap()
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    st: &Arc<Mutex<FakeState>>,
) -> hyper::Response<Body> {
    use http_body_util::BodyExt;
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let token = req
        .headers()
        .get("x-f5-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let mut s = st.lock().unwrap();
    s.log.push(Logged {
        method: method.clone(),
        path: path.clone(),
        token: token.clone(),
        body: body.clone(),
    });
    let (partition, pool, username) = (s.partition.clone(), s.pool.clone(), s.username.clone());
    let base = [
        ("partition", partition.clone()),
        ("pool", pool.clone()),
        ("username", username.clone()),
    ];

    if method == "POST" && path == "/mgmt/shared/authn/login" {
        let want: serde_json::Value = serde_json::from_str(&fill(
            "login-request.json",
            &[
                ("username", username.clone()),
                ("password", s.password.clone()),
            ],
        ))
        .unwrap();
        if body.as_ref() != Some(&want) {
            return reply(401, fill("login-401.json", &base));
        }
        s.issued += 1;
        let t = format!("FAKETOKEN{:04}", s.issued);
        s.tokens.push(t.clone());
        let mut vars = base.to_vec();
        vars.push(("token", t));
        return reply(200, fill("login-response.json", &vars));
    }
    if !token.is_some_and(|t| s.tokens.contains(&t)) {
        return reply(401, fixture("error-401-token.json"));
    }
    if method == "DELETE" && path.starts_with("/mgmt/tm/sys/connection?options=") {
        // ss-server-addr+A+ss-server-port+P: the member's server-side connections go.
        let opts: Vec<&str> = path
            .split_once("options=")
            .map(|x| x.1)
            .unwrap_or("")
            .split('+')
            .collect();
        let (addr, port) = match opts.as_slice() {
            ["ss-server-addr", a, "ss-server-port", p] => (a.to_string(), p.to_string()),
            _ => {
                return reply(
                    400,
                    format!("{{\"code\":400,\"message\":\"unexpected options {path}\"}}"),
                )
            }
        };
        for (n, m) in s.members.iter_mut() {
            if m.address == addr && n.ends_with(&format!(":{port}")) {
                m.conns = 0;
            }
        }
        return reply(200, String::new());
    }
    let pool_path = format!("/mgmt/tm/ltm/pool/~{partition}~{pool}");
    let Some(rest) = path.strip_prefix(&format!("{pool_path}/members")) else {
        // Another pool (or partition): BIG-IP's 404 for a pool.
        let other = path
            .strip_prefix("/mgmt/tm/ltm/pool/~")
            .and_then(|p| p.split('/').next())
            .unwrap_or("")
            .replace('~', "/");
        let (p, n) = other.rsplit_once('/').unwrap_or(("Common", other.as_str()));
        return reply(
            404,
            fill(
                "error-404-pool.json",
                &[
                    ("partition", p.trim_start_matches('/').to_string()),
                    ("pool", n.to_string()),
                ],
            ),
        );
    };
    if rest.is_empty() && method == "GET" {
        let items: Vec<serde_json::Value> = s
            .members
            .iter()
            .map(|(n, m)| member_json(&base, n, m))
            .collect();
        let mut vars = base.to_vec();
        vars.push(("items", serde_json::Value::Array(items).to_string()));
        return reply(200, fill("pool-members.json", &vars));
    }
    let Some(rest) = rest.strip_prefix(&format!("/~{partition}~")) else {
        return reply(400, "{\"code\":400,\"message\":\"bad path\"}".into());
    };
    let (name, stats) = match rest.strip_suffix("/stats") {
        Some(n) => (n.to_string(), true),
        None => (rest.to_string(), false),
    };
    let Some(m) = s.members.get(&name).cloned() else {
        let (a, p) = name.rsplit_once(':').unwrap_or((name.as_str(), "0"));
        let mut vars = base.to_vec();
        vars.push(("address", a.to_string()));
        vars.push(("port", p.to_string()));
        return reply(404, fill("error-404-member.json", &vars));
    };
    match (method.as_str(), stats) {
        ("GET", false) => reply(200, member_json(&base, &name, &m).to_string()),
        ("GET", true) => {
            let disabled = m.session == "user-disabled";
            let mut vars = base.to_vec();
            vars.extend([
                ("name", name.clone()),
                ("address", m.address.clone()),
                (
                    "port",
                    name.rsplit_once(':')
                        .map(|x| x.1)
                        .unwrap_or("0")
                        .to_string(),
                ),
                ("curConns", m.conns.to_string()),
                ("availability", m.availability.clone()),
                (
                    "monitorStatus",
                    if m.availability == "available" {
                        "up".into()
                    } else {
                        "down".into()
                    },
                ),
                (
                    "sessionStatus",
                    if disabled {
                        "user-disabled".into()
                    } else {
                        "enabled".into()
                    },
                ),
                (
                    "enabledState",
                    if disabled || m.state == "user-down" {
                        "disabled".into()
                    } else {
                        "enabled".into()
                    },
                ),
                (
                    "statusReason",
                    if disabled {
                        "Pool member has been disabled by user".into()
                    } else {
                        "Pool member is available".into()
                    },
                ),
            ]);
            reply(200, fill("pool-member-stats.json", &vars))
        }
        ("PATCH", false) => {
            if s.conflict_next_patch {
                s.conflict_next_patch = false;
                return reply(409, fill("error-409.json", &base));
            }
            let b = body.unwrap_or_default();
            let member = s.members.get_mut(&name).unwrap();
            match b.get("session").and_then(|v| v.as_str()) {
                Some("user-disabled") => member.session = "user-disabled".into(),
                Some("user-enabled") => member.session = "monitor-enabled".into(),
                Some(other) => {
                    return reply(
                        400,
                        format!("{{\"code\":400,\"message\":\"invalid session {other}\"}}"),
                    )
                }
                None => {}
            }
            match b.get("state").and_then(|v| v.as_str()) {
                Some("user-down") => member.state = "user-down".into(),
                Some("user-up") => member.state = "up".into(),
                Some(other) => {
                    return reply(
                        400,
                        format!("{{\"code\":400,\"message\":\"invalid state {other}\"}}"),
                    )
                }
                None => {}
            }
            let m = member.clone();
            reply(200, member_json(&base, &name, &m).to_string())
        }
        _ => reply(
            405,
            "{\"code\":405,\"message\":\"method not allowed\"}".into(),
        ),
    }
}

fn member_json(base: &[(&str, String)], name: &str, m: &FakeMember) -> serde_json::Value {
    let mut vars = base.to_vec();
    vars.extend([
        ("name", name.to_string()),
        ("address", m.address.clone()),
        ("session", m.session.clone()),
        ("state", m.state.clone()),
    ]);
    serde_json::from_str(&fill("pool-member.json", &vars)).unwrap()
}
