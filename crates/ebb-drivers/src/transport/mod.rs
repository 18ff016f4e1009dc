//! Transports: how ebb runs commands on a member and learns its boot identity.

pub mod command_line;
pub mod local;
pub mod ssh;

use ebb_engine::interfaces::Transport;
use ebb_engine::plan::{Member, Plan};
use std::sync::Arc;

/// Builds the transport of one member.
pub fn build(plan: &Plan, member: &Member) -> Result<Arc<dyn Transport>, String> {
    match member.transport.as_str() {
        "local" => Ok(Arc::new(local::Local::new(member).in_dir(crate::pool_dir(plan)))),
        "ssh" => ssh::Ssh::new(plan, member)
            .map(|t| Arc::new(t) as Arc<dyn Transport>)
            .map_err(|e| format!("{}: {e}", plan.file.display())),
        other => Err(format!(
            "{}: member \"{}\": transport \"{other}\" is not available in this build of ebb (available: local, ssh)",
            plan.file.display(),
            member.name
        )),
    }
}
