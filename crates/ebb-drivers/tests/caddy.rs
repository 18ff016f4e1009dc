//! The caddy driver against a real Caddy (admin API) with real HTTP members and real
//! connections: drainstop and the request count, start putting the exact upstream back
//! where it stood, a hold across a Caddy restart with --resume, the prior state found and
//! restored, the check warnings, and the errors a user can meet.

mod support;

use ebb_drivers::balancer::caddy::Caddy as Driver;
use ebb_engine::interfaces::{Balancer, HostState};
use ebb_engine::plan::Plan;
use serde_json::Value;
use std::time::Duration;
use support::caddy::Caddy;
use support::web::*;
use support::*;

const MEMBERS: [&str; 3] = ["web1", "web2", "web3"];

struct Setup {
    dir: tempfile::TempDir,
    _members: Vec<WebMember>,
    caddy: Caddy,
    plan: Plan,
    driver: Driver,
    /// The handler's upstreams as the user wrote them.
    original: Value,
}

async fn setup(resume: bool, handler_extra: &str, runbook: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let members = start_members(dir.path(), &MEMBERS).await;
    // web2's upstream has settings of its own: they must come back exactly.
    let upstreams: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, m)| match i {
            1 => format!("{{\"dial\": \"{}\", \"max_requests\": 100}}", m.addr),
            _ => format!("{{\"dial\": \"{}\"}}", m.addr),
        })
        .collect();
    let caddy = Caddy::start_with(dir.path(), &upstreams, resume, handler_extra);
    let mut toml = format!(
        "[pool]\nname = \"t\"\n\n[balancer]\ndriver = \"caddy\"\nadmin = \"{}\"\nhandler_id = \"web\"\n\n{runbook}\n",
        caddy.admin
    );
    for m in &members {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            m.name, m.addr
        );
    }
    let plan = plan(dir.path(), &toml);
    let driver = Driver::from_plan(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    let original = handler_upstreams(&caddy);
    Setup {
        dir,
        _members: members,
        caddy,
        plan,
        driver,
        original,
    }
}

fn handler_upstreams(c: &Caddy) -> Value {
    serde_json::from_str(&c.admin_get("/id/web/upstreams").unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drainstop_lets_a_long_stream_finish_and_start_puts_the_exact_upstream_back() {
    let s = setup(false, "", "").await;
    let (web1, web2) = (&s.plan.members[0], &s.plan.members[1]);
    let long = long_to(&s.caddy.frontend, "web2", false).await;
    let other = long_to(&s.caddy.frontend, "web3", false).await;
    let before = s.driver.state(web2).await.unwrap();
    assert_eq!(
        (before.state, before.active_connections),
        (HostState::Started, Some(1)),
        "{before:?}"
    );

    s.driver.drainstop(web2).await.unwrap();
    let st = s.driver.state(web2).await.unwrap();
    assert_eq!(
        (st.state, st.active_connections),
        (HostState::Draining, Some(1)),
        "{st:?}"
    );
    assert!(st.detail.contains("parked by ebb"), "{}", st.detail);
    assert_eq!(
        s.caddy.dials().unwrap(),
        vec![web1.address.clone(), s.plan.members[2].address.clone()]
    );
    assert!(avoided(&s.caddy.frontend, "web2").await);
    assert!(long.alive().await, "the drained member's stream was cut");
    assert!(other.alive().await, "another member's stream was cut");
    assert_eq!(
        s.driver.state(web2).await.unwrap().state,
        HostState::Draining
    );

    long.close();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let st = s.driver.state(web2).await.unwrap();
            st.state == HostState::Stopped && st.active_connections == Some(0)
        })
        .await
    );
    // A second drainstop (or a hold) changes nothing.
    s.driver.drainstop(web2).await.unwrap();
    s.driver
        .set_initial_state(web2, HostState::Stopped)
        .await
        .unwrap();

    s.driver.start(web2).await.unwrap();
    assert_eq!(
        handler_upstreams(&s.caddy),
        s.original,
        "same object, same place"
    );
    let config = s.caddy.admin_get("/config/").unwrap();
    assert!(
        !config.contains("ebb-parked"),
        "the parking route is gone: {config}"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            names(&s.caddy.frontend, 6)
                .await
                .iter()
                .any(|n| n == "web2")
        })
        .await
    );
    assert!(s.driver.state(web2).await.unwrap().in_service());
    assert!(other.alive().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_survives_a_caddy_restart_with_resume_and_the_prior_state_is_restored() {
    let mut s = setup(true, "", "").await;
    let (web1, web2, web3) = (&s.plan.members[0], &s.plan.members[1], &s.plan.members[2]);
    // Two members out at once come back in their places whatever the order.
    s.driver
        .set_initial_state(web1, HostState::Stopped)
        .await
        .unwrap();
    s.driver
        .set_initial_state(web2, HostState::Stopped)
        .await
        .unwrap();
    assert_eq!(s.caddy.dials().unwrap(), vec![web3.address.clone()]);

    s.caddy.restart();
    let answers = names(&s.caddy.frontend, 6).await;
    assert!(answers.iter().all(|n| n == "web3"), "{answers:?}");
    assert_eq!(
        s.driver.initial_state(web1).await.unwrap(),
        Some(HostState::Stopped)
    );
    assert_eq!(
        s.driver.state(web2).await.unwrap().state,
        HostState::Stopped
    );
    let warnings = s.driver.preflight(&s.plan.members).await;
    assert!(
        !warnings.iter().any(|w| w.contains("--resume")),
        "{warnings:?}"
    );

    s.driver.start(web2).await.unwrap();
    s.driver.start(web1).await.unwrap();
    assert_eq!(handler_upstreams(&s.caddy), s.original);

    // A member that was out before the run (parked) is found stopped, and after a whole
    // cycle (hold, drain, start, restore) it is out again.
    s.driver.drainstop(web3).await.unwrap();
    assert_eq!(
        s.driver.initial_state(web3).await.unwrap(),
        Some(HostState::Stopped)
    );
    s.driver
        .set_initial_state(web3, HostState::Stopped)
        .await
        .unwrap();
    s.driver.drainstop(web3).await.unwrap();
    s.driver.start(web3).await.unwrap();
    assert_eq!(
        s.driver.state(web3).await.unwrap().state,
        HostState::Started
    );
    s.driver
        .set_initial_state(web3, HostState::Stopped)
        .await
        .unwrap();
    assert_eq!(
        s.driver.state(web3).await.unwrap().state,
        HostState::Stopped
    );
    assert!(avoided(&s.caddy.frontend, "web3").await);
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_resume_and_what_a_reload_does_to_websockets() {
    let s = setup(false, "", "[runbook.drain]\ntimeout = \"2m\"\n").await;
    let w = s.driver.preflight(&s.plan.members).await;
    assert!(
        w.iter()
            .any(|w| w.contains("without --resume") && w.contains("caddy run --config")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w.contains("closes every WebSocket")
            && w.contains("\"stream_close_delay\": \"2m\"")
            && w.contains("handler \"web\"")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w.contains("on_timeout is \"stop\"")),
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_handler_the_member_and_the_setting() {
    let s = setup(false, "", "").await;
    let pool = s.dir.path().join("pool.toml");
    let base = std::fs::read_to_string(&pool).unwrap();

    // A member with no upstream: the dials are listed.
    let toml = base.clone() + "[[member]]\nname = \"web9\"\naddress = \"127.0.0.1:1\"\n";
    let p = plan(s.dir.path(), &toml);
    let d = Driver::from_plan(&p).unwrap();
    let e = d.state(&p.members[3]).await.unwrap_err().to_string();
    assert!(
        e.starts_with("member \"web9\" (Caddy reverse_proxy \"web\" via http://127.0.0.1:"),
        "{e}"
    );
    assert!(
        e.contains("no upstream with \"dial\": \"127.0.0.1:1\""),
        "{e}"
    );
    assert!(e.contains(&s.plan.members[2].address), "{e}");

    // A wrong handler_id: the ids there are.
    let p = plan(
        s.dir.path(),
        &base.replace("handler_id = \"web\"", "handler_id = \"api\""),
    );
    let d = Driver::from_plan(&p).unwrap();
    let e = d.state(&p.members[0]).await.unwrap_err().to_string();
    assert!(
        e.contains("no object with \"@id\": \"api\" (its @ids: web)"),
        "{e}"
    );

    // Nothing listening.
    let p = plan(
        s.dir.path(),
        &base.replace(&s.caddy.admin, "http://127.0.0.1:1"),
    );
    let d = Driver::from_plan(&p).unwrap();
    let e = d.drainstop(&p.members[0]).await.unwrap_err().to_string();
    assert!(
        e.contains("is Caddy running with its admin endpoint there (balancer.admin)?"),
        "{e}"
    );

    // Settings, each with its line; mode = "stop" refused with the reason.
    let cases = [
        ("[balancer]\ndriver = \"caddy\"\n", "pool.toml:4: balancer: the caddy driver needs handler_id"),
        (
            "[balancer]\ndriver = \"caddy\"\nhandler_id = \"web\"\nadmn = \"x\"\n",
            "pool.toml:6: balancer.admn: unknown key for the caddy driver",
        ),
        (
            "[balancer]\ndriver = \"caddy\"\nhandler_id = \"web\"\ntimeout = \"0s\"\n",
            "pool.toml:6: balancer.timeout: must be more than 0",
        ),
        (
            "[balancer]\ndriver = \"caddy\"\nhandler_id = \"web\"\n[runbook.drain]\nmode = \"stop\"\n",
            "pool.toml:7: runbook.drain.mode: \"stop\" is not possible with Caddy",
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
