//! Pool file (TOML) → validated [`Plan`]. Every problem is found in one pass and reported
//! with file, line and key; nothing is changed anywhere before this succeeds.
//!
//! Each section has its own function, reading through the one section reader
//! ([`ebb_config::Section`]) against the keys declared in [`keys`]. `[balancer]` and the
//! transports' member keys and each check's kind are opaque here: the [`Registry`] the
//! caller hands in says which names exist and validates their keys.

use crate::plan::*;
use crate::registry::Registry;
use ebb_config::{Context, LineIndex, Section};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod checks;
pub mod keys;
mod maintenance;
mod members;
mod notify;
mod placeholders;
mod pool;
mod runbook;
mod state;
mod waves;
mod window;

pub use checks::valid_regex;
pub use ebb_config::{ConfigError, ConfigErrors};

/// Reads and validates a pool file against the plug-ins of `registry`.
pub fn load(path: &Path, registry: &Registry) -> Result<Plan, ConfigErrors> {
    let text = ebb_config::read_file(path)?;
    parse(&text, path, registry)
}

/// Validates pool file `text`; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path, registry: &Registry) -> Result<Plan, ConfigErrors> {
    let file = path.display().to_string();
    let root = ebb_config::parse_toml(text, &file)?;
    let mut cx = Context::new(file, LineIndex::new(text));
    let plan = build(&mut cx, &root, path, registry);
    // The driver's own keys, once the members and runbook it may cross-check are known.
    if let Some(plan) = &plan {
        if let Some(driver) = registry.find_balancer(&plan.balancer.driver) {
            driver.validate(plan, &mut cx);
        }
    }
    match plan {
        Some(plan) => cx.into_result(plan),
        None => Err(cx.into_errors()),
    }
}

fn build(cx: &mut Context, root: &toml::Table, path: &Path, registry: &Registry) -> Option<Plan> {
    let mut top = Section::new(root, "", keys::TOP);
    let pool = pool::pool(cx, &mut top, registry);
    let balancer = balancer(cx, &mut top, registry);
    let defaults = members::defaults(cx, &mut top, registry);
    let members = members::members(cx, &mut top, &defaults, registry);
    let (runbook, step_paths) = runbook::runbook(cx, &mut top, &members, registry);
    let waves = waves::waves(cx, &mut top, &members);
    let state = state::state(cx, &mut top);
    let notify = notify::notify(cx, &mut top);
    top.finish(cx);
    if let Some(pool) = &pool {
        // Every [[member]] table counts, also one with errors of its own: the pool has
        // that many members, and the policy must not be judged on fewer.
        let declared = root
            .get("member")
            .and_then(toml::Value::as_array)
            .map_or(members.len(), Vec::len);
        pool::satisfiable(cx, pool, declared);
        placeholders::validate(cx, pool, &runbook, &step_paths, &defaults, &members);
    }
    // A [pool] in error has been reported; a stand-in lets the balancer driver still
    // check its own settings, so that every problem is reported at once. (The plan is
    // never returned: the errors refuse it.)
    let pool = match pool {
        Some(p) => p,
        None if !cx.is_ok() => pool::stand_in(),
        None => return None,
    };
    Some(Plan {
        file: PathBuf::from(path),
        lines: cx.lines().clone(),
        pool,
        balancer: balancer?,
        members,
        runbook,
        waves,
        state,
        notify,
    })
}

/// `[balancer]`: the driver's name, checked against the registry; every other key is the
/// driver's, validated by it.
fn balancer(cx: &mut Context, top: &mut Section<'_>, registry: &Registry) -> Option<BalancerSpec> {
    let names = registry.balancer_names();
    let Some(t) = top.sub(cx, "balancer") else {
        if !top.has("balancer") {
            cx.err(
                "balancer",
                format!(
                    "missing table [balancer] (driver = {})",
                    names.replace(", ", " | ")
                ),
            );
        }
        return None;
    };
    let mut bal = Section::new(t, "balancer", keys::BALANCER);
    let driver = bal.req_str(cx, "driver", &format!("one of {names}"))?;
    if registry.find_balancer(&driver).is_none() {
        bal.error(
            cx,
            "driver",
            format!("expected one of {names}, found \"{driver}\""),
        );
        return None;
    }
    let mut settings = t.clone();
    settings.remove("driver");
    Some(BalancerSpec { driver, settings })
}

/// Resolves `p` against the pool file's folder, like every path in the pool file.
/// `p` relative to the pool file's folder (absolute paths stay as they are): every path
/// in a pool file means the same wherever ebb is started from.
pub fn relative_to_pool(cx: &Context, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    match Path::new(cx.file()).parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

/// Checks that `u`, at `key`, is an `http://` or `https://` URL (for plug-ins' URLs too).
pub fn http_url(cx: &mut Context, key: &str, u: &Option<String>) {
    if let Some(u) = u {
        if !u.starts_with("http://") && !u.starts_with("https://") {
            cx.err(
                key,
                format!("expected an http:// or https:// URL, found \"{u}\""),
            );
        }
    }
}

/// Names of the built-in stages, which user steps may not take.
pub const RESERVED_STEP_NAMES: &[&str] =
    &["drain", "hold", "verify", "reboot", "return", "pool-check"];

/// The plan's source positions, for plug-ins reporting problems after parsing.
pub fn context(plan: &Plan) -> Context {
    Context::new(plan.file.display().to_string(), Arc::clone(&plan.lines))
}
