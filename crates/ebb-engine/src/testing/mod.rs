//! An in-process harness for the engine: fakes of the balancer, the transports, the checks
//! and monitoring maintenance whose behaviour a test scripts, a recorder that logs every
//! call they receive in order with its time, and [`Harness`], which runs, resumes, releases
//! and aborts a [`Plan`](crate::plan::Plan) against them with a real journal in a temporary
//! directory.
//!
//! Compiled only with the `testing` feature, which the engine's own tests turn on through a
//! dev-dependency on the crate itself; nothing of it reaches the `ebb` binary.
//!
//! The fakes only touch the engine through its seams ([`Drivers`](crate::member::Drivers)
//! and the traits in [`interfaces`](crate::interfaces)); the harness only through the entry
//! points in [`run`](crate::run) and the journal. So a test sees what a driver would see.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use ebb_engine::testing::{Harness, PlanBuilder, Reply};
//! let h = Harness::new(PlanBuilder::new(2).paired("fsc").step("install").build());
//! h.transport("m2").script("install", [Reply::Exit(1)]);
//! let out = h.run().await;
//! assert_eq!(out.exit_code, 1);
//! assert_eq!(h.log.calls("m2"), ["set-initial stopped", "drainstop", "run fsc", "run install"]);
//! assert_eq!(h.owed("m2"), ["hold", "drain", "fsc"]);
//! # }
//! ```

mod balancer;
mod checks;
mod clock;
mod harness;
mod plan;
mod reads;
mod transport;

pub use balancer::{BalOp, FakeBalancer};
pub use checks::{CheckReply, FakeChecker, FakeMaintenance, ScriptedCheck};
pub use clock::TestClock;
pub use harness::{assert_ended, Ended, Harness};
pub use plan::{check, maintenance_step, step, wave, PlanBuilder, REBOOT_COMMAND};
pub use reads::JournalReads;
pub use transport::{FakeTransport, Reply};

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// One call a fake received (or one change made to it from outside the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log, from 0.
    pub seq: usize,
    /// Time since the recorder was made.
    pub at: Duration,
    /// The member the call was about.
    pub member: String,
    /// What was asked, in the fakes' words: `drainstop`, `set-initial stopped`,
    /// `run install`, `check owa: fail`, `begin silence`, `external stopped`, ...
    pub call: String,
    /// Whether it counts as an operation for [`Recorder::interrupt_at`] (every call that
    /// changes something or runs something; state reads do not count).
    pub effect: bool,
}

/// Where an interruption falls relative to the operation it is armed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillPoint {
    /// The process dies just before the call reaches the driver: nothing happens.
    Before,
    /// The call takes effect, then the process dies before hearing the answer.
    After,
}

/// How the run is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// As kill -9: the run's future is dropped where it stands; nothing after runs.
    Kill,
    /// As Ctrl-C: the shutdown signal is raised and the call never answers; the engine
    /// stops at its safe point.
    Shutdown,
}

#[derive(Debug, Clone, Copy)]
struct Armed {
    at: usize,
    point: KillPoint,
    how: Interrupt,
}

/// What a fake must do with a call, as decided by the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Go,
    DieBefore,
    DieAfter,
}

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Log {
    records: Vec<Record>,
    effects: usize,
    armed: Option<Armed>,
    fired: Option<(Record, Interrupt)>,
    /// Run once, right after `member` first receives `call`.
    hooks: Vec<(String, String, Hook)>,
}

/// The ordered, timestamped log shared by every fake of a harness, and the trip wire that
/// interrupts a run at its k-th operation.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    log: Arc<Mutex<Log>>,
    fired: Arc<Notify>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl Recorder {
    pub(crate) fn new(shutdown: Arc<watch::Sender<bool>>) -> Self {
        Recorder {
            start: Instant::now(),
            log: Arc::default(),
            fired: Arc::default(),
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(log: &mut Log, at: Duration, member: &str, call: String, effect: bool) -> Record {
        let r = Record {
            seq: log.records.len(),
            at,
            member: member.to_string(),
            call,
            effect,
        };
        log.records.push(r.clone());
        r
    }

    /// Logs something that is not an operation of the run (a change made from outside).
    pub(crate) fn note(&self, member: &str, call: impl Into<String>) {
        let at = self.start.elapsed();
        Self::push(&mut self.lock(), at, member, call.into(), false);
    }

    /// Logs an operation and says whether the run dies around it.
    pub(crate) fn effect(&self, member: &str, call: impl Into<String>) -> Fate {
        let at = self.start.elapsed();
        let call = call.into();
        let mut log = self.lock();
        let n = log.effects;
        log.effects += 1;
        let armed = log.armed.filter(|a| a.at == n);
        let Some(a) = armed else {
            let hook = log
                .hooks
                .iter()
                .position(|(m, c, _)| m == member && *c == call)
                .map(|i| log.hooks.remove(i).2);
            Self::push(&mut log, at, member, call, true);
            drop(log);
            if let Some(hook) = hook {
                hook();
            }
            return Fate::Go;
        };
        log.armed = None;
        let rec = match a.point {
            KillPoint::After => Self::push(&mut log, at, member, call, true),
            KillPoint::Before => Record {
                seq: log.records.len(),
                at,
                member: member.to_string(),
                call,
                effect: true,
            },
        };
        log.fired = Some((rec, a.how));
        drop(log);
        if a.how == Interrupt::Shutdown {
            self.shutdown.send_replace(true);
        }
        self.fired.notify_one();
        match a.point {
            KillPoint::Before => Fate::DieBefore,
            KillPoint::After => Fate::DieAfter,
        }
    }

    /// Runs `f` once, right after `member` first receives `call` (an operation, as
    /// logged: `run install`, `drainstop`, ...): the way a test makes something happen in
    /// the middle of a run (someone else takes a member out, the balancer loses one).
    pub fn on(&self, member: &str, call: &str, f: impl FnOnce() + Send + 'static) {
        self.lock()
            .hooks
            .push((member.into(), call.into(), Box::new(f)));
    }

    /// Arms the trip wire: the operation numbered `k` (from 0, counting every operation of
    /// every fake since the recorder was made) interrupts the run. Fires once.
    pub fn interrupt_at(&self, k: usize, point: KillPoint, how: Interrupt) {
        self.lock().armed = Some(Armed { at: k, point, how });
    }

    /// The call the trip wire fired at, if it did (the call itself is in the log only when
    /// it was armed with [`KillPoint::After`]).
    pub fn fired(&self) -> Option<Record> {
        self.lock().fired.as_ref().map(|(r, _)| r.clone())
    }

    pub(crate) fn fired_how(&self) -> Option<Interrupt> {
        self.lock().fired.as_ref().map(|(_, h)| *h)
    }

    pub(crate) fn take_fired(&self) {
        self.lock().fired = None;
    }

    pub(crate) async fn wait_fired(&self) {
        self.fired.notified().await
    }

    /// How many operations the fakes have received so far.
    pub fn effects(&self) -> usize {
        self.lock().effects
    }

    /// Every record, in order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// The calls about `member`, in order.
    pub fn calls(&self, member: &str) -> Vec<String> {
        self.lock()
            .records
            .iter()
            .filter(|r| r.member == member)
            .map(|r| r.call.clone())
            .collect()
    }

    /// Every call as `member call`, in order.
    pub fn all_calls(&self) -> Vec<String> {
        self.lock()
            .records
            .iter()
            .map(|r| format!("{} {}", r.member, r.call))
            .collect()
    }

    /// How many times `member` received exactly `call`.
    pub fn count(&self, member: &str, call: &str) -> usize {
        self.lock()
            .records
            .iter()
            .filter(|r| r.member == member && r.call == call)
            .count()
    }

    /// Position of the first `call` on `member` in the log.
    pub fn position(&self, member: &str, call: &str) -> Option<usize> {
        self.lock()
            .records
            .iter()
            .position(|r| r.member == member && r.call == call)
    }

    /// The members in the order they first received `call`.
    pub fn order_of(&self, call: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.lock().records.iter().filter(|r| r.call == call) {
            if !out.contains(&r.member) {
                out.push(r.member.clone());
            }
        }
        out
    }

    /// Time since the recorder was made.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The whole log, one line per record, for failure messages.
    pub fn dump(&self) -> String {
        self.lock()
            .records
            .iter()
            .map(|r| {
                format!(
                    "{:>4} {:>6}ms {} {}",
                    r.seq,
                    r.at.as_millis(),
                    r.member,
                    r.call
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Never returns: the state of a call whose process died.
pub(crate) async fn dead<T>() -> T {
    std::future::pending().await
}
