//! Balancer drivers, one file (or folder) each with its settings and its descriptor:
//! `builtin` (ebb's own, through its control API), `haproxy` (its runtime API), `nlb`
//! (Windows NLB cmdlets on the members), `command` (the operator's own commands per
//! operation), `nginx` (its upstream file, tested and reloaded), `caddy` (its admin
//! API) and `f5` (BIG-IP iControl REST). They are registered in [`crate::registry`].

pub mod builtin;
pub mod caddy;
pub mod command;
pub mod f5;
pub mod haproxy;
pub mod nginx;
pub mod nlb;

use ebb_config::{ConfigErrors, Context, Key, Section};
use ebb_engine::plan::Plan;

/// `[balancer]` of `plan` as a section of `driver`, accepting `keys`; a missing key is
/// reported on the line of `driver = "..."`.
pub(crate) fn section<'a>(plan: &'a Plan, driver: &str, keys: &[Key]) -> Section<'a> {
    Section::new(&plan.balancer.settings, "balancer", keys)
        .owned_by(format!("the {driver} driver"))
        .anchored_at("driver")
}

/// Runs a driver's settings reader on its own (when building): the settings, or every
/// problem with file, line and key.
pub(crate) fn read<T>(
    plan: &Plan,
    reader: impl FnOnce(&Plan, &mut Context) -> Option<T>,
) -> Result<T, ConfigErrors> {
    let mut cx = ebb_engine::config::context(plan);
    match reader(plan, &mut cx) {
        Some(v) => cx.into_result(v),
        None => Err(cx.into_errors()),
    }
}
