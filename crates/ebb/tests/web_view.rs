//! The live web view of a real run (the balancer made of files): headless Chromium,
//! driven over the DevTools protocol, shows the member that is draining with its live
//! connection count, then the next one, without a reload and without console errors;
//! `/metrics` is valid Prometheus text (checked by `promtool check metrics` and parsed
//! here); `ebb watch` attaches to the same run from its journal; the server is read-only
//! and off loopback requires a token.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{ebb, Fixture};

const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(60);

/// A runbook whose drains wait for the test: each member has open "connections" (a file)
/// until the test closes them.
const RUNBOOK: &str = r#"
[runbook.drain]
timeout = "2m"

[[runbook.step]]
name = "maint"
run = "echo on > {var.dir}/lb/{member}.maint"
undo = "rm -f {var.dir}/lb/{member}.maint"

[[runbook.step]]
name = "install"
run = "echo 1.1 > {var.dir}/lb/{member}.version"

[[runbook.verify]]
name = "version"
command = "grep -q 1.1 {var.dir}/lb/{member}.version"
"#;

/// Kills the child on drop (a failing test must not leave processes behind).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: a process this test started; SIGTERM lets ebb stop cleanly.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `ebb ARGS` with `--web 127.0.0.1:0` and returns it with the address it printed.
fn start_with_web(args: &[&str], cwd: &Path, extra: &[&str]) -> (Proc, String) {
    let mut child = ebb()
        .args(args)
        .args(["--web", "127.0.0.1:0"])
        .args(extra)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ebb");
    let stderr = child.stderr.take().expect("stderr");
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("live view at http://").nth(1) {
                let addr = rest.split('/').next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(WAIT)
        .expect("ebb did not say where the live view is");
    (proc, addr)
}

/// One HTTP/1.1 GET on a fresh connection: (status, headers and body as text).
fn http_get(addr: &str, path: &str, extra_headers: &str) -> (u16, String) {
    http(addr, "GET", path, extra_headers)
}

fn http(addr: &str, method: &str, path: &str, extra_headers: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the web view");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra_headers}\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn body(answer: &str) -> &str {
    answer.split("\r\n\r\n").nth(1).unwrap_or("")
}

/// Headless Chromium spoken to over `--remote-debugging-pipe` (fd 3: commands to it, fd 4:
/// its answers and events, each a JSON message ended by a NUL byte).
struct Browser {
    child: Proc,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Console errors, uncaught exceptions and error log entries seen so far.
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2 failed");
    // Out of the way of 3 and 4, which the child's dup2 targets.
    // SAFETY: duplicating descriptors this function owns.
    let high: Vec<RawFd> = fds
        .iter()
        .map(|&fd| unsafe {
            let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
            libc::close(fd);
            h
        })
        .collect();
    (high[0], high[1])
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let (to_read, to_write) = pipe();
        let (from_read, from_write) = pipe();
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::dup2(to_read, 3) < 0 || libc::dup2(from_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e} (Debian package `chromium`)"));
        // SAFETY: descriptors this test created; each is owned by exactly one File or closed.
        let (to, from) = unsafe {
            libc::close(to_read);
            libc::close(from_write);
            (
                std::fs::File::from_raw_fd(to_write),
                std::fs::File::from_raw_fd(from_read),
            )
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Browser {
            child: Proc(child),
            to,
            from: rx,
            next_id: 0,
            session: None,
            errors: Vec::new(),
            _profile: profile,
        }
    }

    /// Sends a command (to the attached page once there is one) and waits for its answer,
    /// noting errors from the events that arrive meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("encode");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method} within {WAIT:?}"));
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("chromium: {method} failed: {e}");
                }
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    fn note(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!(
                "uncaught: {}",
                p["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .or(p["exceptionDetails"]["text"].as_str())
                    .unwrap_or("?")
            )),
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error: {}", p["args"]))
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => self.errors.push(format!(
                "log: {} {}",
                p["entry"]["text"].as_str().unwrap_or(""),
                p["entry"]["url"].as_str().unwrap_or("")
            )),
            _ => {}
        }
    }

    /// Attaches to the page and opens `url` with errors being recorded from the start.
    fn open(&mut self, url: &str) {
        let targets = self.call("Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .expect("a page target")
            .to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
        );
        self.session = Some(
            attached["sessionId"]
                .as_str()
                .expect("session id")
                .to_string(),
        );
        self.call("Runtime.enable", json!({}));
        self.call("Log.enable", json!({}));
        self.call("Page.enable", json!({}));
        self.call("Page.navigate", json!({"url": url}));
    }

    /// Evaluates `expr` in the page; its value (JSON-able).
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` until `ok` holds for its value; the last value either way.
    fn wait_for(&mut self, what: &str, expr: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.eval(expr);
            if ok(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("the page never showed {what}; last seen: {v}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Each member row of the page: name -> (state, step, connections).
const ROWS: &str = "JSON.stringify(Object.fromEntries([...document.querySelectorAll('tr[data-member]')].map(r => [r.dataset.member, [r.dataset.state, r.children[2].textContent, r.querySelector('.connections').textContent]])))";

fn rows(v: &Value) -> BTreeMap<String, (String, String, String)> {
    v.as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

fn draining(v: &Value) -> Vec<(String, String)> {
    rows(v)
        .into_iter()
        .filter(|(_, (st, _, _))| st == "draining")
        .map(|(m, (_, _, c))| (m, c))
        .collect()
}

#[test]
fn the_page_follows_a_real_run_live_in_chromium() {
    let fx = Fixture::new(&["web1", "web2", "web3"]);
    for m in ["web1", "web2", "web3"] {
        std::fs::write(fx.path(&format!("lb/{m}.conns")), "2\n").expect("conns");
    }
    let pool = fx.pool("max_unavailable = 1", &["web1", "web2", "web3"], RUNBOOK);
    let (mut run, addr) = start_with_web(
        &["run", pool.to_str().expect("utf-8 path")],
        fx.dir.path(),
        &[],
    );

    let mut browser = Browser::start();
    browser.open(&format!("http://{addr}/"));
    // Set once: a reload would lose it.
    browser.wait_for(
        "the script running",
        "document.readyState === 'complete' && !!document.querySelector('#conn')",
        |v| v == &json!(true),
    );
    browser.eval("window.__ebbNoReload = 'kept'; true");

    let v = browser.wait_for("web1 draining with 2 connections", ROWS, |v| {
        draining(v) == [("web1".to_string(), "2".to_string())]
    });
    assert_eq!(rows(&v)["web2"].0, "pending", "{v}");

    // The drain's connection count moves on the page as the balancer reports it.
    std::fs::write(fx.path("lb/web1.conns"), "1\n").expect("conns");
    browser.wait_for("web1 with 1 connection", ROWS, |v| {
        draining(v) == [("web1".to_string(), "1".to_string())]
    });

    // web1 drains; the run goes on to web2, and the page follows without a reload.
    std::fs::remove_file(fx.path("lb/web1.conns")).expect("rm");
    let v = browser.wait_for("web2 draining next", ROWS, |v| {
        draining(v) == [("web2".to_string(), "2".to_string())]
    });
    assert_eq!(rows(&v)["web1"].0, "done", "{v}");
    assert_eq!(
        browser.eval("window.__ebbNoReload"),
        json!("kept"),
        "the page was reloaded"
    );
    let log = browser.eval("document.getElementById('log').textContent");
    assert!(
        log.as_str()
            .is_some_and(|l| l.contains("web1") && l.contains("drain ok")),
        "event log: {log}"
    );
    assert_eq!(
        browser.eval("document.getElementById('conn').dataset.live"),
        json!("true")
    );

    // `ebb watch` attaches to the same run from the journal alone, and asks the balancer
    // for the draining member's connections (the run's events are in another process).
    let (_watch, watch_addr) = start_with_web(
        &["watch", pool.to_str().expect("utf-8 path")],
        fx.dir.path(),
        &[],
    );
    let deadline = Instant::now() + WAIT;
    let state = loop {
        let (status, answer) = http_get(&watch_addr, "/state", "");
        assert_eq!(status, 200, "{answer}");
        let state: Value = serde_json::from_str(body(&answer)).expect("state JSON");
        let web2 = state["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "web2"))
            .cloned()
            .expect("web2");
        if web2["state"] == "draining" && web2["connections"] == json!(2) {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "watch never showed web2 draining with 2 connections: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        state["run"]["holder"].is_string(),
        "the run's holder: {state}"
    );

    for m in ["web2", "web3"] {
        std::fs::remove_file(fx.path(&format!("lb/{m}.conns"))).expect("rm");
    }
    let t = Instant::now();
    let code = loop {
        if let Some(st) = run.0.try_wait().expect("wait") {
            break st.code();
        }
        assert!(t.elapsed() < WAIT, "the run did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert!(
        browser.errors.is_empty(),
        "console errors while the run was live: {:?}",
        browser.errors
    );
    drop(browser.child);
}

/// Parses Prometheus' text format: (name, labels, value) per sample, checking the
/// `# TYPE` of each family comes first.
fn parse_metrics(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().expect("name").to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no # TYPE before it");
        let labels = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("label");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push((
            name.to_string(),
            labels,
            value.parse().expect("sample value"),
        ));
    }
    out
}

fn sample(
    m: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    m.iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
}

#[test]
fn metrics_are_prometheus_text_with_the_runs_numbers() {
    let fx = Fixture::new(&["web1", "web2"]);
    std::fs::write(fx.path("lb/web2.conns"), "3\n").expect("conns");
    let rest = RUNBOOK.replace(
        "echo 1.1 > {var.dir}/lb/{member}.version",
        "echo 1.1 > {var.dir}/lb/{member}.version; sleep 0.3",
    );
    let pool = fx.pool("max_unavailable = 1", &["web1", "web2"], &rest);
    let (mut run, addr) = start_with_web(
        &["run", pool.to_str().expect("utf-8 path")],
        fx.dir.path(),
        &[],
    );
    // Wait until web2 drains (web1 is done by then).
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let (status, answer) = http_get(&addr, "/metrics", "");
        assert_eq!(status, 200, "{answer}");
        let text = body(&answer).to_string();
        if text.contains("ebb_drain_connections{pool=\"t\",member=\"web2\"} 3") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "web2 never showed draining:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // promtool (from the Prometheus package) checks the format and the naming conventions.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let m = parse_metrics(&text);
    assert_eq!(sample(&m, "ebb_run_state", &[("state", "running")]), 1.0);
    assert_eq!(sample(&m, "ebb_run_state", &[("state", "done")]), 0.0);
    assert_eq!(sample(&m, "ebb_members", &[("state", "done")]), 1.0);
    assert_eq!(sample(&m, "ebb_members", &[("state", "draining")]), 1.0);
    assert_eq!(sample(&m, "ebb_drains_in_progress", &[]), 1.0);
    // As last sampled (at web2's drain: 1 or 2, depending on when the sample was taken).
    let in_service = sample(&m, "ebb_members_in_service", &[]);
    assert!((1.0..=2.0).contains(&in_service), "{in_service}");
    // web2 owes its return to service (drain) and its initial state (hold) already.
    assert!(sample(&m, "ebb_owed_undos", &[("member", "web2")]) >= 1.0);
    assert_eq!(sample(&m, "ebb_owed_undos", &[("member", "web1")]), 0.0);
    // web1's install took at least 0.3 s: in the histogram, above the 0.1 s bucket.
    let install = [("step", "install")];
    assert_eq!(sample(&m, "ebb_step_duration_seconds_count", &install), 1.0);
    assert!(sample(&m, "ebb_step_duration_seconds_sum", &install) >= 0.3);
    assert_eq!(
        sample(
            &m,
            "ebb_step_duration_seconds_bucket",
            &[("step", "install"), ("le", "0.1")]
        ),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "ebb_step_duration_seconds_bucket",
            &[("step", "install"), ("le", "+Inf")]
        ),
        1.0
    );
    assert_eq!(sample(&m, "ebb_step_failures_total", &install), 0.0);

    // Read-only.
    let (status, _) = http(&addr, "POST", "/state", "Content-Length: 0\r\n");
    assert_eq!(status, 405);

    std::fs::remove_file(fx.path("lb/web2.conns")).expect("rm");
    let t = Instant::now();
    while run.0.try_wait().expect("wait").is_none() {
        assert!(t.elapsed() < WAIT, "the run did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn off_loopback_a_token_is_required() {
    let fx = Fixture::new(&["web1"]);
    let pool = fx.pool("", &["web1"], RUNBOOK);
    let p = pool.to_str().expect("utf-8 path");
    // Without a token: refused before anything starts (no journal is created).
    let out = ebb()
        .args(["run", p, "--web", "0.0.0.0:0"])
        .env_remove("EBB_WEB_TOKEN")
        .output()
        .expect("run ebb");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    assert!(!fx.path(".ebb/journal.db").exists(), "the run started");

    // With a token (here on loopback, which it also protects when given), /state,
    // /events and /metrics need it; the page itself does not hold data.
    std::fs::create_dir_all(fx.path(".ebb")).expect("mkdir");
    ebb_engine::journal::Journal::open(&fx.path(".ebb")).expect("journal");
    let (_watch, addr) = start_with_web(&["watch", p], fx.dir.path(), &["--web-token", "s3cret"]);
    assert_eq!(http_get(&addr, "/state", "").0, 401);
    assert_eq!(http_get(&addr, "/metrics", "").0, 401);
    assert_eq!(http_get(&addr, "/events", "").0, 401);
    assert_eq!(http_get(&addr, "/state?token=wrong", "").0, 401);
    assert_eq!(http_get(&addr, "/state?token=s3cret", "").0, 200);
    assert_eq!(
        http_get(&addr, "/metrics", "Authorization: Bearer s3cret\r\n").0,
        200
    );
    let (status, page) = http_get(&addr, "/", "");
    assert_eq!(status, 200);
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );

    // In a browser: opened as /?token=TOKEN the page passes the token on to its event
    // stream (an EventSource cannot send headers) and goes live; without it, it cannot.
    let mut browser = Browser::start();
    browser.open(&format!("http://{addr}/?token=s3cret"));
    browser.wait_for(
        "the page live with the token",
        "(document.getElementById('conn') || {dataset: {}}).dataset.live",
        |v| v == &json!("true"),
    );
    assert_eq!(
        browser.eval("document.getElementById('metrics').getAttribute('href')"),
        json!("metrics?token=s3cret")
    );
    assert!(
        browser.errors.is_empty(),
        "errors with the token: {:?}",
        browser.errors
    );
    // Without it: the event stream is refused (401) and the page says it is not live.
    browser.open(&format!("http://{addr}/"));
    browser.wait_for(
        "the page refused without the token",
        "(document.getElementById('conn') || {}).textContent || ''",
        |v| v.as_str().is_some_and(|t| t.starts_with("disconnected")),
    );
    drop(browser.child);
}

#[test]
fn a_failed_run_shows_the_failing_steps_output_and_what_is_owed() {
    let fx = Fixture::new(&["web1", "web2"]);
    let failing = RUNBOOK.replace(
        "run = \"echo 1.1 > {var.dir}/lb/{member}.version\"",
        "run = \"echo 'E: dpkg was interrupted' >&2; exit 3\"",
    );
    let pool = fx.pool("", &["web1", "web2"], &failing);
    let p = pool.to_str().expect("utf-8 path");
    let out = ebb()
        .args(["run", p])
        .current_dir(fx.dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "the run fails");

    // The run is over: `ebb watch` shows it from the journal.
    let (_watch, addr) = start_with_web(&["watch", p], fx.dir.path(), &[]);
    let mut browser = Browser::start();
    browser.open(&format!("http://{addr}/"));
    let v = browser.wait_for(
        "the failed step",
        "JSON.stringify({hidden: document.getElementById('failures-section').hidden, text: document.getElementById('failures').textContent, run: document.getElementById('run').textContent, web1: (document.querySelector('tr[data-member=web1]') || {}).textContent || ''})",
        |v| {
            v.as_str()
                .is_some_and(|s| s.contains("dpkg was interrupted"))
        },
    );
    let v: Value = serde_json::from_str(v.as_str().expect("string")).expect("JSON");
    assert_eq!(v["hidden"], json!(false), "{v}");
    let text = v["text"].as_str().expect("text");
    assert!(
        text.contains("web1: install (step)") && text.contains("exit 3"),
        "{text}"
    );
    assert!(v["run"].as_str().expect("run").contains("halted"), "{v}");
    // web1 failed holding its undos: the paired step's, its return to service, its hold.
    let web1 = v["web1"].as_str().expect("row");
    assert!(web1.contains("failed") && web1.contains("maint"), "{web1}");
    assert!(
        browser.errors.is_empty(),
        "console errors: {:?}",
        browser.errors
    );

    let (_, metrics) = http_get(&addr, "/metrics", "");
    let m = parse_metrics(body(&metrics));
    let install = [("step", "install")];
    assert_eq!(sample(&m, "ebb_step_failures_total", &install), 1.0);
    assert_eq!(sample(&m, "ebb_run_state", &[("state", "halted")]), 1.0);
    assert_eq!(sample(&m, "ebb_members", &[("state", "failed")]), 1.0);
    assert!(sample(&m, "ebb_owed_undos", &[("member", "web1")]) >= 2.0);
}
