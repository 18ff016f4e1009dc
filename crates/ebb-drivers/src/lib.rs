//! ebb's drivers: balancers (`builtin`, `command`), transports (`local`) and verification
//! checks (`command`, `http`, `tcp`). Each driver lives in its own file with its settings;
//! [`build`] is the one place they are registered.

pub mod balancer;
pub mod base64;
pub mod check;
pub mod discover;
pub mod http;
pub mod maintenance;
pub mod tls;
pub mod transport;

use ebb_engine::member::Drivers;
use ebb_engine::plan::Plan;
use std::sync::Arc;

/// The directory of the pool file: local commands (steps, checks, the command balancer)
/// run there, so `./lb.sh` means the same wherever ebb is started from.
pub fn pool_dir(plan: &Plan) -> Option<std::path::PathBuf> {
    let dir = plan.file.parent()?;
    if dir.as_os_str().is_empty() {
        return None;
    }
    Some(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// Builds every driver a plan needs, validating driver settings; the error lists each
/// problem with file, line and key.
pub fn build(plan: &Plan) -> Result<Drivers, Vec<String>> {
    let mut errors = Vec::new();
    let balancer = match balancer::build(plan) {
        Ok(b) => Some(b),
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    };
    let mut transports = Vec::new();
    for m in &plan.members {
        match transport::build(plan, m) {
            Ok(t) => transports.push(t),
            Err(e) => errors.push(e),
        }
    }
    match balancer {
        Some(balancer) if errors.is_empty() => Ok(Drivers {
            balancer,
            transports,
            checker: Arc::new(check::StandardChecker),
            maintenance: Arc::new(maintenance::MonitoringMaintenance),
        }),
        _ => Err(errors),
    }
}
