//! The `prometheus` check against a real Prometheus (Debian's `prometheus`, started here in
//! a temp dir) scraping a tiny metrics endpoint this test serves every 200 ms: a member
//! under its bound passes, one over it fails naming the query, the value and the bound, a
//! query matching nothing fails unless `empty = "ok"`, and a query Prometheus refuses
//! fails with Prometheus' own words. The pool file's keys are checked with lines.

mod support_issue6;
use support_issue6::*;

use ebb_engine::interfaces::{BuiltChecks, CheckContext, Checker};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Serves `body` as Prometheus text on every request, on a free port.
async fn metrics_endpoint(body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

struct Prometheus {
    _dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every 200 ms and waits until it has a sample.
    async fn start(target: u16) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install the Debian package prometheus (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("prometheus.yml"),
            format!("global:\n  scrape_interval: 200ms\n  evaluation_interval: 200ms\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"),
        )
        .unwrap();
        let port = free_port();
        let log = d.join("prometheus.log");
        let child = Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS}: {e}"));
        let p = Prometheus {
            _dir: dir,
            port,
            child,
        };
        wait_listening(port, "prometheus", &log);
        // Wait (generously: a loaded machine) for the first scrape to be queryable.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let url = format!("http://127.0.0.1:{port}/api/v1/query?query=app_error_ratio");
            if let Ok(r) =
                ebb_drivers::http::request("GET", &url, None, &[], Duration::from_secs(5)).await
            {
                if r.body.contains("\"member\"") {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never scraped the endpoint; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p
    }
}

const METRICS: &str = "# TYPE app_error_ratio gauge\napp_error_ratio{member=\"web1\"} 0.1\napp_error_ratio{member=\"web2\"} 0.9\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_bound_passes_fails_over_it_and_fails_on_an_empty_result() {
    let prom = Prometheus::start(metrics_endpoint(METRICS).await).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lb = file_balancer(d, &["web1", "web2", "web3"]);
    let url = format!("http://127.0.0.1:{}", prom.port);
    let text = format!(
        "[pool]\nname = \"p\"\n{lb}\n[[member]]\nname = \"web1\"\naddress = \"127.0.0.1:1\"\n[[member]]\nname = \"web2\"\naddress = \"127.0.0.1:2\"\n[[member]]\nname = \"web3\"\naddress = \"127.0.0.1:3\"\n\
         [[runbook.step]]\nname = \"s\"\nrun = \"true\"\n\
         [[runbook.verify]]\nname = \"errors\"\nprometheus = {{ url = \"{url}\", query = \"app_error_ratio{{{{member=\\\"{{member}}\\\"}}}}\", max = 0.5 }}\n\
         [[runbook.verify]]\nname = \"errors-or-none\"\nprometheus = {{ url = \"{url}\", query = \"app_error_ratio{{{{member=\\\"{{member}}\\\"}}}}\", max = 0.5, empty = \"ok\" }}\n\
         [[runbook.verify]]\nname = \"broken\"\nprometheus = {{ url = \"{url}\", query = \"rate(app_error_ratio[\", min = 0 }}\n"
    );
    let plan = load_plan(d, &text);
    let t = ebb_drivers::transport::build(&plan, &plan.members[0]).unwrap();
    let ctx = CheckContext::default();
    let run = |check: usize, member: usize| {
        let plan = &plan;
        let t = t.clone();
        let ctx = &ctx;
        async move {
            BuiltChecks
                .check_in(
                    &plan.runbook.verify[check],
                    &plan.members[member],
                    t.as_ref(),
                    ctx,
                )
                .await
        }
    };
    let ok = run(0, 0).await.expect("web1's 0.1 is within max 0.5");
    assert!(ok.contains("= 0.1") && ok.contains("max 0.5"), "{ok}");
    let err = run(0, 1).await.expect_err("web2's 0.9 is over max 0.5");
    assert!(
        err.contains("app_error_ratio{member=\"web2\"}")
            && err.contains("0.9")
            && err.contains("outside max 0.5"),
        "the message gives the query, the value and the bound: {err}"
    );
    let err = run(0, 2).await.expect_err("web3 has no series");
    assert!(
        err.contains("no series") && err.contains("member=\"web3\""),
        "{err}"
    );
    run(1, 2)
        .await
        .expect("empty = \"ok\" passes an empty result");
    run(1, 1)
        .await
        .expect_err("empty = \"ok\" still judges values");
    let err = run(2, 0).await.expect_err("a query Prometheus refuses");
    assert!(err.contains("bad_data") && err.contains("400"), "{err}");
}

#[test]
fn prometheus_keys_are_validated_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lb = file_balancer(d, &["web1"]);
    let text = format!(
        "[pool]\nname = \"p\"\n{lb}\n[[member]]\nname = \"web1\"\naddress = \"127.0.0.1:1\"\n\
         [[runbook.step]]\nname = \"s\"\nrun = \"true\"\n\
         [[runbook.verify]]\nname = \"a\"\nprometheus = {{ url = \"prom:9090\", query = \"up\" }}\n\
         [[runbook.verify]]\nname = \"b\"\nprometheus = {{ url = \"http://p\", query = \"up{{{{x=\\\"{{nope}}\\\"}}}}\", max = \"high\", empty = \"maybe\" }}\n"
    );
    let p = d.join("pool.toml");
    std::fs::write(&p, &text).unwrap();
    let errs = ebb_engine::config::load(&p, &ebb_drivers::registry())
        .expect_err("invalid")
        .to_string();
    for want in [
        "runbook.verify[0].prometheus: give a bound: max = N and/or min = N",
        "runbook.verify[0].prometheus.url: expected an http:// or https:// URL",
        "runbook.verify[1].prometheus.max: expected a number, found \"high\"",
        "runbook.verify[1].prometheus.empty: expected one of \"fail\", \"ok\", found \"maybe\"",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
    assert!(errs.contains(".toml:"), "{errs}");
}
