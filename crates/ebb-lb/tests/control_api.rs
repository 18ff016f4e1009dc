//! The control API contract: answers, errors, token, metrics, events.
mod support;

use std::time::Duration;

use ebb_lb::client::{ClientError, ControlClient};
use ebb_lb::{HostState, InitialState, LbConfig, Server};
use support::*;

async fn two_members(extra: &str) -> (tempfile::TempDir, Backend, Backend, Lb) {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let pool = write_pool(
        dir.path(),
        &[("a", a.addr), ("b", b.addr)],
        extra,
        FAST_HEALTH,
    );
    let lb = Lb::start(&pool).await;
    (dir, a, b, lb)
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error key: {body}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_status_has_the_contract_fields() {
    let (_d, _a, _b, lb) = two_members("").await;
    lb.wait_all_up().await;
    let (status, body) = http(&lb, "GET", "/members", None, "").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let m = &v["members"][0];
    for key in [
        "name",
        "address",
        "weight",
        "state",
        "initial_state",
        "health",
        "active_connections",
        "total_connections",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(m.get(key).is_some(), "missing {key} in {m}");
    }
    assert_eq!(m["state"], "started");
    assert_eq!(m["initial_state"], "started");
    assert_eq!(m["health"], "up");
    let (status, body) = http(
        &lb,
        "POST",
        "/members/b/initial-state",
        None,
        r#"{"initial_state":"stopped"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["initial_state"], "stopped");
    assert_eq!(http(&lb, "GET", "/healthz", None, "").await.0, 200);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_with_a_message() {
    let (_d, _a, _b, lb) = two_members("").await;
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("GET", "/members/nope", "", 404, "no member named \"nope\""),
        (
            "POST",
            "/members/nope/stop",
            "",
            404,
            "its members are: a, b",
        ),
        ("GET", "/nothing", "", 404, "/members"),
        (
            "POST",
            "/members/a/explode",
            "",
            404,
            "drainstop, stop, start, initial-state",
        ),
        ("DELETE", "/members", "", 405, "only GET"),
        ("GET", "/members/a/stop", "", 405, "only POST"),
        (
            "POST",
            "/members/a/initial-state",
            "{not json",
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/members/a/initial-state",
            r#"{"initial_state":"maybe"}"#,
            400,
            "found \"maybe\"",
        ),
        (
            "POST",
            "/members/a/initial-state",
            r#"{"state":"stopped"}"#,
            400,
            "unknown field `state`, expected `initial_state`",
        ),
        (
            "POST",
            "/members/a/initial-state",
            r#"{"initial_state":"stopped","force":true}"#,
            400,
            "unknown field `force`",
        ),
        (
            "POST",
            "/members/a/initial-state",
            "{}",
            400,
            "missing field `initial_state`",
        ),
        // An action that takes no fields does not ignore one silently.
        (
            "POST",
            "/members/a/stop",
            r#"{"timeout":"5s"}"#,
            400,
            "unknown field `timeout`",
        ),
        ("POST", "/members/a/drainstop", "[1]", 400, "takes no body"),
    ];
    for (method, path, body, want, needle) in cases {
        let (status, answer) = http(&lb, method, path, None, body).await;
        assert_eq!(status, *want, "{method} {path}: {answer}");
        let msg = error_of(&answer);
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} lacks {needle:?}"
        );
    }
    // Nothing changed.
    assert_eq!(lb.member("a").await.state, HostState::Started);
    assert_eq!(lb.member("a").await.initial_state, InitialState::Started);
    // Garbage instead of HTTP is answered with 400 and the connection closed.
    let addr = lb.control_url.trim_start_matches("http://").to_string();
    let (status, _) = raw_http(&addr, "HELLO\r\n\r\n").await;
    assert_eq!(status, 400);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required() {
    let (_d, _a, _b, lb) = two_members("token = \"s3cret\"\n").await;
    let (status, body) = http(&lb, "GET", "/members", None, "").await;
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("requires a token"), "{body}");
    let (status, body) = http(&lb, "POST", "/members/a/stop", Some("guess"), "").await;
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("wrong token"), "{body}");
    assert_eq!(
        lb.member("a").await.state,
        HostState::Started,
        "a stop with a wrong token acted"
    );
    let (status, _) = http(&lb, "GET", "/members", Some("s3cret"), "").await;
    assert_eq!(status, 200);
    // Auth schemes are case-insensitive (RFC 9110): `bearer` is `Bearer`.
    let addr = lb.control_url.trim_start_matches("http://").to_string();
    for scheme in ["bearer", "BEARER"] {
        let (status, body) = raw_http(
            &addr,
            &format!("GET /members HTTP/1.1\r\nHost: x\r\nAuthorization: {scheme} s3cret\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    // The client with the token works; without it, it says why.
    assert!(lb.client.members().await.is_ok());
    let anon = ControlClient::new(&lb.control_url, None).unwrap();
    let err = anon.drainstop("a").await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("EBB_LB_TOKEN"), "{err}");
    // Metrics and events are protected too.
    assert_eq!(http(&lb, "GET", "/metrics", None, "").await.0, 401);
    assert_eq!(http(&lb, "GET", "/events", None, "").await.0, 401);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_serve_control_off_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let pool = write_pool(dir.path(), &[("a", a.addr)], "", SLOW_HEALTH);
    let text = std::fs::read_to_string(&pool).unwrap().replace(
        "control = \"http://127.0.0.1:0\"",
        "control = \"http://0.0.0.0:0\"",
    );
    std::fs::write(&pool, &text).unwrap();
    let config = LbConfig::from_pool_text(&pool, &text, None).unwrap();
    let err = Server::bind(config).await.err().expect("refused to start");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("balancer.control") && msg.contains("token"),
        "{msg}"
    );
    // With a token it starts.
    let config = LbConfig::from_pool_text(&pool, &text, Some("t0ken".into())).unwrap();
    let server = Server::bind(config).await.unwrap();
    assert!(server.control_addr().ip().is_unspecified());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_name_the_url_the_member_and_what_to_do() {
    let (_d, _a, _b, lb) = two_members("").await;
    let err = lb.client.stop("ghost").await.unwrap_err();
    assert!(matches!(err, ClientError::UnknownMember { .. }), "{err}");
    assert!(
        err.to_string().contains("ghost") && err.to_string().contains(&lb.control_url),
        "{err}"
    );
    lb.shutdown().await;
    // Nothing listens there any more.
    let dead = ControlClient::new(&lb_url_of_closed_port().await, None).unwrap();
    let err = dead.member("a").await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains("is `ebb lb serve` running"),
        "{err}"
    );
    assert!(err.to_string().contains("\"a\""), "{err}");
    // A server that never answers times out.
    let hole = Blackhole::start();
    let slow = ControlClient::new(&format!("http://{}", hole.addr), None)
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let err = slow.members().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_names_with_url_special_characters_work() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let text = format!(
        "[balancer]\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\n[balancer.health]\ninterval = \"1h\"\n\
         [[member]]\nname = \"cas#1?é%\"\naddress = \"{}\"\n",
        a.addr
    );
    let pool = dir.path().join("pool.toml");
    std::fs::write(&pool, text).unwrap();
    let lb = Lb::start(&pool).await;
    let st = lb.client.drainstop("cas#1?é%").await.unwrap();
    assert_eq!(st.name, "cas#1?é%");
    assert_eq!(st.state, HostState::Stopped);
    lb.shutdown().await;
}

async fn lb_url_of_closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_state_initial_state_and_health_changes() {
    let (_d, a, _b, lb) = two_members("").await;
    lb.wait_all_up().await;
    let mut events = lb.client.events().await.unwrap();
    lb.client
        .set_initial_state("a", InitialState::Stopped)
        .await
        .unwrap();
    lb.client.stop("a").await.unwrap();
    a.kill().await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        if ev.name == "a" {
            seen.push((ev.initial_state, ev.state, ev.health));
        }
    }
    use ebb_lb::Health;
    assert_eq!(
        seen,
        vec![
            (InitialState::Stopped, HostState::Started, Health::Up),
            (InitialState::Stopped, HostState::Stopped, Health::Up),
            (InitialState::Stopped, HostState::Stopped, Health::Down),
        ]
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_members_and_listeners() {
    let (_d, _a, _b, lb) = two_members("").await;
    lb.wait_all_up().await;
    let mut c = Conn::open(lb.listen).await;
    c.echo(b"12345").await;
    let (status, m) = http(&lb, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    let member = &c.member;
    for line in [
        format!("ebb_lb_member_active_connections{{member=\"{member}\"}} 1"),
        format!("ebb_lb_member_connections_total{{member=\"{member}\"}} 1"),
        format!("ebb_lb_member_bytes_in_total{{member=\"{member}\"}} 5"),
        format!("ebb_lb_member_state{{member=\"{member}\",state=\"started\"}} 1"),
        format!("ebb_lb_member_state{{member=\"{member}\",state=\"stopped\"}} 0"),
        format!("ebb_lb_member_health{{member=\"{member}\",health=\"up\"}} 1"),
        format!("ebb_lb_member_initial_state{{member=\"{member}\",initial_state=\"started\"}} 1"),
        format!(
            "ebb_lb_listener_accepted_total{{listener=\"{}\"}} 1",
            lb.listen
        ),
        format!(
            "ebb_lb_listener_refused_total{{listener=\"{}\"}} 0",
            lb.listen
        ),
    ] {
        assert!(m.contains(&line), "missing {line:?} in\n{m}");
    }
    // bytes_out: greeting line plus the echo.
    assert!(
        m.contains(&format!(
            "ebb_lb_member_bytes_out_total{{member=\"{member}\"}} 7"
        )),
        "{m}"
    );
    lb.shutdown().await;
}

/// `GET /members?since=CURSOR` answers with exactly the members that changed after the
/// answer that gave the cursor (state, initial state, a drain's end), each once with its
/// latest status; a cursor of another balancer process gets every member; a bad one, 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_since_a_cursor_are_exactly_the_changed_ones() {
    let (_d, _a, _b, lb) = two_members_up(SLOW_HEALTH).await;
    let names = |m: &ebb_lb::status::Members| -> Vec<String> {
        m.members.iter().map(|s| s.name.clone()).collect()
    };
    let full = lb.client.members_since(None).await.unwrap();
    assert_eq!(names(&full), ["a", "b"]);
    let c0 = full.cursor.clone().expect("GET /members has a cursor");
    let none = lb.client.members_since(Some(&c0)).await.unwrap();
    assert!(none.members.is_empty(), "nothing changed: {none:?}");
    assert_eq!(none.cursor.as_deref(), Some(c0.as_str()));

    // No connections: drainstop stops `a` at once.
    lb.client.drainstop("a").await.unwrap();
    let one = lb.client.members_since(Some(&c0)).await.unwrap();
    assert_eq!(names(&one), ["a"]);
    assert_eq!(one.members[0].state, HostState::Stopped);
    let c1 = one.cursor.clone().unwrap();
    assert_ne!(c1, c0);
    assert!(lb
        .client
        .members_since(Some(&c1))
        .await
        .unwrap()
        .members
        .is_empty());

    // `b` drains with a connection open, then stops when it closes (a change the
    // balancer makes by itself): reported once, with its latest state.
    let conn = conn_to(lb.listen, "b").await;
    lb.client.drainstop("b").await.unwrap();
    assert_eq!(
        lb.client.members_since(Some(&c1)).await.unwrap().members[0].state,
        HostState::Draining
    );
    drop(conn);
    lb.wait_member("b", "stopped", |s| s.state == HostState::Stopped)
        .await;
    let two = lb.client.members_since(Some(&c1)).await.unwrap();
    assert_eq!(names(&two), ["b"]);
    assert_eq!(two.members[0].state, HostState::Stopped);
    let c2 = two.cursor.clone().unwrap();

    // An initial-state change counts; a member asked for twice is listed once.
    lb.client
        .set_initial_state("a", ebb_lb::InitialState::Stopped)
        .await
        .unwrap();
    lb.client.start("a").await.unwrap();
    let three = lb.client.members_since(Some(&c2)).await.unwrap();
    assert_eq!(names(&three), ["a"]);
    assert_eq!(three.members[0].state, HostState::Started);
    assert_eq!(
        three.members[0].initial_state,
        ebb_lb::InitialState::Stopped
    );
    // Changes since c1 are those of both members, in pool order.
    assert_eq!(
        names(&lb.client.members_since(Some(&c1)).await.unwrap()),
        ["a", "b"]
    );

    // A cursor from another balancer process (another epoch): every member.
    let other = lb.client.members_since(Some("1.0")).await.unwrap();
    assert_eq!(names(&other), ["a", "b"]);

    for bad in [
        "/members?since=nope",
        "/members?since=",
        "/members?sinse=1.0",
    ] {
        let (status, body) = http(&lb, "GET", bad, None, "").await;
        assert_eq!(status, 400, "{bad}: {body}");
        let e = error_of(&body);
        assert!(e.contains("since=CURSOR"), "{bad}: {e}");
    }
    lb.shutdown().await;
}
