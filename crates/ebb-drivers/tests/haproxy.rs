//! The haproxy driver against a real HAProxy with real backends and real connections:
//! drainstop, stop, start, hold across an HAProxy reload, and every error a user can meet.

mod support;

use ebb_drivers::balancer::haproxy::Haproxy as Driver;
use ebb_engine::interfaces::{Balancer, HostState};
use ebb_engine::plan::Plan;
use std::time::Duration;
use support::*;

const MEMBERS: [&str; 3] = ["web1", "web2", "web3"];

struct Setup {
    _dir: tempfile::TempDir,
    backends: Vec<Backend>,
    hap: Haproxy,
    plan: Plan,
    driver: Driver,
}

/// Three backends behind a real HAProxy, a pool file naming them, and the driver.
async fn setup(o: HaproxyOptions, balancer_extra: &str, hold: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut backends = Vec::new();
    for m in MEMBERS {
        backends.push(Backend::start(m).await);
    }
    let servers: Vec<_> = backends.iter().map(|b| (b.name.as_str(), b.addr)).collect();
    let hap = Haproxy::start(dir.path(), &servers, o);
    let mut toml = format!(
        "[pool]\nname = \"t\"\n\n[balancer]\ndriver = \"haproxy\"\nsocket = \"{}\"\nbackend = \"app\"\nstart_timeout = \"3s\"\n{balancer_extra}\n",
        hap.admin_sock.display()
    );
    for b in &backends {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            b.name, b.addr
        );
    }
    toml += &format!("[runbook.drain]\nhold = {hold}\n");
    let plan = plan(dir.path(), &toml);
    let driver = Driver::from_plan(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    Setup {
        _dir: dir,
        backends,
        hap,
        plan,
        driver,
    }
}

/// Opens connections until one lands on `name` (round robin: at most a few).
async fn long_conn_to(frontend: &str, name: &str) -> LongConn {
    for _ in 0..12 {
        let c = LongConn::open(frontend).await.unwrap();
        if c.backend == name {
            return c;
        }
    }
    panic!("no connection reached {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drainstop_keeps_a_long_connection_sends_new_ones_elsewhere_and_ends_when_it_closes() {
    let s = setup(HaproxyOptions::default(), "", false).await;
    let web1 = &s.plan.members[0];
    let mut long = long_conn_to(&s.hap.frontend, "web1").await;
    let before = s.driver.state(web1).await.unwrap();
    assert!(before.in_service(), "{before:?}");
    assert_eq!(before.active_connections, Some(1));

    s.driver.drainstop(web1).await.unwrap();
    assert_eq!(s.hap.status("web1"), "DRAIN");
    let st = s.driver.state(web1).await.unwrap();
    assert_eq!(st.state, HostState::Draining, "{st:?}");
    assert_eq!(st.active_connections, Some(1));
    assert!(st.detail.starts_with("DRAIN"), "{}", st.detail);
    // New connections go elsewhere; the long one still works end to end.
    for _ in 0..9 {
        assert_ne!(hello(&s.hap.frontend).await.unwrap(), "web1");
    }
    long.ping("still here").await.unwrap();
    assert_eq!(
        s.driver.state(web1).await.unwrap().state,
        HostState::Draining
    );
    // The drain ends when the connection closes.
    drop(long);
    assert!(
        eventually(Duration::from_secs(3), || async {
            s.driver.state(web1).await.unwrap().state == HostState::Stopped
        })
        .await
    );
    assert_eq!(
        s.backends[0]
            .active
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    // Start: READY, and (no health checks here) in service at once.
    s.driver.start(web1).await.unwrap();
    assert!(s.driver.state(web1).await.unwrap().in_service());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(hello(&s.hap.frontend).await.unwrap());
    }
    assert!(seen.contains("web1"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_drain_is_maint_the_long_connection_finishes_and_start_waits_for_up() {
    let s = setup(
        HaproxyOptions {
            checks: true,
            ..Default::default()
        },
        "",
        true,
    )
    .await;
    let web2 = &s.plan.members[1];
    assert!(
        eventually(Duration::from_secs(3), || async {
            s.hap.status("web2") == "UP"
        })
        .await
    );
    let mut long = long_conn_to(&s.hap.frontend, "web2").await;
    // The engine's order: record the initial state, hold, then drain.
    assert_eq!(
        s.driver.initial_state(web2).await.unwrap(),
        Some(HostState::Started)
    );
    s.driver
        .set_initial_state(web2, HostState::Stopped)
        .await
        .unwrap();
    s.driver.drainstop(web2).await.unwrap();
    assert_eq!(
        s.hap.status("web2"),
        "MAINT",
        "drainstop must not release the hold"
    );
    assert_eq!(
        s.driver.initial_state(web2).await.unwrap(),
        Some(HostState::Stopped)
    );
    let st = s.driver.state(web2).await.unwrap();
    assert_eq!(
        (st.state, st.healthy),
        (HostState::Draining, None),
        "{st:?}"
    );
    for _ in 0..9 {
        assert_ne!(hello(&s.hap.frontend).await.unwrap(), "web2");
    }
    long.ping("maint keeps me").await.unwrap();
    drop(long);
    assert!(
        eventually(Duration::from_secs(3), || async {
            s.driver.state(web2).await.unwrap().state == HostState::Stopped
        })
        .await
    );
    // The engine's return: start (waits for UP: checks were off in MAINT), then restore.
    s.driver.start(web2).await.unwrap();
    assert_eq!(s.hap.status("web2"), "UP");
    s.driver
        .set_initial_state(web2, HostState::Started)
        .await
        .unwrap();
    let st = s.driver.state(web2).await.unwrap();
    assert!(st.in_service(), "{st:?}");
    assert_eq!(st.detail, "UP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_cuts_the_long_connection() {
    let s = setup(HaproxyOptions::default(), "", false).await;
    let web3 = &s.plan.members[2];
    let mut long = long_conn_to(&s.hap.frontend, "web3").await;
    long.ping("before").await.unwrap();
    s.driver.stop(web3).await.unwrap();
    assert!(
        long.ping("after").await.is_err(),
        "stop must cut the connection"
    );
    let st = s.driver.state(web3).await.unwrap();
    assert_eq!(st.state, HostState::Stopped, "{st:?}");
    assert_eq!(st.detail, "MAINT");
    for _ in 0..6 {
        assert_ne!(hello(&s.hap.frontend).await.unwrap(), "web3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_survives_an_haproxy_reload_with_a_state_file_and_the_return_too() {
    let o = HaproxyOptions {
        state_file: true,
        checks: true,
        ..Default::default()
    };
    let s = setup(o, "state_file = \"server-state\"", true).await;
    // The pool file sits beside HAProxy's files: state_file resolves to the same path.
    assert!(s.driver.preflight(&s.plan.members).await.is_empty());
    let web1 = &s.plan.members[0];
    s.driver
        .set_initial_state(web1, HostState::Stopped)
        .await
        .unwrap();
    s.driver.drainstop(web1).await.unwrap();
    let saved = std::fs::read_to_string(&s.hap.state_file).unwrap();
    assert!(saved.starts_with("1\n# be_id"), "{saved}");

    s.hap.reload();
    assert_eq!(s.hap.status("web1"), "MAINT", "the reload forgot the hold");
    assert_eq!(
        s.driver.initial_state(web1).await.unwrap(),
        Some(HostState::Stopped)
    );
    for _ in 0..6 {
        assert_ne!(hello(&s.hap.frontend).await.unwrap(), "web1");
    }

    s.driver.start(web1).await.unwrap();
    s.driver
        .set_initial_state(web1, HostState::Started)
        .await
        .unwrap();
    s.hap.reload();
    assert!(
        eventually(Duration::from_secs(3), || async {
            s.hap.status("web1") == "UP"
        })
        .await,
        "after the return a reload must keep web1 in service: {}",
        s.hap.status("web1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_state_file_a_reload_forgets_the_hold_and_check_warns() {
    let s = setup(HaproxyOptions::default(), "", true).await;
    let warnings = s.driver.preflight(&s.plan.members).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("state_file is not set"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains(&s.hap.admin_sock.display().to_string()));
    // Why the warning matters, shown on the real thing.
    s.driver
        .set_initial_state(&s.plan.members[0], HostState::Stopped)
        .await
        .unwrap();
    assert_eq!(s.hap.status("web1"), "MAINT");
    s.hap.reload();
    assert_eq!(s.hap.status("web1"), "no check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_reports_the_health_check_when_the_server_does_not_come_up() {
    let s = setup(
        HaproxyOptions {
            checks: true,
            ..Default::default()
        },
        "",
        false,
    )
    .await;
    let web1 = &s.plan.members[0];
    s.driver.stop(web1).await.unwrap();
    s.backends[0].stop();
    let t = std::time::Instant::now();
    let e = s.driver.start(web1).await.unwrap_err().to_string();
    assert!(t.elapsed() >= Duration::from_secs(3) && t.elapsed() < Duration::from_secs(6));
    for want in [
        "web1",
        "app/web1",
        "admin.sock",
        "not UP 3s",
        "L4CON",
        "Connection refused",
        "put back in MAINT",
    ] {
        assert!(e.contains(want), "{want:?} missing in: {e}");
    }
    assert_eq!(s.hap.status("web1"), "MAINT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_socket_and_the_server() {
    let s = setup(
        HaproxyOptions {
            user_socket: true,
            ..Default::default()
        },
        "",
        false,
    )
    .await;
    let sock = s.hap.admin_sock.display().to_string();
    let member = |lb: &str| {
        let mut m = s.plan.members[0].clone();
        m.lb_name = lb.to_string();
        m
    };
    // Unknown server, in a read and in an action.
    let e = s
        .driver
        .state(&member("nosuch"))
        .await
        .unwrap_err()
        .to_string();
    for want in [
        &sock[..],
        "app/nosuch",
        "has no server \"nosuch\"",
        "web1, web2, web3",
        "lb_name",
    ] {
        assert!(e.contains(want), "{want:?} missing in: {e}");
    }
    let e = s
        .driver
        .drainstop(&member("app/nosuch"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("has no server \"nosuch\"") && e.contains(&sock),
        "{e}"
    );
    let e = s
        .driver
        .stop(&member("nosuch"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("No such server.") && e.contains("app/nosuch"),
        "{e}"
    );
    // Unknown backend.
    let e = s
        .driver
        .state(&member("other/web1"))
        .await
        .unwrap_err()
        .to_string();
    for want in [
        &sock[..],
        "other/web1",
        "no backend \"other\"",
        "No such proxy.",
        "balancer.backend",
    ] {
        assert!(e.contains(want), "{want:?} missing in: {e}");
    }
    let e = s
        .driver
        .start(&member("other/web1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no backend \"other\"") && e.contains(&sock),
        "{e}"
    );
    let e = s
        .driver
        .set_initial_state(&member("other/web1"), HostState::Stopped)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no backend \"other\"") && e.contains("other/web1"),
        "{e}"
    );

    // HAProxy answering with an error line: a socket without admin level.
    let user_sock = s.hap.dir.join("user.sock");
    let user = with_socket(&s.plan, &user_sock.display().to_string());
    let e = user
        .drainstop(&s.plan.members[0])
        .await
        .unwrap_err()
        .to_string();
    for want in [
        "user.sock",
        "app/web1",
        "\"Permission denied\"",
        "level admin",
    ] {
        assert!(e.contains(want), "{want:?} missing in: {e}");
    }
    let w = user.preflight_problems(&s.plan.members).await;
    assert!(w.iter().any(|w| w.contains("level \"user\"")), "{w:?}");

    // Socket missing.
    let missing = s.hap.dir.join("nope.sock");
    let d = with_socket(&s.plan, &missing.display().to_string());
    let e = d.state(&s.plan.members[1]).await.unwrap_err().to_string();
    for want in ["nope.sock", "does not exist", "app/web2", "stats socket"] {
        assert!(e.contains(want), "{want:?} missing in: {e}");
    }
    let e = d.pool_state(&s.plan.members).await;
    assert!(e
        .iter()
        .all(|r| r.as_ref().is_err_and(|e| e.message.contains("nope.sock"))));
    assert!(e[2]
        .as_ref()
        .unwrap_err()
        .message
        .starts_with("member \"web3\" (HAProxy server app/web3 via "));

    // A stale socket file with no HAProxy behind it.
    let stale = s.hap.dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let e = with_socket(&s.plan, &stale.display().to_string())
        .stop(&s.plan.members[0])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stale.sock") && e.contains("no HAProxy listens"),
        "{e}"
    );

    // TCP socket with nothing on it.
    let port = free_port();
    let e = with_socket(&s.plan, &format!("tcp://127.0.0.1:{port}"))
        .state(&s.plan.members[0])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("tcp://127.0.0.1:{port}")) && e.contains("refused"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_api_over_tcp_works_the_same() {
    let s = setup(
        HaproxyOptions {
            tcp_socket: true,
            ..Default::default()
        },
        "",
        false,
    )
    .await;
    let d = with_socket(&s.plan, s.hap.tcp_admin.as_deref().unwrap());
    let web2 = &s.plan.members[1];
    assert!(d.state(web2).await.unwrap().in_service());
    d.drainstop(web2).await.unwrap();
    assert_eq!(s.hap.status("web2"), "DRAIN");
    assert_eq!(d.state(web2).await.unwrap().state, HostState::Stopped);
    d.start(web2).await.unwrap();
    assert_eq!(s.hap.status("web2"), "no check");
    let e = d
        .state(&{
            let mut m = web2.clone();
            m.lb_name = "nosuch".into();
            m
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(s.hap.tcp_admin.as_deref().unwrap()) && e.contains("app/nosuch"),
        "{e}"
    );
}

/// The same plan with another socket.
fn with_socket(plan: &Plan, socket: &str) -> Driver {
    let mut p = plan.clone();
    p.balancer
        .settings
        .insert("socket".into(), toml::Value::String(socket.into()));
    Driver::from_plan(&p).unwrap()
}

#[test]
fn settings_errors_have_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    std::fs::write(
        &path,
        "[pool]\nname = \"t\"\n\n[balancer]\ndriver = \"haproxy\"\nsocket = \"http://x\"\nstart_timeout = \"soon\"\nbakend = \"app\"\n\n[[member]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let errs = match ebb_engine::config::load(&path, &ebb_drivers::registry()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted a bad [balancer]"),
    };
    for want in [
        "pool.toml:6: balancer.socket:",
        "pool.toml:7: balancer.start_timeout:",
        "pool.toml:8: balancer.bakend: unknown key for the haproxy driver",
        "needs backend",
    ] {
        assert!(errs.contains(want), "{want:?} missing in:\n{errs}");
    }
}

/// Permission denied on the socket file. Root passes every file permission check, so as
/// root the check runs in a child process (this test binary again) as user `nobody`,
/// through `setpriv`; as any other user, the socket is simply made mode 000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_on_the_socket_names_it_and_says_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup(HaproxyOptions::default(), "", false).await;
    let sock = &s.hap.admin_sock;
    let e = if unsafe { libc::geteuid() } == 0 {
        // The socket stays mode 600, owned by root; nobody may traverse the dir but not
        // use the socket.
        std::fs::set_permissions(&s.hap.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "permission_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("EBB_TEST_PERMISSION_POOL", s.plan.file.as_os_str())
            .output()
            .expect("setpriv (util-linux) runs the child as nobody");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .find_map(|l| l.split_once("ERROR: ").map(|(_, e)| e))
            .unwrap_or_else(|| {
                panic!(
                    "the child printed no error: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_string()
    } else {
        std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o000)).unwrap();
        s.driver
            .state(&s.plan.members[0])
            .await
            .unwrap_err()
            .to_string()
    };
    for want in [
        &sock.display().to_string()[..],
        "permission denied",
        "app/web1",
        "stats socket",
        "mode",
    ] {
        assert!(e.contains(want), "{want:?} missing in: {e}");
    }
}

/// The unprivileged half of the test above; does nothing unless that test started it.
#[tokio::test]
async fn permission_child() {
    let Ok(pool) = std::env::var("EBB_TEST_PERMISSION_POOL") else {
        return;
    };
    let plan =
        ebb_engine::config::load(std::path::Path::new(&pool), &ebb_drivers::registry()).unwrap();
    let d = Driver::from_plan(&plan).unwrap();
    match d.state(&plan.members[0]).await {
        Ok(st) => println!("UNEXPECTED: {st:?}"),
        Err(e) => println!("ERROR: {e}"),
    }
}
