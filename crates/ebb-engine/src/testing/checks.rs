//! Checks and monitoring maintenance that answer as scripted.

use super::{dead, Fate, Recorder};
use crate::interfaces::{
    Check, CheckContext, Checker, DriverError, DriverResult, Maintenance, Transport,
};
use crate::plan::{CheckSpec, GateSpec, MaintenanceSpec, Member};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// How one attempt of a check answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckReply {
    /// It passes.
    Pass,
    /// It fails.
    Fail,
    /// It never answers (the engine's per-attempt timeout ends it).
    Hang,
}

/// Per key, the replies and how many were used; the last reply repeats.
struct Scripts<K, R>(HashMap<K, (usize, Vec<R>)>);

impl<K: std::hash::Hash + Eq, R: Clone> Scripts<K, R> {
    fn next(&mut self, key: &K) -> Option<R> {
        let (n, replies) = self.0.get_mut(key)?;
        let r = replies
            .get((*n).min(replies.len().saturating_sub(1)))?
            .clone();
        *n += 1;
        Some(r)
    }
}

/// Checks scripted per check and member; every check passes unless scripted.
pub struct FakeChecker {
    log: Recorder,
    scripts: Mutex<Scripts<(String, String), CheckReply>>,
}

impl FakeChecker {
    pub(crate) fn new(log: Recorder) -> Self {
        FakeChecker {
            log,
            scripts: Mutex::new(Scripts(HashMap::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Scripts<(String, String), CheckReply>> {
        self.scripts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How attempts of `check` on `member` answer, in order; the last reply repeats
    /// (`[Fail, Fail, Pass]`: a flaky check).
    pub fn script(&self, check: &str, member: &str, replies: impl IntoIterator<Item = CheckReply>) {
        self.lock().0.insert(
            (check.into(), member.into()),
            (0, replies.into_iter().collect()),
        );
    }
}

/// The check a test plan's checks carry; the [`FakeChecker`] answers for it, so it never
/// runs.
#[derive(Debug)]
pub struct ScriptedCheck;

#[async_trait]
impl Check for ScriptedCheck {
    async fn run(
        &self,
        _: &Member,
        _: &dyn Transport,
        _: &CheckContext,
        _: std::time::Duration,
    ) -> Result<String, String> {
        Err("a scripted check runs through the FakeChecker".into())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[async_trait]
impl Checker for FakeChecker {
    async fn check_in(
        &self,
        check: &CheckSpec,
        member: &Member,
        _transport: &dyn Transport,
        _: &CheckContext,
    ) -> Result<String, String> {
        let reply = self
            .lock()
            .next(&(check.name.clone(), member.name.clone()))
            .unwrap_or(CheckReply::Pass);
        let word = match reply {
            CheckReply::Pass => "pass",
            CheckReply::Fail => "fail",
            CheckReply::Hang => "hang",
        };
        let fate = self
            .log
            .effect(&member.name, format!("check {}: {word}", check.name));
        if fate == Fate::DieBefore {
            return dead().await;
        }
        let out = match reply {
            CheckReply::Pass => Ok("fake check passed".to_string()),
            CheckReply::Fail => Err("fake check failed (scripted)".to_string()),
            CheckReply::Hang => dead().await,
        };
        if fate == Fate::DieAfter {
            return dead().await;
        }
        out
    }
}

/// Monitoring maintenance in memory: begins and ends are logged as `begin STEP` and
/// `end STEP TOKEN`; a begin repeated with the same key finds the first one's token (as
/// the real drivers do) and is logged `begin STEP (found)`. The alert gate answers as
/// scripted (open unless scripted).
pub struct FakeMaintenance {
    log: Recorder,
    state: Mutex<MaintState>,
}

struct MaintState {
    tokens: usize,
    fail_begin: usize,
    /// The token of each begin, by key: a repeated begin finds its earlier work.
    begun: HashMap<String, String>,
    fail_end: usize,
    gate: Scripts<(), Vec<String>>,
}

impl FakeMaintenance {
    pub(crate) fn new(log: Recorder) -> Self {
        FakeMaintenance {
            log,
            state: Mutex::new(MaintState {
                tokens: 0,
                fail_begin: 0,
                begun: HashMap::new(),
                fail_end: 0,
                gate: Scripts(HashMap::new()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MaintState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `times` begins fail.
    pub fn fail_begin(&self, times: usize) {
        self.lock().fail_begin = times;
    }

    /// The next `times` ends fail.
    pub fn fail_end(&self, times: usize) {
        self.lock().fail_end = times;
    }

    /// The alerts the gate sees at each ask, in order; the last answer repeats.
    pub fn gate(&self, answers: Vec<Vec<String>>) {
        self.lock().gate.0.insert((), (0, answers));
    }

    fn step_of(key: &str) -> &str {
        key.rsplit_once(" step ").map_or(key, |(_, s)| s)
    }
}

#[async_trait]
impl Maintenance for FakeMaintenance {
    async fn begin(&self, _: &MaintenanceSpec, member: &Member, key: &str) -> DriverResult<String> {
        let (found, fails) = {
            let mut st = self.lock();
            let fails = st.fail_begin > 0;
            st.fail_begin = st.fail_begin.saturating_sub(1);
            (st.begun.get(key).cloned(), fails)
        };
        let step = Self::step_of(key);
        let call = match (&found, fails) {
            (_, true) => format!("begin {step} (fails)"),
            (Some(_), false) => format!("begin {step} (found)"),
            (None, false) => format!("begin {step}"),
        };
        let fate = self.log.effect(&member.name, call);
        if fate == Fate::DieBefore {
            return dead().await;
        }
        if fails {
            return Err(DriverError::new("fake maintenance: begin fails (scripted)"));
        }
        let token = found.unwrap_or_else(|| {
            let mut st = self.lock();
            st.tokens += 1;
            let t = format!("token-{}", st.tokens);
            st.begun.insert(key.to_string(), t.clone());
            t
        });
        if fate == Fate::DieAfter {
            return dead().await;
        }
        Ok(token)
    }

    async fn end(
        &self,
        _: &MaintenanceSpec,
        member: &Member,
        key: &str,
        token: &str,
    ) -> DriverResult<String> {
        let fails = {
            let mut st = self.lock();
            let fails = st.fail_end > 0;
            st.fail_end = st.fail_end.saturating_sub(1);
            fails
        };
        let step = Self::step_of(key);
        let call = format!("end {step} {token}{}", if fails { " (fails)" } else { "" });
        let fate = self.log.effect(&member.name, call);
        if fate == Fate::DieBefore {
            return dead().await;
        }
        let out = if fails {
            Err(DriverError::new("fake maintenance: end fails (scripted)"))
        } else {
            Ok(format!("ended {token}"))
        };
        if fate == Fate::DieAfter {
            return dead().await;
        }
        out
    }

    async fn gate_alerts(&self, _: &GateSpec) -> DriverResult<Vec<String>> {
        Ok(self.lock().gate.next(&()).unwrap_or_default())
    }
}
