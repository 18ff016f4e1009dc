//! The f5 driver against a fake BIG-IP that answers iControl REST with the documented
//! shapes (tests/fixtures/f5/, each with its source): the exact requests of every
//! operation, the drain watched by `serverside.curConns`, the state found and restored,
//! a token renewed when it expires, and the 401, 404 and 409 answers explained. No real
//! BIG-IP has been driven by this code (docs/f5.md).

mod support;
// The fake needs rustls and hyper: only this test builds it (support/ is shared by path
// with crates that have neither).
#[path = "support/f5.rs"]
mod fake;
#[path = "support/tls.rs"]
mod tls;

use ebb_drivers::balancer::f5::F5;
use ebb_engine::interfaces::{Balancer, HostState};
use ebb_engine::plan::Plan;
use fake::{FakeBigIp, FakeMember, Logged};
use serde_json::json;
use support::*;

const PASSWORD_ENV: &str = "EBB_TEST_F5_PASSWORD";

fn member(address: &str) -> FakeMember {
    FakeMember {
        address: address.into(),
        session: "monitor-enabled".into(),
        state: "up".into(),
        conns: 0,
        availability: "available".into(),
    }
}

struct Setup {
    dir: tempfile::TempDir,
    big: FakeBigIp,
    plan: Plan,
    driver: F5,
}

/// Three CAS members in pool /Common/cas_https; the password in the environment.
async fn setup(balancer_extra: &str) -> Setup {
    std::env::set_var(PASSWORD_ENV, "s3cret pass");
    let dir = tempfile::tempdir().unwrap();
    let big = FakeBigIp::start(
        dir.path(),
        "cas_https",
        "ebb-maint",
        "s3cret pass",
        &[
            ("10.0.0.11:443", member("10.0.0.11")),
            ("10.0.0.12:443", member("10.0.0.12")),
            ("10.0.0.13:443", member("10.0.0.13")),
        ],
    )
    .await;
    let mut toml = format!(
        "[pool]\nname = \"cas\"\n\n[balancer]\ndriver = \"f5\"\nurl = \"{}\"\npool = \"cas_https\"\nusername = \"ebb-maint\"\npassword_env = \"{PASSWORD_ENV}\"\nca_file = \"{}\"\n{balancer_extra}\n",
        big.url,
        big.cert.display()
    );
    for i in 1..=3 {
        toml += &format!(
            "[[member]]\nname = \"cas{i}\"\naddress = \"cas{i}.corp.example\"\nlb_name = \"10.0.0.1{i}:443\"\n\n"
        );
    }
    let plan = plan(dir.path(), &toml);
    let driver = F5::from_plan(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    Setup {
        dir,
        big,
        plan,
        driver,
    }
}

const MEMBER: &str = "/mgmt/tm/ltm/pool/~Common~cas_https/members/~Common~10.0.0.11:443";

/// The requests after the login, as `METHOD PATH BODY`.
fn calls(log: &[Logged]) -> Vec<String> {
    log.iter()
        .filter(|l| l.path != "/mgmt/shared/authn/login")
        .map(|l| {
            format!(
                "{} {}{}",
                l.method,
                l.path,
                l.body.as_ref().map_or(String::new(), |b| format!(" {b}"))
            )
        })
        .collect()
}

fn fixture_json(name: &str) -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/f5")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_sends_the_documented_requests() {
    let s = setup("").await;
    let cas1 = &s.plan.members[0];

    // state: the member and its stats, after one token login.
    let st = s.driver.state(cas1).await.unwrap();
    assert_eq!(st.state, HostState::Started);
    assert_eq!(st.healthy, Some(true));
    assert_eq!(st.active_connections, Some(0));
    assert_eq!(
        st.detail,
        "session monitor-enabled, state up (available), 0 connection(s)"
    );
    let log = s.big.log();
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/mgmt/shared/authn/login");
    assert_eq!(
        log[0].body,
        Some(
            json!({"username": "ebb-maint", "password": "s3cret pass", "loginProviderName": "tmos"})
        )
    );
    assert!(log[1..]
        .iter()
        .all(|l| l.token.as_deref() == Some("FAKETOKEN0001")));
    assert_eq!(
        calls(&log),
        vec![format!("GET {MEMBER}"), format!("GET {MEMBER}/stats")]
    );

    // drainstop: Disabled; the drain is watched by serverside.curConns.
    s.big.set("10.0.0.11:443", |m| m.conns = 2);
    s.big.clear_log();
    s.driver.drainstop(cas1).await.unwrap();
    let c = calls(&s.big.log());
    assert_eq!(
        c.last().unwrap(),
        &format!("PATCH {MEMBER} {}", fixture_json("patch-disable.json"))
    );
    let st = s.driver.state(cas1).await.unwrap();
    assert_eq!(
        (st.state, st.active_connections),
        (HostState::Draining, Some(2))
    );
    assert_eq!(
        st.detail,
        "session user-disabled, state up (available), 2 connection(s)"
    );
    s.big.set("10.0.0.11:443", |m| m.conns = 0);
    assert_eq!(
        s.driver.state(cas1).await.unwrap().state,
        HostState::Stopped
    );

    // start: Enabled.
    s.big.clear_log();
    s.driver.start(cas1).await.unwrap();
    assert_eq!(
        calls(&s.big.log()),
        vec![format!(
            "PATCH {MEMBER} {}",
            fixture_json("patch-enable.json")
        )]
    );
    assert!(s.driver.state(cas1).await.unwrap().in_service());

    // stop: Forced Offline, then its server-side connections deleted.
    s.big.set("10.0.0.11:443", |m| m.conns = 3);
    s.big.clear_log();
    s.driver.stop(cas1).await.unwrap();
    let c = calls(&s.big.log());
    assert_eq!(
        c[c.len() - 2..],
        [
            format!(
                "PATCH {MEMBER} {}",
                fixture_json("patch-force-offline.json")
            ),
            "DELETE /mgmt/tm/sys/connection?options=ss-server-addr+10.0.0.11+ss-server-port+443"
                .to_string(),
        ]
    );
    let m = s.big.member("10.0.0.11:443");
    assert_eq!(
        (m.state.as_str(), m.session.as_str(), m.conns),
        ("user-down", "user-disabled", 0)
    );
    assert_eq!(
        s.driver.state(cas1).await.unwrap().state,
        HostState::Stopped
    );
    // Health: an offline member that is enabled is out of service.
    s.driver.start(cas1).await.unwrap();
    s.big
        .set("10.0.0.11:443", |m| m.availability = "offline".into());
    let st = s.driver.state(cas1).await.unwrap();
    assert_eq!((st.state, st.healthy), (HostState::Started, Some(false)));
    assert!(!st.in_service());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_is_bigip_state_and_the_prior_state_is_restored() {
    let s = setup("").await;
    let (cas1, cas3) = (&s.plan.members[0], &s.plan.members[2]);
    s.big
        .set("10.0.0.13:443", |m| m.session = "user-disabled".into());
    assert_eq!(
        s.driver.initial_state(cas1).await.unwrap(),
        Some(HostState::Started)
    );
    assert_eq!(
        s.driver.initial_state(cas3).await.unwrap(),
        Some(HostState::Stopped)
    );

    // Hold, then drain: the second sends nothing (disabled already).
    s.driver
        .set_initial_state(cas1, HostState::Stopped)
        .await
        .unwrap();
    s.big.clear_log();
    s.driver.drainstop(cas1).await.unwrap();
    assert!(
        s.big.log().iter().all(|l| l.method == "GET"),
        "{:?}",
        s.big.log()
    );
    // The member reboots: BIG-IP keeps it disabled (its state is configuration).
    assert_eq!(s.big.member("10.0.0.11:443").session, "user-disabled");
    s.driver.start(cas1).await.unwrap();
    s.driver
        .set_initial_state(cas1, HostState::Started)
        .await
        .unwrap();
    assert!(s.driver.state(cas1).await.unwrap().in_service());

    // cas3 was disabled before the run: after a whole cycle it is disabled again.
    s.driver
        .set_initial_state(cas3, HostState::Stopped)
        .await
        .unwrap();
    s.driver.drainstop(cas3).await.unwrap();
    s.driver.start(cas3).await.unwrap();
    assert_eq!(s.big.member("10.0.0.13:443").session, "monitor-enabled");
    s.driver
        .set_initial_state(cas3, HostState::Stopped)
        .await
        .unwrap();
    assert_eq!(s.big.member("10.0.0.13:443").session, "user-disabled");
    assert_eq!(
        s.driver.state(cas3).await.unwrap().state,
        HostState::Stopped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_forced_offline_before_the_run_is_forced_offline_again() {
    let s = setup("").await;
    let cas2 = &s.plan.members[1];
    // Forced Offline in the GUI: state user-down, session user-disabled.
    s.big.set("10.0.0.12:443", |m| {
        m.session = "user-disabled".into();
        m.state = "user-down".into();
    });
    let path = "/mgmt/tm/ltm/pool/~Common~cas_https/members/~Common~10.0.0.12:443";
    assert_eq!(
        s.driver.initial_state(cas2).await.unwrap(),
        Some(HostState::Stopped)
    );
    // A whole cycle: hold and drain send nothing (it is out already), start enables it,
    // the restore puts back exactly the state found.
    s.big.clear_log();
    s.driver
        .set_initial_state(cas2, HostState::Stopped)
        .await
        .unwrap();
    s.driver.drainstop(cas2).await.unwrap();
    s.driver.start(cas2).await.unwrap();
    assert_eq!(
        (
            s.big.member("10.0.0.12:443").session,
            s.big.member("10.0.0.12:443").state
        ),
        ("monitor-enabled".to_string(), "up".to_string())
    );
    s.driver
        .set_initial_state(cas2, HostState::Stopped)
        .await
        .unwrap();
    let m = s.big.member("10.0.0.12:443");
    assert_eq!(
        (m.session.as_str(), m.state.as_str()),
        ("user-disabled", "user-down"),
        "Forced Offline again, not merely Disabled"
    );
    let patches: Vec<String> = calls(&s.big.log())
        .into_iter()
        .filter(|c| c.starts_with("PATCH"))
        .collect();
    assert_eq!(
        patches,
        vec![
            format!(r#"PATCH {path} {{"session":"user-enabled","state":"user-up"}}"#),
            format!(r#"PATCH {path} {{"session":"user-disabled","state":"user-down"}}"#),
        ]
    );
    // Restoring it again changes nothing.
    s.big.clear_log();
    s.driver
        .set_initial_state(cas2, HostState::Stopped)
        .await
        .unwrap();
    assert!(
        s.big.log().iter().all(|l| l.method == "GET"),
        "{:?}",
        s.big.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_renewed_once() {
    let s = setup("").await;
    let cas2 = &s.plan.members[1];
    s.driver.state(cas2).await.unwrap();
    s.big.expire_tokens();
    s.driver.drainstop(cas2).await.unwrap();
    let logins: Vec<_> = s
        .big
        .log()
        .into_iter()
        .filter(|l| l.path == "/mgmt/shared/authn/login")
        .collect();
    assert_eq!(logins.len(), 2);
    assert_eq!(s.big.member("10.0.0.12:443").session, "user-disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_401_404_409_and_tls_say_what_to_do() {
    let s = setup("").await;
    let cas1 = &s.plan.members[0];
    let pool = s.dir.path().join("pool.toml");
    let base = std::fs::read_to_string(&pool).unwrap();

    // 409: a conflicting change; nothing changed.
    s.big.state.lock().unwrap().conflict_next_patch = true;
    let e = s.driver.drainstop(cas1).await.unwrap_err().to_string();
    assert!(e.starts_with("member \"cas1\" (BIG-IP pool member /Common/cas_https 10.0.0.11:443 at https://127.0.0.1:"), "{e}");
    assert!(e.contains("with 409: Conflict"), "{e}");
    assert!(
        e.contains("nothing was changed; `ebb resume` tries again"),
        "{e}"
    );
    assert_eq!(s.big.member("10.0.0.11:443").session, "monitor-enabled");

    // 404: a member not in the pool; the pool's members are listed.
    let toml = base.clone() + "[[member]]\nname = \"cas9\"\naddress = \"10.0.0.19:443\"\n";
    let p = plan(s.dir.path(), &toml);
    let d = F5::from_plan(&p).unwrap();
    let e = d.state(&p.members[3]).await.unwrap_err().to_string();
    assert!(
        e.contains("with 404: 01020036:3: The requested Pool Member"),
        "{e}"
    );
    assert!(e.contains("Pool /Common/cas_https has no member \"10.0.0.19:443\" (its members: 10.0.0.11:443, 10.0.0.12:443, 10.0.0.13:443)"), "{e}");

    // 404: no such pool.
    let p = plan(
        s.dir.path(),
        &base.replace("pool = \"cas_https\"", "pool = \"owa\""),
    );
    let d = F5::from_plan(&p).unwrap();
    let e = d.state(&p.members[0]).await.unwrap_err().to_string();
    assert!(
        e.contains("The requested Pool (/Common/owa) was not found"),
        "{e}"
    );
    assert!(
        e.contains("BIG-IP has no pool /Common/owa: check balancer.pool and balancer.partition"),
        "{e}"
    );

    // 401: a wrong password.
    std::env::set_var("EBB_TEST_F5_WRONG", "nope");
    let p = plan(
        s.dir.path(),
        &base.replace(PASSWORD_ENV, "EBB_TEST_F5_WRONG"),
    );
    let d = F5::from_plan(&p).unwrap();
    let e = d.state(&p.members[0]).await.unwrap_err().to_string();
    assert!(
        e.contains("POST /mgmt/shared/authn/login with 401: Authentication failed."),
        "{e}"
    );
    assert!(
        e.contains("check balancer.username and the password in $EBB_TEST_F5_WRONG"),
        "{e}"
    );

    // No password in the environment at all.
    let p = plan(
        s.dir.path(),
        &base.replace(PASSWORD_ENV, "EBB_TEST_F5_UNSET"),
    );
    let d = F5::from_plan(&p).unwrap();
    let e = d.state(&p.members[0]).await.unwrap_err().to_string();
    assert!(
        e.contains("the environment variable EBB_TEST_F5_UNSET, which is not set"),
        "{e}"
    );

    // TLS: the self-signed certificate is refused without ca_file, accepted with
    // insecure_tls (and check warns about it).
    let no_ca: String = base
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let p = plan(s.dir.path(), &no_ca);
    let d = F5::from_plan(&p).unwrap();
    let e = d.state(&p.members[0]).await.unwrap_err().to_string();
    assert!(e.contains("TLS handshake") && e.contains("ca_file"), "{e}");
    let p = plan(
        s.dir.path(),
        &no_ca.replace("[balancer]\n", "[balancer]\ninsecure_tls = true\n"),
    );
    let d = F5::from_plan(&p).unwrap();
    assert!(d.state(&p.members[0]).await.is_ok());
    assert!(d
        .preflight(&p.members)
        .await
        .iter()
        .any(|w| w.contains("insecure_tls")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_errors_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("driver = \"f5\"\n", "pool.toml:4: balancer: the f5 driver needs url"),
        ("driver = \"f5\"\nurl = \"bigip\"\npool = \"p\"\nusername = \"u\"\n", "pool.toml:5: balancer.url: expected the BIG-IP management URL"),
        ("driver = \"f5\"\nurl = \"https://b\"\nusername = \"u\"\n", "balancer: the f5 driver needs pool"),
        ("driver = \"f5\"\nurl = \"https://b\"\npool = \"p\"\n", "balancer: the f5 driver needs username"),
        ("driver = \"f5\"\nurl = \"https://b\"\npool = \"p\"\nusername = \"u\"\ninsecure_tls = \"yes\"\n", "pool.toml:8: balancer.insecure_tls: expected true or false"),
        ("driver = \"f5\"\nurl = \"https://b\"\npool = \"p\"\nusername = \"u\"\npasword = \"x\"\n", "pool.toml:8: balancer.pasword: unknown key for the f5 driver"),
    ];
    let load = |toml: &str| {
        let path = dir.path().join("pool.toml");
        std::fs::write(&path, toml).unwrap();
        ebb_engine::config::load(&path, &ebb_drivers::registry())
            .err()
            .unwrap_or_else(|| panic!("{toml} was accepted"))
    };
    for (bal, want) in cases {
        let errs = load(&format!(
            "[pool]\nname = \"t\"\n[balancer]\n{bal}\n[[member]]\nname = \"a\"\naddress = \"10.0.0.1:443\"\n"
        ));
        assert!(
            errs.0.iter().any(|e| e.to_string().contains(want)),
            "{bal}: {errs} lacks {want}"
        );
    }
    // A member whose pool member name cannot be known.
    let errs = load("[pool]\nname = \"t\"\n[balancer]\ndriver = \"f5\"\nurl = \"https://b\"\npool = \"p\"\nusername = \"u\"\n\n[[member]]\nname = \"cas1\"\naddress = \"cas1.corp.example\"\n");
    assert!(
        errs.0.iter().any(|e| e.to_string().contains(
            "member \"cas1\": its pool member name is not known: set lb_name = \"ADDRESS:PORT\""
        )),
        "{errs}"
    );
}
