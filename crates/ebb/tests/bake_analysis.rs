//! Bake analysis end to end (issue 14, section 2): the real `ebb` binary rolls three real
//! member HTTP services (`ebb demo-member`, "updated" to 1.1 by restarting them) behind a
//! real HAProxy in HTTP mode, while this test drives traffic through HAProxy the whole
//! time. The bad 1.1 answers every 20th request with a 500 (5%) and counts it in its
//! `/metrics`.
//!
//! - A real Prometheus (Debian's `prometheus`) scrapes the members; a `prometheus` bake
//!   check sees the 500s of the first member's 1.1: it is pulled back, rolled back to 1.0,
//!   held; no later member was touched (their own version logs, HAProxy's server states).
//! - The `balancer` bake check reads HAProxy's own per-server counters (`show stat`): the
//!   first member's 5% beside the clean members not yet updated fails it, the same way.
//! - A healthy 1.1 passes both checks on every member.
//! - The failing figures are in `ebb status` and `ebb report`.
//! - `ebb check` says that a driver which cannot count errors cannot serve the `balancer`
//!   check.

#[path = "support/haproxy.rs"]
mod haproxy;
#[path = "support/members.rs"]
mod members;
mod support;

use members::{free_address, get, runbook, Services};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const MEMBERS: [&str; 3] = ["web1", "web2", "web3"];
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Prometheus scraping the members every 500 ms; stopped on drop.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts it in `dir/prometheus` and waits (bounded, generously) until every target
    /// has been scraped.
    fn start(dir: &Path, targets: &[String]) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install the Debian package prometheus (scripts/test.sh does)"
        );
        let d = dir.join("prometheus");
        std::fs::create_dir_all(&d).expect("mkdir");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            d.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 500ms\nscrape_configs:\n  - job_name: members\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .expect("write config");
        let address = free_address();
        let log = d.join("prometheus.log");
        let child = Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS}: {e}"));
        let p = Prometheus {
            child,
            url: format!("http://{address}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // `count(up == 1)`, URL-encoded.
            let (status, body) = get(&address, "/api/v1/query?query=count(up%3D%3D1)");
            if status == 200 && body.contains(&format!("\"{}\"]", targets.len())) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not scrape every member within 60 s ({body}); its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }
}

/// Requests sent through HAProxy until dropped, by answer.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// `GET /` of `frontend` from four clients, one connection per request, as fast as
    /// they are answered (with a short pause): enough that a member gets its 20 requests
    /// (one 500 from the bad 1.1) within a second or two even on a loaded machine.
    fn start(frontend: String) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..4)
            .map(|_| {
                let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
                let frontend = frontend.clone();
                std::thread::spawn(move || {
                    while !s.load(Relaxed) {
                        match get(&frontend, "/").0 {
                            200 => o.fetch_add(1, Relaxed),
                            _ => f.fetch_add(1, Relaxed),
                        };
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            threads,
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Everything one scenario runs: members, HAProxy in front of them, traffic through it,
/// and (when asked) Prometheus scraping them.
/// Fields drop in order: the traffic first, the temp dir last (the services find their
/// pid files in it).
struct Setup {
    traffic: Traffic,
    prometheus: Option<Prometheus>,
    _haproxy: haproxy::Haproxy,
    services: Services,
    addrs: Vec<String>,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(with_prometheus: bool) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs: Vec<String> = MEMBERS.iter().map(|_| free_address()).collect();
        let pairs: Vec<(&str, &str)> = MEMBERS
            .iter()
            .zip(&addrs)
            .map(|(m, a)| (*m, a.as_str()))
            .collect();
        let services = Services::start(dir.path(), &pairs);
        let (haproxy, frontend) = haproxy::start_haproxy_with(dir.path(), "admin", &pairs);
        let prometheus = with_prometheus.then(|| Prometheus::start(dir.path(), &addrs));
        // HAProxy answers through the members before the run starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&frontend, "/").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "HAProxy does not reach the members"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let traffic = Traffic::start(frontend);
        Setup {
            dir,
            services,
            addrs,
            _haproxy: haproxy,
            traffic,
            prometheus,
        }
    }

    /// The pool file: update to 1.1 (answering every `fail_every`th request with a 500;
    /// 0: never), roll back to 1.0, and a bake with `checks` (TOML, `PROM` replaced by
    /// Prometheus' URL).
    fn pool(&self, fail_every: u64, checks: &str) -> PathBuf {
        let d = self.dir.path().display().to_string();
        let mut text = format!(
            "[pool]\nname = \"web\"\nmax_unavailable = 1\n\n[balancer]\ndriver = \"haproxy\"\nsocket = \"{d}/admin.sock\"\nbackend = \"web\"\nstate_file = \"{d}/server-state\"\n\n[defaults]\nvars = {{ dir = \"{d}\" }}\n"
        );
        for (m, a) in MEMBERS.iter().zip(&self.addrs) {
            text.push_str(&format!(
                "\n[[member]]\nname = \"{m}\"\naddress = \"{a}\"\n"
            ));
        }
        let url = self.prometheus.as_ref().map_or("", |p| p.url.as_str());
        text.push_str(&runbook(
            &fail_every.to_string(),
            "6s",
            "1s",
            &checks.replace("PROM", url),
        ));
        let p = self.dir.path().join("pool.toml");
        std::fs::write(&p, text).expect("write pool");
        p
    }

    /// `ebb run`, bounded.
    fn run(&self, pool: &Path) -> std::process::Output {
        wait_bounded(spawn(&["run"], pool), Duration::from_secs(150))
    }

    /// HAProxy's admin state of each server (`show servers state web`): 0 in service,
    /// with bit 1 set in forced maintenance (held).
    fn admin_states(&self) -> Vec<(String, u32)> {
        let mut s = std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock"))
            .expect("admin socket");
        s.write_all(b"show servers state web\n").expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out.lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("web"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[3].to_string(), f[6].parse().unwrap_or(u32::MAX))
            })
            .collect()
    }
}

/// A Prometheus bake check on the 500s each member counts in its own metrics. Over the
/// last 10 s: a scrape that failed on a loaded machine (or missed the restarted member)
/// marks the series stale, and an instant query would find nothing for a moment.
const PROMETHEUS_CHECK: &str = r#"
[[runbook.bake.check]]
name = "no 500s"
prometheus = { url = "PROM", query = "max_over_time(demo_http_responses_total{{instance=\"{address}\",code=\"500\"}}[10s])", max = 0 }
retries = 5
interval = "500ms"
"#;

/// The balancer's own counters: at most twice the error rate of the members not yet
/// updated (with the default floor of 1%).
const BALANCER_CHECK: &str = r#"
[[runbook.bake.check]]
name = "errors"
balancer = { max_error_ratio = 2.0 }
"#;

/// Each of `wants` is in `text` (`what` names it in the failure).
fn assert_has_all(text: &str, wants: &[&str], what: &str) {
    for want in wants {
        assert!(text.contains(want), "{want:?} in the {what}:\n{text}");
    }
}

/// What a failed bake leaves: web1 pulled back, rolled back to 1.0 and held; web2 and web3
/// never touched; status and report with the bake check's figures (`figures`).
fn assert_pulled_back_and_rolled_back(s: &Setup, pool: &Path, figures: &[&str]) {
    let o = s.run(pool);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    // The members' own logs: web1 ran 1.1 and then 1.0 again; the others only 1.0.
    assert_eq!(s.services.versions("web1"), ["1.0", "1.1", "1.0"]);
    assert_eq!(s.services.versions("web2"), ["1.0"]);
    assert_eq!(s.services.versions("web3"), ["1.0"]);
    assert_eq!(get(&s.addrs[0], "/version").1, "1.0");
    // HAProxy: web1 held in maintenance, the others in service as they were.
    let admin = s.admin_states();
    assert_eq!(admin.len(), 3, "{admin:?}");
    assert!(admin[0].1 & 1 == 1, "web1 is not held: {admin:?}");
    assert_eq!((admin[1].1, admin[2].1), (0, 0), "{admin:?}");

    let st = status(pool);
    assert_eq!(st["run"]["state"], "halted", "{st}");
    let web1 = member(&st, "web1");
    assert_eq!(web1["state"], "rolled-back", "{st}");
    let reason = web1["reason"].as_str().unwrap_or_default();
    assert_has_all(reason, figures, "status");
    assert_has_all(
        reason,
        &["rolled back (reinstall-1.0); verify after the rollback passed"],
        "status",
    );
    assert_eq!(member(&st, "web2")["state"], "pending", "{st}");
    assert_eq!(member(&st, "web3")["state"], "pending", "{st}");
    let text = ebb().arg("status").arg(pool).output().expect("status");
    assert_has_all(&stdout(&text), figures, "status text");

    let doc = report(pool);
    let members = doc["members"].as_array().expect("members");
    let steps = |name: &str| {
        members
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["steps"].as_array())
            .cloned()
            .unwrap_or_default()
    };
    let bake = steps("web1")
        .into_iter()
        .find(|s| s["kind"] == "bake")
        .expect("a bake step");
    assert_eq!(bake["outcome"], "failed", "{bake}");
    assert_has_all(
        bake["detail"].as_str().unwrap_or_default(),
        figures,
        "report",
    );
    for other in ["web2", "web3"] {
        assert!(
            steps(other).is_empty(),
            "{other} has steps in the report: {doc}"
        );
    }
    let text = ebb().arg("report").arg(pool).output().expect("report");
    assert_has_all(&stdout(&text), figures, "report text");
}

#[test]
fn prometheus_bake_check_pulls_back_and_rolls_back_an_update_whose_metrics_report_errors() {
    let s = Setup::new(true);
    let pool = s.pool(20, PROMETHEUS_CHECK);
    assert_pulled_back_and_rolled_back(
        &s,
        &pool,
        &[
            "bake check \"no 500s\" failed",
            &format!("instance=\"{}\"", s.addrs[0]),
            "(outside max 0)",
        ],
    );
}

#[test]
fn balancer_bake_check_fails_a_member_answering_5_percent_500s_behind_haproxy() {
    let s = Setup::new(false);
    let pool = s.pool(20, BALANCER_CHECK);
    assert_pulled_back_and_rolled_back(
        &s,
        &pool,
        &[
            "bake check \"errors\" failed",
            "\"web1\": ",
            " since the first reading; the members not yet updated: ",
            "the members not yet updated: 0 errors in",
            "allowed 2.00%",
        ],
    );
    assert!(
        s.traffic.failed.load(Relaxed) > 0,
        "the traffic saw no 500s: the check judged nothing"
    );
}

#[test]
fn a_healthy_update_passes_both_bake_checks() {
    let s = Setup::new(true);
    let pool = s.pool(0, &format!("{PROMETHEUS_CHECK}{BALANCER_CHECK}"));
    let o = s.run(&pool);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    for (m, a) in MEMBERS.iter().zip(&s.addrs) {
        assert_eq!(s.services.versions(m), ["1.0", "1.1"], "{m}");
        assert_eq!(get(a, "/version").1, "1.1", "{m}");
    }
    assert!(
        s.admin_states().iter().all(|(_, admin)| *admin == 0),
        "{:?}",
        s.admin_states()
    );
    assert_eq!(s.traffic.failed.load(Relaxed), 0, "a request failed");
    assert!(
        s.traffic.ok.load(Relaxed) > 100,
        "too little traffic to judge"
    );
    let doc = report(&pool);
    for m in doc["members"].as_array().expect("members") {
        let bake = m["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["kind"] == "bake"))
            .unwrap_or_else(|| panic!("no bake step: {m}"));
        assert_eq!(bake["outcome"], "ok", "{bake}");
        let detail = bake["detail"].as_str().unwrap_or_default();
        // Both checks' last answers: the value within its bound, and the counted figures.
        assert!(
            detail.contains("(within max 0)") && detail.contains("0 errors in"),
            "{detail}"
        );
    }
}

#[test]
fn check_says_a_driver_that_cannot_count_cannot_serve_the_balancer_check() {
    let f = Fixture::new(&["a", "b"]);
    let pool = f.pool(
        "",
        &["a", "b"],
        &format!(
            "{RUNBOOK}\n[runbook.bake]\nduration = \"1s\"\ninterval = \"1s\"\n{BALANCER_CHECK}"
        ),
    );
    let o = ebb()
        .args(["check", "--no-members"])
        .arg(&pool)
        .output()
        .expect("check");
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("check \"errors\" (balancer): the \"command\" balancer driver cannot count errors per member"),
        "{out}"
    );
}
