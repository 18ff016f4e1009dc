//! Runs a plan against the fakes with a real journal in a temporary directory.

use super::reads::{CountingStore, JournalReads};
use super::{FakeBalancer, FakeChecker, FakeMaintenance, FakeTransport, Interrupt, Recorder};
use crate::events::{Event, EventSink};
use crate::journal::{ActionRecord, Journal, MemberRecord, MemberState, RunRecord};
use crate::member::Drivers;
use crate::plan::Plan;
use crate::run::{RunError, RunOptions, RunOutcome};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How a run driven by the harness ended.
#[derive(Debug)]
pub enum Ended {
    /// The engine returned.
    Finished(Result<RunOutcome, RunError>),
    /// The trip wire killed it (its future was dropped where it stood).
    Killed,
}

/// A plan, its fakes, a journal, and the events of every run so far.
pub struct Harness {
    /// The plan every run uses.
    pub plan: Arc<Plan>,
    /// The log every fake writes to (and the trip wire).
    pub log: Recorder,
    /// The balancer.
    pub balancer: Arc<FakeBalancer>,
    /// One transport per member, in plan order.
    pub transports: Vec<Arc<FakeTransport>>,
    /// The checks.
    pub checker: Arc<FakeChecker>,
    /// Monitoring maintenance and the alert gate.
    pub maintenance: Arc<FakeMaintenance>,
    /// The journal, in a temporary directory that lives as long as the harness.
    pub journal: Arc<Journal>,
    /// What has been read from the journal so far (by the runs and by the harness).
    pub reads: Arc<JournalReads>,
    events: Arc<Mutex<Vec<Event>>>,
    shutdown: Arc<watch::Sender<bool>>,
    /// Bound on any one call of the engine; a run that outlasts it fails the test.
    pub bound: Duration,
    /// The clock every run judges maintenance windows by (it starts at the real time).
    pub clock: Arc<super::TestClock>,
    _dir: tempfile::TempDir,
}

/// The journal of one harness: SQLite in `dir`, or, with `EBB_TEST_ETCD=http://HOST:PORT`
/// (scripts/test.sh sets it for a second pass of the engine tests), the etcd backend under
/// a prefix of its own.
/// Its reads are counted in `reads`.
fn journal_for(plan: &Plan, dir: &std::path::Path, reads: Arc<JournalReads>) -> Journal {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let inner: Box<dyn crate::journal::Store> = match std::env::var("EBB_TEST_ETCD") {
        Ok(ep) if !ep.is_empty() => {
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let spec = crate::plan::StateSpec {
                backend: crate::plan::StateBackend::Etcd,
                endpoints: vec![ep],
                prefix: format!("/harness-{}-{n}", std::process::id()),
                ..Default::default()
            };
            Box::new(
                crate::journal::etcd::EtcdJournal::open(&spec, &plan.pool.name)
                    .unwrap_or_else(|e| panic!("{e}")),
            )
        }
        _ => Box::new(crate::journal::SqliteJournal::open(dir).unwrap_or_else(|e| panic!("{e}"))),
    };
    Journal::with_store(Box::new(CountingStore { inner, reads }))
}

impl Harness {
    /// Fakes for every member of `plan` (all started, healthy, initial state started).
    pub fn new(plan: Plan) -> Harness {
        // On tmpfs where there is one: the journal's fsyncs are then free, and a loaded
        // disk does not set the pace of hundreds of runs.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("ebb-harness")
                .tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        let dir = dir.unwrap_or_else(|e| panic!("temporary dir: {e}"));
        let reads = Arc::new(JournalReads::default());
        let journal = journal_for(&plan, dir.path(), reads.clone());
        let shutdown = Arc::new(watch::channel(false).0);
        let log = Recorder::new(shutdown.clone());
        Harness {
            balancer: Arc::new(FakeBalancer::new(log.clone(), &plan.members)),
            transports: plan
                .members
                .iter()
                .map(|m| Arc::new(FakeTransport::new(log.clone(), &m.name)))
                .collect(),
            checker: Arc::new(FakeChecker::new(log.clone())),
            maintenance: Arc::new(FakeMaintenance::new(log.clone())),
            plan: Arc::new(plan),
            log,
            journal: Arc::new(journal),
            reads,
            events: Arc::default(),
            shutdown,
            bound: Duration::from_secs(20),
            clock: Arc::new(super::TestClock::at(jiff::Timestamp::now())),
            _dir: dir,
        }
    }

    /// The fake transport of `member`.
    pub fn transport(&self, member: &str) -> &FakeTransport {
        match self.plan.member_index(member) {
            Some(i) => &self.transports[i],
            None => panic!("no member \"{member}\" in the plan"),
        }
    }

    /// The drivers a run gets.
    pub fn drivers(&self) -> Drivers {
        Drivers {
            balancer: self.balancer.clone(),
            transports: self
                .transports
                .iter()
                .map(|t| t.clone() as Arc<dyn crate::interfaces::Transport>)
                .collect(),
            checker: self.checker.clone(),
            maintenance: self.maintenance.clone(),
        }
    }

    fn sink(&self) -> EventSink {
        let events = self.events.clone();
        Arc::new(move |e: &Event| {
            events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.clone())
        })
    }

    /// Bounds `f` by [`Harness::bound`], failing the test with the log when it hangs.
    async fn bounded<T>(&self, what: &str, f: impl std::future::Future<Output = T>) -> T {
        match tokio::time::timeout(self.bound, f).await {
            Ok(v) => v,
            Err(_) => panic!(
                "{what} did not end within {:?}; calls so far:\n{}",
                self.bound,
                self.log.dump()
            ),
        }
    }

    /// Runs (or with `opts.resume`, resumes) until the engine returns or the trip wire
    /// kills it.
    pub async fn start(&self, opts: RunOptions) -> Ended {
        self.shutdown.send_replace(false);
        self.log.take_fired();
        let run = crate::run::run(
            self.plan.clone(),
            self.drivers(),
            self.journal.clone(),
            self.sink(),
            RunOptions {
                clock: crate::window::ClockRef(self.clock.clone()),
                ..opts
            },
            self.shutdown.subscribe(),
        );
        self.killable("the run", run).await
    }

    /// Drives `f` until it ends or the trip wire kills it (drops it where it stands).
    async fn killable(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<RunOutcome, RunError>>,
    ) -> Ended {
        let log = self.log.clone();
        let killed = async move {
            loop {
                log.wait_fired().await;
                if log.fired_how() == Some(Interrupt::Kill) {
                    break;
                }
            }
        };
        self.bounded(what, async {
            tokio::select! {
                r = f => Ended::Finished(r),
                _ = killed => Ended::Killed,
            }
        })
        .await
    }

    fn finished(&self, ended: Ended, what: &str) -> RunOutcome {
        match ended {
            Ended::Finished(Ok(o)) => o,
            Ended::Finished(Err(e)) => {
                panic!("{what} was refused: {e}\ncalls:\n{}", self.log.dump())
            }
            Ended::Killed => panic!("{what} was killed by the trip wire"),
        }
    }

    /// A new run that must end (done, halted, paused): its outcome.
    pub async fn run(&self) -> RunOutcome {
        let ended = self.start(RunOptions::default()).await;
        self.finished(ended, "the run")
    }

    /// `ebb resume` that must end: its outcome.
    pub async fn resume(&self) -> RunOutcome {
        self.resume_with(RunOptions::default()).await
    }

    /// `ebb resume` with `--assume-done`/`--rerun` (`opts.resume` is set here).
    pub async fn resume_with(&self, opts: RunOptions) -> RunOutcome {
        let ended = self.try_resume(opts).await;
        self.finished(Ended::Finished(ended), "the resume")
    }

    /// `ebb resume`, refused or not.
    pub async fn try_resume(&self, opts: RunOptions) -> Result<RunOutcome, RunError> {
        match self
            .start(RunOptions {
                resume: true,
                ..opts
            })
            .await
        {
            Ended::Finished(r) => r,
            Ended::Killed => panic!("the resume was killed by the trip wire"),
        }
    }

    /// `ebb release MEMBER`.
    pub async fn release(&self, member: &str) -> Result<RunOutcome, RunError> {
        match self.start_release(member).await {
            Ended::Finished(r) => r,
            Ended::Killed => panic!("the release was killed by the trip wire"),
        }
    }

    /// `ebb release MEMBER` until it ends or the trip wire kills it.
    pub async fn start_release(&self, member: &str) -> Ended {
        self.shutdown.send_replace(false);
        self.log.take_fired();
        let f = crate::run::release(
            self.plan.clone(),
            self.drivers(),
            self.journal.clone(),
            self.sink(),
            member,
            false,
            self.shutdown.subscribe(),
        );
        self.killable("the release", f).await
    }

    /// Replaces the plan (as an operator edits the pool file between a run and its
    /// resume); the members must be the same, since the fakes are kept.
    pub fn replan(&mut self, plan: crate::plan::Plan) {
        let names = |p: &crate::plan::Plan| -> Vec<String> {
            p.members.iter().map(|m| m.name.clone()).collect()
        };
        assert_eq!(names(&plan), names(&self.plan), "replan keeps the members");
        self.plan = Arc::new(plan);
    }

    /// `ebb abort`.
    pub async fn abort(&self) -> Result<RunRecord, RunError> {
        let f = crate::run::abort(&self.journal, Some(&self.plan.pool.name));
        self.bounded("the abort", f).await
    }

    /// Raises the shutdown signal now, as Ctrl-C does.
    pub fn interrupt(&self) {
        self.shutdown.send_replace(true);
    }

    /// Every event of every run so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest run in the journal.
    pub fn run_record(&self) -> RunRecord {
        match self.journal.latest_run(Some(&self.plan.pool.name)) {
            Ok(Some(r)) => r,
            other => panic!("no run in the journal: {other:?}"),
        }
    }

    /// `member`'s record in the latest run.
    pub fn member(&self, member: &str) -> MemberRecord {
        let run = self.run_record().id;
        match self.journal.member(run, member) {
            Ok(Some(r)) => r,
            other => panic!("member \"{member}\" not in run {run}: {other:?}"),
        }
    }

    /// Every member's state in the latest run, in plan order.
    pub fn states(&self) -> Vec<MemberState> {
        let run = self.run_record().id;
        match self.journal.members(run) {
            Ok(ms) => ms.into_iter().map(|m| m.state).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    /// The names of what `member` owes, oldest first.
    pub fn owed(&self, member: &str) -> Vec<String> {
        let run = self.run_record().id;
        match self.journal.owed(run, member) {
            Ok(o) => o.into_iter().map(|o| o.name).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    /// `member`'s actions in the latest run, oldest first.
    pub fn actions(&self, member: &str) -> Vec<ActionRecord> {
        let run = self.run_record().id;
        match self.journal.actions(run, Some(member)) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Asserts how a run ended (its state and exit code), showing its message if not.
#[track_caller]
pub fn assert_ended(out: &RunOutcome, state: crate::journal::RunState, exit_code: i32) {
    assert_eq!(
        (out.state, out.exit_code),
        (state, exit_code),
        "{}",
        out.message
    );
}

impl Harness {
    /// Asserts the end every finished run must reach: the run done, every member done with
    /// nothing owed and no action left without an outcome, and the balancer showing every
    /// member started with its initial state started (not held).
    pub fn assert_all_done(&self) {
        let run = self.run_record();
        assert_eq!(
            run.state,
            crate::journal::RunState::Done,
            "run: {}\ncalls:\n{}",
            run.message,
            self.log.dump()
        );
        for m in &self.plan.members {
            let rec = self.member(&m.name);
            assert_eq!(rec.state, MemberState::Done, "member {}", m.name);
            assert_eq!(self.owed(&m.name), Vec::<String>::new(), "{} owes", m.name);
            let open: Vec<String> = self
                .actions(&m.name)
                .into_iter()
                .filter(|a| a.outcome.is_none())
                .map(|a| a.name)
                .collect();
            assert!(
                open.is_empty(),
                "{}: actions without outcome {open:?}",
                m.name
            );
            assert_eq!(
                self.balancer.truth(&m.lb_name),
                (
                    crate::interfaces::HostState::Started,
                    crate::interfaces::HostState::Started
                ),
                "{} in the balancer (state, initial state)\ncalls:\n{}",
                m.name,
                self.log.dump()
            );
        }
    }
}
