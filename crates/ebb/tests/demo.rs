//! `ebb demo` end to end: real processes (balancer, members, `ebb run`) on loopback.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const EBB: &str = env!("CARGO_BIN_EXE_ebb");

/// Short timings so the whole file stays well under two minutes.
const FAST: &[&str] = &[
    "--json",
    "--members",
    "3",
    "--install-time",
    "500ms",
    "--reboot-time",
    "1s",
    "--rate",
    "100",
    "--stream-time",
    "1500ms",
];

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn spawn_demo(dir: &Path, extra: &[&str]) -> Child {
    Command::new(EBB)
        .arg("demo")
        .args(FAST)
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ebb demo")
}

/// Waits (bounded) for the demo and collects its output.
fn finish(mut child: Child, limit: Duration) -> Finished {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SIGINT first so the demo stops its own children.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            std::thread::sleep(Duration::from_secs(3));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Finished {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn summary(run: &Finished) -> Value {
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    let Some(line) = line else {
        panic!(
            "no JSON summary on stdout\n--- stdout\n{}\n--- stderr\n{}",
            run.stdout, run.stderr
        );
    };
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON summary ({e}): {line}"))
}

/// Processes whose command line mentions `needle`, excluding this test process.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

fn assert_nothing_left(dir: &Path) {
    let needle = dir.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("processes left behind:\n{}", left.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn drainstop_rollout_under_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = finish(spawn_demo(dir.path(), &[]), Duration::from_secs(100));
    let s = summary(&run);
    let context = format!("summary {s}\n--- stderr\n{}", run.stderr);
    assert_eq!(run.code, Some(0), "{context}");
    assert_eq!(s["drain_mode"], "drainstop", "{context}");
    assert!(s["requests"].as_u64().unwrap_or(0) > 0, "{context}");
    assert_eq!(s["failed"].as_u64(), Some(0), "{context}");
    assert_eq!(s["cut_connections"].as_u64(), Some(0), "{context}");
    assert!(
        s["max_out_of_service"].as_u64().unwrap_or(99) <= 1,
        "{context}"
    );
    let members = s["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{context}");
    for m in members {
        assert_eq!(m["version"], "1.1", "{context}");
    }
    assert!(
        s["p50_ms"].as_f64().is_some() && s["p99_ms"].as_f64().is_some(),
        "{context}"
    );

    // The traffic timeline is left for `ebb report`.
    let timeline = std::fs::read_to_string(dir.path().join("state/demo-traffic.json"))
        .expect("demo-traffic.json");
    let timeline: Value = serde_json::from_str(&timeline).expect("timeline JSON");
    let samples = timeline["samples"].as_array().expect("samples");
    assert!(samples.len() >= 3, "{timeline}");
    assert!(samples
        .iter()
        .all(|x| x["t_ms"].as_u64().is_some() && x["requests"].as_u64().is_some()));
    // It is the report's typed attachment, read whole, not by key.
    let typed: ebb_report::Traffic =
        serde_json::from_value(timeline.clone()).expect("the report's Traffic");
    assert_eq!(typed.samples.len(), samples.len());
    assert!(!typed.in_service.is_empty(), "{timeline}");
    assert_nothing_left(dir.path());
}

#[test]
fn stop_mode_cuts_long_lived_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = finish(
        spawn_demo(dir.path(), &["--drain-mode", "stop", "--streams", "6"]),
        Duration::from_secs(100),
    );
    let s = summary(&run);
    let context = format!("summary {s}\n--- stderr\n{}", run.stderr);
    assert_eq!(s["drain_mode"], "stop", "{context}");
    assert!(s["cut_connections"].as_u64().unwrap_or(0) > 0, "{context}");
    for m in s["members"].as_array().expect("members") {
        assert_eq!(m["version"], "1.1", "{context}");
    }
    assert_eq!(run.code, Some(0), "{context}");
    assert_nothing_left(dir.path());
}

#[test]
fn ctrl_c_leaves_no_process_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = spawn_demo(dir.path(), &[]);
    let boot = dir.path().join("boot");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = std::fs::read_dir(&boot)
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        if running == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "members did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let traffic and the rollout begin, so there is something to interrupt.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!processes_mentioning(&dir.path().display().to_string()).is_empty());
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run = finish(child, Duration::from_secs(15));
    assert_eq!(run.code, Some(130), "stderr: {}", run.stderr);
    assert_nothing_left(dir.path());
}
