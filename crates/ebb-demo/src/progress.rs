//! The live view on the terminal (stderr): one line per member, the pool's in-service
//! count, the client traffic, and the engine's latest events. On a terminal it redraws in
//! place; otherwise it prints plain lines (each engine event, and traffic every 5 s).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::rollout::RolloutView;
use crate::supervisor::{MemberStatus, Supervisor};
use crate::traffic::{unix_ms, TrafficStats};
use crate::watch::{LbMember, PoolView};

/// Everything the view reads.
#[derive(Clone)]
pub struct Sources {
    /// Member processes.
    pub supervisor: Arc<Supervisor>,
    /// The balancer's view.
    pub pool: Arc<Mutex<PoolView>>,
    /// The clients' counters.
    pub traffic: Arc<TrafficStats>,
    /// The engine's events.
    pub rollout: Arc<Mutex<RolloutView>>,
}

/// Whether stderr is a terminal.
pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(2) == 1 }
}

/// Runs the view until `stop` is set; prints plain lines from `lines` when not on a tty.
pub async fn run(
    sources: Sources,
    mut lines: mpsc::UnboundedReceiver<String>,
    mut stop: watch::Receiver<bool>,
    started_ms: u64,
) {
    let tty = stderr_is_tty();
    let mut drawn = 0usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(if tty { 250 } else { 5000 }));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                if tty {
                    drawn = redraw(&sources, drawn);
                } else {
                    ebb_out::errln!("{:>6.1}s  {}", elapsed(started_ms), traffic_lines(&sources).join(" ·"));
                }
            }
            line = lines.recv() => {
                if let Some(line) = line {
                    if !tty {
                        ebb_out::errln!("{:>6.1}s  {line}", elapsed(started_ms));
                    }
                }
            }
        }
    }
    if tty {
        redraw(&sources, drawn);
    }
}

fn elapsed(started_ms: u64) -> f64 {
    unix_ms().saturating_sub(started_ms) as f64 / 1000.0
}

/// Redraws the block in place; returns how many lines it drew.
fn redraw(sources: &Sources, previous: usize) -> usize {
    let width = ebb_out::terminal_width();
    // A wrapped line would throw off the cursor-up count: cut every line to the width.
    let lines: Vec<String> = render(sources)
        .into_iter()
        .map(|l| ebb_out::fit(&l, width))
        .collect();
    let mut out = String::new();
    if previous > 0 {
        out.push_str(&format!("\x1b[{previous}A"));
    }
    for line in &lines {
        out.push_str("\x1b[2K");
        out.push_str(line);
        out.push('\n');
    }
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(out.as_bytes());
    let _ = stderr.flush();
    lines.len()
}

/// The lines of the live view.
pub fn render(sources: &Sources) -> Vec<String> {
    let processes = sources.supervisor.status();
    let pool = sources.pool.lock().map(|v| v.clone()).unwrap_or_default();
    let rollout = sources
        .rollout
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let lb: BTreeMap<&str, &LbMember> = pool.members.iter().map(|m| (m.name.as_str(), m)).collect();
    let now = unix_ms();
    let mut lines = Vec::new();
    for (name, status) in &processes {
        lines.push(member_line(
            name,
            status,
            lb.get(name.as_str()).copied(),
            &rollout,
            now,
        ));
    }
    lines.extend(traffic_lines(sources));
    let engine = match (&rollout.waiting, rollout.recent.back()) {
        (Some(reason), _) => format!("waiting: {reason}"),
        (None, Some(last)) => last.clone(),
        (None, None) => "starting…".into(),
    };
    lines.push(format!("  engine: {engine}"));
    lines
}

fn member_line(
    name: &str,
    process: &MemberStatus,
    lb: Option<&LbMember>,
    rollout: &RolloutView,
    now: u64,
) -> String {
    let (lb_state, conns) = match lb {
        Some(m) => (format!("{}/{}", m.state, m.health), m.active_connections),
        None => ("?".into(), 0),
    };
    let step = match rollout.members.get(name) {
        Some(p) if p.state == "running" && !p.step.is_empty() => {
            let secs = now.saturating_sub(p.since_ms) as f64 / 1000.0;
            let drain = p
                .draining_connections
                .map(|n| format!(", {n} conn left"))
                .unwrap_or_default();
            format!("{} [{}] {secs:.1}s{drain}", p.step, p.kind)
        }
        Some(p) if !p.state.is_empty() => p.state.clone(),
        _ => "pending".into(),
    };
    format!(
        "  {name:<6} v{:<4} {:<10} lb {lb_state:<16} {conns:>3} conn  {step}",
        process.version, process.phase
    )
}

fn traffic_lines(sources: &Sources) -> [String; 2] {
    let t = sources.traffic.snapshot();
    let pool = sources.pool.lock().map(|v| v.clone()).unwrap_or_default();
    let versions: Vec<String> = t
        .versions
        .iter()
        .map(|(v, n)| format!("{v}: {n}"))
        .collect();
    [
        format!(
            "  in service {}/{} · {} req/s · {} requests, {} failed · p50 {:.1} ms, p99 {:.1} ms",
            pool.in_service(),
            pool.members.len(),
            t.last_second,
            t.requests,
            t.failed,
            t.p50_ms,
            t.p99_ms,
        ),
        format!(
            "  long streams {} open, {} done, {} cut · answered by version {}",
            t.streams_active,
            t.streams_completed,
            t.cut,
            versions.join(", "),
        ),
    ]
}
