//! `GET /metrics`: Prometheus text exposition of members and listeners.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::pool::Pool;
use crate::proxy::ListenerStats;
use crate::status::{Health, HostState, InitialState};

/// Renders every metric.
pub(crate) fn render(pool: &Pool, listeners: &[Arc<ListenerStats>], threads: &[usize]) -> String {
    let members = pool.statuses();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let m = |name: &str| format!("member=\"{}\"", escape(name));
    family(
        "ebb_lb_member_active_connections",
        "gauge",
        "Client connections open to the member.",
        members
            .iter()
            .map(|s| (m(&s.name), s.active_connections))
            .collect(),
    );
    family(
        "ebb_lb_member_connections_total",
        "counter",
        "Client connections sent to the member since the balancer started.",
        members
            .iter()
            .map(|s| (m(&s.name), s.total_connections))
            .collect(),
    );
    family(
        "ebb_lb_member_connect_failures_total",
        "counter",
        "Connections to the member that could not be opened (refused, timed out).",
        members
            .iter()
            .map(|s| (m(&s.name), s.connect_failures))
            .collect(),
    );
    family(
        "ebb_lb_member_resets_total",
        "counter",
        "Connections to the member that ended with an error on its side (reset, broken).",
        members.iter().map(|s| (m(&s.name), s.resets)).collect(),
    );
    family(
        "ebb_lb_member_bytes_in_total",
        "counter",
        "Bytes from clients to the member.",
        members.iter().map(|s| (m(&s.name), s.bytes_in)).collect(),
    );
    family(
        "ebb_lb_member_bytes_out_total",
        "counter",
        "Bytes from the member to clients.",
        members.iter().map(|s| (m(&s.name), s.bytes_out)).collect(),
    );
    let states = [HostState::Started, HostState::Draining, HostState::Stopped];
    family(
        "ebb_lb_member_state",
        "gauge",
        "Host state of the member: 1 for its current state, 0 for the others.",
        members
            .iter()
            .flat_map(|s| {
                states.iter().map(move |st| {
                    (
                        format!("{},state=\"{st}\"", m(&s.name)),
                        u64::from(s.state == *st),
                    )
                })
            })
            .collect(),
    );
    let initials = [InitialState::Started, InitialState::Stopped];
    family(
        "ebb_lb_member_initial_state",
        "gauge",
        "Initial host state of the member: 1 for its current value, 0 for the other.",
        members
            .iter()
            .flat_map(|s| {
                initials.iter().map(move |st| {
                    (
                        format!("{},initial_state=\"{st}\"", m(&s.name)),
                        u64::from(s.initial_state == *st),
                    )
                })
            })
            .collect(),
    );
    let healths = [Health::Up, Health::Down, Health::Unknown];
    family(
        "ebb_lb_member_health",
        "gauge",
        "Health of the member: 1 for its current verdict, 0 for the others.",
        members
            .iter()
            .flat_map(|s| {
                healths.iter().map(move |h| {
                    (
                        format!("{},health=\"{h}\"", m(&s.name)),
                        u64::from(s.health == *h),
                    )
                })
            })
            .collect(),
    );
    let l = |s: &ListenerStats| format!("listener=\"{}\"", s.addr);
    family(
        "ebb_lb_listener_accepted_total",
        "counter",
        "Client connections accepted on the listener.",
        listeners
            .iter()
            .map(|s| (l(s), s.accepted.load(Relaxed)))
            .collect(),
    );
    family(
        "ebb_lb_listener_refused_total",
        "counter",
        "Client connections closed because no member could take them.",
        listeners
            .iter()
            .map(|s| (l(s), s.refused.load(Relaxed)))
            .collect(),
    );
    family(
        "ebb_lb_thread_active_connections",
        "gauge",
        "Client connections each of the balancer's data-plane threads serves (one thread per core).",
        threads
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("thread=\"{i}\""), n as u64))
            .collect(),
    );
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
