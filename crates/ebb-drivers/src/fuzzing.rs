//! Entry points for the fuzz targets in `fuzz/` and for replaying their committed corpus in
//! the normal test suite (`crates/ebb/tests/fuzz_corpus.rs`). Each takes arbitrary bytes,
//! as read from a balancer or a member, runs the reader on them and checks what it must
//! guarantee whatever the input: no panic, and answers consistent with the input. Not an
//! API: it may change at any time.

use crate::balancer::haproxy::status::{parse_servers_state, parse_stat, to_member_state};
use crate::balancer::nlb::parse as nlb;
use crate::check::logs::{LogSource, LogsSpec};
use crate::check::{logs, services};
use ebb_engine::interfaces::HostState;
use ebb_engine::plan::Shell;
use std::time::Duration;

/// A pool file, read as `ebb run` (the engine, with every registered driver's and
/// transport's validation) and `ebb lb serve` (the balancer) read it: every error names a
/// line of the file (or none), and the readers never panic.
pub fn pool_file(data: &[u8]) {
    thread_local! {
        static REGISTRY: ebb_engine::registry::Registry = crate::registry();
    }
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count() + 1;
    let path = std::path::Path::new("/nonexistent/ebb-fuzz/pool.toml");
    let parsed = REGISTRY.with(|r| ebb_engine::config::parse(&text, path, r));
    match parsed {
        Ok(plan) => assert!(!plan.members.is_empty()),
        Err(errs) => {
            assert!(!errs.0.is_empty());
            for e in &errs.0 {
                assert!(e.line <= lines, "{e} (the file has {lines} lines)");
                assert!(!e.message.is_empty());
            }
        }
    }
    if let Err(errs) = ebb_lb::config::LbConfig::from_pool_text(path, &text, None) {
        for e in &errs.0 {
            assert!(e.line <= lines, "{e}");
        }
    }
}

/// Splits fuzz input into `n` texts at NUL bytes (missing parts are empty).
fn parts(data: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let mut v: Vec<String> = text.splitn(n, '\0').map(String::from).collect();
    v.resize(n, String::new());
    v
}

/// HAProxy's `show stat` CSV, then (after a NUL) `show servers state`, and the member
/// state ebb derives from a row of each.
pub fn haproxy_status(data: &[u8]) {
    let p = parts(data, 2);
    let servers = parse_servers_state(&p[1]).ok();
    if let Ok(rows) = parse_stat(&p[0]) {
        for row in &rows {
            let admin = servers
                .as_ref()
                .and_then(|s| s.get(&(row.backend.clone(), row.server.clone())).copied());
            let st = to_member_state(row, admin);
            // A server with sessions left is never reported as stopped.
            if row.scur + row.qcur > 0 {
                assert_ne!(st.state, HostState::Stopped, "{row:?} {admin:?}");
            }
        }
    }
}

/// `Get-NlbClusterNode` table output, then (after a NUL) `Get-NlbClusterDriverInfo` list
/// output, and the states ebb derives from them.
pub fn nlb_output(data: &[u8]) {
    let p = parts(data, 2);
    if let Ok(rows) = nlb::parse_nodes(&p[0]) {
        for row in &rows {
            let st = nlb::to_member_state(row);
            assert!(!row.name.is_empty() || st.detail == row.state);
            let _ = row.converged() || row.converging();
            let _ = nlb::initial_state(&row.state);
        }
    }
    for key in ["DefaultState", "InitialState", "Name", ""] {
        if let Some(v) = nlb::list_value(&p[1], key) {
            assert_eq!(v, v.trim());
        }
    }
}

/// Service listings (`systemctl list-units` for sh members, then after a NUL the
/// PowerShell `Name|Status` lines), then expected-running and expected-stopped patterns (one per line,
/// after further NULs), judged as a `services` check judges them.
pub fn services_output(data: &[u8]) {
    let p = parts(data, 4);
    let running: Vec<String> = p[2].lines().map(String::from).collect();
    let stopped: Vec<String> = p[3].lines().map(String::from).collect();
    for (shell, states) in [
        (Shell::Sh, services::parse_systemd(&p[0])),
        (Shell::PowerShell, services::parse_windows(&p[1])),
    ] {
        let wrong = services::judge(shell, &states, &running, &stopped);
        // Every expected-running pattern that matches nothing is reported.
        if states.is_empty() {
            assert!(wrong.len() >= running.len(), "{wrong:?}");
        }
        let _ = services::command(shell, &running);
    }
}

/// Log output (journal or event log entries, one per line), then after NULs a log file,
/// the `since` time as text, and fail_on / ignore / expect patterns (one per line), judged
/// as a `logs` check judges them.
pub fn logs_output(data: &[u8]) {
    let p = parts(data, 6);
    let out: Vec<String> = p[0].lines().map(String::from).collect();
    let entries = logs::parse_entries(&out);
    assert!(entries.len() <= out.len());
    let file: Vec<String> = p[1].lines().map(String::from).collect();
    let since: i64 = p[2].trim().parse().unwrap_or(0);
    if let Ok(new) = logs::file_entries_since(&file, since) {
        assert!(new.len() <= file.len());
    }
    for l in &file {
        let _ = logs::line_time(l);
    }
    let lines = |s: &str| -> Vec<String> { s.lines().take(8).map(String::from).collect() };
    let spec = LogsSpec {
        source: LogSource::Journal { unit: None },
        level: None,
        fail_on: lines(&p[3]),
        ignore: lines(&p[4]),
        expect: lines(&p[5]),
        lookback: Duration::from_secs(60),
    };
    let _ = logs::judge(&spec, &entries, &p[2]);
}
