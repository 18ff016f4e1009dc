//! `ebb watch [POOL] --web ADDR`: the live web view of the latest run of a pool, read from
//! its journal, also a run another ebb (here or on another host sharing the state dir) is
//! doing. Until Ctrl-C; it changes nothing.

use crate::locate::{load_plan, open_journal, pool_name, state_dir, EXIT_USAGE};
use crate::web::{announce, ConnectionCounts, Feed, WebArgs, WebServer};
use crate::RunSel;
use std::path::PathBuf;
use std::sync::Arc;

pub async fn watch(sel: &RunSel, web: &WebArgs) -> i32 {
    let opts = match web.options() {
        Ok(Some(o)) => o,
        Ok(None) => {
            ebb_out::errln!(
                "ebb watch: give --web ADDR (e.g. --web 127.0.0.1:8040): where to serve the page"
            );
            return EXIT_USAGE;
        }
        Err(e) => {
            ebb_out::errln!("ebb watch: {e}");
            return EXIT_USAGE;
        }
    };
    let journal = match open_journal(sel, true) {
        Ok(j) => j,
        Err(c) => return c,
    };
    if state_dir(sel).is_none() {
        return EXIT_USAGE;
    }
    if let Some(p) = &sel.pool {
        if load_plan(p).is_none() {
            return EXIT_USAGE;
        }
    }
    let pool = pool_name(sel);
    // The pool file (given, or the one the latest run used) lets the page show a draining
    // member's connections, asked of the balancer.
    let pool_file = match &sel.pool {
        Some(p) => Some(p.clone()),
        None => journal
            .latest_run(pool.as_deref())
            .ok()
            .flatten()
            .map(|r| PathBuf::from(r.pool_file)),
    };
    drop(journal);
    let counts = ConnectionCounts::default();
    let server = match WebServer::start(
        &opts,
        Feed {
            sel: sel.clone(),
            pool,
            counts: counts.clone(),
        },
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            ebb_out::errln!("ebb watch: {e}");
            return EXIT_USAGE;
        }
    };
    announce(&server, &opts);
    match pool_file.map(|p| ebb_engine::config::load(&p, &ebb_drivers::registry()).map(|plan| (p, plan))) {
        Some(Ok((_, plan))) => match ebb_drivers::build(&plan) {
            Ok(drivers) => server.poll_balancer(counts, drivers.balancer, Arc::new(plan)),
            Err(e) => ebb_out::errln!(
                "ebb watch: connection counts of draining members will not be shown: {}",
                e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
            ),
        },
        Some(Err(e)) => ebb_out::errln!(
            "ebb watch: connection counts of draining members will not be shown (the pool file does not load: {e})"
        ),
        None => {}
    }
    wait_for_signal().await;
    0
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term_fut = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term_fut => {}
    }
}
