//! A whole rolling run through the engine over members behind a real nginx, under steady
//! HTTP load with long-lived streams: every member is held (`down`), drained (waiting for
//! its stream to close), its service stopped and updated, verified and returned, and not
//! one request fails.

mod support;

use std::sync::Arc;
use support::nginx::{balancer_toml, Nginx};
use support::web::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_run_behind_nginx_under_load_fails_no_request() {
    rolling_run(&["web1", "web2", "web3"], 1).await;
}

/// Two members out at once: their changes to the one upstream file are serialized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_at_a_time_behind_nginx_under_load_fails_no_request() {
    rolling_run(&["web1", "web2", "web3", "web4"], 2).await;
}

/// The members whose line (`# NAME` at its end) carries `down`, read from the file.
fn down_members(file: &std::path::Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(file).ok()?;
    Some(
        text.lines()
            .filter(|l| l.trim_start().starts_with("server ") && l.contains(" down;"))
            .filter_map(|l| l.rsplit_once("# ").map(|(_, n)| n.to_string()))
            .collect(),
    )
}

async fn rolling_run(names: &[&str], max_unavailable: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let members = start_members(d, names).await;
    let upstream: String = members
        .iter()
        .map(|m| {
            format!(
                "server {} max_fails=1 fail_timeout=2s;  # {}\n",
                m.addr, m.name
            )
        })
        .collect();
    let nginx = Nginx::start(d, &upstream);
    let mut toml = format!(
        "[pool]\nname = \"web\"\nmax_unavailable = {max_unavailable}\nmin_in_service = 2\ncapacity_wait = \"20s\"\n\n{}\n{}",
        balancer_toml(&nginx),
        rolling_runbook(d)
    );
    for m in &members {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            m.name, m.addr
        );
    }
    let file = nginx.upstream_file.clone();
    let out: OutNow = Arc::new(move || down_members(&file));
    let report = rolling_run_under_load(d, &nginx.frontend, &toml, names.len(), out).await;
    report.assert_clean(d, names, max_unavailable);
    // Everything back: the file is the user's again, byte for byte.
    assert_eq!(nginx.upstream(), upstream);
    println!("{}", report.summary("nginx", names.len()));
}
