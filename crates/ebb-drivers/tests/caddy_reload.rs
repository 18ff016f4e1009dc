//! What a Caddy admin-API change really does to connections, measured against the real
//! Caddy (Debian's 2.6.2): the facts a `caddy` balancer driver has to be built on
//! (docs/caddy.md). Every change through the admin API is a config reload:
//!
//! - long responses (event streams) through Caddy survive it, on every member, including
//!   one whose upstream was removed;
//! - upgraded connections (WebSockets) through Caddy are closed by it, on every member,
//!   not only the one removed (Caddy 2.6 has no `stream_close_delay`: it rejects the key);
//! - a removed upstream disappears from `GET /reverse_proxy/upstreams` at once, while its
//!   requests still run: its `num_requests` (1 for an open stream just before) cannot be
//!   read any more, so that endpoint alone cannot tell when a drain has ended (the driver
//!   keeps the upstream named in a never-matching route while it is out, which keeps it);
//! - under load, a change resets a few client connections arriving at that instant.

mod support;

use ebb_drivers::http::request;
use std::time::Duration;
use support::caddy::Caddy;
use support::web::*;

const T: Duration = Duration::from_secs(5);

async fn upstreams(c: &Caddy) -> serde_json::Value {
    let r = request(
        "GET",
        &format!("{}/reverse_proxy/upstreams", c.admin),
        None,
        &[],
        T,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn num_requests(ups: &serde_json::Value, addr: &str) -> Option<u64> {
    ups.as_array()?
        .iter()
        .find(|u| u["address"] == addr)
        .and_then(|u| u["num_requests"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_change_closes_every_upgraded_connection_and_hides_the_removed_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let members = start_members(dir.path(), &["web1", "web2", "web3"]).await;
    let addrs: Vec<_> = members.iter().map(|m| m.addr).collect();
    let c = Caddy::start(dir.path(), &addrs);
    let web1 = addrs[0].to_string();

    let stream1 = long_to(&c.frontend, "web1", false).await;
    let stream2 = long_to(&c.frontend, "web2", false).await;
    let ws2 = long_to(&c.frontend, "web2", true).await;
    let ws3 = long_to(&c.frontend, "web3", true).await;
    assert!(stream1.alive().await && ws2.alive().await && ws3.alive().await);
    // While the upstream is in the handler, its stream is counted.
    let before = upstreams(&c).await;
    assert_eq!(num_requests(&before, &web1), Some(1), "{before}");

    // Drain web1 the way the admin API allows: remove its upstream from the handler.
    let r = request(
        "DELETE",
        &format!("{}/id/web/upstreams/0", c.admin),
        None,
        &[],
        T,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // Long responses go on, the removed member's too.
    assert!(stream1.alive().await, "the removed member's stream was cut");
    assert!(stream2.alive().await, "another member's stream was cut");
    // Upgraded connections are closed, on members that were not touched.
    assert!(
        support::eventually(T, || async { ws2.ended() && ws3.ended() }).await,
        "Caddy kept the WebSockets open across the reload: the driver's check warning is out of date"
    );
    // The removed upstream is gone from the status endpoint while its stream runs.
    let after = upstreams(&c).await;
    assert_eq!(num_requests(&after, &web1), None, "{after}");
    assert!(stream1.alive().await);

    // Caddy 2.6 has no stream_close_delay to keep them.
    let r = request(
        "POST",
        &format!("{}/id/web/stream_close_delay", c.admin),
        Some("\"10m\""),
        &[],
        T,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("unknown field \\\"stream_close_delay\\\""),
        "{}",
        r.body
    );
}

/// Config changes that change nothing a client could notice (a limit no one reaches),
/// under the same load as the rolling runs: what Caddy's reloads cost by themselves.
/// Caddy 2.6 opens a new listening socket (SO_REUSEPORT) at each change and closes the
/// old one; connections waiting in the old one's queue are reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_alone_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let members = start_members(dir.path(), &["web1", "web2", "web3"]).await;
    let addrs: Vec<_> = members.iter().map(|m| m.addr).collect();
    let c = Caddy::start(dir.path(), &addrs);
    let load = web_load(&c.frontend, 4, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reloads = 40;
    for i in 0..reloads {
        let r = request(
            "PATCH",
            &format!("{}/id/web/upstreams/0", c.admin),
            Some(&format!(
                "{{\"dial\": \"{}\", \"max_requests\": {}}}",
                addrs[0],
                1000 + i
            )),
            &[],
            T,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let errors = load.errors.lock().unwrap().clone();
    let (ok, failed) = load.finish().await;
    println!(
        "{reloads} Caddy config changes under load: {ok} requests, {failed} failed: {errors:?}"
    );
    // Only ever resets of connections that arrived at a change: nothing is refused or
    // answered wrongly.
    assert!(ok > 100, "too little load to mean anything: {ok}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("Connection reset by peer")),
        "{errors:?}"
    );
}
