//! The engine's own overhead: a pool of N members (default 10,000) on a balancer and a
//! transport that do nothing, through the real scheduler, policy checks and journal.
//! Prints a table: time per step transition (journal included) and peak memory.
//!
//! `cargo run --release -p ebb-engine --example engine_overhead -- [MEMBERS]`

use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key, Kind, Section};
use ebb_engine::events::{Event, EventSink};
use ebb_engine::interfaces::*;
use ebb_engine::journal::Journal;
use ebb_engine::plan::{CheckSpec, Member, Plan};
use ebb_engine::registry::{BalancerDriver, CheckKind, Registry, TransportKind};
use ebb_engine::run::{run, RunOptions};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A balancer that only remembers states in memory.
/// Like a balancer with an event stream, it reports which members changed since the
/// engine last asked (`pool_changes`), so the engine need not read the whole pool.
#[derive(Default)]
struct NopBalancer {
    states: Mutex<HashMap<String, (HostState, HostState)>>,
    changed: Mutex<HashSet<String>>,
    index: std::sync::OnceLock<HashMap<String, usize>>,
}

impl NopBalancer {
    fn get(&self, m: &Member) -> (HostState, HostState) {
        *self
            .states
            .lock()
            .unwrap()
            .entry(m.lb_name.clone())
            .or_insert((HostState::Started, HostState::Started))
    }
    fn set(&self, m: &Member, f: impl FnOnce(&mut (HostState, HostState))) {
        let mut s = self.states.lock().unwrap();
        f(s.entry(m.lb_name.clone())
            .or_insert((HostState::Started, HostState::Started)));
        self.changed.lock().unwrap().insert(m.lb_name.clone());
    }
}

fn lb_state(s: HostState) -> MemberLbState {
    MemberLbState {
        state: s,
        healthy: Some(true),
        active_connections: Some(0),
        detail: String::new(),
    }
}

#[async_trait]
impl Balancer for NopBalancer {
    async fn state(&self, m: &Member) -> DriverResult<MemberLbState> {
        Ok(lb_state(self.get(m).0))
    }
    async fn pool_changes(
        &self,
        members: &[Member],
    ) -> Option<Vec<(usize, DriverResult<MemberLbState>)>> {
        let changed = std::mem::take(&mut *self.changed.lock().unwrap());
        let index = self
            .index
            .get_or_init(|| ebb_engine::plan::index_by_lb_name(members));
        Some(
            changed
                .into_iter()
                .filter_map(|name| {
                    let i = *index.get(&name)?;
                    Some((i, Ok(lb_state(self.get(&members[i]).0))))
                })
                .collect(),
        )
    }
    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        self.changed.lock().unwrap().clear();
        let s = self.states.lock().unwrap();
        members
            .iter()
            .map(|m| {
                Ok(lb_state(
                    s.get(&m.lb_name).map_or(HostState::Started, |x| x.0),
                ))
            })
            .collect()
    }
    async fn drainstop(&self, m: &Member) -> DriverResult<()> {
        self.set(m, |s| s.0 = HostState::Stopped);
        Ok(())
    }
    async fn stop(&self, m: &Member) -> DriverResult<()> {
        self.set(m, |s| s.0 = HostState::Stopped);
        Ok(())
    }
    async fn start(&self, m: &Member) -> DriverResult<()> {
        self.set(m, |s| s.0 = HostState::Started);
        Ok(())
    }
    async fn initial_state(&self, m: &Member) -> DriverResult<Option<HostState>> {
        Ok(Some(self.get(m).1))
    }
    async fn set_initial_state(&self, m: &Member, st: HostState) -> DriverResult<()> {
        self.set(m, |s| s.1 = st);
        Ok(())
    }
}

struct NopTransport;

#[async_trait]
impl Transport for NopTransport {
    async fn run(
        &self,
        _: &str,
        _: &BTreeMap<String, String>,
        _: Duration,
        _: Option<OutputSink>,
    ) -> DriverResult<CommandOutcome> {
        Ok(CommandOutcome {
            exit_code: Some(0),
            timed_out: false,
            tail: String::new(),
            connection_lost: false,
            signal: None,
        })
    }
    async fn boot_id(&self) -> DriverResult<String> {
        Ok("boot".into())
    }
}

struct NopChecker;

#[async_trait]
impl Checker for NopChecker {
    async fn check_in(
        &self,
        _: &CheckSpec,
        _: &Member,
        _: &dyn Transport,
        _: &CheckContext,
    ) -> Result<String, String> {
        Ok(String::new())
    }
}

/// Check kind `command = "..."` whose check always passes at once: the verify table of the
/// benchmark's runbook needs a registered kind, and its cost is not what is measured.
#[derive(Debug)]
struct NopCheck;

#[async_trait]
impl Check for NopCheck {
    async fn run(
        &self,
        _: &Member,
        _: &dyn Transport,
        _: &CheckContext,
        _: Duration,
    ) -> Result<String, String> {
        Ok(String::new())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl CheckKind for NopCheck {
    fn name(&self) -> &'static str {
        "command"
    }
    fn value(&self) -> Kind {
        Kind::String
    }
    fn description(&self) -> &'static str {
        "passes at once"
    }
    fn example(&self) -> &'static str {
        "command = \"true\""
    }
    fn keys(&self) -> Vec<Key> {
        Vec::new()
    }
    fn validate(&self, _: &mut Context, _: &str, _: &toml::Value) {}
    fn build(&self, _: &Context, _: &str, _: &toml::Value) -> Result<Arc<dyn Check>, ConfigErrors> {
        Ok(Arc::new(NopCheck))
    }
}

/// CPU time (user + system) this process used so far, in seconds: on a loaded machine
/// the wall time per transition includes waiting for a core, the CPU time does not.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime
    // the 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Registers the balancer and the transport above as `nop`.
struct Nop;

impl BalancerDriver for Nop {
    fn name(&self) -> &'static str {
        "nop"
    }
    fn keys(&self) -> Vec<Key> {
        Vec::new()
    }
    fn validate(&self, plan: &Plan, cx: &mut Context) {
        Section::new(&plan.balancer.settings, "balancer", &[]).finish(cx);
    }
    fn build(&self, _: &Plan, _: &[Arc<dyn Transport>]) -> Result<Arc<dyn Balancer>, ConfigErrors> {
        Ok(Arc::new(NopBalancer::default()))
    }
}

impl TransportKind for Nop {
    fn name(&self) -> &'static str {
        "nop"
    }
    fn keys(&self) -> Vec<Key> {
        Vec::new()
    }
    fn validate(&self, _: &mut Context, _: &mut Section<'_>) {}
    fn knows_boot_identity(&self) -> bool {
        true
    }
    fn build(&self, _: &Plan, _: &Member) -> Result<Arc<dyn Transport>, ConfigErrors> {
        Ok(Arc::new(NopTransport))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    // EBB_BENCH_ETCD=http://HOST:PORT: the journal and lock in that etcd (bench/engine/run-etcd.sh).
    let etcd = std::env::var("EBB_BENCH_ETCD").ok();
    let m = measure(n, etcd.as_deref()).await;
    if let Some(ep) = &etcd {
        println!("journal and lock in etcd {ep}");
    }
    println!("| members | transitions | run time | per transition | CPU per transition | config parse | peak RSS | journal size |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {} | {:.2} s | {:.3} ms | {:.3} ms | {:.2} s | {:.1} MiB | {:.1} MiB |",
        m.transitions,
        m.run.as_secs_f64(),
        m.run.as_secs_f64() * 1000.0 / m.transitions.max(1) as f64,
        m.cpu * 1000.0 / m.transitions.max(1) as f64,
        m.parse.as_secs_f64(),
        peak_rss_mib(),
        m.journal_mib
    );
}

/// What one run of the benchmark measured.
struct Measured {
    /// Step transitions (`StepFinished` events).
    transitions: usize,
    /// Wall time of the run.
    run: Duration,
    /// CPU seconds the process used during the run.
    cpu: f64,
    /// Reading the pool file.
    parse: Duration,
    /// The SQLite journal's size at the end (0 with etcd).
    journal_mib: f64,
}

/// Runs a pool of `n` members through the engine, its journal in SQLite or in the etcd at
/// `etcd`; panics if the run does not end done.
async fn measure(n: usize, etcd: Option<&str>) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from(
        "[pool]\nname = \"bench\"\nmax_unavailable = 1\n\n[balancer]\ndriver = \"nop\"\n\n\
         [runbook.drain]\ntimeout = \"1m\"\n\n[[runbook.step]]\nname = \"pause\"\nrun = \"pause {member}\"\nundo = \"resume {member}\"\n\n\
         [[runbook.step]]\nname = \"update\"\nrun = \"update {member}\"\n\n[[runbook.verify]]\nname = \"ok\"\ncommand = \"true\"\n\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[member]]\nname = \"m{i}\"\naddress = \"10.0.{}.{}:80\"\n\n",
            i / 250,
            i % 250
        ));
    }
    let path = dir.path().join("pool.toml");
    std::fs::write(&path, &text).expect("write");
    let t0 = Instant::now();
    let registry = Registry::new()
        .balancer(Nop)
        .transport(Nop)
        .check(NopCheck)
        .checker(NopChecker);
    let plan = Arc::new(ebb_engine::config::load(&path, &registry).expect("valid plan"));
    let parse = t0.elapsed();
    let drivers = registry.build(&plan).expect("drivers");
    let journal = Arc::new(match etcd {
        Some(ep) => {
            let spec = ebb_engine::plan::StateSpec {
                backend: ebb_engine::plan::StateBackend::Etcd,
                endpoints: vec![ep.to_string()],
                prefix: format!("/bench-{}", std::process::id()),
                ..Default::default()
            };
            Journal::with_store(Box::new(
                ebb_engine::journal::etcd::EtcdJournal::open(&spec, "bench").expect("etcd journal"),
            ))
        }
        None => Journal::open(&dir.path().join("state")).expect("journal"),
    });
    let transitions = Arc::new(AtomicUsize::new(0));
    let t = transitions.clone();
    let sink: EventSink = Arc::new(move |e: &Event| {
        if matches!(e, Event::StepFinished { .. }) {
            t.fetch_add(1, Ordering::Relaxed);
        }
    });
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let t1 = Instant::now();
    let cpu0 = cpu_seconds();
    let out = run(plan, drivers, journal, sink, RunOptions::default(), rx)
        .await
        .expect("run");
    let elapsed = t1.elapsed();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!(out.exit_code, 0, "{}", out.message);
    Measured {
        transitions: transitions.load(Ordering::Relaxed),
        run: elapsed,
        cpu,
        parse,
        journal_mib: std::fs::metadata(dir.path().join("state/journal.db"))
            .map(|m| m.len() as f64 / 1048576.0)
            .unwrap_or(0.0),
    }
}

/// The benchmark's own code path with a small pool, run by `cargo test` (Cargo.toml sets
/// `test = true` for this example): the example panicked for weeks without anyone noticing
/// (its verify check's kind was not registered) because nothing ran it.
#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_members_go_through_every_operation() {
        let m = super::measure(50, None).await;
        // hold, drain, pause, update, verify, return, pool-check: 7 per member.
        assert_eq!(m.transitions, 7 * 50);
        assert!(m.journal_mib > 0.0, "the run wrote no SQLite journal");
    }
}
