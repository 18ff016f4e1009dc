//! `ebb demo`: a real rolling update under live traffic on one machine, with proof.
//!
//! The demo starts, as separate OS processes, ebb's built-in balancer and a few members of
//! a tiny HTTP service (all by re-executing the `ebb` binary with hidden `demo-...`
//! subcommands), drives steady client load through the balancer, and runs a real rollout
//! with `ebb run` as a child process. It measures, independently of the engine, what the
//! clients saw (requests, failures, latency, cut long-lived connections) and how many
//! members were out of service at once, and proves every member ends on the new version.
//!
//! Module map, one concept each:
//! - durations on the command line use ebb's one grammar (`ebb_config::parse_duration`).
//! - [`http`]: a minimal HTTP/1.1 client and request reader over tokio, with bounded waits.
//! - [`member`]: the demo service (`demo-member`).
//! - [`procs`]: the registry of child processes, so that Ctrl-C leaves nothing behind.
//! - [`supervisor`]: owns the member processes; installs and reboots them on request.
//! - [`ctl`]: `demo-ctl`, the command the runbook steps run to ask the supervisor.
//! - [`pool_file`]: the pool TOML the demo hands to the engine and the balancer.
//! - [`traffic`]: the client load and its measurements.
//! - [`watch`]: polls the balancer's control API; counts members out of service.
//! - [`rollout`]: runs `ebb run --json` and follows its events.
//! - [`progress`]: the live terminal view.
//! - [`summary`]: the end-of-demo numbers, as text or one JSON object.
//! - [`demo`]: the orchestration of all of the above; it leaves what the clients saw for
//!   `ebb report` as [`ebb_report::Traffic`] beside the journal.

// A print that panics on a closed pipe must not come back (see clippy.toml).
#![deny(clippy::disallowed_macros)]

pub mod ctl;
pub mod demo;
pub mod http;
pub mod member;
pub mod pool_file;
pub mod procs;
pub mod progress;
pub mod rollout;
pub mod summary;
pub mod supervisor;
pub mod traffic;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

/// Options of `ebb demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of members behind the balancer (at least 2).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(2..=32))]
    pub members: u16,
    /// How long "installing" the new version takes on each member.
    #[arg(long, default_value = "2s", value_parser = ebb_config::parse_duration)]
    pub install_time: Duration,
    /// How long a member stays down when it reboots.
    #[arg(long, default_value = "3s", value_parser = ebb_config::parse_duration)]
    pub reboot_time: Duration,
    /// Short requests per second sent through the balancer.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub rate: u32,
    /// Long-lived connections streaming slowly through the balancer at any time.
    #[arg(long, default_value_t = 4)]
    pub streams: u16,
    /// How long each long-lived stream lasts when nothing cuts it.
    #[arg(long, default_value = "3s", value_parser = ebb_config::parse_duration)]
    pub stream_time: Duration,
    /// How the balancer takes each member out: drainstop (no one is cut) or stop (cut now).
    #[arg(long, default_value = "drainstop", value_parser = ["drainstop", "stop"])]
    pub drain_mode: String,
    /// Leave the balancer and members running afterwards, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Working directory (pool file, logs, the state dir `DIR/state`); default a new temp dir.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Upper bound for the whole rollout; the demo gives up after it.
    #[arg(long, default_value = "10m", value_parser = ebb_config::parse_duration)]
    pub timeout: Duration,
}

/// Hidden helper commands the demo runs as separate processes.
#[derive(Debug, clap::Subcommand)]
pub enum InternalCommand {
    /// Run one demo member (an HTTP server answering with its name and version).
    #[command(hide = true, name = "demo-member")]
    DemoMember(member::MemberArgs),
    /// Ask the demo's supervisor to act on a member (used by the demo's runbook steps).
    #[command(hide = true, name = "demo-ctl")]
    DemoCtl(ctl::CtlArgs),
}

/// Runs `ebb demo`; returns the exit code.
pub fn run(args: DemoArgs) -> i32 {
    demo::run(args)
}

/// Runs a hidden helper command; returns the exit code.
pub fn run_internal(cmd: InternalCommand) -> i32 {
    match cmd {
        InternalCommand::DemoMember(args) => member::run(args),
        InternalCommand::DemoCtl(args) => ctl::run(args),
    }
}

/// Builds the tokio runtime every entry point of this crate uses.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
