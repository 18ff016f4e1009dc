//! The documents `ebb check --json`, `ebb plan --json` and `ebb lock status --json` print,
//! and the `versions` line that ends `ebb run --json`: plain structs, which the text
//! renderings read too. Their shapes are pinned by `tests/json_shapes.rs`.

use ebb_drivers::check::version::VersionRow;
use ebb_engine::interfaces::HostState;
use ebb_engine::journal::etcd::LockStatus;
use ebb_engine::journal::{ActionKind, LockHolder};
use ebb_engine::ops::ops_for;
use ebb_engine::plan::Plan;
use serde::Serialize;

use crate::windows::Timing;

/// `doc` as one line of JSON with its keys sorted at every level. These documents were
/// first built as `serde_json::Value`s, whose maps sort their keys; scripts have read them
/// in that order since, so it is kept, whatever order the structs declare.
pub fn sorted_line<T: Serialize>(doc: &T) -> String {
    serde_json::to_value(doc)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// `ebb check --json` of a pool file that does not load.
#[derive(Debug, Serialize)]
pub struct InvalidFile<'a> {
    /// Always false.
    pub ok: bool,
    /// Always false: the file itself is wrong.
    pub valid: bool,
    /// The pool file.
    pub file: String,
    /// One line each (`file:line: key: message`).
    pub problems: &'a [String],
}

impl<'a> InvalidFile<'a> {
    /// The document for `file` and its problems.
    pub fn new(file: &std::path::Path, problems: &'a [String]) -> Self {
        InvalidFile {
            ok: false,
            valid: false,
            file: file.display().to_string(),
            problems,
        }
    }
}

/// `ebb check --json` of a pool file that loads.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// No problems.
    pub ok: bool,
    /// Always true: the file loaded.
    pub valid: bool,
    /// The pool's name.
    pub pool: String,
    /// Every member as the balancer sees it, in pool-file order.
    pub members: Vec<MemberCheck>,
    /// What works but should be looked at.
    pub warnings: Vec<String>,
    /// What stops a run, one line each.
    pub problems: Vec<String>,
    /// The pool-wide version table (version checks only).
    pub versions: Vec<VersionRow>,
}

/// One member in [`CheckReport`].
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum MemberCheck {
    /// The balancer told its state.
    Read {
        /// Member name.
        name: String,
        /// Its host state.
        state: HostState,
        /// Started and not failing health checks.
        in_service: bool,
        /// Active connections, when the balancer knows them.
        active_connections: Option<u64>,
        /// The balancer's own words for the state.
        detail: String,
    },
    /// The balancer could not tell (the error is among the problems too).
    Unreachable {
        /// Member name.
        name: String,
        /// Why.
        error: String,
    },
}

/// The line that ends `ebb run --json` and `ebb resume --json` when the pool has version
/// checks.
#[derive(Debug, Serialize)]
pub struct VersionsLine<'a> {
    /// Always `versions`.
    pub event: &'static str,
    /// The pool-wide version table.
    pub members: &'a [VersionRow],
}

/// `ebb plan --json`.
#[derive(Debug, Serialize)]
pub struct PlanDoc {
    /// The pool's name.
    pub pool: String,
    /// The balancer driver.
    pub driver: String,
    /// How many may be out, and how long to wait for that.
    pub policy: PolicyDoc,
    /// The waves in order.
    pub waves: Vec<WaveDoc>,
    /// The run played forward on expected times, in the maintenance windows.
    pub timing: Timing,
}

/// `policy` of [`PlanDoc`].
#[derive(Debug, Serialize)]
pub struct PolicyDoc {
    /// At most this many members out at once (a percentage resolved for this pool).
    pub max_unavailable: usize,
    /// At least this many in service.
    pub min_in_service: usize,
    /// How long to wait for the policy to allow the next member, in seconds.
    pub capacity_wait_s: u64,
}

/// One wave of [`PlanDoc`].
#[derive(Debug, Serialize)]
pub struct WaveDoc {
    /// Its name (`all` without waves, `wave 2` for an unnamed one).
    pub name: String,
    /// The run pauses for approval after it.
    pub pause_after: bool,
    /// Its members, in order.
    pub members: Vec<PlannedMember>,
}

/// One member of a [`WaveDoc`].
#[derive(Debug, Serialize)]
pub struct PlannedMember {
    /// Member name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// Its name in the balancer.
    pub lb_name: String,
    /// The operations of its turn, in order.
    pub ops: Vec<PlannedOp>,
    /// What runs if verify or the bake fails.
    pub rollback: Vec<PlannedOp>,
}

/// One operation of a [`PlannedMember`].
#[derive(Debug, Serialize)]
pub struct PlannedOp {
    /// The step's name (`drain`, `install`, ...).
    pub name: String,
    /// What kind of operation it is.
    pub kind: ActionKind,
}

impl PlanDoc {
    /// The plan as `ebb plan` shows it, with its `timing`.
    pub fn new(plan: &Plan, timing: Timing) -> Self {
        let total = plan.members.len();
        let member = |i: usize| {
            let m = &plan.members[i];
            let (rollback, ops): (Vec<_>, Vec<_>) =
                ops_for(plan, i).into_iter().partition(|o| o.is_rollback());
            let named = |ops: Vec<ebb_engine::ops::Op>| {
                ops.into_iter()
                    .map(|o| PlannedOp {
                        name: o.name(plan),
                        kind: o.kind(),
                    })
                    .collect()
            };
            PlannedMember {
                name: m.name.clone(),
                address: m.address.clone(),
                lb_name: m.lb_name.clone(),
                ops: named(ops),
                rollback: named(rollback),
            }
        };
        PlanDoc {
            pool: plan.pool.name.clone(),
            driver: plan.balancer.driver.clone(),
            policy: PolicyDoc {
                max_unavailable: plan.pool.max_unavailable.resolve(total),
                min_in_service: plan.pool.min_in_service,
                capacity_wait_s: plan.pool.capacity_wait.as_secs(),
            },
            waves: plan
                .waves
                .iter()
                .map(|w| WaveDoc {
                    name: w.name.clone(),
                    pause_after: w.pause_after,
                    members: w.members.iter().map(|&i| member(i)).collect(),
                })
                .collect(),
            timing,
        }
    }
}

/// `ebb lock status --json` on the SQLite backend.
#[derive(Debug, Serialize)]
pub struct SqliteLock<'a> {
    /// Always `sqlite`.
    pub backend: &'static str,
    /// The live holder, if any.
    pub holder: &'a Option<LockHolder>,
}

/// `ebb lock status --json` on the etcd backend: the lease's holder, the last one and
/// the last break.
#[derive(Debug, Serialize)]
pub struct EtcdLock<'a> {
    /// Always `etcd`.
    pub backend: &'static str,
    /// The lock as etcd holds it.
    #[serde(flatten)]
    pub status: &'a LockStatus,
}
