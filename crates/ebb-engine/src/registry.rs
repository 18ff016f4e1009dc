//! The plug-ins a run can use, handed to the engine by whoever builds it (the `ebb` binary
//! registers the drivers of `ebb-drivers`; a test registers fakes). The engine names no
//! balancer driver and no transport: it reads `driver = "..."` and `transport = "..."`,
//! looks the name up here, hands the plug-in its section (opaque to the engine) to
//! validate, and later asks it to build.
//!
//! A plug-in is a descriptor: a name, the keys it accepts (with kinds and one-line
//! descriptions, for the reader and for tools), `validate` returning line-located errors,
//! and `build`.

use crate::interfaces::{Balancer, Checker, Maintenance, Transport};
use crate::member::Drivers;
use crate::plan::{Member, Plan};
use ebb_config::{ConfigError, ConfigErrors, Context, Key, Section};
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

/// The plug-ins available to a run. Registration order is the order names are listed in
/// messages; the first transport registered is the default one.
#[derive(Clone, Default)]
pub struct Registry {
    balancers: Vec<Arc<dyn BalancerDriver>>,
    transports: Vec<Arc<dyn TransportKind>>,
    checker: Option<Arc<dyn Checker>>,
    maintenance: Option<Arc<dyn Maintenance>>,
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

    /// Sets what runs verification checks.
    pub fn checker(mut self, checker: impl Checker + 'static) -> Self {
        self.checker = Some(Arc::new(checker));
        self
    }

    /// Sets what begins and ends monitoring maintenance and asks the alert gate.
    pub fn maintenance(mut self, maintenance: impl Maintenance + 'static) -> Self {
        self.maintenance = Some(Arc::new(maintenance));
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
    /// balancer (which may act through them), the checker and the maintenance driver.
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
        let missing = |what: &str| plan_error(plan, "", format!("no {what} is registered"));
        if self.checker.is_none() {
            errors.push(missing("checker"));
        }
        if self.maintenance.is_none() {
            errors.push(missing("maintenance driver"));
        }
        match (balancer, &self.checker, &self.maintenance) {
            (Some(balancer), Some(checker), Some(maintenance)) if errors.is_empty() => {
                Ok(Drivers {
                    balancer,
                    transports,
                    checker: checker.clone(),
                    maintenance: maintenance.clone(),
                })
            }
            _ => Err(ConfigErrors(errors)),
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

    /// Drivers `builtin` and `command`, transports `local` and `ssh`, all inert.
    pub(crate) fn inert() -> Registry {
        Registry::new()
            .balancer(Inert("builtin"))
            .balancer(Inert("command"))
            .transport(Inert("local"))
            .transport(Inert("ssh"))
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
}
