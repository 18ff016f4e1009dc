//! Transports: how ebb runs commands on a member and learns its boot identity.

pub mod command_line;
pub mod local;
pub mod ssh;
pub mod winrm;
mod winrm_bridge;

use ebb_config::ConfigErrors;
use ebb_engine::interfaces::{DriverError, DriverResult, OutputSink, Transport};
use ebb_engine::plan::{Member, Plan};
use ebb_engine::registry::plan_error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// Where a member's transport settings are read from: the pool file's folder (relative
/// paths such as key files are taken from it) and the member's key in errors
/// (`member[2]`). Shared by the transports that read their own keys (ssh, winrm).
pub(crate) fn member_settings_origin(plan: &Plan, member: &Member) -> (std::path::PathBuf, String) {
    let base = plan
        .file
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let at = plan
        .member_index(&member.name)
        .map(|i| format!("member[{i}]"))
        .unwrap_or_else(|| "member".into());
    (base, at)
}

/// Whether a command's process still runs on the member, asked through `t` with `script`
/// (`command_line::remote_alive`), whose last line is `running` or `gone`. `process` names
/// it in errors (`process 4711`). Shared by the remote transports (ssh, winrm).
pub(crate) async fn ask_alive(
    t: &dyn Transport,
    member: &str,
    process: &str,
    script: &str,
    timeout: Duration,
) -> DriverResult<bool> {
    let out = t.run(script, &Default::default(), timeout, None).await?;
    match out.tail.lines().last().map(str::trim) {
        Some("running") => Ok(true),
        Some("gone") => Ok(false),
        _ => Err(DriverError::new(format!(
            "member \"{member}\": cannot tell whether {process} still runs ({}): {}",
            out.ended(),
            out.tail.trim()
        ))),
    }
}

/// The member's boot identity: what `command` prints, run through `t`. `over` says how it
/// was asked in errors (`""`, `" over WinRM"`). Shared by the remote transports.
pub(crate) async fn ask_boot_id(
    t: &dyn Transport,
    member: &str,
    command: &str,
    over: &str,
    timeout: Duration,
) -> DriverResult<String> {
    let out = t.run(command, &Default::default(), timeout, None).await?;
    match out.exit_code {
        Some(0) if !out.tail.trim().is_empty() => Ok(out.tail.trim().to_string()),
        _ => Err(DriverError::new(format!(
            "member \"{member}\" did not give its boot identity{over}: `{command}` gave {}: {}",
            out.ended(),
            out.tail.trim()
        ))),
    }
}

/// Builds the transport of one member with the standard registry.
pub fn build(plan: &Plan, member: &Member) -> Result<Arc<dyn Transport>, ConfigErrors> {
    let registry = crate::registry();
    match registry.find_transport(&member.transport) {
        Some(t) => t.build(plan, member),
        None => Err(ConfigErrors(vec![plan_error(
            plan,
            "member",
            format!(
                "member \"{}\": expected a transport among {}, found \"{}\"",
                member.name,
                registry.transport_names(),
                member.transport
            ),
        )])),
    }
}

/// Connects once to every member reached over ssh or WinRM (host key, login, boot identity), all
/// at once; returns `(member, problem)` for each that failed. For `ebb check`, so a changed
/// host key or a refused login shows before a run, not in the middle of one.
pub async fn preflight(plan: &Plan, transports: &[Arc<dyn Transport>]) -> Vec<(String, String)> {
    let mut set = tokio::task::JoinSet::new();
    for (m, t) in plan.members.iter().zip(transports) {
        if m.transport != "ssh" && m.transport != "winrm" {
            continue;
        }
        let (name, t) = (m.name.clone(), t.clone());
        set.spawn(async move { (name, t.boot_id().await) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok((name, Err(e))) = r {
            out.push((name, e.to_string()));
        }
    }
    out.sort();
    out
}

/// Lines of output kept for the journal.
pub const TAIL_LINES: usize = 20;

/// The last lines of a command's output, fed by its stdout and stderr readers at once.
#[derive(Clone, Default)]
pub struct OutputTail(Arc<Mutex<VecDeque<String>>>);

impl OutputTail {
    /// Passes `line` on to `output` (live display, journal events) and keeps it.
    pub fn keep(&self, line: String, output: &Option<OutputSink>) {
        if let Some(o) = output {
            o(&line);
        }
        if let Ok(mut t) = self.0.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }

    /// The kept lines, oldest first.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}
