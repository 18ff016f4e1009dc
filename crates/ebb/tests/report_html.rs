//! The HTML run report renders in a real browser (headless Chromium) without script errors
//! and shows one timeline row per member and one table row per step.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ebb_report::RunReport;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A realistic report: four members through drain, hold, maintenance, install, reboot,
/// verify, undo and start; one step failed and retried; demo traffic.
fn realistic_report() -> RunReport {
    let t0: u64 = 1_764_072_000_000;
    let mut members = Vec::new();
    let mut in_service = vec![json!({"t_ms": t0, "in_service": 4, "total": 4})];
    let mut t = t0 + 2_000;
    for i in 1..=4 {
        let name = format!("web{i}");
        let mut steps = Vec::new();
        let plan: &[(&str, &str, u64)] = &[
            ("drain", "drain", 2_600),
            ("hold", "hold", 50),
            ("maintenance", "step", 120),
            ("install 1.1", "step", 2_100),
            ("reboot", "reboot", 3_300),
            ("version", "verify", 400),
            ("maintenance", "undo", 110),
            ("start", "start", 300),
        ];
        in_service.push(json!({"t_ms": t, "in_service": 3, "total": 4}));
        for (step, kind, ms) in plan {
            let failed = i == 3 && *kind == "verify";
            steps.push(json!({
                "name": step, "kind": kind, "started_ms": t, "ended_ms": t + ms,
                "outcome": if failed { "failed" } else { "ok" },
                "exit_code": if *kind == "step" || failed { json!(if failed { 1 } else { 0 }) } else { Value::Null },
            }));
            t += ms;
        }
        in_service.push(json!({"t_ms": t, "in_service": 4, "total": 4}));
        members.push(json!({"name": name, "state": "done", "steps": steps}));
        t += 500;
    }
    let samples: Vec<Value> = (0..((t - t0) / 1000 + 3))
        .map(|s| json!({"t_ms": t0 + s * 1000, "requests": 190 + (s * 7) % 20, "errors": if s == 9 { 2 } else { 0 }}))
        .collect();
    typed(json!({
        "run": {"id": 42, "pool": "demo", "state": "done", "started_ms": t0 + 2_000, "ended_ms": t},
        "members": members,
        "in_service": in_service,
        "traffic": {"samples": samples, "max_out_of_service": 1},
    }))
}

/// The report as `ebb report --json` would print it.
fn typed(v: Value) -> RunReport {
    serde_json::from_value(v).expect("a report")
}

/// Runs Chromium headless with the flags that keep it quiet and local; bounded in time.
fn chromium(args: &[String], profile: &Path) -> (String, String) {
    let mut command = Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e} (Debian package `chromium`)"));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Puts a probe in front of the page: any script error or console.error ends up in the DOM.
fn with_error_probe(html: &str) -> String {
    let probe = r#"<script>
window.__errors = [];
window.onerror = function (m) { window.__errors.push(String(m)); };
var __ce = console.error; console.error = function () { window.__errors.push([].join.call(arguments, " ")); __ce.apply(console, arguments); };
window.addEventListener("load", function () {
  var d = document.createElement("div"); d.id = "probe"; d.setAttribute("data-errors", String(window.__errors.length));
  d.textContent = window.__errors.join(" | "); document.body.appendChild(d);
});
</script>"#;
    html.replacen("<head>", &format!("<head>{probe}"), 1)
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn report_renders_in_chromium_without_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = realistic_report();
    let html = ebb_report::html::render(&report);
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    let page = dir.path().join("report.html");
    std::fs::write(&page, with_error_probe(&html)).expect("write page");

    let profile = dir.path().join("profile");
    let (dom, stderr) = chromium(&["--dump-dom".into(), file_url(&page)], &profile);
    assert!(
        dom.contains("id=\"probe\""),
        "the page did not load: {stderr}"
    );
    assert!(
        dom.contains("data-errors=\"0\""),
        "script errors in the page: {dom}"
    );
    assert!(!stderr.contains("Uncaught"), "console errors: {stderr}");
    for i in 1..=4 {
        assert!(
            dom.contains(&format!("class=\"member-row\" data-member=\"web{i}\"")),
            "row web{i} missing"
        );
    }
    assert_eq!(dom.matches("class=\"step-row").count(), 32);
    assert!(dom.contains("class=\"in-service\""));
    assert!(dom.contains("class=\"requests\""));
    assert!(dom.contains("class=\"errors\""));

    // And it paints: a screenshot is written and is a non-trivial PNG.
    let shot = dir.path().join("report.png");
    let (_, stderr) = chromium(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,1400".into(),
            file_url(&page),
        ],
        &profile,
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {stderr}"));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}

#[test]
fn report_without_traffic_or_times_still_renders() {
    let report = json!({
        "run": {"id": 3, "pool": "cas-array", "state": "halted", "started_ms": 0},
        "members": [{"name": "cas1", "state": "failed", "steps": [{"name": "install UR4", "kind": "step", "outcome": "failed", "started_ms": 0}]}],
        "traffic": null
    });
    let report = typed(report);
    let html = ebb_report::html::render(&report);
    assert!(html.contains("data-member=\"cas1\""));
    assert!(html.contains("install UR4"));
    assert!(!html.contains("client traffic") && !html.contains("Client traffic"));
}

/// Not a test of behaviour: `EBB_REPORT_PNG=path EBB_REPORT_JSON=report.json cargo test
/// -p ebb --test report_html -- --ignored` renders a real `ebb report --json` output to a
/// screenshot (used for docs/report.png).
#[test]
#[ignore]
fn screenshot_of_a_real_report() {
    let (Ok(json_path), Ok(png)) = (
        std::env::var("EBB_REPORT_JSON"),
        std::env::var("EBB_REPORT_PNG"),
    ) else {
        return;
    };
    let report: RunReport =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("read report"))
            .expect("json");
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("report.html");
    std::fs::write(&page, ebb_report::html::render(&report)).expect("write");
    let shot = PathBuf::from(png);
    chromium(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,1300".into(),
            file_url(&page),
        ],
        &dir.path().join("profile"),
    );
    assert!(shot.exists());
}
