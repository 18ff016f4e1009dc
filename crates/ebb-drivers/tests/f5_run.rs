//! A whole rolling run through the engine with the f5 driver against the fake BIG-IP
//! (tests/support/f5.rs): each member is Disabled (the hold), drained while its one client
//! connection lasts (serverside.curConns), its service stopped and updated, verified and
//! Enabled again, one at a time, with exactly two changes per member sent to the BIG-IP.

#[path = "support/f5.rs"]
mod fake;
mod support;
#[path = "support/tls.rs"]
mod tls;

use fake::{FakeBigIp, FakeMember};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::web::start_members;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_run_through_the_fake_bigip() {
    std::env::set_var("EBB_TEST_F5_RUN_PASSWORD", "pw");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = ["cas1", "cas2", "cas3"];
    // The members' services (the pool check connects to them).
    let services = start_members(d, &names).await;
    let pool: Vec<(String, FakeMember)> = (1..=3)
        .map(|i| {
            (
                format!("10.0.0.1{i}:443"),
                FakeMember {
                    address: format!("10.0.0.1{i}"),
                    session: "monitor-enabled".into(),
                    state: "up".into(),
                    conns: 1,
                    availability: "available".into(),
                },
            )
        })
        .collect();
    let pool_ref: Vec<(&str, FakeMember)> =
        pool.iter().map(|(n, m)| (n.as_str(), m.clone())).collect();
    let big = Arc::new(FakeBigIp::start(d, "cas_https", "ebb-maint", "pw", &pool_ref).await);

    // Each member's one client leaves a second after the member was Disabled; an observer
    // counts the members Disabled at once, every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let max_out = Arc::new(AtomicUsize::new(0));
    let observer = {
        let (big, stop, max_out) = (big.clone(), stop.clone(), max_out.clone());
        tokio::spawn(async move {
            let mut since: HashMap<String, Instant> = HashMap::new();
            while !stop.load(Ordering::SeqCst) {
                let members: Vec<(String, FakeMember)> = big
                    .state
                    .lock()
                    .unwrap()
                    .members
                    .iter()
                    .map(|(n, m)| (n.clone(), m.clone()))
                    .collect();
                let out = members
                    .iter()
                    .filter(|(_, m)| m.session == "user-disabled")
                    .count();
                max_out.fetch_max(out, Ordering::SeqCst);
                for (n, m) in members {
                    if m.session == "user-disabled" && m.conns > 0 {
                        let t = *since.entry(n.clone()).or_insert_with(Instant::now);
                        if t.elapsed() > Duration::from_secs(1) {
                            big.set(&n, |m| m.conns = 0);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut toml = format!(
        "[pool]\nname = \"cas\"\nmax_unavailable = 1\nmin_in_service = 2\ncapacity_wait = \"20s\"\n\n[balancer]\ndriver = \"f5\"\nurl = \"{}\"\npool = \"cas_https\"\nusername = \"ebb-maint\"\npassword_env = \"EBB_TEST_F5_RUN_PASSWORD\"\nca_file = \"{}\"\n\n{}",
        big.url,
        big.cert.display(),
        rolling_runbook(d)
    );
    for (i, s) in services.iter().enumerate() {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\nlb_name = \"10.0.0.1{}:443\"\n\n",
            s.name,
            s.addr,
            i + 1
        );
    }
    let plan = plan(d, &toml);
    let (outcome, events, took) = run_engine(plan, d).await;
    stop.store(true, Ordering::SeqCst);
    observer.await.unwrap();

    let failures: Vec<_> = events.iter().filter(|e| e["outcome"] == "failed").collect();
    assert_eq!(outcome.exit_code, 0, "{}: {failures:#?}", outcome.message);
    assert_eq!(max_out.load(Ordering::SeqCst), 1, "max_unavailable");
    assert_updated(d, &names);
    // Every drain waited for its member's client, shown as 1 connection.
    for n in names {
        assert!(
            events.iter().any(|e| e["event"] == "drain_progress"
                && e["member"] == n
                && e["active_connections"] == 1),
            "{n}: {events:#?}"
        );
    }
    // Exactly two changes per member, in order: Disabled (hold), Enabled (return).
    for (name, m) in big.state.lock().unwrap().members.iter() {
        assert_eq!(
            (m.session.as_str(), m.state.as_str()),
            ("monitor-enabled", "up"),
            "{name}"
        );
    }
    let log = big.log();
    for i in 1..=3 {
        let path = format!("/mgmt/tm/ltm/pool/~Common~cas_https/members/~Common~10.0.0.1{i}:443");
        let changes: Vec<String> = log
            .iter()
            .filter(|l| l.method == "PATCH" && l.path == path)
            .map(|l| l.body.clone().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            changes,
            vec![
                r#"{"session":"user-disabled"}"#.to_string(),
                r#"{"session":"user-enabled","state":"user-up"}"#.to_string()
            ],
            "cas{i}"
        );
    }
    let logins = log
        .iter()
        .filter(|l| l.path == "/mgmt/shared/authn/login")
        .count();
    println!(
        "rolling run through the fake BIG-IP: 3 members in {:.1}s, {} requests, {logins} login(s)",
        took.as_secs_f64(),
        log.len()
    );
}
