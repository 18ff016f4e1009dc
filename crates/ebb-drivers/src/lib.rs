//! ebb's drivers: balancers (`builtin`, `haproxy`, `nlb`, `command`, `nginx`, `caddy`,
//! `f5`), transports (`local`, `ssh`, `winrm`), check kinds, maintenance kinds
//! (`alertmanager`, `webhook`) and the alert gate. Each driver lives in its own
//! file with its settings and its descriptor; [`registry`] is the one place they are
//! registered.

// A print that panics on a closed pipe must not come back (see clippy.toml).
#![deny(clippy::disallowed_macros)]

pub mod balancer;
pub mod base64;
pub mod check;
pub mod discover;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod maintenance;
pub mod notify;
pub mod tls;
pub mod transport;

use ebb_config::ConfigErrors;
use ebb_engine::member::Drivers;
use ebb_engine::plan::Plan;
use ebb_engine::registry::Registry;

/// Every driver of this crate, registered: one line each. The first transport is the
/// default one.
pub fn registry() -> Registry {
    Registry::new()
        .balancer(balancer::builtin::BuiltinDriver)
        .balancer(balancer::haproxy::HaproxyDriver)
        .balancer(balancer::nlb::NlbDriver)
        .balancer(balancer::command::CommandDriver)
        .balancer(balancer::nginx::NginxDriver)
        .balancer(balancer::caddy::CaddyDriver)
        .balancer(balancer::f5::F5Driver)
        .transport(transport::local::LocalTransport)
        .transport(transport::ssh::SshTransport)
        .transport(transport::winrm::WinrmTransport)
        .check(check::command::KIND)
        .check(check::http::KIND)
        .check(check::tcp::KIND)
        .check(check::services::KIND)
        .check(check::logs::KIND)
        .check(check::version::KIND)
        .check(check::prometheus::KIND)
        .check(check::balancer::KIND)
        .maintenance(maintenance::alertmanager::AlertmanagerKind)
        .maintenance(maintenance::webhook::WebhookKind)
        .alert_gate(maintenance::alertmanager::AlertmanagerGate)
}

/// The directory of the pool file: local commands (steps, checks, the command balancer)
/// run there, so `./lb.sh` means the same wherever ebb is started from.
pub fn pool_dir(plan: &Plan) -> Option<std::path::PathBuf> {
    let dir = plan.file.parent()?;
    if dir.as_os_str().is_empty() {
        return None;
    }
    Some(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// Builds every driver a validated plan needs with the standard [`registry`].
pub fn build(plan: &Plan) -> Result<Drivers, ConfigErrors> {
    registry().build(plan)
}
