//! Transports: how ebb runs commands on a member and learns its boot identity.

pub mod local;

use ebb_engine::interfaces::Transport;
use ebb_engine::plan::{Member, Plan};
use std::sync::Arc;

/// Builds the transport of one member.
pub fn build(plan: &Plan, member: &Member) -> Result<Arc<dyn Transport>, String> {
    match member.transport.as_str() {
        "local" => Ok(Arc::new(
            local::Local::new(member).in_dir(crate::pool_dir(plan)),
        )),
        other => Err(format!(
            "{}: member \"{}\": transport \"{other}\" is not available in this build of ebb (available: local)",
            plan.file.display(),
            member.name
        )),
    }
}
