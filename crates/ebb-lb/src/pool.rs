//! The members at run time: host states, health, connection counts, and the choice of a
//! member for a new connection.
//!
//! Every change of a member's state, initial state or health (and every change of the
//! connection count of a draining member) is published on a broadcast channel, which the
//! control API turns into Server-Sent Events. State changes mark the state file dirty.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, Notify};

use crate::config::{Affinity, Balance, LbConfig};
use crate::persist::{self, SavedMember, SavedState};
use crate::status::{Health, HostState, InitialState, MemberStatus};

/// Bound on the source-IP affinity table; past it, entries of members that cannot take
/// connections are dropped first, then the whole table.
const AFFINITY_CAP: usize = 100_000;

/// The members and everything shared about them.
pub(crate) struct Pool {
    pub members: Vec<Member>,
    by_name: HashMap<String, usize>,
    events: broadcast::Sender<MemberStatus>,
    balance: Balance,
    affinity: Affinity,
    /// Member indices, each repeated by its weight and interleaved (smooth weighted
    /// round robin, precomputed so that picking is one atomic increment).
    schedule: Vec<usize>,
    next: AtomicUsize,
    sticky: Mutex<HashMap<IpAddr, usize>>,
    state_file: PathBuf,
    save_lock: Mutex<()>,
    /// Which members changed when, for `GET /members?since=CURSOR`.
    changes: Mutex<ChangeLog>,
    /// Tells this process's cursors from an earlier one's (its start time).
    epoch: u64,
}

/// The latest change of each member, by a counter bumped on every change: a reader that
/// saw the counter at `g` learns every member changed since with one range read, however
/// large the pool. Written under the member's lock (after the change), read before the
/// members' states: a change racing a read is reported again next time, never lost.
#[derive(Default)]
struct ChangeLog {
    counter: u64,
    /// counter at a member's latest change → member index.
    by_counter: BTreeMap<u64, usize>,
    /// member index → counter at its latest change (0: none yet).
    latest: Vec<u64>,
}

/// Where a reader of the pool's changes stands: the balancer's start (`epoch`) and the
/// change counter it saw. On the wire `EPOCH.COUNTER` (hex, decimal).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cursor {
    pub epoch: u64,
    pub counter: u64,
}

impl Cursor {
    /// Reads `EPOCH.COUNTER`; `None` if it is not one.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (e, c) = s.split_once('.')?;
        Some(Cursor {
            epoch: u64::from_str_radix(e, 16).ok()?,
            counter: c.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}.{}", self.epoch, self.counter)
    }
}

/// One member at run time.
pub(crate) struct Member {
    pub name: String,
    pub address: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Written at every connection's start and end: on cache lines of their own, so that
    /// the fields read on every wake-up of a connection (`cuts`, `eligible`) are not
    /// invalidated by another thread's connections (docs/benchmarks.md, issue 17,
    /// attempt 31).
    inner: CacheLine<Mutex<Inner>>,
    /// Mirrors of `inner` for the lock-free picking path.
    active: CacheLine<AtomicU64>,
    eligible: AtomicBool,
    /// Connections to the member that could not be opened (refused, timed out); bumped
    /// only on a failure, so the per-request path pays nothing for it.
    pub connect_failures: AtomicU64,
    /// Connections that ended with an error on the member's side (a reset, a broken
    /// write to it); bumped only on such an error.
    pub resets: AtomicU64,
    /// How many times the member's connections were cut (`stop`, shutdown): a
    /// connection compares it with the count at its start (one load) on every wake-up.
    cuts: AtomicU64,
    /// What each data-plane thread counts and waits on for this member (see `PerThread`).
    threads: Box<[PerThread]>,
}

/// One data-plane thread's share of a member: the counters bumped on the data path, and
/// the wake-up of that thread's connections of the member when they are cut. Only that
/// thread bumps the counters (readers add up the threads), and only its connections
/// wait on `cut`, so a request touches no cache line another thread writes.
#[repr(align(64))]
#[derive(Default)]
pub(crate) struct PerThread {
    pub total: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Woken (`notify_waiters`) after `cuts` is bumped.
    pub cut: Notify,
}

/// A value on cache lines of its own.
#[repr(align(64))]
pub(crate) struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// How many threads serve connections: one per core this process may use. Each runs a
/// single-threaded runtime and keeps every connection it accepted: no work stealing, no
/// wake-ups across threads on a connection's path (docs/benchmarks.md, issue 17,
/// attempt 12: about 6% less CPU per keep-alive request than tokio's work-stealing
/// runtime). They all accept from the same listening socket (attempt 26). The pool keeps
/// a share of each member per thread (`PerThread`).
pub(crate) fn data_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Inner {
    state: HostState,
    initial: InitialState,
    health: Health,
    active: u64,
    ok_streak: u32,
    fail_streak: u32,
}

/// A connection's claim on a member: counted in `active_connections` while it lives.
pub(crate) struct ConnGuard<'a> {
    pool: &'a Pool,
    pub index: usize,
    /// The member's cut count when the connection started (see [`Member::was_cut`]).
    pub cuts: u64,
}

impl Pool {
    /// Builds the pool from the config and the saved states (if any). After a restart a
    /// member is started only if both its saved state and its initial state say started:
    /// a held member (initial state stopped) stays out, and so does a stopped one.
    pub fn new(config: &LbConfig) -> Result<Arc<Pool>, String> {
        let saved = persist::load(&config.state_file)?;
        let threads = data_threads();
        let (events, _) = broadcast::channel(1024);
        let mut members = Vec::new();
        let mut by_name = HashMap::new();
        for (i, m) in config.members.iter().enumerate() {
            let s = saved.as_ref().and_then(|s| s.members.get(&m.name));
            let initial = s.map(|s| s.initial_state).unwrap_or(InitialState::Started);
            let state = match s {
                None => HostState::Started,
                Some(s) if s.state == HostState::Started && initial == InitialState::Started => {
                    HostState::Started
                }
                Some(_) => HostState::Stopped,
            };
            by_name.insert(m.name.clone(), i);
            members.push(Member {
                name: m.name.clone(),
                address: m.address.clone(),
                addr: m.addr,
                weight: m.weight,
                inner: CacheLine(Mutex::new(Inner {
                    state,
                    initial,
                    health: Health::Unknown,
                    active: 0,
                    ok_streak: 0,
                    fail_streak: 0,
                })),
                eligible: AtomicBool::new(state == HostState::Started),
                active: CacheLine(AtomicU64::new(0)),
                connect_failures: AtomicU64::new(0),
                resets: AtomicU64::new(0),
                cuts: AtomicU64::new(0),
                threads: (0..threads).map(|_| PerThread::default()).collect(),
            });
        }
        let schedule = weighted_schedule(&members.iter().map(|m| m.weight).collect::<Vec<_>>());
        Ok(Arc::new(Pool {
            members,
            by_name,
            events,
            balance: config.balance,
            affinity: config.affinity,
            schedule,
            next: AtomicUsize::new(0),
            sticky: Mutex::new(HashMap::new()),
            state_file: config.state_file.clone(),
            save_lock: Mutex::new(()),
            changes: Mutex::new(ChangeLog {
                latest: vec![0; config.members.len()],
                ..Default::default()
            }),
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        }))
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<MemberStatus> {
        self.events.subscribe()
    }

    pub fn status(&self, i: usize) -> MemberStatus {
        let m = &self.members[i];
        let inner = lock(&m.inner);
        m.status(&inner)
    }

    pub fn statuses(&self) -> Vec<MemberStatus> {
        (0..self.members.len()).map(|i| self.status(i)).collect()
    }

    /// The members that changed since `since` (every member for `None` or a cursor of an
    /// earlier balancer process), in pool order, and the cursor to ask from next time.
    /// Costs the number of changes, not the pool's size, unless every member is asked for.
    pub fn changed_since(&self, since: Option<Cursor>) -> (Vec<MemberStatus>, Cursor) {
        // The counter is read before the states: a change after this point is in the
        // states read below or in the next answer (or both), never in neither.
        let (changed, counter) = {
            let log = lock(&self.changes);
            let changed: Option<Vec<usize>> = match since {
                Some(c) if c.epoch == self.epoch => {
                    let mut v: Vec<usize> = log
                        .by_counter
                        .range(c.counter.saturating_add(1)..)
                        .map(|(_, &i)| i)
                        .collect();
                    v.sort_unstable();
                    Some(v)
                }
                _ => None,
            };
            (changed, log.counter)
        };
        let statuses = match changed {
            Some(v) => v.into_iter().map(|i| self.status(i)).collect(),
            None => self.statuses(),
        };
        let cursor = Cursor {
            epoch: self.epoch,
            counter,
        };
        (statuses, cursor)
    }

    /// Notes that member `i` changed (call with its lock held, after the change).
    fn log_change(&self, i: usize) {
        let mut log = lock(&self.changes);
        log.counter += 1;
        let now = log.counter;
        let before = std::mem::replace(&mut log.latest[i], now);
        log.by_counter.remove(&before);
        log.by_counter.insert(now, i);
    }

    /// Drainstop: no new connections; becomes stopped when the last one closes.
    pub fn drainstop(&self, i: usize) -> MemberStatus {
        self.change(i, |inner| {
            if inner.state != HostState::Stopped {
                inner.state = if inner.active == 0 {
                    HostState::Stopped
                } else {
                    HostState::Draining
                };
            }
        })
    }

    /// Stop: no traffic; existing connections are closed now.
    pub fn stop(&self, i: usize) -> MemberStatus {
        let st = self.change(i, |inner| inner.state = HostState::Stopped);
        self.members[i].cut_connections();
        st
    }

    /// Start: takes new connections (if healthy).
    pub fn start(&self, i: usize) -> MemberStatus {
        self.change(i, |inner| inner.state = HostState::Started)
    }

    pub fn set_initial(&self, i: usize, initial: InitialState) -> MemberStatus {
        self.change(i, |inner| inner.initial = initial)
    }

    /// Records one health-check result. A down member that passes `rise` checks in a row
    /// comes back up in its initial state.
    pub fn health_result(&self, i: usize, ok: bool, rise: u32, fall: u32) -> Option<MemberStatus> {
        let before = self.status(i);
        let after = self.change(i, |inner| {
            if ok {
                inner.ok_streak = inner.ok_streak.saturating_add(1);
                inner.fail_streak = 0;
                match inner.health {
                    Health::Unknown => inner.health = Health::Up,
                    Health::Down if inner.ok_streak >= rise => {
                        inner.health = Health::Up;
                        inner.state = match inner.initial {
                            InitialState::Started => HostState::Started,
                            InitialState::Stopped => HostState::Stopped,
                        };
                    }
                    _ => {}
                }
            } else {
                inner.fail_streak = inner.fail_streak.saturating_add(1);
                inner.ok_streak = 0;
                if inner.health != Health::Down && inner.fail_streak >= fall {
                    inner.health = Health::Down;
                }
            }
        });
        (before.health != after.health).then_some(after)
    }

    /// Applies a change under the member's lock, publishes an event if anything visible
    /// changed and marks the state file dirty if a saved state changed.
    fn change(&self, i: usize, f: impl FnOnce(&mut Inner)) -> MemberStatus {
        let m = &self.members[i];
        let mut inner = lock(&m.inner);
        let before = (inner.state, inner.initial, inner.health);
        f(&mut inner);
        // A draining member with nothing left to drain is stopped.
        if inner.state == HostState::Draining && inner.active == 0 {
            inner.state = HostState::Stopped;
        }
        m.eligible.store(is_eligible(&inner), Relaxed);
        let status = m.status(&inner);
        if before != (inner.state, inner.initial, inner.health) {
            self.log_change(i);
            let _ = self.events.send(status.clone());
        }
        status
    }

    /// Picks a member for a new connection from `client`, skipping `tried` (members that
    /// already refused this client), and claims it.
    pub fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<ConnGuard<'_>> {
        if self.affinity == Affinity::SourceIp {
            let stuck = lock(&self.sticky).get(&client).copied();
            if let Some(i) = stuck {
                if !tried.contains(&i) {
                    if let Some(g) = self.admit(i) {
                        return Some(g);
                    }
                }
            }
        }
        let mut skip: Vec<usize> = Vec::new();
        loop {
            let i = self.choose(tried, &skip)?;
            if let Some(g) = self.admit(i) {
                if self.affinity == Affinity::SourceIp {
                    let mut t = lock(&self.sticky);
                    if t.len() >= AFFINITY_CAP {
                        t.retain(|_, m| self.members[*m].eligible.load(Relaxed));
                        if t.len() >= AFFINITY_CAP {
                            t.clear();
                        }
                    }
                    t.insert(client, i);
                }
                return Some(g);
            }
            // Raced with a state change; try the others.
            skip.push(i);
        }
    }

    fn choose(&self, tried: &[usize], skip: &[usize]) -> Option<usize> {
        let ok = |i: usize| {
            self.members[i].eligible.load(Relaxed) && !tried.contains(&i) && !skip.contains(&i)
        };
        let turn = self.next_turn(ok)?;
        match self.balance {
            Balance::RoundRobin => Some(turn),
            Balance::LeastConnections => {
                // Fewest connections per weight; on a tie the round-robin turn wins, so
                // that idle members share new connections by their weights.
                let n = self.members.len();
                let load = |i: usize| self.members[i].active.load(Relaxed);
                let mut best = (turn, load(turn));
                for k in 1..n {
                    let i = (turn + k) % n;
                    if !ok(i) {
                        continue;
                    }
                    let a = load(i);
                    // a/w < best_a/best_w without division.
                    if a * u64::from(self.members[best.0].weight)
                        < best.1 * u64::from(self.members[i].weight)
                    {
                        best = (i, a);
                    }
                }
                Some(best.0)
            }
        }
    }

    /// The next member in the weighted schedule that `ok` accepts. A turn that falls on
    /// a member that is out is passed over by taking the next turn from the shared
    /// counter, so the members in service split the absent member's turns by their
    /// weights. (Scanning on from a fixed place instead would hand all of them to the
    /// member after it: 20/10 instead of 15/15 with one of three equal members out.)
    fn next_turn(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.schedule.len();
        let mut at = 0;
        for _ in 0..n {
            at = self.next.fetch_add(1, Relaxed);
            let i = self.schedule[at % n];
            if ok(i) {
                return Some(i);
            }
        }
        // Concurrent picks took the turns looked at; one scan decides.
        (1..=n)
            .map(|k| self.schedule[(at + k) % n])
            .find(|&i| ok(i))
    }

    /// Claims member `i` for a new connection if it takes new connections now.
    fn admit(&self, i: usize) -> Option<ConnGuard<'_>> {
        let m = &self.members[i];
        let mut inner = lock(&m.inner);
        if !is_eligible(&inner) {
            return None;
        }
        inner.active += 1;
        m.active.store(inner.active, Relaxed);
        // Read under the lock: a `stop` after this point reaches the connection.
        Some(ConnGuard {
            pool: self,
            index: i,
            cuts: m.cuts.load(Relaxed),
        })
    }

    fn release(&self, i: usize) {
        let m = &self.members[i];
        let mut inner = lock(&m.inner);
        inner.active = inner.active.saturating_sub(1);
        m.active.store(inner.active, Relaxed);
        if inner.state == HostState::Draining {
            if inner.active == 0 {
                inner.state = HostState::Stopped;
                m.eligible.store(false, Relaxed);
                tracing::info!(member = %m.name, "drain finished: last connection closed, member stopped");
            }
            self.log_change(i);
            let _ = self.events.send(m.status(&inner));
        }
    }

    /// Open connections over all members (a snapshot; for the memory release).
    pub fn active_total(&self) -> u64 {
        self.members.iter().map(|m| m.active.load(Relaxed)).sum()
    }

    /// Closes every connection (shutdown).
    pub fn cut_all(&self) {
        for m in &self.members {
            m.cut_connections();
        }
    }

    /// Writes the state file now (blocking: call from `spawn_blocking`).
    pub fn save(&self) -> Result<(), String> {
        let _g = lock(&self.save_lock);
        // Snapshot under the save lock so the last writer writes the newest states.
        let mut s = SavedState {
            version: 1,
            ..Default::default()
        };
        for m in &self.members {
            let inner = lock(&m.inner);
            s.members.insert(
                m.name.clone(),
                SavedMember {
                    state: inner.state,
                    initial_state: inner.initial,
                },
            );
        }
        persist::save(&self.state_file, &s).map_err(|e| {
            format!(
                "cannot write the state file {}: {e}",
                self.state_file.display()
            )
        })
    }

    /// The saved states as they would be written now (to notice changes cheaply).
    pub fn saved_view(&self) -> Vec<(HostState, InitialState)> {
        self.members
            .iter()
            .map(|m| {
                let inner = lock(&m.inner);
                (inner.state, inner.initial)
            })
            .collect()
    }
}

impl Member {
    /// Closes every open connection of this member.
    fn cut_connections(&self) {
        // Counted before the wake-up, so a woken connection sees the new count.
        self.cuts.fetch_add(1, Relaxed);
        for t in self.threads.iter() {
            t.cut.notify_waiters();
        }
    }

    /// Data-plane thread `thread`'s share of this member.
    pub fn thread(&self, thread: usize) -> &PerThread {
        &self.threads[thread % self.threads.len()]
    }

    /// A counter added up over the threads.
    fn sum(&self, counter: impl Fn(&PerThread) -> &AtomicU64) -> u64 {
        self.threads
            .iter()
            .map(|t| counter(t).load(Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Whether the member's connections were cut since `cuts` was read.
    pub fn was_cut(&self, cuts: u64) -> bool {
        self.cuts.load(Relaxed) != cuts
    }

    fn status(&self, inner: &Inner) -> MemberStatus {
        MemberStatus {
            name: self.name.clone(),
            address: self.address.clone(),
            weight: self.weight,
            state: inner.state,
            initial_state: inner.initial,
            health: inner.health,
            active_connections: inner.active,
            total_connections: self.sum(|t| &t.total),
            bytes_in: self.sum(|t| &t.bytes_in),
            bytes_out: self.sum(|t| &t.bytes_out),
            connect_failures: self.connect_failures.load(Relaxed),
            resets: self.resets.load(Relaxed),
        }
    }
}

impl ConnGuard<'_> {
    pub fn member(&self) -> &Member {
        &self.pool.members[self.index]
    }
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.pool.release(self.index);
    }
}

/// Takes new connections: started and not failing health checks. `unknown` health counts
/// as eligible so that a restarted balancer serves at once; a member that refuses is
/// skipped per connection anyway.
fn is_eligible(inner: &Inner) -> bool {
    inner.state == HostState::Started && inner.health != Health::Down
}

/// A poisoned lock only means another thread panicked mid-update of plain counters; the
/// data is still usable, so keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Smooth weighted round robin (as nginx), unrolled into one cycle.
fn weighted_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_weighted_and_interleaved() {
        let s = weighted_schedule(&[1, 3]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|&&i| i == 1).count(), 3);
        assert_ne!(s, vec![1, 1, 1, 0]);
        assert_eq!(weighted_schedule(&[1, 1, 1]), vec![0, 1, 2]);
    }
}
