//! `ebb init` against real balancers: a real HAProxy (its runtime API), a real
//! `ebb lb serve` and a real nginx (its upstream file). The file it writes lists the members the balancer knows, and `ebb check`
//! and `ebb plan` accept it against that same balancer; an existing file is never
//! overwritten.

#[path = "../../ebb-drivers/tests/support/mod.rs"]
mod drivers_support;

use drivers_support::nginx::Nginx;
use drivers_support::{free_port, Haproxy, HaproxyOptions};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ebb(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebb"))
        .current_dir(dir)
        .env("EBB_PLAIN", "1")
        .env_remove("EBB_LB_TOKEN")
        .args(args)
        .output()
        .expect("run ebb")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ebb check --no-members` (the members are not machines ebb can log in to here) and
/// `ebb plan` both accept `file`; returns check's output.
fn check_and_plan(dir: &Path, file: &str) -> String {
    let check = ebb(dir, &["check", "--no-members", file]);
    assert_eq!(check.status.code(), Some(0), "ebb check: {}", text(&check));
    let plan = ebb(dir, &["plan", "--json", file]);
    assert_eq!(plan.status.code(), Some(0), "ebb plan: {}", text(&plan));
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    let ops: Vec<&str> = v["waves"][0]["members"][0]["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert!(ops.contains(&"drain"), "plan has no drain: {ops:?}");
    assert!(ops.contains(&"verify"), "plan has no verify: {ops:?}");
    String::from_utf8_lossy(&check.stdout).into_owned()
}

#[test]
fn from_haproxy_lists_the_backends_servers_and_passes_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers: Vec<(String, std::net::SocketAddr)> = (1..=3)
        .map(|i| {
            (
                format!("web{i}"),
                format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            )
        })
        .collect();
    let refs: Vec<(&str, std::net::SocketAddr)> =
        servers.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let haproxy = Haproxy::start(dir.path(), &refs, HaproxyOptions::default());
    let sock = haproxy.admin_sock.display().to_string();

    let out = ebb(
        dir.path(),
        &[
            "init",
            "--from",
            "haproxy",
            &sock,
            "--backend",
            "app",
            "web.toml",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "ebb init: {}", text(&out));
    let file = std::fs::read_to_string(dir.path().join("web.toml")).expect("written");
    for (name, addr) in &servers {
        assert!(
            file.contains(&format!("name = \"{name}\"\naddress = \"{addr}\"")),
            "{name} at {addr} missing from\n{file}"
        );
    }
    for section in [
        "[runbook.drain]",
        "[[runbook.step]]",
        "[runbook.reboot]",
        "[[runbook.verify]]",
    ] {
        assert!(file.contains(section), "no {section} in\n{file}");
    }
    let plan = ebb_engine::config::load(&dir.path().join("web.toml"), &ebb_drivers::registry())
        .expect("valid");
    assert_eq!(plan.pool.name, "app");
    assert_eq!(plan.balancer.driver, "haproxy");

    let check = check_and_plan(dir.path(), "web.toml");
    for (name, _) in &servers {
        assert!(
            check
                .lines()
                .any(|l| l.contains(name) && l.contains("in service")),
            "check does not show {name} in service:\n{check}"
        );
    }

    // Never overwritten, not even with a different source.
    let before = std::fs::read(dir.path().join("web.toml")).expect("read");
    let again = ebb(
        dir.path(),
        &[
            "init",
            "--from",
            "haproxy",
            &sock,
            "--backend",
            "app",
            "web.toml",
        ],
    );
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    assert_eq!(
        std::fs::read(dir.path().join("web.toml")).expect("read"),
        before
    );

    // A backend HAProxy does not have: an error naming it, and no file.
    let wrong = ebb(
        dir.path(),
        &[
            "init",
            "--from",
            "haproxy",
            &sock,
            "--backend",
            "nope",
            "nope.toml",
        ],
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(text(&wrong).contains("\"nope\""), "{}", text(&wrong));
    assert!(!dir.path().join("nope.toml").exists());
}

/// A real `ebb lb serve` on free ports; stopped (SIGTERM) on drop.
struct Lb(Child);

impl Drop for Lb {
    fn drop(&mut self) {
        // SAFETY: the balancer process this test started.
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

#[test]
fn from_builtin_lists_the_balancers_members_and_passes_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lb_dir = dir.path().join("lb");
    std::fs::create_dir(&lb_dir).expect("mkdir");
    let control = format!("http://127.0.0.1:{}", free_port());
    let (a1, a2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    std::fs::write(
        lb_dir.join("lb.toml"),
        format!(
            "[balancer]\ndriver = \"builtin\"\nlisten = \"127.0.0.1:{}\"\ncontrol = \"{control}\"\n\n\
[[member]]\nname = \"app1\"\naddress = \"{a1}\"\n\n[[member]]\nname = \"app2\"\naddress = \"{a2}\"\nweight = 3\n",
            free_port()
        ),
    )
    .expect("write lb.toml");
    let _lb = Lb(Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["lb", "serve", "lb.toml"])
        .current_dir(&lb_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ebb lb serve"));
    let control_addr = control.trim_start_matches("http://").to_string();
    let t = Instant::now();
    while std::net::TcpStream::connect(&control_addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "ebb lb serve did not listen on {control}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = ebb(
        dir.path(),
        &["init", "--from", "builtin", &control, "apps.toml"],
    );
    assert_eq!(out.status.code(), Some(0), "ebb init: {}", text(&out));
    let plan = ebb_engine::config::load(&dir.path().join("apps.toml"), &ebb_drivers::registry())
        .expect("valid");
    assert_eq!(plan.pool.name, "apps");
    assert_eq!(plan.balancer.driver, "builtin");
    let members: Vec<(&str, &str, u32)> = plan
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.address.as_str(), m.weight))
        .collect();
    assert_eq!(
        members,
        [("app1", a1.as_str(), 1), ("app2", a2.as_str(), 3)]
    );
    let check = check_and_plan(dir.path(), "apps.toml");
    assert!(check.contains("app1") && check.contains("app2"), "{check}");

    // Nothing listening: an error naming the URL, and no file.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = ebb(
        dir.path(),
        &["init", "--from", "builtin", &dead, "dead.toml"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&dead), "{}", text(&out));
    assert!(!dir.path().join("dead.toml").exists());
}

#[test]
fn from_nginx_lists_the_upstream_files_servers_and_passes_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let nginx = Nginx::start(
        dir.path(),
        &format!(
            "# the web pool\nserver 127.0.0.1:{p1} max_fails=3;\nserver 127.0.0.1:{p2}\n    weight=2;\nserver 127.0.0.1:{p3} down;  # out for now\nserver unix:/run/app.sock;\n"
        ),
    );
    let before = nginx.upstream();
    let file = nginx.upstream_file.display().to_string();
    let out = ebb(dir.path(), &["init", "--from", "nginx", &file, "web.toml"]);
    assert_eq!(out.status.code(), Some(0), "ebb init: {}", text(&out));
    assert!(
        text(&out).contains("unix:/run/app.sock"),
        "the unix socket server is said to be left out: {}",
        text(&out)
    );
    let plan = ebb_engine::config::load(&dir.path().join("web.toml"), &ebb_drivers::registry())
        .expect("valid");
    assert_eq!(plan.balancer.driver, "nginx");
    assert_eq!(plan.pool.name, "web");
    let addrs: Vec<&str> = plan.members.iter().map(|m| m.address.as_str()).collect();
    assert_eq!(
        addrs,
        [
            format!("127.0.0.1:{p1}"),
            format!("127.0.0.1:{p2}"),
            format!("127.0.0.1:{p3}")
        ]
    );
    let names: std::collections::HashSet<&str> =
        plan.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names.len(), 3, "member names are unique: {names:?}");

    let check = check_and_plan(dir.path(), "web.toml");
    let lines: Vec<&str> = check.lines().collect();
    for (i, p) in [p1, p2, p3].iter().enumerate() {
        let name = &plan.members[i].name;
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("no line for {name} (port {p}) in\n{check}"));
        let out_of_service = line.contains("OUT of service");
        assert_eq!(out_of_service, i == 2, "{line}");
    }
    assert_eq!(nginx.upstream(), before, "init and check change nothing");
}

#[test]
fn usage_errors_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, says) in [
        (
            &["init", "--from", "haproxy", "/nonexistent.sock"][..],
            "--backend",
        ),
        (&["init", "--from", "f5", "x"][..], "expected haproxy"),
        (
            &["init", "--from", "nginx", "/nonexistent/upstream.conf"][..],
            "nonexistent",
        ),
        (
            &[
                "init",
                "--from",
                "builtin",
                "http://127.0.0.1:1",
                "--backend",
                "x",
            ][..],
            "--backend does not apply",
        ),
    ] {
        let out = ebb(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
}
