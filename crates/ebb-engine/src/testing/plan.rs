//! Plans for tests, built directly (no pool file), on a millisecond time scale.

use crate::plan::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The reboot command of [`PlanBuilder::rebooting`]; a [`FakeTransport`](super::FakeTransport)
/// that has no script for it reboots (down for a few milliseconds, then a new boot id).
pub const REBOOT_COMMAND: &str = "reboot";

/// A plain step named `name` whose command is its name (so a transport script names it
/// the same way): idempotent, timeout 1 s, no reboot. Change fields with struct update.
pub fn step(name: &str) -> StepSpec {
    StepSpec {
        name: name.into(),
        run: name.into(),
        undo: None,
        when: When::Every,
        only_group: None,
        timeout: Duration::from_secs(1),
        idempotent: true,
        retries: 0,
        retry_interval: Duration::from_millis(2),
        reboot: RebootPolicy::Never,
        reboot_required_exit_codes: vec![3010],
        maintenance: None,
    }
}

/// A monitoring maintenance step (a webhook to nowhere: the fake maintenance answers it).
pub fn maintenance_step(name: &str) -> StepSpec {
    StepSpec {
        maintenance: Some(MaintenanceSpec {
            kind: "webhook".into(),
            path: format!("runbook.step[{name}].webhook"),
            settings: toml::Table::from_iter([(
                "url".to_string(),
                toml::Value::String(format!("http://fake.invalid/{name}")),
            )]),
        }),
        run: String::new(),
        ..step(name)
    }
}

/// A check named `name` (answered by the fake checker), no retries, 2 ms between
/// attempts, 500 ms per attempt.
pub fn check(name: &str) -> CheckSpec {
    CheckSpec {
        name: name.into(),
        kind: "scripted".into(),
        check: std::sync::Arc::new(super::checks::ScriptedCheck),
        retries: 0,
        interval: Duration::from_millis(2),
        // Generous: a scripted check answers at once, but under the etcd journal on a loaded
        // machine the runtime can be late to poll it; tests of a timeout set their own.
        timeout: Duration::from_secs(30),
    }
}

/// A wave of the members at `members` (indexes).
pub fn wave(name: &str, members: &[usize], pause_after: bool) -> Wave {
    Wave {
        name: name.into(),
        members: members.to_vec(),
        pause_after,
    }
}

/// Builds a [`Plan`] of members `m1`..`mN` (balancer name = member name), one wave,
/// `max_unavailable = 1`, drainstop with hold, and short bounds: drain 300 ms, rejoin
/// 300 ms, capacity_wait 300 ms.
pub struct PlanBuilder {
    plan: Plan,
}

impl PlanBuilder {
    /// A plan with `members` members and no steps.
    pub fn new(members: usize) -> Self {
        let members: Vec<Member> = (1..=members)
            .map(|i| Member {
                name: format!("m{i}"),
                address: format!("127.0.0.1:{}", 18000 + i),
                lb_name: format!("m{i}"),
                transport: "fake".into(),
                shell: Shell::Sh,
                group: None,
                vars: BTreeMap::new(),
                boot_id: None,
                settings: toml::Table::new(),
                weight: 1,
            })
            .collect();
        let all = (0..members.len()).collect::<Vec<_>>();
        PlanBuilder {
            plan: Plan {
                file: PathBuf::from("fake-pool.toml"),
                lines: Default::default(),
                pool: PoolSpec {
                    name: "fake-pool".into(),
                    max_unavailable: MaxUnavailable::Count(1),
                    min_in_service: 0,
                    capacity_wait: Duration::from_millis(300),
                    checks: vec![],
                    gate: None,
                    windows: vec![],
                },
                balancer: BalancerSpec {
                    driver: "fake".into(),
                    settings: toml::Table::new(),
                },
                members,
                runbook: Runbook {
                    on_failure: OnFailure::Halt,
                    max_failed: 0,
                    drain: DrainSpec {
                        mode: DrainMode::Drainstop,
                        timeout: Duration::from_millis(300),
                        on_timeout: OnTimeout::Stop,
                        hold: true,
                        until: vec![],
                    },
                    steps: vec![],
                    reboot: None,
                    verify: vec![],
                    rejoin_timeout: Duration::from_millis(300),
                    // No retries unless a test asks: a scripted failure fails at once.
                    balancer_retry: Duration::ZERO,
                    stop_after: None,
                    expected_member_time: None,
                    bake: None,
                    rollback: vec![],
                    rollback_on: RollbackOn::default(),
                },
                waves: vec![wave("all", &all, false)],
                notify: vec![],
                state: Default::default(),
            },
        }
    }

    /// `max_unavailable`.
    pub fn max_unavailable(mut self, m: MaxUnavailable) -> Self {
        self.plan.pool.max_unavailable = m;
        self
    }

    /// `min_in_service`.
    pub fn min_in_service(mut self, n: usize) -> Self {
        self.plan.pool.min_in_service = n;
        self
    }

    /// `capacity_wait`.
    pub fn capacity_wait(mut self, d: Duration) -> Self {
        self.plan.pool.capacity_wait = d;
        self
    }

    /// `[runbook] balancer_retry` (the harness's default is no retries).
    pub fn balancer_retry(mut self, d: Duration) -> Self {
        self.plan.runbook.balancer_retry = d;
        self
    }

    /// `[[pool.window]]`s and `[runbook] expected_member_time`.
    pub fn windows(
        mut self,
        windows: Vec<crate::window::Window>,
        expected: Option<Duration>,
    ) -> Self {
        self.plan.pool.windows = windows;
        self.plan.runbook.expected_member_time = expected;
        self
    }

    /// `[runbook] stop_after`.
    pub fn stop_after(mut self, d: Duration) -> Self {
        self.plan.runbook.stop_after = Some(d);
        self
    }

    /// `on_failure` and `max_failed`.
    pub fn on_failure(mut self, f: OnFailure, max_failed: usize) -> Self {
        self.plan.runbook.on_failure = f;
        self.plan.runbook.max_failed = max_failed;
        self
    }

    /// `[runbook.drain]` mode, timeout and on_timeout.
    pub fn drain(mut self, mode: DrainMode, timeout: Duration, on_timeout: OnTimeout) -> Self {
        self.plan.runbook.drain.mode = mode;
        self.plan.runbook.drain.timeout = timeout;
        self.plan.runbook.drain.on_timeout = on_timeout;
        self
    }

    /// A drain gate (`until`): a check (see [`check`]) that must pass before the drain
    /// ends.
    pub fn drain_until(mut self, name: &str) -> Self {
        self.plan.runbook.drain.until.push(check(name));
        self
    }

    /// `hold`.
    pub fn hold(mut self, hold: bool) -> Self {
        self.plan.runbook.drain.hold = hold;
        self
    }

    /// A plain step (see [`step`]).
    pub fn step(self, name: &str) -> Self {
        self.with_step(step(name))
    }

    /// A paired step: its undo command is `undo NAME`.
    pub fn paired(self, name: &str) -> Self {
        self.with_step(StepSpec {
            undo: Some(format!("undo {name}")),
            ..step(name)
        })
    }

    /// Any step.
    pub fn with_step(mut self, s: StepSpec) -> Self {
        self.plan.runbook.steps.push(s);
        self
    }

    /// `[runbook.reboot]` with [`REBOOT_COMMAND`], a 500 ms bound and 2 ms polls.
    pub fn rebooting(mut self) -> Self {
        self.plan.runbook.reboot = Some(RebootSpec {
            command: REBOOT_COMMAND.into(),
            timeout: Duration::from_millis(500),
            poll_interval: Duration::from_millis(2),
        });
        self
    }

    /// A verify check (see [`check`]).
    pub fn verify(mut self, name: &str) -> Self {
        self.plan.runbook.verify.push(check(name));
        self
    }

    /// `[runbook.bake]` with `duration` and `interval` and the checks named (see [`check`]).
    pub fn bake(mut self, duration: Duration, interval: Duration, checks: &[&str]) -> Self {
        self.plan.runbook.bake = Some(BakeSpec {
            duration,
            interval,
            checks: checks.iter().map(|c| check(c)).collect(),
        });
        self
    }

    /// A rollback step (see [`step`]): `rollback_on` becomes both verify and bake, as a
    /// pool file without `rollback_on` says.
    pub fn rollback(mut self, s: StepSpec) -> Self {
        self.plan.runbook.rollback.push(s);
        self.plan.runbook.rollback_on = RollbackOn {
            verify: true,
            bake: true,
        };
        self
    }

    /// A pool check (before the run, on every other member after each rejoin).
    pub fn pool_check(mut self, name: &str) -> Self {
        self.plan.pool.checks.push(check(name));
        self
    }

    /// Replaces the waves.
    pub fn waves(mut self, waves: Vec<Wave>) -> Self {
        self.plan.waves = waves;
        self
    }

    /// Changes anything else.
    pub fn edit(mut self, f: impl FnOnce(&mut Plan)) -> Self {
        f(&mut self.plan);
        self
    }

    /// The plan.
    pub fn build(self) -> Plan {
        self.plan
    }
}
