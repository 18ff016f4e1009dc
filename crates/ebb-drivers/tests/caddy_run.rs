//! A whole rolling run through the engine over members behind a real Caddy, under steady
//! HTTP load with long-lived streams: every member's upstream is parked (out of the
//! handler), drained (waiting for its stream to close), its service stopped and updated,
//! verified and put back exactly where it stood, and no request fails but the few that
//! Caddy 2.6 itself resets at a config change (one change per member out, one back).

mod support;

use std::sync::Arc;
use support::caddy::Caddy;
use support::web::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_run_behind_caddy_under_load_fails_no_request() {
    rolling_run(&["web1", "web2", "web3"], 1).await;
}

/// Two members out at once: their admin-API changes are serialized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_at_a_time_behind_caddy_under_load_fails_no_request() {
    rolling_run(&["web1", "web2", "web3", "web4"], 2).await;
}

async fn rolling_run(names: &[&str], max_unavailable: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let members = start_members(d, names).await;
    let addrs: Vec<_> = members.iter().map(|m| m.addr).collect();
    let caddy = Arc::new(Caddy::start(d, &addrs));
    let original = caddy.dials().unwrap();
    let mut toml = format!(
        "[pool]\nname = \"web\"\nmax_unavailable = {max_unavailable}\nmin_in_service = 2\ncapacity_wait = \"20s\"\n\n[balancer]\ndriver = \"caddy\"\nadmin = \"{}\"\nhandler_id = \"web\"\n\n{}",
        caddy.admin,
        rolling_runbook(d)
    );
    for m in &members {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            m.name, m.addr
        );
    }
    // Out = not among the handler's upstreams, read from the admin API.
    let out: OutNow = {
        let caddy = caddy.clone();
        let by_addr: Vec<(String, String)> = members
            .iter()
            .map(|m| (m.addr.to_string(), m.name.clone()))
            .collect();
        Arc::new(move || {
            let dials = caddy.dials()?;
            Some(
                by_addr
                    .iter()
                    .filter(|(a, _)| !dials.contains(a))
                    .map(|(_, n)| n.clone())
                    .collect(),
            )
        })
    };
    let report = rolling_run_under_load(d, &caddy.frontend, &toml, names.len(), out).await;
    // Caddy 2.6 resets connections that arrive while it swaps listeners at a config
    // change, with or without ebb (caddy_reload.rs measures it alone); anything else fails.
    report.assert_clean_but(d, names, max_unavailable, Some("Connection reset by peer"));
    assert_eq!(
        caddy.dials().unwrap(),
        original,
        "every upstream back in its place"
    );
    let config = caddy.admin_get("/config/").unwrap();
    assert!(!config.contains("ebb-parked"), "{config}");
    println!("{}", report.summary("Caddy", names.len()));
}
