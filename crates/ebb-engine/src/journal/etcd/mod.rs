//! The journal and the pool's lock in etcd, through its v3 JSON gateway.
//!
//! Keys under `PREFIX/POOL/`: `lock` (bound to the holder's lease), `holder` (the last
//! holder, kept after its lease lapses), `broken` (the last `ebb lock break`),
//! `run/ID`, `member/RUN/NAME`, `action/RUN/ID`, `owed/RUN/MEMBER/ID`, `sample/RUN/ID`;
//! values are the same records the SQLite journal keeps, as JSON.
//!
//! Fencing: while this process holds the lock, every write is a transaction that also
//! compares the lock key's lease with ours; a write that fails that comparison, or a lease
//! not renewed within its TTL (by this host's boot-time clock, which counts a pause or a
//! suspend), marks the journal *lost*: [`Store::fence`] then refuses every further
//! balancer or member operation.

mod cache;
mod client;
mod tls;

use super::{
    hostname, operator, user, ActionEnd, ActionKind, ActionRecord, JResult, JournalError,
    LockHolder, MemberRecord, MemberState, Owed, OwedKind, RunRecord, RunState, Store,
};
use crate::events::now_ms;
use crate::plan::StateSpec;
pub use client::{b64, unb64, CallError, Client};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use tls::TlsFiles;

/// Most bytes of an action's output kept in etcd (its tail).
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// What the lock key holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockRecord {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// User name.
    pub user: String,
    /// The run it works on, once known.
    pub run_id: Option<i64>,
    /// When it took the lock (unix ms).
    pub since_ms: i64,
    /// Its lease (decimal).
    pub lease: String,
}

/// What `ebb lock break` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreakRecord {
    /// Who broke it: user@host.
    pub by: String,
    /// When (unix ms).
    pub at_ms: i64,
    /// The holder whose lapsed lock was broken, if known.
    pub holder: Option<LockRecord>,
}

impl std::fmt::Display for BreakRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lock broken by {} at unix ms {}", self.by, self.at_ms)?;
        if let Some(h) = &self.holder {
            write!(
                f,
                " (last holder: ebb pid {} on host {}, user {})",
                h.pid, h.host, h.user
            )?;
        }
        Ok(())
    }
}

/// The lock as `ebb lock status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LockStatus {
    /// The live holder.
    pub holder: Option<LockRecord>,
    /// Seconds left on the holder's lease.
    pub lease_left_s: Option<i64>,
    /// When the live holder last renewed its lease (unix ms, to the second: etcd tells
    /// the time left and the TTL granted).
    pub renewed_ms: Option<i64>,
    /// With no live holder: the last one (its lease lapsed, or it let the lock go).
    pub last_holder: Option<LockRecord>,
    /// The last break.
    pub broken: Option<BreakRecord>,
}

struct Lease {
    id: i64,
    record: LockRecord,
}

struct Shared {
    /// Boot-time ms before which the lease is surely alive.
    deadline: AtomicI64,
    lost: Mutex<Option<String>>,
    /// Set when the journal is dropped: every keepalive thread ends.
    stop: AtomicBool,
    /// The lease being kept alive (0: none); a keepalive thread ends when it changes.
    current: AtomicI64,
}

impl Shared {
    /// Records that `lease` was lost, unless it is no longer the lease being kept: a
    /// keepalive for a lease this process revoked (its run ended, a resume took a new
    /// one) must not fence the new holder.
    fn lose_lease(&self, lease: i64, why: String) {
        let mut l = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if l.is_none() && self.current.load(Ordering::SeqCst) == lease {
            *l = Some(why);
        }
    }

    /// A new lease is kept from now on; an old lease's loss no longer counts.
    fn keep(&self, lease: i64) {
        let mut l = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        *l = None;
        self.current.store(lease, Ordering::SeqCst);
    }

    fn lose(&self, why: String) {
        let mut l = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if l.is_none() {
            *l = Some(why);
        }
    }
}

/// Milliseconds of CLOCK_BOOTTIME: counts a SIGSTOP and a suspended laptop alike.
fn boot_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn esc(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn tail(s: &str, limit: usize) -> &str {
    if s.len() <= limit {
        return s;
    }
    let mut i = s.len() - limit;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// The etcd journal of one pool.
pub struct EtcdJournal {
    client: Client,
    spec: StateSpec,
    shown: PathBuf,
    root: String,
    ttl: i64,
    lease: Mutex<Option<Lease>>,
    shared: Arc<Shared>,
    last_id: Mutex<i64>,
    action_runs: Mutex<HashMap<i64, i64>>,
    owed_keys: Mutex<HashMap<i64, String>>,
    /// This pool's records while this process holds its lock (see `cache.rs`).
    cache: Mutex<cache::Cache>,
    failure: super::FirstFailure,
}

impl EtcdJournal {
    /// The journal of pool `pool` in the etcd cluster of `spec`; checks that etcd answers
    /// (exit 2 material: the error names every endpoint tried).
    pub fn open(spec: &StateSpec, pool: &str) -> JResult<EtcdJournal> {
        let auth = spec.username.clone().map(|u| {
            (
                u,
                spec.password
                    .as_ref()
                    .map(|p| p.0.clone())
                    .unwrap_or_default(),
            )
        });
        let timeout = Duration::from_secs(5).min(spec.lease_ttl.max(Duration::from_secs(2)));
        let shown = PathBuf::from(format!(
            "etcd {} {}/{pool}",
            spec.endpoints.join(","),
            spec.prefix.trim_end_matches('/')
        ));
        let tls = if spec.endpoints.iter().any(|e| e.starts_with("https://")) {
            let files = TlsFiles {
                ca_file: spec.ca_file.as_deref(),
                cert_file: spec.cert_file.as_deref(),
                key_file: spec.key_file.as_deref(),
            };
            Some(tls::client_config(&files).map_err(|m| JournalError {
                path: shown.display().to_string(),
                message: m,
            })?)
        } else {
            None
        };
        let j = EtcdJournal {
            client: Client::new(&spec.endpoints, timeout, auth, tls),
            spec: spec.clone(),
            shown,
            root: format!("{}/{pool}/", spec.prefix.trim_end_matches('/')),
            ttl: spec.lease_ttl.as_secs().max(2) as i64,
            lease: Mutex::new(None),
            shared: Arc::new(Shared {
                deadline: AtomicI64::new(0),
                lost: Mutex::new(None),
                stop: AtomicBool::new(false),
                current: AtomicI64::new(0),
            }),
            last_id: Mutex::new(0),
            action_runs: Mutex::new(HashMap::new()),
            owed_keys: Mutex::new(HashMap::new()),
            cache: Mutex::new(cache::Cache::default()),
            failure: Default::default(),
        };
        j.get(&j.key("lock"))?;
        Ok(j)
    }

    fn err(&self, message: impl Into<String>) -> JournalError {
        self.failure.record(JournalError {
            path: self.shown.display().to_string(),
            message: message.into(),
        })
    }

    fn call(&self, path: &str, body: Value) -> JResult<Value> {
        self.client.call(path, &body).map_err(|e| match e {
            CallError::Unreachable(m) => self.err(format!(
                "cannot reach etcd (endpoints {}): {m}",
                self.spec.endpoints.join(", ")
            )),
            e => self.err(e.to_string()),
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.root)
    }

    fn next_id(&self) -> i64 {
        let mut last = self.last_id.lock().unwrap_or_else(|p| p.into_inner());
        let us = now_ms() * 1000;
        *last = (*last + 1).max(us);
        *last
    }

    /// The cache, while it may answer: this process holds the lock and has not lost it.
    /// Only records are cached (`run/…`, `member/…`, …), never `lock`, `holder`, `broken`.
    fn cache_for(&self, key: &str) -> Option<std::sync::MutexGuard<'_, cache::Cache>> {
        let record = key
            .strip_prefix(self.root.as_str())
            .is_some_and(|rest| rest.contains('/'));
        if !record
            || self
                .shared
                .lost
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
        {
            return None;
        }
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.on().then_some(c)
    }

    /// The prefix read whole in place of one of its keys (or a narrower prefix): a run's
    /// members and owed undos, so that one range read serves the whole run.
    fn whole(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(self.root.as_str())?;
        let (kind, after) = rest.split_once('/')?;
        let (run, _) = after.split_once('/')?;
        matches!(kind, "member" | "owed").then(|| self.key(&format!("{kind}/{run}/")))
    }

    fn get(&self, key: &str) -> JResult<Option<(Vec<u8>, i64)>> {
        if let Some(c) = self.cache_for(key) {
            if let Some(hit) = c.get(key) {
                return Ok(hit.map(|v| (v, 0)));
            }
            drop(c);
            if let Some(whole) = self.whole(key) {
                self.scan(&whole)?;
                if let Some(hit) = self.cache_for(key).and_then(|c| c.get(key)) {
                    return Ok(hit.map(|v| (v, 0)));
                }
            }
        }
        let v = self.call("/v3/kv/range", json!({"key": b64(key.as_bytes())}))?;
        let found = v["kvs"].get(0).map(|kv| {
            (
                unb64(kv["value"].as_str().unwrap_or("")).unwrap_or_default(),
                num(&kv["lease"]),
            )
        });
        if let (Some(mut c), Some((v, _))) = (self.cache_for(key), &found) {
            c.set(key, Some(v));
        }
        Ok(found)
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, key: &str) -> JResult<Option<T>> {
        match self.get(key)? {
            None => Ok(None),
            Some((v, _)) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.err(format!("{key}: unreadable record: {e}"))),
        }
    }

    /// Every (key, value) under `prefix`, in key order: from the cache when it knows the
    /// prefix whole, else from etcd a page at a time.
    fn scan(&self, prefix: &str) -> JResult<Vec<(String, Vec<u8>)>> {
        if let Some(c) = self.cache_for(prefix) {
            if let Some(hit) = c.scan(prefix) {
                return Ok(hit);
            }
            drop(c);
            if let Some(whole) = self.whole(prefix).filter(|w| w != prefix) {
                self.scan(&whole)?;
                if let Some(hit) = self.cache_for(prefix).and_then(|c| c.scan(prefix)) {
                    return Ok(hit);
                }
            }
        }
        let found = self.scan_etcd(prefix)?;
        if let Some(mut c) = self.cache_for(prefix) {
            c.fill(prefix, &found);
        }
        Ok(found)
    }

    fn scan_etcd(&self, prefix: &str) -> JResult<Vec<(String, Vec<u8>)>> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let end = b64(&end);
        let mut from = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        loop {
            let v = self.call(
                "/v3/kv/range",
                json!({"key": b64(&from), "range_end": end, "limit": 500}),
            )?;
            let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
            for kv in &kvs {
                let k = unb64(kv["key"].as_str().unwrap_or("")).unwrap_or_default();
                let val = unb64(kv["value"].as_str().unwrap_or("")).unwrap_or_default();
                out.push((String::from_utf8_lossy(&k).into_owned(), val));
            }
            if v["more"].as_bool() != Some(true) || kvs.is_empty() {
                return Ok(out);
            }
            let mut next = out
                .last()
                .map(|(k, _)| k.as_bytes().to_vec())
                .unwrap_or_default();
            next.push(0);
            from = next;
        }
    }

    fn scan_json<T: for<'de> Deserialize<'de>>(&self, prefix: &str) -> JResult<Vec<(String, T)>> {
        self.scan(prefix)?
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v)
                    .map(|t| (k.clone(), t))
                    .map_err(|e| self.err(format!("{k}: unreadable record: {e}")))
            })
            .collect()
    }

    fn held_lease(&self) -> Option<i64> {
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.id)
    }

    /// One fenced transaction of puts (`Some(value)`) and deletes (`None`) (one per 100
    /// operations), then the same in the cache; a failed one turns the cache off.
    fn write(&self, ops: Vec<(String, Option<Vec<u8>>)>) -> JResult<()> {
        match self.write_etcd(&ops) {
            Ok(()) => {
                for (k, v) in &ops {
                    if let Some(mut c) = self.cache_for(k) {
                        c.set(k, v.as_deref());
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).stop();
                Err(e)
            }
        }
    }

    /// The fencing comparison of a write: the lock key is bound to our lease, or, when this
    /// process holds no lock, nobody holds it. Also returns our lease.
    fn lock_compare(&self) -> (Value, Option<i64>) {
        let lock = b64(self.key("lock").as_bytes());
        let held = self.held_lease();
        let compare = match held {
            Some(id) => {
                json!([{"key": lock, "target": "LEASE", "result": "EQUAL", "lease": id.to_string()}])
            }
            None => json!([{"key": lock, "target": "VERSION", "result": "EQUAL", "version": "0"}]),
        };
        (compare, held)
    }

    fn write_etcd(&self, ops: &[(String, Option<Vec<u8>>)]) -> JResult<()> {
        self.fence()?;
        let (compare, held) = self.lock_compare();
        for chunk in ops.chunks(100) {
            let success: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => json!({"request_put": {"key": b64(k.as_bytes()), "value": b64(v)}}),
                    None => json!({"request_delete_range": {"key": b64(k.as_bytes())}}),
                })
                .collect();
            let v = self.call(
                "/v3/kv/txn",
                json!({"compare": compare, "success": success}),
            )?;
            if v["succeeded"].as_bool() != Some(true) {
                return Err(match held {
                    Some(id) => {
                        let why = format!("the pool's lock is no longer ours (etcd lease {id:x} lapsed or was taken over); this ebb makes no further change");
                        self.shared.lose(why.clone());
                        self.err(why)
                    }
                    None => self.err(
                        "the pool is locked by another ebb; nothing was written (see `ebb lock status`)",
                    ),
                });
            }
        }
        Ok(())
    }

    fn put_json<T: Serialize>(&self, key: String, v: &T) -> JResult<()> {
        let bytes = serde_json::to_vec(v).map_err(|e| self.err(e.to_string()))?;
        self.write(vec![(key, Some(bytes))])
    }

    fn run_key(&self, run: i64) -> String {
        self.key(&format!("run/{run:012}"))
    }

    fn member_key(&self, run: i64, name: &str) -> String {
        self.key(&format!("member/{run:012}/{}", esc(name)))
    }

    fn action_key(&self, run: i64, id: i64) -> String {
        self.key(&format!("action/{run:012}/{id:020}"))
    }

    fn update_member(
        &self,
        run: i64,
        name: &str,
        f: impl FnOnce(&mut MemberRecord),
    ) -> JResult<()> {
        let key = self.member_key(run, name);
        let Some(mut m) = self.get_json::<MemberRecord>(&key)? else {
            return Ok(());
        };
        f(&mut m);
        self.put_json(key, &m)
    }

    /// Changes action `action` (one that is gone is left alone).
    fn update_action(&self, action: i64, f: impl FnOnce(&mut ActionRecord)) -> JResult<()> {
        let run = self.action_run(action)?;
        let key = self.action_key(run, action);
        let Some(mut a) = self.get_json::<ActionRecord>(&key)? else {
            return Ok(());
        };
        f(&mut a);
        self.put_json(key, &a)
    }

    fn update_run(&self, run: i64, f: impl FnOnce(&mut RunRecord)) -> JResult<()> {
        let key = self.run_key(run);
        let Some(mut r) = self.get_json::<RunRecord>(&key)? else {
            return Err(self.err(format!("run {run} is not in etcd")));
        };
        f(&mut r);
        self.put_json(key, &r)
    }

    fn holder_record(&self) -> JResult<Option<(LockRecord, i64)>> {
        let Some((v, lease)) = self.get(&self.key("lock"))? else {
            return Ok(None);
        };
        let rec: LockRecord = serde_json::from_slice(&v)
            .map_err(|e| self.err(format!("lock: unreadable record: {e}")))?;
        Ok(Some((rec, lease)))
    }

    fn lease_left(&self, lease: i64) -> JResult<i64> {
        Ok(self.lease_time(lease)?.0)
    }

    /// Seconds left on `lease`, and when it was last renewed (unix ms): etcd renews a
    /// lease to its granted TTL, so it was renewed `granted - left` seconds ago.
    fn lease_time(&self, lease: i64) -> JResult<(i64, i64)> {
        let v = self.call("/v3/lease/timetolive", json!({"ID": lease.to_string()}))?;
        let (left, granted) = (num(&v["TTL"]), num(&v["grantedTTL"]));
        Ok((left, now_ms() - (granted - left).max(0) * 1000))
    }

    /// `rec`, the holder of `lease`, as the engine shows a holder.
    fn as_holder(&self, rec: LockRecord, lease: i64) -> JResult<LockHolder> {
        let (left, renewed) = self.lease_time(lease)?;
        Ok(LockHolder {
            pid: rec.pid,
            host: rec.host,
            heartbeat_ms: renewed,
            lease_left_s: Some(left),
            since_ms: Some(rec.since_ms),
        })
    }

    /// The lock, its lease and the last break, for `ebb lock status`.
    pub fn lock_status(&self) -> JResult<LockStatus> {
        let (holder, lease) = match self.holder_record()? {
            Some((rec, lease)) => (Some(rec), Some(self.lease_time(lease)?)),
            None => (None, None),
        };
        let last_holder = match holder {
            Some(_) => None,
            None => self.get_json(&self.key("holder"))?,
        };
        Ok(LockStatus {
            holder,
            lease_left_s: lease.map(|l| l.0),
            renewed_ms: lease.map(|l| l.1),
            last_holder,
            broken: self.get_json(&self.key("broken"))?,
        })
    }

    /// `ebb lock break`: refused (with the holder) while its lease is alive; otherwise
    /// records who broke the lock and when.
    pub fn break_lock(&self) -> JResult<Result<BreakRecord, (LockRecord, i64)>> {
        if let Some((rec, lease)) = self.holder_record()? {
            return Ok(Err((rec, self.lease_left(lease)?)));
        }
        let rec = BreakRecord {
            by: operator(),
            at_ms: now_ms(),
            holder: self.get_json(&self.key("holder"))?,
        };
        self.put_json(self.key("broken"), &rec)?;
        Ok(Ok(rec))
    }

    fn keepalive_thread(&self, lease: i64) {
        let shared = self.shared.clone();
        let ttl = self.ttl;
        let client = self
            .client
            .with_timeout(Duration::from_millis((ttl * 1000 / 3).max(1000) as u64));
        // Several tries within one TTL: a loaded etcd (a slow fsync, an election) may miss one.
        let every = Duration::from_millis((ttl * 1000 / 6).max(200) as u64);
        std::thread::spawn(move || {
            let mut next = std::time::Instant::now() + every;
            loop {
                while std::time::Instant::now() < next {
                    if shared.stop.load(Ordering::SeqCst)
                        || shared.current.load(Ordering::SeqCst) != lease
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                next = std::time::Instant::now() + every;
                let t0 = boot_ms();
                let r = client.call("/v3/lease/keepalive", &json!({"ID": lease.to_string()}));
                match r {
                    Ok(v) => {
                        let left = num(&v["result"]["TTL"]);
                        if left <= 0 {
                            shared.lose_lease(lease, format!("etcd lease {lease:x} expired before it was renewed (this ebb was paused, asleep or cut off from etcd for longer than the lease TTL of {ttl}s); another ebb may have taken over"));
                            return;
                        }
                        if shared.current.load(Ordering::SeqCst) == lease {
                            shared.deadline.store(t0 + left * 1000, Ordering::SeqCst);
                        }
                    }
                    Err(e) => {
                        if boot_ms() >= shared.deadline.load(Ordering::SeqCst) {
                            shared.lose_lease(lease, format!("etcd lease {lease:x} could not be renewed within its TTL of {ttl}s: {e}"));
                            return;
                        }
                    }
                }
            }
        });
    }
}

impl Drop for EtcdJournal {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl Store for EtcdJournal {
    fn path(&self) -> &Path {
        &self.shown
    }

    fn failure(&self) -> Option<JournalError> {
        self.failure.get()
    }

    fn shared(&self) -> bool {
        true
    }

    fn lock_broken(&self) -> JResult<Option<String>> {
        Ok(self
            .get_json::<BreakRecord>(&self.key("broken"))?
            .map(|b| b.to_string()))
    }

    fn fence(&self) -> JResult<()> {
        if let Some(why) = self
            .shared
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(self.err(why));
        }
        if self.held_lease().is_some() && boot_ms() >= self.shared.deadline.load(Ordering::SeqCst) {
            let why = format!("this ebb went longer than the lease TTL of {}s without renewing its lock (paused, asleep or cut off from etcd); another ebb may have taken over, so it makes no further change", self.ttl);
            self.shared.lose(why.clone());
            return Err(self.err(why));
        }
        Ok(())
    }

    fn lock(&self, _pool: &str, _steal: bool) -> JResult<Result<(), LockHolder>> {
        if self.held_lease().is_some() {
            return Ok(Ok(()));
        }
        if let Some((rec, lease)) = self.holder_record()? {
            return Ok(Err(self.as_holder(rec, lease)?));
        }
        let t0 = boot_ms();
        let g = self.call("/v3/lease/grant", json!({"TTL": self.ttl}))?;
        let id = num(&g["ID"]);
        let granted = num(&g["TTL"]);
        if id == 0 || granted <= 0 {
            return Err(self.err(format!("etcd granted no lease: {g}")));
        }
        let record = LockRecord {
            host: hostname(),
            pid: std::process::id(),
            user: user(),
            run_id: None,
            since_ms: now_ms(),
            lease: id.to_string(),
        };
        let val = serde_json::to_vec(&record).map_err(|e| self.err(e.to_string()))?;
        let lock = b64(self.key("lock").as_bytes());
        let v = self.call(
            "/v3/kv/txn",
            json!({
                "compare": [{"key": lock, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [
                    {"request_put": {"key": lock, "value": b64(&val), "lease": id.to_string()}},
                    {"request_put": {"key": b64(self.key("holder").as_bytes()), "value": b64(&val)}}
                ],
            }),
        )?;
        if v["succeeded"].as_bool() != Some(true) {
            let _ = self.call("/v3/lease/revoke", json!({"ID": id.to_string()}));
            return match self.holder_record()? {
                Some((rec, lease)) => Ok(Err(self.as_holder(rec, lease)?)),
                None => Err(self.err("the lock changed hands while it was being taken; try again")),
            };
        }
        self.shared
            .deadline
            .store(t0 + granted * 1000, Ordering::SeqCst);
        self.shared.keep(id);
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(Lease { id, record });
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).start();
        self.keepalive_thread(id);
        Ok(Ok(()))
    }

    fn lock_holder(&self, _pool: &str) -> JResult<Option<LockHolder>> {
        match self.holder_record()? {
            Some((rec, lease)) => self.as_holder(rec, lease).map(Some),
            None => Ok(None),
        }
    }

    fn heartbeat(&self, _pool: &str) -> JResult<()> {
        // The keepalive thread renews the lease every TTL/4; this only reports a loss.
        self.fence()
    }

    fn unlock(&self, _pool: &str) -> JResult<()> {
        self.shared.current.store(0, Ordering::SeqCst);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).stop();
        let Some(lease) = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        // Revoking the lease deletes the lock key with it (only if it is still ours).
        self.call("/v3/lease/revoke", json!({"ID": lease.id.to_string()}))
            .map(|_| ())
            .or_else(|e| {
                if e.message.contains("not found") {
                    Ok(())
                } else {
                    Err(e)
                }
            })
    }

    fn create_run(
        &self,
        pool: &str,
        pool_file: &str,
        members: &[(String, Vec<String>)],
    ) -> JResult<i64> {
        let id = self.latest_run(None)?.map(|r| r.id + 1).unwrap_or(1);
        // Members of a run whose creation was cut short (written 100 at a time, the run
        // record last) would otherwise join this one.
        self.fence()?;
        let members_prefix = self.key(&format!("member/{id:012}/"));
        let mut end = members_prefix.as_bytes().to_vec();
        if let Some(l) = end.last_mut() {
            *l += 1;
        }
        let (compare, _) = self.lock_compare();
        let v = self.call(
            "/v3/kv/txn",
            json!({"compare": compare, "success": [{"request_delete_range": {
                "key": b64(members_prefix.as_bytes()), "range_end": b64(&end)}}]}),
        )?;
        if v["succeeded"].as_bool() != Some(true) {
            return Err(self.err("the pool's lock is not ours; no run was created"));
        }
        let mut ops = Vec::with_capacity(members.len() + 2);
        for (pos, (name, ops_)) in members.iter().enumerate() {
            let m = MemberRecord {
                name: name.clone(),
                position: pos,
                state: MemberState::Pending,
                cursor: 0,
                ops: ops_.clone(),
                step: String::new(),
                reason: String::new(),
                reboot_pending: false,
            };
            let v = serde_json::to_vec(&m).map_err(|e| self.err(e.to_string()))?;
            ops.push((self.member_key(id, name), Some(v)));
        }
        let run = RunRecord {
            id,
            pool: pool.to_string(),
            pool_file: pool_file.to_string(),
            state: RunState::Running,
            started_ms: now_ms(),
            ended_ms: None,
            next_wave: 0,
            message: String::new(),
        };
        // The run record last: a reader never sees a run without its members.
        let v = serde_json::to_vec(&run).map_err(|e| self.err(e.to_string()))?;
        ops.push((self.run_key(id), Some(v)));
        self.write(ops)?;
        // A new run: nothing of it exists but what was just written.
        for kind in ["member", "action", "owed", "sample"] {
            let prefix = self.key(&format!("{kind}/{id:012}/"));
            if let Some(mut c) = self.cache_for(&prefix) {
                c.known_whole(&prefix);
            }
        }
        Ok(id)
    }

    fn latest_run(&self, _pool: Option<&str>) -> JResult<Option<RunRecord>> {
        let prefix = self.key("run/");
        let mut end = prefix.as_bytes().to_vec();
        if let Some(l) = end.last_mut() {
            *l += 1;
        }
        let v = self.call(
            "/v3/kv/range",
            json!({"key": b64(prefix.as_bytes()), "range_end": b64(&end), "limit": 1,
                   "sort_order": "DESCEND", "sort_target": "KEY"}),
        )?;
        match v["kvs"].get(0) {
            None => Ok(None),
            Some(kv) => {
                let val = unb64(kv["value"].as_str().unwrap_or("")).unwrap_or_default();
                serde_json::from_slice(&val)
                    .map(Some)
                    .map_err(|e| self.err(format!("run: unreadable record: {e}")))
            }
        }
    }

    fn run(&self, id: i64) -> JResult<Option<RunRecord>> {
        self.get_json(&self.run_key(id))
    }

    fn run_ids(&self, pool: Option<&str>) -> JResult<Vec<i64>> {
        // The keys hold this journal's pool only; the records say so too.
        Ok(self
            .scan_json::<RunRecord>(&self.key("run/"))?
            .into_iter()
            .filter(|(_, r)| pool.is_none_or(|p| p == r.pool))
            .map(|(_, r)| r.id)
            .collect())
    }

    fn set_run_state(&self, run: i64, state: RunState, message: &str) -> JResult<()> {
        self.update_run(run, |r| {
            r.state = state;
            r.message = message.to_string();
            r.ended_ms = (state != RunState::Running).then(now_ms);
        })?;
        // The lock names the run it works on.
        let mut guard = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(l), RunState::Running) = (guard.as_mut(), state) {
            if l.record.run_id != Some(run) {
                l.record.run_id = Some(run);
                let val = serde_json::to_vec(&l.record).map_err(|e| self.err(e.to_string()))?;
                let (id, lock) = (l.id, b64(self.key("lock").as_bytes()));
                drop(guard);
                let v = self.call("/v3/kv/txn", json!({
                    "compare": [{"key": lock, "target": "LEASE", "result": "EQUAL", "lease": id.to_string()}],
                    "success": [
                        {"request_put": {"key": lock, "value": b64(&val), "lease": id.to_string()}},
                        {"request_put": {"key": b64(self.key("holder").as_bytes()), "value": b64(&val)}}
                    ]}))?;
                if v["succeeded"].as_bool() != Some(true) {
                    let why = "the pool's lock is no longer ours; this ebb makes no further change"
                        .to_string();
                    self.shared.lose(why.clone());
                    return Err(self.err(why));
                }
            }
        }
        Ok(())
    }

    fn set_run_message(&self, run: i64, message: &str) -> JResult<()> {
        self.update_run(run, |r| r.message = message.to_string())
    }

    fn set_next_wave(&self, run: i64, wave: usize) -> JResult<()> {
        self.update_run(run, |r| r.next_wave = wave)
    }

    fn members(&self, run: i64) -> JResult<Vec<MemberRecord>> {
        let mut all: Vec<MemberRecord> = self
            .scan_json(&self.key(&format!("member/{run:012}/")))?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        all.sort_by_key(|m| m.position);
        Ok(all)
    }

    fn member(&self, run: i64, name: &str) -> JResult<Option<MemberRecord>> {
        self.get_json(&self.member_key(run, name))
    }

    fn set_member_state(
        &self,
        run: i64,
        member: &str,
        state: MemberState,
        step: &str,
        reason: &str,
    ) -> JResult<()> {
        self.update_member(run, member, |m| {
            m.state = state;
            m.step = step.to_string();
            m.reason = reason.to_string();
        })
    }

    fn set_member_ops(&self, run: i64, member: &str, ops: &[String]) -> JResult<()> {
        self.update_member(run, member, |m| m.ops = ops.to_vec())
    }

    fn set_reboot_pending(&self, run: i64, member: &str, pending: bool) -> JResult<()> {
        self.update_member(run, member, |m| m.reboot_pending = pending)
    }

    fn begin_action(
        &self,
        run: i64,
        member: &str,
        op: usize,
        name: &str,
        kind: &ActionKind,
    ) -> JResult<i64> {
        let id = self.next_id();
        let a = ActionRecord {
            id,
            member: member.to_string(),
            op,
            name: name.to_string(),
            kind: kind.clone(),
            started_ms: now_ms(),
            ended_ms: None,
            outcome: None,
            exit_code: None,
            output: String::new(),
            detail: String::new(),
            boot_before: None,
        };
        self.put_json(self.action_key(run, id), &a)?;
        self.action_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, run);
        Ok(id)
    }

    fn set_action_detail(&self, action: i64, detail: &str) -> JResult<()> {
        self.update_action(action, |a| a.detail = detail.to_string())
    }

    fn set_action_boot_before(&self, action: i64, boot: &str) -> JResult<()> {
        self.update_action(action, |a| a.boot_before = Some(boot.to_string()))
    }

    fn set_action_process(&self, action: i64, process: &str) -> JResult<()> {
        let key = self.key(&format!("process/{action:020}"));
        self.write(vec![(key, Some(process.as_bytes().to_vec()))])
    }

    fn action_process(&self, action: i64) -> JResult<Option<String>> {
        Ok(self
            .get(&self.key(&format!("process/{action:020}")))?
            .map(|(v, _)| String::from_utf8_lossy(&v).into_owned()))
    }

    fn set_action_stopped(&self, action: i64, at_ms: i64) -> JResult<()> {
        let run = self.action_run(action)?;
        let key = self.action_key(run, action);
        let Some(mut a) = self.get_json::<ActionRecord>(&key)? else {
            return Ok(());
        };
        if a.outcome.is_some() {
            return Ok(());
        }
        a.ended_ms = Some(at_ms);
        self.put_json(key, &a)
    }

    fn end_action(&self, run: i64, member: &str, action: i64, end: &ActionEnd<'_>) -> JResult<()> {
        let key = self.action_key(run, action);
        let mut ops = Vec::new();
        if let Some(mut a) = self
            .get_json::<ActionRecord>(&key)?
            .map(ActionRecord::upgraded)
        {
            a.ended_ms = Some(now_ms());
            a.outcome = Some(end.outcome.clone());
            a.exit_code = end.exit_code;
            a.output = tail(end.output, OUTPUT_LIMIT).to_string();
            if !end.detail.is_empty() {
                a.detail = end.detail.to_string();
            }
            ops.push((
                key,
                Some(serde_json::to_vec(&a).map_err(|e| self.err(e.to_string()))?),
            ));
        }
        if let Some(next) = end.advance_to {
            let mkey = self.member_key(run, member);
            if let Some(mut m) = self.get_json::<MemberRecord>(&mkey)? {
                m.cursor = next;
                ops.push((
                    mkey,
                    Some(serde_json::to_vec(&m).map_err(|e| self.err(e.to_string()))?),
                ));
            }
        }
        self.write(ops)
    }

    fn set_cursor(&self, run: i64, member: &str, cursor: usize) -> JResult<()> {
        self.update_member(run, member, |m| m.cursor = cursor)
    }

    fn actions(&self, run: i64, member: Option<&str>) -> JResult<Vec<ActionRecord>> {
        let all: Vec<ActionRecord> = self
            .scan_json::<ActionRecord>(&self.key(&format!("action/{run:012}/")))?
            .into_iter()
            .map(|(_, a)| a.upgraded())
            .filter(|a| member.is_none_or(|m| a.member == m))
            .collect();
        Ok(all)
    }

    fn push_owed(
        &self,
        run: i64,
        member: &str,
        name: &str,
        kind: &OwedKind,
        payload: &str,
    ) -> JResult<()> {
        if self
            .owed(run, member)?
            .iter()
            .any(|o| o.name == name && o.kind == *kind)
        {
            return Ok(());
        }
        let id = self.next_id();
        let key = self.key(&format!("owed/{run:012}/{}/{id:020}", esc(member)));
        let o = Owed {
            id,
            name: name.to_string(),
            kind: kind.clone(),
            payload: payload.to_string(),
        };
        self.put_json(key.clone(), &o)?;
        self.owed_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, key);
        Ok(())
    }

    fn owed(&self, run: i64, member: &str) -> JResult<Vec<Owed>> {
        let found =
            self.scan_json::<Owed>(&self.key(&format!("owed/{run:012}/{}/", esc(member))))?;
        let mut keys = self.owed_keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(found
            .into_iter()
            .map(|(k, o)| {
                keys.insert(o.id, k);
                o
            })
            .collect())
    }

    fn pay_owed(&self, owed_id: i64) -> JResult<()> {
        let key = self
            .owed_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&owed_id)
            .cloned();
        let key = match key {
            Some(k) => k,
            None => {
                let suffix = format!("/{owed_id:020}");
                match self
                    .scan(&self.key("owed/"))?
                    .into_iter()
                    .find(|(k, _)| k.ends_with(&suffix))
                {
                    Some((k, _)) => k,
                    None => return Ok(()),
                }
            }
        };
        self.write(vec![(key, None)])
    }

    fn member_times(&self, _pool: &str, limit: usize) -> JResult<Vec<(String, Duration)>> {
        // Run ids of a pool are 1, 2, ... (one prefix per pool): newest first, reading
        // members and then actions only of runs that have a member done, and at most the
        // last 100 runs, so that a long history costs a bounded number of scans.
        let Some(latest) = self.latest_run(None)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for run in (1..=latest.id).rev().take(100) {
            let done: Vec<String> = self
                .members(run)?
                .into_iter()
                .filter(|m| m.state == MemberState::Done)
                .map(|m| m.name)
                .collect();
            if done.is_empty() {
                continue;
            }
            let mut times: Vec<(i64, String, i64)> = Vec::new();
            let actions = self.actions(run, None)?;
            for name in done {
                let mine = actions
                    .iter()
                    .filter(|a| a.member == name)
                    .filter_map(|a| a.ended_ms.map(|e| (a.started_ms, e)));
                let (mut work, mut last) = (0, 0);
                for (s, e) in mine {
                    work += (e - s).max(0);
                    last = last.max(e);
                }
                times.push((last, name, work));
            }
            times.sort_by_key(|t| std::cmp::Reverse(t.0));
            for (_, name, work) in times {
                out.push((name, Duration::from_millis(work as u64)));
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn sample(&self, run: i64, in_service: usize, total: usize) -> JResult<()> {
        let id = self.next_id();
        self.put_json(
            self.key(&format!("sample/{run:012}/{id:020}")),
            &(now_ms(), in_service, total),
        )
    }

    fn samples(&self, run: i64) -> JResult<Vec<(i64, usize, usize)>> {
        Ok(self
            .scan_json::<(i64, usize, usize)>(&self.key(&format!("sample/{run:012}/")))?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }
}

impl EtcdJournal {
    fn action_run(&self, action: i64) -> JResult<i64> {
        if let Some(r) = self
            .action_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&action)
        {
            return Ok(*r);
        }
        let suffix = format!("/{action:020}");
        self.scan(&self.key("action/"))?
            .into_iter()
            .find(|(k, _)| k.ends_with(&suffix))
            .and_then(|(k, _)| k.rsplit('/').nth(1).and_then(|r| r.parse().ok()))
            .ok_or_else(|| self.err(format!("action {action} is not in etcd")))
    }
}
