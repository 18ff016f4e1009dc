//! The plug-ins a run can use, handed to the engine by whoever builds it (the `ebb` binary
//! registers the drivers of `ebb-drivers`; a test registers fakes). The engine names no
//! balancer driver, transport, check kind or maintenance kind: it reads `driver = "..."`,
//! `transport = "..."`, which kind's key a check has and a step's `NAME = { ... }`, looks
//! the name up here, hands the
//! plug-in its section (opaque to the engine) to validate, and later asks it to build.
//!
//! A plug-in is a descriptor: a name, the keys it accepts (with kinds and one-line
//! descriptions, for the reader and for tools), `validate` returning line-located errors,
//! and `build`.

use crate::interfaces::{
    AlertGate, Balancer, BuiltChecks, Check, Checker, DriverError, DriverResult, Maintenance,
    MaintenanceStep, Transport,
};
use crate::member::Drivers;
use crate::plan::{GateSpec, MaintenanceSpec, Member, Plan};
use async_trait::async_trait;
use ebb_config::{ConfigError, ConfigErrors, Context, Key, Kind, Section};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A balancer driver: `[balancer] driver = NAME` and its keys.
pub trait BalancerDriver: Send + Sync {
    /// The value of `driver` that selects it.
    fn name(&self) -> &'static str;

    /// The keys it accepts in `[balancer]` (besides `driver`).
    fn keys(&self) -> Vec<Key>;

    /// Checks `[balancer]` (`plan.balancer.settings`, with the plan's members and runbook
    /// for cross-checks), recording every problem in `cx` with its line.
    fn validate(&self, plan: &Plan, cx: &mut Context);

    /// Builds the driver for a validated plan. `transports` are the members' transports
    /// (in plan order), for drivers that act through the members themselves.
    fn build(
        &self,
        plan: &Plan,
        transports: &[Arc<dyn Transport>],
    ) -> Result<Arc<dyn Balancer>, ConfigErrors>;
}

/// A transport: `transport = NAME` on a member (or in `[defaults]`), and its keys there.
pub trait TransportKind: Send + Sync {
    /// The value of `transport` that selects it.
    fn name(&self) -> &'static str;

    /// The keys it owns in `[[member]]` and `[defaults]` (`ssh_port`, ...). Every member
    /// and `[defaults]` accepts the keys of every registered transport.
    fn keys(&self) -> Vec<Key>;

    /// Checks its keys in one member's table or in `[defaults]`, reading them through
    /// `section` (which then knows them as read).
    fn validate(&self, cx: &mut Context, section: &mut Section<'_>);

    /// Whether it finds a member's boot identity by itself; when not, a runbook that
    /// reboots needs `boot_id = "<command>"` on the members using it.
    fn knows_boot_identity(&self) -> bool;

    /// Builds the transport of `member` (of a validated plan).
    fn build(&self, plan: &Plan, member: &Member) -> Result<Arc<dyn Transport>, ConfigErrors>;
}

/// A maintenance kind: `NAME = { ... }` in a `[[runbook.step]]` (`alertmanager`,
/// `webhook`), begun before the member goes out and ended when it returns. The engine finds
/// which registered kind names a key of the step and hands it the table (`MaintenanceSpec`).
pub trait MaintenanceKind: Send + Sync {
    /// The step's key that selects it.
    fn name(&self) -> &'static str;

    /// One line saying what a step of this kind does (the step's key `NAME`, for tools).
    fn description(&self) -> &'static str;

    /// The keys it accepts in its table.
    fn keys(&self) -> Vec<Key>;

    /// Checks its table (`spec.settings`, found at `spec.path`), and the placeholders in
    /// it against every member, recording every problem in `cx` with its line.
    fn validate(&self, spec: &MaintenanceSpec, members: &[Member], cx: &mut Context);

    /// Builds the step for a validated plan.
    fn build(
        &self,
        plan: &Plan,
        spec: &MaintenanceSpec,
    ) -> Result<Arc<dyn MaintenanceStep>, ConfigErrors>;
}

/// A check kind: the key that selects it in a check table (`[[runbook.verify]]`,
/// `[[pool.check]]`, drain gates) and what that key holds.
pub trait CheckKind: Send + Sync {
    /// The key that selects it (`http`, `prometheus`).
    fn name(&self) -> &'static str;

    /// What the key holds: [`Kind::String`] (`tcp = "host:port"`) or [`Kind::Table`].
    fn value(&self) -> Kind;

    /// One line saying what it checks (for the schema and the docs).
    fn description(&self) -> &'static str;

    /// How it is written, for "a check needs exactly one of" (`tcp = "host:port"`).
    fn example(&self) -> &'static str;

    /// The keys of its table (none when its value is a string).
    fn keys(&self) -> Vec<Key>;

    /// Checks its value, found at `key` (`runbook.verify[0].http`), recording every
    /// problem in `cx` with its line.
    fn validate(&self, cx: &mut Context, key: &str, value: &toml::Value);

    /// Builds the check from a value that `validate` accepted. `cx` knows the pool file
    /// (relative paths are relative to it) and its lines.
    fn build(
        &self,
        cx: &Context,
        key: &str,
        value: &toml::Value,
    ) -> Result<Arc<dyn Check>, ConfigErrors>;
}

/// The plug-ins available to a run. Registration order is the order names are listed in
/// messages; the first transport registered is the default one.
#[derive(Clone, Default)]
pub struct Registry {
    balancers: Vec<Arc<dyn BalancerDriver>>,
    transports: Vec<Arc<dyn TransportKind>>,
    checks: Vec<Arc<dyn CheckKind>>,
    checker: Option<Arc<dyn Checker>>,
    maintenance: Vec<Arc<dyn MaintenanceKind>>,
    gate: Option<Arc<dyn AlertGate>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a balancer driver (replacing one of the same name).
    pub fn balancer(mut self, driver: impl BalancerDriver + 'static) -> Self {
        self.balancers.retain(|d| d.name() != driver.name());
        self.balancers.push(Arc::new(driver));
        self
    }

    /// Registers a transport (replacing one of the same name).
    pub fn transport(mut self, kind: impl TransportKind + 'static) -> Self {
        self.transports.retain(|t| t.name() != kind.name());
        self.transports.push(Arc::new(kind));
        self
    }

    /// Registers a check kind (replacing one of the same name).
    pub fn check(mut self, kind: impl CheckKind + 'static) -> Self {
        self.checks.retain(|k| k.name() != kind.name());
        self.checks.push(Arc::new(kind));
        self
    }

    /// Sets what runs checks instead of the checks themselves (a test's scripted
    /// checker); without one, each check runs as its kind built it.
    pub fn checker(mut self, checker: impl Checker + 'static) -> Self {
        self.checker = Some(Arc::new(checker));
        self
    }

    /// Registers a maintenance kind (replacing one of the same name).
    pub fn maintenance(mut self, kind: impl MaintenanceKind + 'static) -> Self {
        self.maintenance.retain(|k| k.name() != kind.name());
        self.maintenance.push(Arc::new(kind));
        self
    }

    /// Sets what answers `[pool.gate]`.
    pub fn alert_gate(mut self, gate: impl AlertGate + 'static) -> Self {
        self.gate = Some(Arc::new(gate));
        self
    }

    /// The balancer driver called `name`.
    pub fn find_balancer(&self, name: &str) -> Option<&Arc<dyn BalancerDriver>> {
        self.balancers.iter().find(|d| d.name() == name)
    }

    /// The transport called `name`.
    pub fn find_transport(&self, name: &str) -> Option<&Arc<dyn TransportKind>> {
        self.transports.iter().find(|t| t.name() == name)
    }

    /// The maintenance kind called `name`.
    pub fn find_maintenance(&self, name: &str) -> Option<&Arc<dyn MaintenanceKind>> {
        self.maintenance.iter().find(|k| k.name() == name)
    }

    /// Every maintenance kind, in registration order.
    pub fn maintenance_kinds(&self) -> &[Arc<dyn MaintenanceKind>] {
        &self.maintenance
    }

    /// A step's keys that select a maintenance kind (one per kind, each a table).
    pub fn maintenance_keys(&self) -> Vec<Key> {
        let kinds = self.maintenance.iter();
        kinds
            .map(|k| Key::new(k.name(), Kind::Table, k.description()))
            .collect()
    }

    /// The check kind called `name`.
    pub fn find_check(&self, name: &str) -> Option<&Arc<dyn CheckKind>> {
        self.checks.iter().find(|k| k.name() == name)
    }

    /// Every check kind, in registration order.
    pub fn checks(&self) -> &[Arc<dyn CheckKind>] {
        &self.checks
    }

    /// Every balancer driver, in registration order.
    pub fn balancers(&self) -> &[Arc<dyn BalancerDriver>] {
        &self.balancers
    }

    /// Every transport, in registration order.
    pub fn transports(&self) -> &[Arc<dyn TransportKind>] {
        &self.transports
    }

    /// The transport of members that name none.
    pub fn default_transport(&self) -> Option<&str> {
        self.transports.first().map(|t| t.name())
    }

    /// `"a", "b", "c"`: the registered balancer driver names, for messages.
    pub fn balancer_names(&self) -> String {
        quoted(self.balancers.iter().map(|d| d.name()))
    }

    /// `"a", "b"`: the registered transport names, for messages.
    pub fn transport_names(&self) -> String {
        quoted(self.transports.iter().map(|t| t.name()))
    }

    /// Builds every driver a validated plan needs: the members' transports, then the
    /// balancer (which may act through them), the checker and the maintenance steps.
    pub fn build(&self, plan: &Plan) -> Result<Drivers, ConfigErrors> {
        let mut errors = Vec::new();
        let mut transports = Vec::new();
        for (i, m) in plan.members.iter().enumerate() {
            match self.find_transport(&m.transport) {
                Some(t) => match t.build(plan, m) {
                    Ok(t) => transports.push(t),
                    Err(mut e) => errors.append(&mut e.0),
                },
                None => errors.push(plan_error(
                    plan,
                    &format!("member[{i}].transport"),
                    format!(
                        "expected one of {}, found \"{}\"",
                        self.transport_names(),
                        m.transport
                    ),
                )),
            }
        }
        let balancer = match self.find_balancer(&plan.balancer.driver) {
            Some(d) if errors.is_empty() => match d.build(plan, &transports) {
                Ok(b) => Some(b),
                Err(mut e) => {
                    errors.append(&mut e.0);
                    None
                }
            },
            Some(_) => None,
            None => {
                errors.push(plan_error(
                    plan,
                    "balancer.driver",
                    format!(
                        "expected one of {}, found \"{}\"",
                        self.balancer_names(),
                        plan.balancer.driver
                    ),
                ));
                None
            }
        };
        let maintenance = self.build_maintenance(plan, &mut errors);
        let checker = self
            .checker
            .clone()
            .unwrap_or_else(|| Arc::new(BuiltChecks) as Arc<dyn Checker>);
        match balancer {
            Some(balancer) if errors.is_empty() => Ok(Drivers {
                balancer,
                transports,
                checker,
                maintenance,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// The maintenance steps of `plan`, each built by its kind, behind one [`Maintenance`].
    fn build_maintenance(
        &self,
        plan: &Plan,
        errors: &mut Vec<ConfigError>,
    ) -> Arc<dyn Maintenance> {
        let mut steps = BTreeMap::new();
        for spec in plan
            .runbook
            .steps
            .iter()
            .filter_map(|s| s.maintenance.as_ref())
        {
            match self.find_maintenance(&spec.kind) {
                Some(kind) => match kind.build(plan, spec) {
                    Ok(step) => {
                        steps.insert(spec.path.clone(), step);
                    }
                    Err(mut e) => errors.append(&mut e.0),
                },
                None => errors.push(plan_error(
                    plan,
                    &spec.path,
                    format!("no maintenance kind \"{}\" is registered", spec.kind),
                )),
            }
        }
        if plan.pool.gate.is_some() && self.gate.is_none() {
            errors.push(plan_error(plan, "pool.gate", "no alert gate is registered"));
        }
        Arc::new(PluggedMaintenance {
            steps,
            gate: self.gate.clone(),
        })
    }
}

/// The engine's [`Maintenance`] for a run: each step's calls go to what its kind built.
struct PluggedMaintenance {
    /// By `MaintenanceSpec::path`.
    steps: BTreeMap<String, Arc<dyn MaintenanceStep>>,
    gate: Option<Arc<dyn AlertGate>>,
}

impl PluggedMaintenance {
    fn step(&self, spec: &MaintenanceSpec) -> DriverResult<&Arc<dyn MaintenanceStep>> {
        self.steps.get(&spec.path).ok_or_else(|| {
            DriverError::new(format!(
                "{}: this maintenance step was not built",
                spec.path
            ))
        })
    }
}

#[async_trait]
impl Maintenance for PluggedMaintenance {
    async fn begin(
        &self,
        spec: &MaintenanceSpec,
        member: &Member,
        key: &str,
    ) -> DriverResult<String> {
        self.step(spec)?.begin(member, key).await
    }

    async fn end(
        &self,
        spec: &MaintenanceSpec,
        member: &Member,
        key: &str,
        token: &str,
    ) -> DriverResult<String> {
        self.step(spec)?.end(member, key, token).await
    }

    async fn gate_alerts(&self, gate: &GateSpec) -> DriverResult<Vec<String>> {
        match &self.gate {
            Some(g) => g.firing(gate).await,
            None => Err(DriverError::new("no alert gate is registered")),
        }
    }
}

/// A problem with `key` of the plan's pool file, on that key's line.
pub fn plan_error(plan: &Plan, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: plan.file.display().to_string(),
        line: plan.lines.line(key),
        key: key.to_string(),
        message: message.into(),
    }
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::interfaces::Transport;

    /// A balancer driver that accepts no keys and is never built: for config tests.
    pub(crate) struct Inert(pub &'static str);

    impl BalancerDriver for Inert {
        fn name(&self) -> &'static str {
            self.0
        }
        fn keys(&self) -> Vec<Key> {
            Vec::new()
        }
        fn validate(&self, plan: &Plan, cx: &mut Context) {
            Section::new(&plan.balancer.settings, "balancer", &[]).finish(cx);
        }
        fn build(
            &self,
            plan: &Plan,
            _: &[Arc<dyn Transport>],
        ) -> Result<Arc<dyn Balancer>, ConfigErrors> {
            Err(ConfigErrors(vec![plan_error(plan, "balancer", "inert")]))
        }
    }

    impl TransportKind for Inert {
        fn name(&self) -> &'static str {
            self.0
        }
        fn keys(&self) -> Vec<Key> {
            Vec::new()
        }
        fn validate(&self, _: &mut Context, _: &mut Section<'_>) {}
        fn knows_boot_identity(&self) -> bool {
            false
        }
        fn build(&self, plan: &Plan, _: &Member) -> Result<Arc<dyn Transport>, ConfigErrors> {
            Err(ConfigErrors(vec![plan_error(plan, "member", "inert")]))
        }
    }

    /// Accepts any table (its keys are not the engine's to know).
    impl MaintenanceKind for Inert {
        fn name(&self) -> &'static str {
            self.0
        }
        fn description(&self) -> &'static str {
            "inert"
        }
        fn keys(&self) -> Vec<Key> {
            Vec::new()
        }
        fn validate(&self, _: &MaintenanceSpec, _: &[Member], _: &mut Context) {}
        fn build(
            &self,
            plan: &Plan,
            _: &MaintenanceSpec,
        ) -> Result<Arc<dyn MaintenanceStep>, ConfigErrors> {
            Err(ConfigErrors(vec![plan_error(plan, "runbook", "inert")]))
        }
    }

    /// A check kind `probe = { port = N }` whose check never runs.
    struct Probe;

    impl CheckKind for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn value(&self) -> Kind {
            Kind::Table
        }
        fn description(&self) -> &'static str {
            "a test probe"
        }
        fn example(&self) -> &'static str {
            "probe = { port = N }"
        }
        fn keys(&self) -> Vec<Key> {
            vec![Key::required("port", Kind::Integer, "the port")]
        }
        fn validate(&self, cx: &mut Context, key: &str, value: &toml::Value) {
            let Some(t) = value.as_table() else {
                cx.err(key, "expected a table");
                return;
            };
            let keys = self.keys();
            let mut s = Section::new(t, key, &keys);
            if !s.has("port") {
                s.missing(cx, "missing key \"port\"");
            }
            s.int_in(cx, "port", 1..=65535, 1);
            s.finish(cx);
        }
        fn build(
            &self,
            _: &Context,
            _: &str,
            _: &toml::Value,
        ) -> Result<Arc<dyn Check>, ConfigErrors> {
            Ok(Arc::new(crate::testing::ScriptedCheck))
        }
    }

    /// Drivers `builtin` and `command`, transports `local` and `ssh`, maintenance kinds
    /// `webhook` and `pager`, all inert; check kind `probe`.
    pub(crate) fn inert() -> Registry {
        Registry::new()
            .balancer(Inert("builtin"))
            .balancer(Inert("command"))
            .transport(Inert("local"))
            .transport(Inert("ssh"))
            .maintenance(Inert("webhook"))
            .maintenance(Inert("pager"))
            .check(Probe)
    }

    fn errors(text: &str) -> Vec<String> {
        match crate::config::parse(text, std::path::Path::new("p.toml"), &inert()) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const POOL: &str = "[pool]\nname = \"p\"\n[balancer]\ndriver = \"DRIVER\"\n[[member]]\nname = \"a\"\naddress = \"x:1\"\ntransport = \"TRANSPORT\"\n";

    #[test]
    fn names_come_from_the_registry() {
        let text = POOL.replace("DRIVER", "f5").replace("TRANSPORT", "winrm");
        assert_eq!(
            errors(&text),
            [
                "p.toml:4: balancer.driver: expected one of \"builtin\", \"command\", found \"f5\"",
                "p.toml:8: member[0].transport: expected one of \"local\", \"ssh\", found \"winrm\"",
            ]
        );
        let text = POOL
            .replace("DRIVER", "command")
            .replace("TRANSPORT", "ssh");
        assert_eq!(errors(&text), Vec::<String>::new());
    }

    #[test]
    fn the_driver_validates_its_own_keys() {
        let text = POOL
            .replace("DRIVER", "command")
            .replace("TRANSPORT", "local")
            .replace(
                "driver = \"command\"",
                "driver = \"command\"\ncolour = \"blue\"",
            );
        assert_eq!(
            errors(&text),
            ["p.toml:5: balancer.colour: unknown key (no keys are known here)"]
        );
    }

    #[test]
    fn maintenance_kinds_come_from_the_registry() {
        let pool = POOL
            .replace("DRIVER", "command")
            .replace("TRANSPORT", "local");
        let step = |body: &str| format!("{pool}[[runbook.step]]\nname = \"s\"\n{body}\n");
        assert_eq!(
            errors(&step("pager = { anything = 1 }")),
            Vec::<String>::new()
        );
        assert_eq!(
            errors(&step("pager = { x = 1 }\nwebhook = { y = 2 }")),
            ["p.toml:9: runbook.step[0]: a step begins one kind of maintenance; found webhook = { ... } and pager = { ... }"]
        );
        assert_eq!(
            errors(&step("pager = { x = 1 }\nrun = \"x\"")),
            ["p.toml:11: runbook.step[0].pager: a maintenance step (pager) has no run or undo: it begins maintenance and ends it on return"]
        );
        let unknown = errors(&step("alertmanager = { url = \"http://am\" }"));
        assert_eq!(
            unknown,
            [
                "p.toml:9: runbook.step[0]: missing key \"run\": the command to run on the member (or webhook = { ... } / pager = { ... })",
                "p.toml:11: runbook.step[0].alertmanager: unknown key (known keys here: idempotent, name, only_group, pager, reboot, reboot_required_exit_codes, retries, retry_interval, run, timeout, undo, webhook, when)",
            ]
        );
    }

    #[test]
    fn check_kinds_come_from_the_registry_and_validate_their_own_keys() {
        let base = POOL
            .replace("DRIVER", "command")
            .replace("TRANSPORT", "local");
        let good = format!("{base}[[runbook.verify]]\nname = \"p\"\nprobe = {{ port = 80 }}\n");
        assert_eq!(errors(&good), Vec::<String>::new());
        let wrong = format!(
            "{base}[[runbook.verify]]\nname = \"p\"\nprobe = {{ port = 0, colour = 1 }}\n[[runbook.verify]]\nname = \"q\"\nhttp = {{ url = \"x\" }}\n"
        );
        let got = errors(&wrong);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got[0].starts_with("p.toml:11: runbook.verify[0].probe.port:"),
            "{got:?}"
        );
        assert!(
            got[1].starts_with("p.toml:11: runbook.verify[0].probe.colour: unknown key"),
            "{got:?}"
        );
        assert_eq!(
            got[2],
            "p.toml:12: runbook.verify[1]: a check needs exactly one of: probe = { port = N }"
        );
        assert!(
            got[3].starts_with("p.toml:14: runbook.verify[1].http: unknown key"),
            "{got:?}"
        );
    }
}
