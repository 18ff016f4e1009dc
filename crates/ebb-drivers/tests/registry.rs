//! Adding a balancer driver is one new file and one registration line: a driver that lives
//! only in this test is registered beside the standard ones, its keys are validated with
//! file, line and key in the same pass as the rest of the pool file, and a real run (the
//! engine, the journal, the `local` transport running real commands) drives it. A
//! maintenance kind is the same: one registered from this test reads its own table in a
//! step and is begun and ended by a real run.

use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key, Kind, Section};
use ebb_engine::interfaces::{
    Balancer, DriverError, DriverResult, HostState, MaintenanceStep, MemberLbState, Transport,
};
use ebb_engine::plan::{MaintenanceSpec, Member, Plan};
use ebb_engine::registry::{BalancerDriver, MaintenanceKind};
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

/// Loads, builds and runs the pool file at `path` (its journal beside it), which must end
/// with exit 0.
async fn run_to_the_end(path: &Path, registry: &ebb_engine::registry::Registry) {
    let plan = ebb_engine::config::load(path, registry).expect("valid");
    let drivers = registry.build(&plan).expect("drivers");
    let journal = path.with_file_name(".ebb");
    let journal = Arc::new(ebb_engine::journal::Journal::open(&journal).expect("journal"));
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
    run_to_the_end(&path, &registry).await;
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

/// A maintenance kind that lives only in this test: `note = { tag = "..." }` writes down
/// when maintenance of a member begins and ends.
struct NoteKind {
    log: Arc<Mutex<Vec<String>>>,
}

const NOTE_KEYS: &[Key] = &[Key::required("tag", Kind::String, "written with each note")];

struct Note {
    tag: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl NoteKind {
    fn read(&self, spec: &MaintenanceSpec, cx: &mut Context) -> Option<Note> {
        let mut s = Section::new(&spec.settings, spec.path.clone(), NOTE_KEYS);
        let tag = s.req_str(cx, "tag", "a note needs tag = \"...\"");
        s.finish(cx);
        Some(Note {
            tag: tag?,
            log: self.log.clone(),
        })
    }
}

impl MaintenanceKind for NoteKind {
    fn name(&self) -> &'static str {
        "note"
    }
    fn description(&self) -> &'static str {
        "writes down when maintenance begins and ends"
    }
    fn keys(&self) -> Vec<Key> {
        NOTE_KEYS.to_vec()
    }
    fn validate(&self, spec: &MaintenanceSpec, _: &[Member], cx: &mut Context) {
        self.read(spec, cx);
    }
    fn build(
        &self,
        plan: &Plan,
        spec: &MaintenanceSpec,
    ) -> Result<Arc<dyn MaintenanceStep>, ConfigErrors> {
        let mut cx = ebb_engine::config::context(plan);
        let note = self.read(spec, &mut cx);
        cx.into_result(())?;
        Ok(Arc::new(note.ok_or_else(|| ConfigErrors(Vec::new()))?))
    }
}

#[async_trait]
impl MaintenanceStep for Note {
    async fn begin(&self, m: &Member, _: &str) -> DriverResult<String> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} begin {}", self.tag, m.name));
        Ok(format!("noted {}", m.name))
    }
    async fn end(&self, m: &Member, _: &str, token: &str) -> DriverResult<String> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} end {} ({token})", self.tag, m.name));
        Ok(String::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_kind_registered_from_a_test_is_validated_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = pool(dir.path(), "label = \"L\"");
    let text = std::fs::read_to_string(&path).unwrap();
    let step = "[[runbook.step]]\nname = \"mark\"\nnote = { tga = \"T\" }\n";
    std::fs::write(&path, format!("{text}\n{step}")).unwrap();
    let at = text.lines().count() + 4; // the line of `note = ...`
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let registry = ebb_drivers::registry()
        .balancer(LedgerDriver { log: log.clone() })
        .maintenance(NoteKind { log: log.clone() });
    let e = errors(ebb_engine::config::load(
        &path,
        &ebb_drivers::registry().balancer(LedgerDriver { log: log.clone() }),
    ));
    assert!(
        e.contains(&format!(":{at}: runbook.step[1].note: unknown key")),
        "{e}"
    );
    let e = errors(ebb_engine::config::load(&path, &registry));
    for want in [
        format!("pool.toml:{at}: runbook.step[1].note: missing key \"tag\": a note needs tag"),
        format!("pool.toml:{at}: runbook.step[1].note.tga: unknown key (did you mean \"tag\"?)"),
    ] {
        assert!(e.contains(&want), "{want:?} missing in:\n{e}");
    }
    std::fs::write(&path, format!("{text}\n{}", step.replace("tga", "tag"))).unwrap();
    run_to_the_end(&path, &registry).await;
    let log = log.lock().unwrap().clone();
    for m in ["a", "b"] {
        let ops: Vec<&str> = log
            .iter()
            .map(String::as_str)
            .filter(|l| l.ends_with(&format!(" {m}")) || l.contains(&format!(" {m} (")))
            .collect();
        assert_eq!(
            ops,
            [
                format!("T begin {m}"),
                format!("L initial-stopped {m}"),
                format!("L drainstop {m}"),
                format!("L start {m}"),
                format!("L initial-started {m}"),
                format!("T end {m} (noted {m})"),
            ],
            "the note begins before the member goes out and ends last, when it is back: {log:?}"
        );
    }
}
