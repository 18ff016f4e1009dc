//! Adding a balancer driver is one new file and one registration line: a driver that lives
//! only in this test is registered beside the standard ones, its keys are validated with
//! file, line and key in the same pass as the rest of the pool file, and a real run (the
//! engine, the journal, the `local` transport running real commands) drives it.

use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key, Kind, Section};
use ebb_engine::interfaces::{
    Balancer, DriverError, DriverResult, HostState, MemberLbState, Transport,
};
use ebb_engine::plan::{Member, Plan};
use ebb_engine::registry::BalancerDriver;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A balancer kept in memory that writes down every operation, in order.
#[derive(Default)]
struct Ledger {
    label: String,
    /// lb_name -> (host state, initial state).
    states: Mutex<HashMap<String, (HostState, HostState)>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Ledger {
    fn note(&self, op: &str, m: &Member) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {op} {}", self.label, m.lb_name));
    }

    fn update(&self, m: &Member, f: impl FnOnce(&mut (HostState, HostState))) {
        let mut s = self.states.lock().unwrap();
        f(s.entry(m.lb_name.clone())
            .or_insert((HostState::Started, HostState::Started)));
    }
}

#[async_trait]
impl Balancer for Ledger {
    async fn state(&self, m: &Member) -> DriverResult<MemberLbState> {
        let s = self.states.lock().unwrap();
        let (state, _) = s
            .get(&m.lb_name)
            .copied()
            .unwrap_or((HostState::Started, HostState::Started));
        Ok(MemberLbState {
            state,
            healthy: Some(true),
            active_connections: Some(0),
            detail: state.as_str().into(),
        })
    }
    async fn drainstop(&self, m: &Member) -> DriverResult<()> {
        self.note("drainstop", m);
        self.update(m, |s| s.0 = HostState::Stopped);
        Ok(())
    }
    async fn stop(&self, m: &Member) -> DriverResult<()> {
        self.note("stop", m);
        self.update(m, |s| s.0 = HostState::Stopped);
        Ok(())
    }
    async fn start(&self, m: &Member) -> DriverResult<()> {
        self.note("start", m);
        self.update(m, |s| s.0 = HostState::Started);
        Ok(())
    }
    async fn initial_state(&self, m: &Member) -> DriverResult<Option<HostState>> {
        let s = self.states.lock().unwrap();
        Ok(Some(
            s.get(&m.lb_name).map(|s| s.1).unwrap_or(HostState::Started),
        ))
    }
    async fn set_initial_state(&self, m: &Member, state: HostState) -> DriverResult<()> {
        if state == HostState::Draining {
            return Err(DriverError::new("no initial state draining"));
        }
        self.note(&format!("initial-{}", state.as_str()), m);
        self.update(m, |s| s.1 = state);
        Ok(())
    }
}

const KEYS: &[Key] = &[
    Key::required(
        "label",
        Kind::String,
        "written before every entry of the ledger",
    ),
    Key::new(
        "settle",
        Kind::Duration,
        "accepted to show durations are read",
    ),
];

/// The descriptor: the whole of what a new driver provides.
struct LedgerDriver {
    log: Arc<Mutex<Vec<String>>>,
}

impl LedgerDriver {
    fn read(plan: &Plan, cx: &mut Context) -> Option<String> {
        let mut s = Section::new(&plan.balancer.settings, "balancer", KEYS)
            .owned_by("the ledger driver")
            .anchored_at("driver");
        let label = s.req_str(cx, "label", "the ledger driver needs label = \"...\"");
        s.duration(cx, "settle", Duration::from_secs(1));
        s.finish(cx);
        label
    }
}

impl BalancerDriver for LedgerDriver {
    fn name(&self) -> &'static str {
        "ledger"
    }
    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }
    fn validate(&self, plan: &Plan, cx: &mut Context) {
        Self::read(plan, cx);
    }
    fn build(
        &self,
        plan: &Plan,
        _: &[Arc<dyn Transport>],
    ) -> Result<Arc<dyn Balancer>, ConfigErrors> {
        let mut cx = ebb_engine::config::context(plan);
        let label = Self::read(plan, &mut cx).unwrap_or_default();
        cx.into_result(())?;
        Ok(Arc::new(Ledger {
            label,
            log: self.log.clone(),
            ..Ledger::default()
        }))
    }
}

fn pool(dir: &Path, balancer: &str) -> std::path::PathBuf {
    let text = format!(
        "[pool]\nname = \"reg\"\n\n[balancer]\ndriver = \"ledger\"\n{balancer}\n\n\
         [[member]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\n\
         [[member]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n\n\
         [runbook]\nrejoin_timeout = \"5s\"\n\n\
         [[runbook.step]]\nname = \"touch\"\nrun = \"touch updated-{{member}}\"\n"
    );
    let path = dir.join("pool.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn errors(r: Result<Plan, ConfigErrors>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_unregistered_name_is_refused_with_the_registered_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool(dir.path(), "label = \"x\"");
    let e = errors(ebb_engine::config::load(&path, &ebb_drivers::registry()));
    assert!(
        e.contains("pool.toml:5: balancer.driver: expected one of \"builtin\", \"haproxy\", \"nlb\", \"command\", \"nginx\", \"caddy\", \"f5\", found \"ledger\""),
        "{e}"
    );
    let log = Arc::default();
    let registry = ebb_drivers::registry().balancer(LedgerDriver { log });
    let e = errors(ebb_engine::config::load(
        &path.with_file_name("nope.toml"),
        &registry,
    ));
    assert!(e.contains("nope.toml: cannot read the pool file"), "{e}");
    ebb_engine::config::load(&path, &registry).expect("registered now");
}

#[test]
fn a_registered_driver_validates_its_own_keys_with_lines_in_the_same_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool(dir.path(), "settle = \"soon\"\nlable = \"x\"");
    let registry = ebb_drivers::registry().balancer(LedgerDriver {
        log: Arc::default(),
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = text.replace("run = \"touch", "run = \"{nope} touch");
    std::fs::write(&path, broken).unwrap();
    let e = errors(ebb_engine::config::load(&path, &registry));
    for want in [
        "pool.toml:5: balancer: missing key \"label\": the ledger driver needs label",
        "pool.toml:6: balancer.settle: expected a duration",
        "pool.toml:7: balancer.lable: unknown key for the ledger driver (did you mean \"label\"?)",
        "runbook.step[0].run: unknown placeholder {nope}",
    ] {
        assert!(e.contains(want), "{want:?} missing in:\n{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_drives_a_driver_registered_from_a_test() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool(dir.path(), "label = \"L\"\nsettle = \"1m30s\"");
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let registry = ebb_drivers::registry().balancer(LedgerDriver { log: log.clone() });
    let plan = ebb_engine::config::load(&path, &registry).expect("valid");
    let drivers = registry.build(&plan).expect("drivers");
    let journal =
        Arc::new(ebb_engine::journal::Journal::open(&dir.path().join(".ebb")).expect("journal"));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let out = ebb_engine::run::run(
        Arc::new(plan),
        drivers,
        journal,
        Arc::new(|_: &ebb_engine::events::Event| {}),
        ebb_engine::run::RunOptions::default(),
        rx,
    )
    .await
    .expect("run");
    assert_eq!(out.exit_code, 0, "{}", out.message);
    let log = log.lock().unwrap().clone();
    for m in ["a", "b"] {
        assert!(
            dir.path().join(format!("updated-{m}")).exists(),
            "the local transport ran the step on {m}"
        );
        let ops: Vec<&str> = log
            .iter()
            .filter_map(|l| l.strip_suffix(&format!(" {m}")))
            .collect();
        assert_eq!(
            ops,
            [
                "L initial-stopped",
                "L drainstop",
                "L start",
                "L initial-started"
            ],
            "{log:?}"
        );
    }
}
