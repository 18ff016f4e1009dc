//! The nginx driver against a real nginx with real HTTP members and real connections:
//! drainstop and the connection count, stop, start, a hold across an nginx restart, the
//! prior `down` found and restored, a failing `nginx -t` or reload leaving the file as it
//! was, and the errors a user can meet.

mod support;
mod support_issue6;

use ebb_drivers::balancer::nginx::Nginx as Driver;
use ebb_engine::interfaces::{Balancer, HostState};
use ebb_engine::plan::Plan;
use std::time::Duration;
use support::nginx::{balancer_toml, Nginx};
use support::web::*;
use support::*;

const MEMBERS: [&str; 3] = ["web1", "web2", "web3"];

struct Setup {
    dir: tempfile::TempDir,
    _members: Vec<WebMember>,
    nginx: Nginx,
    plan: Plan,
    driver: Driver,
    /// The upstream file as the user wrote it.
    original: String,
}

/// The user's upstream file: comments, odd spacing, CRLF on one line, parameters on
/// several lines; `down` on the members named in `down`.
fn upstream_text(members: &[WebMember], down: &[&str]) -> String {
    let mut t = String::from("# web pool: included in `upstream app { include ...; }`\n");
    for (i, m) in members.iter().enumerate() {
        let d = if down.contains(&m.name.as_str()) {
            " down"
        } else {
            ""
        };
        t += &match i {
            0 => format!(
                "server {}  max_fails=3 fail_timeout=5s{d};   # {}\r\n",
                m.addr, m.name
            ),
            1 => format!("\tserver {} weight=2{d} ;\n", m.addr),
            _ => format!(
                "server {}\n    weight=1{d}\n    ;  # {} (backup-less)\n",
                m.addr, m.name
            ),
        };
    }
    t
}

async fn setup(down: &[&str], balancer_extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let members = start_members(dir.path(), &MEMBERS).await;
    let original = upstream_text(&members, down);
    let nginx = Nginx::start(dir.path(), &original);
    let mut toml = format!(
        "[pool]\nname = \"t\"\n\n{}{balancer_extra}\n",
        balancer_toml(&nginx)
    );
    for m in &members {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            m.name, m.addr
        );
    }
    let plan = plan(dir.path(), &toml);
    let driver = Driver::from_plan(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    Setup {
        dir,
        _members: members,
        nginx,
        plan,
        driver,
        original,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drainstop_lets_a_long_stream_finish_and_the_drain_ends_when_it_closes() {
    let s = setup(&[], "").await;
    let web1 = &s.plan.members[0];
    let long = long_to(&s.nginx.frontend, "web1", false).await;
    let other = long_to(&s.nginx.frontend, "web2", false).await;
    let before = s.driver.state(web1).await.unwrap();
    assert_eq!(before.state, HostState::Started, "{before:?}");
    assert_eq!(before.active_connections, Some(1), "{before:?}");

    s.driver.drainstop(web1).await.unwrap();
    assert_eq!(
        s.nginx.upstream(),
        s.original
            .replace("fail_timeout=5s;", "fail_timeout=5s down;"),
        "only ` down` added to web1's line"
    );
    let st = s.driver.state(web1).await.unwrap();
    assert_eq!(st.state, HostState::Draining, "{st:?}");
    assert_eq!(st.active_connections, Some(1));
    assert!(
        st.detail.starts_with("down (line 2), 1 connection"),
        "{}",
        st.detail
    );
    // New requests go elsewhere; both long streams go on through the graceful reload.
    assert!(avoided(&s.nginx.frontend, "web1").await);
    let answers = names(&s.nginx.frontend, 12).await;
    assert!(
        answers.iter().all(|n| n == "web2" || n == "web3"),
        "{answers:?}"
    );
    assert!(long.alive().await, "the drained member's stream was cut");
    assert!(other.alive().await, "another member's stream was cut");
    assert_eq!(
        s.driver.state(web1).await.unwrap().state,
        HostState::Draining
    );

    // The drain ends when the client closes it.
    long.close();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let st = s.driver.state(web1).await.unwrap();
            st.state == HostState::Stopped && st.active_connections == Some(0)
        })
        .await
    );

    s.driver.start(web1).await.unwrap();
    assert_eq!(
        s.nginx.upstream(),
        s.original,
        "start restores the exact bytes"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            names(&s.nginx.frontend, 6)
                .await
                .iter()
                .any(|n| n == "web1")
        })
        .await
    );
    assert!(s.driver.state(web1).await.unwrap().in_service());
    assert!(other.alive().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_survives_an_nginx_restart_and_the_prior_down_is_restored() {
    let mut s = setup(&["web3"], "").await;
    let (web1, web3) = (&s.plan.members[0], &s.plan.members[2]);
    assert_eq!(
        s.driver.initial_state(web1).await.unwrap(),
        Some(HostState::Started)
    );
    assert_eq!(
        s.driver.initial_state(web3).await.unwrap(),
        Some(HostState::Stopped)
    );
    assert_eq!(
        s.driver.state(web3).await.unwrap().state,
        HostState::Stopped
    );

    // Hold, then drain (already out: nothing more changes).
    s.driver
        .set_initial_state(web1, HostState::Stopped)
        .await
        .unwrap();
    let held = s.nginx.upstream();
    s.driver.drainstop(web1).await.unwrap();
    assert_eq!(s.nginx.upstream(), held);

    // nginx restarts (a reboot of the balancer host, `systemctl restart nginx`): web1
    // stays out; only web2 serves.
    s.nginx.restart();
    let answers = names(&s.nginx.frontend, 9).await;
    assert!(answers.iter().all(|n| n == "web2"), "{answers:?}");
    assert_eq!(
        s.driver.state(web1).await.unwrap().state,
        HostState::Stopped
    );

    // Return web1: start, then restore the initial state found (started).
    s.driver.start(web1).await.unwrap();
    s.driver
        .set_initial_state(web1, HostState::Started)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            names(&s.nginx.frontend, 6)
                .await
                .iter()
                .any(|n| n == "web1")
        })
        .await
    );

    // web3 was `down` before: taken through a cycle, it ends `down` again.
    s.driver
        .set_initial_state(web3, HostState::Stopped)
        .await
        .unwrap();
    s.driver.drainstop(web3).await.unwrap();
    s.driver.start(web3).await.unwrap();
    assert!(!s.nginx.upstream().contains("weight=1 down"));
    s.driver
        .set_initial_state(web3, HostState::Stopped)
        .await
        .unwrap();
    assert_eq!(
        s.nginx.upstream(),
        s.original,
        "web3 is down again, byte for byte"
    );
    assert!(avoided(&s.nginx.frontend, "web3").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_nginx_test_leaves_the_file_as_it_was_and_fails_with_nginx_words() {
    let s = setup(&[], "").await;
    let web1 = &s.plan.members[0];
    // Someone broke the main configuration since nginx last loaded it.
    let mut conf = std::fs::read_to_string(&s.nginx.conf).unwrap();
    conf += "bogus_directive on;\n";
    std::fs::write(&s.nginx.conf, conf).unwrap();

    let e = s.driver.drainstop(web1).await.unwrap_err().to_string();
    assert!(e.contains("unknown directive \"bogus_directive\""), "{e}");
    assert!(
        e.starts_with(&format!(
            "member \"web1\" (nginx upstream file {}:2)",
            s.nginx.upstream_file.display()
        )),
        "{e}"
    );
    assert!(e.contains("balancer.test"), "{e}");
    assert!(
        e.contains("the upstream file was put back as it was"),
        "{e}"
    );
    assert_eq!(s.nginx.upstream(), s.original);
    // nginx itself never saw the change: web1 still serves.
    assert!(names(&s.nginx.frontend, 6)
        .await
        .iter()
        .any(|n| n == "web1"));
    // `ebb check` says so before a run.
    let warnings = s.driver.preflight(&s.plan.members).await;
    assert!(
        warnings.iter().any(|w| w.contains("bogus_directive")),
        "{warnings:?}"
    );
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_reload_puts_the_file_back() {
    let s = setup(&[], "").await;
    let toml = std::fs::read_to_string(s.dir.path().join("pool.toml"))
        .unwrap()
        .replace(
            &format!("reload = \"{}\"", s.nginx.reload_cmd()),
            "reload = \"echo 'nginx: [error] invalid PID number \\\"\\\" in /run/nginx.pid' >&2; exit 1\"",
        );
    let plan = plan(s.dir.path(), &toml);
    let driver = Driver::from_plan(&plan).unwrap();
    let e = driver.start(&plan.members[0]).await;
    assert!(e.is_ok(), "no change, no reload: {e:?}");
    let e = driver
        .drainstop(&plan.members[1])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("balancer.reload"), "{e}");
    assert!(e.contains("exit code 1"), "{e}");
    assert!(e.contains("invalid PID number"), "{e}");
    assert!(e.contains(":3)"), "web2's line: {e}");
    assert_eq!(s.nginx.upstream(), s.original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_cuts_the_members_connections_at_once() {
    let s = setup(&[], "").await;
    let web1 = &s.plan.members[0];
    let long = long_to(&s.nginx.frontend, "web1", false).await;
    let other = long_to(&s.nginx.frontend, "web2", false).await;
    s.driver.stop(web1).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { long.ended() }).await,
        "stop left the stream open"
    );
    let st = s.driver.state(web1).await.unwrap();
    assert_eq!(
        (st.state, st.active_connections),
        (HostState::Stopped, Some(0))
    );
    assert!(other.alive().await, "stop cut another member's stream");
    assert!(avoided(&s.nginx.frontend, "web1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_file_the_line_and_the_setting() {
    let s = setup(&[], "").await;
    let pool = s.dir.path().join("pool.toml");
    let base = std::fs::read_to_string(&pool).unwrap();

    // A member whose address is on no server line: the servers are listed with lines.
    let toml = base.clone() + "[[member]]\nname = \"web9\"\naddress = \"127.0.0.1:1\"\n";
    let p = plan(s.dir.path(), &toml);
    let d = Driver::from_plan(&p).unwrap();
    let e = d.state(&p.members[3]).await.unwrap_err().to_string();
    assert!(
        e.contains("no `server` line has the member's address \"127.0.0.1:1\""),
        "{e}"
    );
    assert!(
        e.contains(&format!("{} (line 2)", s.plan.members[0].address)),
        "{e}"
    );
    assert!(e.contains("(line 4)"), "{e}");
    // Its lb_name is the other way to match (upstreams written with host names).
    let toml = base.clone()
        + &format!(
            "[[member]]\nname = \"web9\"\naddress = \"10.9.9.9:80\"\nlb_name = \"{}\"\n",
            s.plan.members[1].address
        );
    let p = plan(s.dir.path(), &toml);
    let d = Driver::from_plan(&p).unwrap();
    assert!(d
        .state(&p.members[3])
        .await
        .unwrap()
        .detail
        .starts_with("up (line 3)"));

    // A malformed upstream file: its line.
    std::fs::write(
        &s.nginx.upstream_file,
        "server 127.0.0.1:1;\nserver 127.0.0.1:2\n",
    )
    .unwrap();
    let e = s
        .driver
        .state(&s.plan.members[0])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot parse it: line 2: `server` is not ended by `;`"),
        "{e}"
    );

    // A missing file.
    std::fs::remove_file(&s.nginx.upstream_file).unwrap();
    let e = s
        .driver
        .state(&s.plan.members[0])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&s.nginx.upstream_file.display().to_string()),
        "{e}"
    );
    assert!(e.contains("No such file"), "{e}");

    // Settings: missing, unknown, wrong type, bad transport, each with its line.
    let cases = [
        (
            "[balancer]\ndriver = \"nginx\"\n",
            "pool.toml:4: balancer: the nginx driver needs upstream_file",
        ),
        (
            "[balancer]\ndriver = \"nginx\"\nupstream_file = \"u.conf\"\nupstrem = 1\n",
            "pool.toml:6: balancer.upstrem: unknown key for the nginx driver",
        ),
        (
            "[balancer]\ndriver = \"nginx\"\nupstream_file = \"u.conf\"\ntimeout = \"soon\"\n",
            "pool.toml:6: balancer.timeout:",
        ),
        (
            "[balancer]\ndriver = \"nginx\"\nupstream_file = \"u.conf\"\ntransport = \"telnet\"\n",
            "pool.toml:6: balancer.transport: expected \"local\" or \"ssh\", found \"telnet\"",
        ),
        (
            "[balancer]\ndriver = \"nginx\"\nupstream_file = \"u.conf\"\ntransport = \"ssh\"\n",
            "pool.toml:6: balancer.transport: transport = \"ssh\" needs ssh_host",
        ),
    ];
    for (bal, want) in cases {
        let toml = format!(
            "[pool]\nname = \"t\"\n{bal}\n[[member]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n"
        );
        let path = s.dir.path().join("pool.toml");
        std::fs::write(&path, &toml).unwrap();
        let errs = ebb_engine::config::load(&path, &ebb_drivers::registry())
            .err()
            .unwrap_or_else(|| panic!("{bal} was accepted"));
        assert!(
            errs.0.iter().any(|e| e.to_string().contains(want)),
            "{bal}: {errs} lacks {want}"
        );
    }
}

/// The nginx host reached over ssh (a real sshd on loopback), as members are: the same
/// file edits, test and reload, through the ssh transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nginx_host_over_ssh() {
    let sshd = support_issue6::Sshd::start();
    let keys = sshd.member_keys().replace(
        "transport = \"ssh\"\n",
        "transport = \"ssh\"\nssh_host = \"127.0.0.1\"\n",
    );
    let s = setup(&[], &keys).await;
    let web1 = &s.plan.members[0];
    s.driver.drainstop(web1).await.unwrap();
    assert_eq!(
        s.nginx.upstream(),
        s.original
            .replace("fail_timeout=5s;", "fail_timeout=5s down;")
    );
    assert_eq!(
        s.driver.state(web1).await.unwrap().state,
        HostState::Stopped
    );
    assert!(avoided(&s.nginx.frontend, "web1").await);
    s.driver.start(web1).await.unwrap();
    assert_eq!(s.nginx.upstream(), s.original);
    // A failing test over ssh: nginx's words come back through the transport.
    std::fs::write(
        &s.nginx.conf,
        std::fs::read_to_string(&s.nginx.conf).unwrap() + "bogus_directive on;\n",
    )
    .unwrap();
    let e = s.driver.drainstop(web1).await.unwrap_err().to_string();
    assert!(e.contains("unknown directive \"bogus_directive\""), "{e}");
    assert_eq!(s.nginx.upstream(), s.original);
}
