//! Balancer drivers, registered here: `builtin` (ebb's own, through its control API),
//! `haproxy` (its runtime API), `nlb` (Windows NLB cmdlets on the members) and `command`
//! (the operator's own commands per operation), `nginx` (its upstream file, tested and
//! reloaded) and `caddy` (its admin API).

pub mod builtin;
pub mod caddy;
pub mod command;
pub mod haproxy;
pub mod nginx;
pub mod nlb;

mod settings;

use ebb_engine::interfaces::Balancer;
use ebb_engine::plan::Plan;
use std::sync::Arc;

/// Builds the plan's balancer driver, validating its settings.
pub fn build(plan: &Plan) -> Result<Arc<dyn Balancer>, Vec<String>> {
    match plan.balancer.driver.as_str() {
        "builtin" => builtin::Builtin::from_plan(plan).map(|b| Arc::new(b) as Arc<dyn Balancer>),
        "command" => command::CommandBalancer::from_plan(plan).map(|b| Arc::new(b) as Arc<dyn Balancer>),
        "haproxy" => haproxy::Haproxy::from_plan(plan).map(|b| Arc::new(b) as Arc<dyn Balancer>),
        "nlb" => nlb::Nlb::from_plan(plan).map(|b| Arc::new(b) as Arc<dyn Balancer>),
        "nginx" => nginx::Nginx::from_plan(plan).map(|b| Arc::new(b) as Arc<dyn Balancer>),
        "caddy" => caddy::Caddy::from_plan(plan).map(|b| Arc::new(b) as Arc<dyn Balancer>),
        other => Err(vec![format!(
            "{}:{}: balancer.driver: the \"{other}\" driver is not available in this build of ebb yet (available: {})",
            plan.file.display(),
            plan.balancer.lines.get("driver").copied().unwrap_or(0),
            ebb_engine::config::DRIVERS.join(", ")
        )]),
    }
}

/// `file:line: balancer.KEY: message`.
pub(crate) fn setting_error(plan: &Plan, key: &str, message: impl std::fmt::Display) -> String {
    let line = plan.balancer.lines.get(key).copied().unwrap_or(0);
    format!("{}:{line}: balancer.{key}: {message}", plan.file.display())
}
