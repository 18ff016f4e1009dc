//! The live web view (`ebb run|resume --web ADDR`, `ebb watch --web ADDR`): one read-only
//! page with every member's state, the in-service count over time, the event log and the
//! failing step's output, kept live with server-sent events; and `/metrics` for
//! Prometheus. Everything it shows is read from the journal, so it shows a run started by
//! another ebb the same way as its own.
//!
//! | path | what |
//! |---|---|
//! | `/` | the page (HTML, its script and style embedded in the binary) |
//! | `/state` | the current [`view::View`] as JSON |
//! | `/events` | server-sent events: one `view` event per change |
//! | `/metrics` | Prometheus text format |
//!
//! Off loopback a token is required (`--web-token` or `EBB_WEB_TOKEN`) for `/state`,
//! `/events` and `/metrics`: `Authorization: Bearer TOKEN`, or `?token=TOKEN` (the page
//! passes on the one in its own address, since a browser's EventSource cannot send headers).

mod live;
pub mod metrics;
mod server;
pub mod view;

pub use live::{ConnectionCounts, Feed};
pub use server::WebServer;

use crate::RunSel;
use clap::Args;
use ebb_engine::events::EventSink;
use ebb_engine::plan::Plan;
use std::net::SocketAddr;

/// `--web ADDR` and its token, shared by `run`, `resume` and `watch`.
#[derive(Debug, Args, Clone, Default)]
pub struct WebArgs {
    /// Serve a live page of the run (and /metrics) on this address, e.g. 127.0.0.1:8040.
    #[arg(long, value_name = "ADDR")]
    pub web: Option<String>,
    /// The token the web view requires (needed off loopback): `Authorization: Bearer
    /// TOKEN` or `?token=TOKEN`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "EBB_WEB_TOKEN",
        hide_env_values = true
    )]
    pub web_token: Option<String>,
}

/// Where to serve and what to require.
#[derive(Debug, Clone)]
pub struct WebOptions {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl WebArgs {
    /// The options, or why they cannot be used (a usage error: nothing has started).
    pub fn options(&self) -> Result<Option<WebOptions>, String> {
        let Some(addr) = &self.web else {
            if self.web_token.is_some() {
                return Err("--web-token needs --web ADDR".into());
            }
            return Ok(None);
        };
        let addr: SocketAddr = addr.parse().map_err(|_| {
            format!("--web {addr}: expected IP:PORT, such as 127.0.0.1:8040 or [::1]:8040")
        })?;
        let token = self.web_token.clone().filter(|t| !t.is_empty());
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(format!(
                "--web {addr} is not a loopback address: give a token (--web-token or EBB_WEB_TOKEN) so only those who have it can watch the run"
            ));
        }
        Ok(Some(WebOptions { addr, token }))
    }
}

/// Starts the web view of the run `ebb run|resume` is about to do (with `--web`), and says
/// where it is. The run's own events give the drains' connection counts.
pub async fn serve_run(
    opts: Option<&WebOptions>,
    sel: &RunSel,
    plan: &Plan,
) -> Result<Option<(WebServer, ConnectionCounts)>, String> {
    let Some(opts) = opts else {
        return Ok(None);
    };
    crate::locate::state_dir(sel)
        .ok_or("--web needs the pool file or --state-dir to find the journal")?;
    let counts = ConnectionCounts::default();
    let server = WebServer::start(
        opts,
        Feed {
            sel: sel.clone(),
            pool: Some(plan.pool.name.clone()),
            counts: counts.clone(),
        },
    )
    .await?;
    announce(&server, opts);
    Ok(Some((server, counts)))
}

/// The event sink for the run: `sink`, keeping drains' connection counts for the view.
pub fn tee(web: Option<&(WebServer, ConnectionCounts)>, sink: EventSink) -> EventSink {
    match web {
        Some((_, counts)) => counts.tee(sink),
        None => sink,
    }
}

/// Prints where the page is (to stderr, beside the progress).
pub fn announce(server: &WebServer, opts: &WebOptions) {
    let addr = server.addr();
    ebb_out::errln!(
        "ebb: live view at http://{addr}/{}, metrics at http://{addr}/metrics",
        if opts.token.is_some() {
            "?token=TOKEN"
        } else {
            ""
        }
    );
}
