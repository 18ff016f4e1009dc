//! `demo-member`: one member of the demo service.
//!
//! A tiny HTTP server that answers with its name and version, so that clients and the
//! demo can see which member (and which version) served them:
//! `GET /` → `web1 1.0\n`, `GET /version` → `1.0`, `GET /health` → 200, and `GET /stream`
//! → a slow response that streams a line every 200 ms for `--stream-time`, then `end\n`
//! (a stream that ends without `end` was cut). `GET /metrics` gives, in Prometheus' text
//! format, how `GET /` was answered (`demo_http_responses_total{code="200"|"500"}`);
//! with `--fail-every N` every Nth `GET /` is answered 500 (a bad release, for the tests
//! of bake checks).
//!
//! Each start writes a fresh random boot id to `DIR/boot/NAME`; the pool's `boot_id`
//! command reads it, so ebb can tell a reboot happened. The file is removed when the member
//! stops, so `boot_id` fails while the member is down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Interval between two lines of `GET /stream`.
const STREAM_TICK: Duration = Duration::from_millis(200);

/// Options of the hidden `demo-member` command.
#[derive(Debug, Clone, clap::Args)]
pub struct MemberArgs {
    /// The member's name, e.g. `web1`.
    #[arg(long)]
    pub name: String,
    /// Address to listen on, e.g. `127.0.0.1:8081`.
    #[arg(long)]
    pub listen: String,
    /// The version this member reports.
    #[arg(long, default_value = "1.0")]
    pub version: String,
    /// The demo's working directory (the boot id goes to `DIR/boot/NAME`).
    #[arg(long)]
    pub dir: PathBuf,
    /// How long `GET /stream` lasts.
    #[arg(long, default_value = "3s", value_parser = ebb_config::parse_duration)]
    pub stream_time: Duration,
    /// Answer every Nth `GET /` with a 500 (0: never).
    #[arg(long, default_value_t = 0)]
    pub fail_every: u64,
}

/// Runs a member until SIGTERM/SIGINT; returns the exit code.
pub fn run(args: MemberArgs) -> i32 {
    let runtime = match crate::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            ebb_out::errln!("demo-member {}: {e:#}", args.name);
            return 1;
        }
    };
    match runtime.block_on(serve(args.clone())) {
        Ok(()) => 0,
        Err(e) => {
            ebb_out::errln!("demo-member {}: {e:#}", args.name);
            1
        }
    }
}

/// Where a member's boot id lives.
pub fn boot_file(dir: &Path, member: &str) -> PathBuf {
    dir.join("boot").join(member)
}

/// A fresh random token (16 hex digits).
pub fn random_token() -> String {
    let mut bytes = [0u8; 8];
    let from_urandom = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !from_urandom {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mixed = (nanos as u64) ^ ((std::process::id() as u64) << 32);
        bytes = mixed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Identity {
    name: String,
    version: String,
    stream_time: Duration,
    fail_every: u64,
    /// Answers to `GET /`: all of them, and those that were 500s.
    answered: AtomicU64,
    failed: AtomicU64,
}

impl Identity {
    /// The status of the next `GET /`, counted.
    fn next_status(&self) -> u16 {
        let n = self.answered.fetch_add(1, Relaxed) + 1;
        if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
            self.failed.fetch_add(1, Relaxed);
            500
        } else {
            200
        }
    }

    /// `GET /metrics`: the answers to `GET /` by status, in Prometheus' text format.
    fn metrics(&self) -> String {
        let failed = self.failed.load(Relaxed);
        let ok = self.answered.load(Relaxed).saturating_sub(failed);
        format!(
            "# HELP demo_http_responses_total Answers to GET / by status code.\n# TYPE demo_http_responses_total counter\ndemo_http_responses_total{{code=\"200\"}} {ok}\ndemo_http_responses_total{{code=\"500\"}} {failed}\n"
        )
    }
}

async fn serve(args: MemberArgs) -> anyhow::Result<()> {
    let listener = bind_with_retry(&args.listen).await?;
    let identity = Arc::new(Identity {
        name: args.name.clone(),
        version: args.version.clone(),
        stream_time: args.stream_time,
        fail_every: args.fail_every,
        answered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });

    // Only once the member is listening does it exist for ebb: write the boot id now.
    let token = random_token();
    let path = boot_file(&args.dir, &args.name);
    write_atomically(&path, &format!("{token}\n"))?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let identity = identity.clone();
                    tokio::spawn(async move { handle(stream, &identity).await });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    remove_if_ours(&path, &token);
    Ok(())
}

/// The previous process of this member may have just died; its port can take a moment.
async fn bind_with_retry(listen: &str) -> anyhow::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(listen).await {
            Ok(listener) => return Ok(listener),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("cannot listen on {listen}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A newer process of the same member may already have written its own boot id.
fn remove_if_ours(path: &Path, token: &str) {
    if let Ok(text) = std::fs::read_to_string(path) {
        if text.trim() == token {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn handle(mut stream: TcpStream, me: &Identity) {
    let _ = stream.set_nodelay(true);
    let Some((method, path)) = crate::http::read_request(&mut stream, Duration::from_secs(5)).await
    else {
        return;
    };
    let path = path.split('?').next().unwrap_or_default();
    let write = async {
        match (method.as_str(), path) {
            ("GET", "/") => {
                let status = me.next_status();
                respond(
                    &mut stream,
                    status,
                    &format!("{} {}\n", me.name, me.version),
                )
                .await
            }
            ("GET", "/metrics") => respond(&mut stream, 200, &me.metrics()).await,
            ("GET", "/version") => respond(&mut stream, 200, &me.version).await,
            ("GET", "/health") => respond(&mut stream, 200, "ok\n").await,
            ("GET", "/stream") => stream_slowly(&mut stream, me).await,
            ("GET", _) => respond(&mut stream, 404, "not found\n").await,
            _ => respond(&mut stream, 405, "method not allowed\n").await,
        }
    };
    let limit = me.stream_time + Duration::from_secs(10);
    let _ = tokio::time::timeout(limit, write).await;
    let _ = stream.shutdown().await;
}

async fn respond(stream: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Method Not Allowed",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}

/// Streams without a content length, delimited by closing: only the final `end` line proves
/// the client got the whole stream.
async fn stream_slowly(stream: &mut TcpStream, me: &Identity) -> std::io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    let ticks = (me.stream_time.as_millis() / STREAM_TICK.as_millis()).max(1);
    for i in 0..ticks {
        let line = format!("{} {} tick {i}\n", me.name, me.version);
        stream.write_all(line.as_bytes()).await?;
        tokio::time::sleep(STREAM_TICK).await;
    }
    stream.write_all(b"end\n").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_name_version_health_and_writes_its_boot_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let listen = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let args = MemberArgs {
            name: "web7".into(),
            listen: listen.clone(),
            version: "1.1".into(),
            dir: dir.path().to_path_buf(),
            stream_time: Duration::from_millis(400),
            fail_every: 0,
        };
        let server = tokio::spawn(serve(args));
        let boot = boot_file(dir.path(), "web7");
        for _ in 0..100 {
            if boot.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let token = std::fs::read_to_string(&boot).expect("boot id written");
        assert_eq!(token.trim().len(), 16);

        let get = |path: &'static str| crate::http::get(&listen, path, Duration::from_secs(2));
        assert_eq!(
            get("/").await.map(|r| r.text()).ok().as_deref(),
            Some("web7 1.1\n")
        );
        assert_eq!(
            get("/version").await.map(|r| r.text()).ok().as_deref(),
            Some("1.1")
        );
        assert_eq!(get("/health").await.map(|r| r.status).ok(), Some(200));
        assert_eq!(get("/nope").await.map(|r| r.status).ok(), Some(404));
        let stream = get("/stream").await.map(|r| r.text()).unwrap_or_default();
        assert!(
            stream.starts_with("web7 1.1 tick 0\n") && stream.ends_with("\nend\n"),
            "{stream}"
        );
        server.abort();
    }

    #[test]
    fn fails_every_nth_answer_and_counts_them_in_its_metrics() {
        let me = Identity {
            name: "web1".into(),
            version: "1.1".into(),
            stream_time: Duration::from_secs(1),
            fail_every: 20,
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        };
        let statuses: Vec<u16> = (0..40).map(|_| me.next_status()).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 500).count(), 2);
        assert_eq!((statuses[19], statuses[39], statuses[0]), (500, 500, 200));
        let text = me.metrics();
        assert!(
            text.contains("demo_http_responses_total{code=\"200\"} 38\n")
                && text.contains("demo_http_responses_total{code=\"500\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn removes_only_its_own_boot_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("web1");
        std::fs::write(&path, "newer\n").expect("write");
        remove_if_ours(&path, "older");
        assert!(path.exists());
        remove_if_ours(&path, "newer");
        assert!(!path.exists());
        assert_ne!(random_token(), random_token());
    }
}
