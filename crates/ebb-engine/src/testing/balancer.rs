//! A balancer held in memory: each member's true host state and initial state, scripted
//! connection counts while it drains, failures of any operation, members it lost, and
//! members it lies about.

use super::{dead, Fate, Recorder};
use crate::interfaces::{Balancer, DriverError, DriverResult, HostState, MemberLbState};
use crate::plan::Member;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The operations of the [`Balancer`] trait, for scripting failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BalOp {
    /// `state` (and `pool_state`).
    State,
    /// `drainstop`.
    Drainstop,
    /// `stop`.
    Stop,
    /// `start`.
    Start,
    /// `initial_state`.
    InitialState,
    /// `set_initial_state`.
    SetInitialState,
}

#[derive(Debug, Clone)]
struct Sim {
    state: HostState,
    initial: HostState,
    healthy: Option<bool>,
    /// Counts shown while draining, one per read by the engine; the last one stays.
    conns: VecDeque<u64>,
    current: u64,
    /// The balancer cannot count connections (NLB cannot).
    uncounted: bool,
    lost: bool,
    lie: Option<HostState>,
    ignore: HashSet<BalOp>,
    fail: HashMap<BalOp, Option<usize>>,
    /// An outside change that reverts at this instant.
    revert: Option<(Instant, HostState)>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim {
            state: HostState::Started,
            initial: HostState::Started,
            healthy: Some(true),
            conns: VecDeque::from([0]),
            current: 0,
            uncounted: false,
            lost: false,
            lie: None,
            ignore: HashSet::new(),
            fail: HashMap::new(),
            revert: None,
        }
    }
}

impl Sim {
    fn in_service(&self) -> bool {
        self.state == HostState::Started && self.healthy != Some(false)
    }
}

struct Pool {
    order: Vec<String>,
    members: HashMap<String, Sim>,
    /// (time, members truly out of service) at the start and after every change.
    timeline: Vec<(Duration, usize)>,
}

/// The fake balancer. Members are known by their balancer name (`lb_name`).
pub struct FakeBalancer {
    log: Recorder,
    pool: Mutex<Pool>,
}

impl FakeBalancer {
    pub(crate) fn new(log: Recorder, members: &[Member]) -> Self {
        let order: Vec<String> = members.iter().map(|m| m.lb_name.clone()).collect();
        let members = order.iter().map(|n| (n.clone(), Sim::default())).collect();
        FakeBalancer {
            log,
            pool: Mutex::new(Pool {
                order,
                members,
                timeline: vec![(Duration::ZERO, 0)],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, member: &str, f: impl FnOnce(&mut Sim) -> T) -> T {
        let mut pool = self.lock();
        let Some(sim) = pool.members.get_mut(member) else {
            panic!("the fake balancer has no member \"{member}\"");
        };
        let out = f(sim);
        self.changed(&mut pool);
        out
    }

    fn changed(&self, pool: &mut Pool) {
        let out = pool.members.values().filter(|s| !s.in_service()).count();
        if pool.timeline.last().map(|t| t.1) != Some(out) {
            pool.timeline.push((self.log.elapsed(), out));
        }
    }

    /// Someone else sets `member`'s host state (logged as `external STATE`).
    pub fn set(&self, member: &str, state: HostState) {
        self.log
            .note(member, format!("external {}", state.as_str()));
        self.with(member, |s| {
            s.state = state;
            s.revert = None;
        });
    }

    /// Someone else sets `member`'s host state for `d`, then puts it back.
    pub fn set_for(&self, member: &str, state: HostState, d: Duration) {
        self.log
            .note(member, format!("external {} for {d:?}", state.as_str()));
        self.with(member, |s| {
            s.revert = Some((Instant::now() + d, s.state));
            s.state = state;
        });
    }

    /// `member`'s initial state (a member held by someone else has `Stopped`).
    pub fn set_initial(&self, member: &str, state: HostState) {
        self.with(member, |s| s.initial = state);
    }

    /// `member`'s health as the balancer's own checks see it.
    pub fn set_healthy(&self, member: &str, healthy: Option<bool>) {
        self.with(member, |s| s.healthy = healthy);
    }

    /// The connection counts `member` shows while draining, one per read of its state by
    /// the engine; the last one stays (`[7]`: a drain that never ends).
    pub fn drain_counts(&self, member: &str, counts: &[u64]) {
        self.with(member, |s| s.conns = counts.iter().copied().collect());
    }

    /// The balancer cannot tell `member`'s connection count (as NLB cannot).
    pub fn uncounted(&self, member: &str) {
        self.with(member, |s| s.uncounted = true);
    }

    /// The next `times` calls of `op` on `member` fail.
    pub fn fail_next(&self, member: &str, op: BalOp, times: usize) {
        self.with(member, |s| s.fail.insert(op, Some(times)));
    }

    /// Every call of `op` on `member` fails.
    pub fn fail_always(&self, member: &str, op: BalOp) {
        self.with(member, |s| s.fail.insert(op, None));
    }

    /// `op` on `member` answers success and does nothing.
    pub fn ignore(&self, member: &str, op: BalOp) {
        self.with(member, |s| s.ignore.insert(op));
    }

    /// The balancer reports `member` in `state` whatever its true state (`None`: the truth).
    pub fn lie(&self, member: &str, state: Option<HostState>) {
        self.with(member, |s| s.lie = state);
    }

    /// The balancer no longer knows `member` (`false`: it knows it again).
    pub fn lose(&self, member: &str, lost: bool) {
        self.log.note(member, if lost { "lost" } else { "found" });
        self.with(member, |s| s.lost = lost);
    }

    /// `member`'s true host state and initial state.
    pub fn truth(&self, member: &str) -> (HostState, HostState) {
        self.with(member, |s| (s.state, s.initial))
    }

    /// The most members truly out of service at any instant.
    pub fn max_out(&self) -> usize {
        self.lock().timeline.iter().map(|t| t.1).max().unwrap_or(0)
    }

    /// (time, members truly out of service), at the start and after every change.
    pub fn timeline(&self) -> Vec<(Duration, usize)> {
        self.lock().timeline.clone()
    }

    /// The members truly in service now.
    pub fn in_service(&self) -> Vec<String> {
        let pool = self.lock();
        pool.order
            .iter()
            .filter(|n| pool.members[*n].in_service())
            .cloned()
            .collect()
    }

    /// Checks a scripted failure and a lost member before an operation.
    fn refuse(&self, member: &str, op: BalOp) -> Option<DriverError> {
        self.with(member, |s| {
            if let Some(left) = s.fail.get_mut(&op) {
                match left {
                    None => {
                        return Some(DriverError::new(format!(
                            "fake balancer: {op:?} on \"{member}\" fails (scripted)"
                        )))
                    }
                    Some(0) => {}
                    Some(n) => {
                        *n -= 1;
                        return Some(DriverError::new(format!(
                            "fake balancer: {op:?} on \"{member}\" fails (scripted)"
                        )));
                    }
                }
            }
            s.lost.then(|| {
                DriverError::new(format!(
                    "fake balancer: no member \"{member}\" in the backend"
                ))
            })
        })
    }

    /// An operation that changes something: logged, maybe interrupted, maybe refused.
    async fn act(
        &self,
        member: &str,
        op: BalOp,
        call: String,
        f: impl FnOnce(&mut Sim),
    ) -> DriverResult<()> {
        let refused = self.refuse(member, op);
        let call = if refused.is_some() {
            format!("{call} (fails)")
        } else {
            call
        };
        let fate = self.log.effect(member, call);
        if fate == Fate::DieBefore {
            return dead().await;
        }
        if let Some(e) = refused {
            return Err(e);
        }
        self.with(member, |s| {
            if !s.ignore.contains(&op) {
                f(s)
            }
        });
        if fate == Fate::DieAfter {
            return dead().await;
        }
        Ok(())
    }

    fn read(&self, member: &str, engine_read: bool) -> DriverResult<MemberLbState> {
        if let Some(e) = self.refuse(member, BalOp::State) {
            return Err(e);
        }
        let s = self.with(member, |s| {
            if let Some((at, back)) = s.revert {
                if Instant::now() >= at {
                    s.state = back;
                    s.revert = None;
                }
            }
            if s.state == HostState::Draining && engine_read {
                if s.conns.len() > 1 {
                    s.current = s.conns.pop_front().unwrap_or(0);
                } else {
                    s.current = s.conns.front().copied().unwrap_or(0);
                }
            }
            s.clone()
        });
        let state = s.lie.unwrap_or(s.state);
        Ok(MemberLbState {
            state,
            healthy: if s.lie.is_some() {
                Some(true)
            } else {
                s.healthy
            },
            active_connections: match (s.uncounted, state) {
                (true, _) => None,
                (false, HostState::Stopped) => Some(0),
                (false, _) => Some(s.current),
            },
            detail: format!("fake {}", state.as_str()),
        })
    }
}

#[async_trait]
impl Balancer for FakeBalancer {
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        self.read(&member.lb_name, true)
    }

    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        self.act(&member.lb_name, BalOp::Drainstop, "drainstop".into(), |s| {
            if s.state == HostState::Started {
                s.state = HostState::Draining;
                s.current = s.conns.front().copied().unwrap_or(0);
            }
        })
        .await
    }

    async fn stop(&self, member: &Member) -> DriverResult<()> {
        self.act(&member.lb_name, BalOp::Stop, "stop".into(), |s| {
            s.state = HostState::Stopped;
            s.current = 0;
        })
        .await
    }

    async fn start(&self, member: &Member) -> DriverResult<()> {
        self.act(&member.lb_name, BalOp::Start, "start".into(), |s| {
            s.state = HostState::Started;
            s.revert = None;
        })
        .await
    }

    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        if let Some(e) = self.refuse(&member.lb_name, BalOp::InitialState) {
            return Err(e);
        }
        Ok(Some(self.with(&member.lb_name, |s| s.initial)))
    }

    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        let call = format!("set-initial {}", state.as_str());
        self.act(&member.lb_name, BalOp::SetInitialState, call, |s| {
            s.initial = state
        })
        .await
    }

    async fn wait_change(&self, _member: &Member, max: Duration) {
        tokio::time::sleep(max.min(Duration::from_millis(2))).await;
    }

    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        // The sampler reads the pool at its own pace: it must not consume the counts
        // scripted for the engine's drain loop.
        members
            .iter()
            .map(|m| self.read(&m.lb_name, false))
            .collect()
    }
}
