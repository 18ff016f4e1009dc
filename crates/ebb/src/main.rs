//! The `ebb` command line: a thin layer over the engine, the drivers, the built-in balancer
//! and the demo.

// A print that panics on a closed pipe must not come back (see clippy.toml).
#![deny(clippy::disallowed_macros)]

mod commands;
mod init;
mod locate;
mod lock;
mod outputs;
mod render;
mod report;
mod schema;
mod shell;
mod status;
mod watch;
mod web;
mod windows;

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

/// Exit codes: 0 done, 1 a member failed or the policy stopped the run, 2 bad input or usage.
#[derive(Debug, Parser)]
#[command(
    name = "ebb",
    version,
    about = "Rolling maintenance for load-balanced server arrays",
    long_about = "ebb drains one member (or a few) out of the load balancer without cutting anyone off, \
updates it, proves it healthy, returns it, and moves on, so the array never goes offline. \
Every step is journaled; every undo is owed until done.\n\n\
Start with `ebb demo`. Then write a pool file (see the README) and run \
`ebb check POOL.toml`, `ebb plan POOL.toml`, `ebb run POOL.toml`.",
    after_help = "Examples:\n  \
  ebb demo                              see a rolling update under live traffic\n  \
  ebb check pool.toml                   validate; ask the balancer and the members\n  \
  ebb plan pool.toml                    what each member will go through, in order\n  \
  ebb run pool.toml                     roll through the pool\n  \
  ebb status pool.toml                  where each member is, and what it still owes\n  \
  ebb resume pool.toml                  continue after a failure, a pause or a crash\n  \
  ebb release web2 pool.toml            verify a member you fixed by hand, then return it\n  \
  ebb report pool.toml --html run.html  the run as one page\n\n\
Docs: README.md, docs/pool-file.md (every key), docs/operations.md (failures, resume).\n\n\
Exit codes: 0 done (or paused), 1 a member failed or the policy stopped the run, 2 bad input or usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a run's journal is: the pool file, `--state-dir`, or both.
#[derive(Debug, Args, Clone)]
pub struct RunSel {
    /// The pool file (TOML).
    pub pool: Option<PathBuf>,
    /// Directory holding the journal (default: `.ebb` beside the pool file).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the journal and the lock live, overriding `[state] backend` and
    /// EBB_STATE_BACKEND: `sqlite` or `etcd`.
    #[arg(long, value_name = "BACKEND")]
    pub state_backend: Option<String>,
}

/// `ebb lock`.
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the pool's lock, since when, and the time left on its lease.
    Status {
        #[command(flatten)]
        sel: RunSel,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record that a lapsed lock was broken: refused while the holder's lease is alive;
    /// afterwards `status` and `report` show who broke it and when (etcd backend).
    Break {
        #[command(flatten)]
        sel: RunSel,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a pool file and preflight the balancer (changes nothing).
    Check {
        /// The pool file.
        pool: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Do not connect to the members themselves (no ssh login, no version table):
        /// validate the file and ask the balancer only.
        #[arg(long)]
        no_members: bool,
    },
    /// Show the order, waves, policy and what each member will go through.
    Plan {
        /// The pool file.
        pool: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Roll through the pool: drain, update, verify and return each member in turn.
    Run {
        /// The pool file.
        pool: PathBuf,
        /// Directory holding the journal (default: `.ebb` beside the pool file).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Where the journal and the lock live, overriding `[state] backend` and
        /// EBB_STATE_BACKEND: `sqlite` or `etcd`.
        #[arg(long, value_name = "BACKEND")]
        state_backend: Option<String>,
        /// Stream one JSON event per line instead of the live display.
        #[arg(long)]
        json: bool,
        /// Take the pool's lock from an ebb on another host that stopped heartbeating
        /// 30 s ago or more (SQLite journal; an etcd lock frees itself when its lease
        /// lapses, and a live lease is never taken).
        #[arg(long)]
        steal_lock: bool,
        /// Update only the members the latest run skipped (their drain did not end in
        /// time with `on_timeout = "skip"`).
        #[arg(long)]
        only_skipped: bool,
        /// Outside a maintenance window (`[[pool.window]]`), sleep until the next window a
        /// member fits in instead of pausing (Ctrl-C while waiting leaves the run paused).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        web: web::WebArgs,
    },
    /// Continue the latest run (after a failure, a pause, Ctrl-C or a crash).
    Resume {
        #[command(flatten)]
        sel: RunSel,
        /// Treat an interrupted non-idempotent step as done (`STEP` or `MEMBER:STEP`).
        #[arg(long, value_name = "STEP")]
        assume_done: Vec<String>,
        /// Run an interrupted non-idempotent step again (`STEP` or `MEMBER:STEP`).
        #[arg(long, value_name = "STEP")]
        rerun: Vec<String>,
        /// Stream one JSON event per line.
        #[arg(long)]
        json: bool,
        /// Take a stale lock held from another host (SQLite journal; a live etcd lease is
        /// never taken).
        #[arg(long)]
        steal_lock: bool,
        /// Outside a maintenance window, sleep until the next window a member fits in
        /// instead of pausing again.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        web: web::WebArgs,
        /// Stop a step that an earlier ebb (killed, crashed) left running on a member,
        /// instead of waiting for it to end.
        #[arg(long)]
        kill_running: bool,
    },
    /// Show the latest run: its state, each member's state and what it still owes.
    Status {
        #[command(flatten)]
        sel: RunSel,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a member that is out (failed or aborted); if it passes, unwind what it owes and
    /// return it to service.
    Release {
        /// The member's name.
        member: String,
        #[command(flatten)]
        sel: RunSel,
        /// Stream one JSON event per line.
        #[arg(long)]
        json: bool,
        /// Stop a step that an earlier ebb (killed, crashed) left running on the member,
        /// instead of waiting for it to end.
        #[arg(long)]
        kill_running: bool,
    },
    /// Stop the run in progress and leave each member where it is, listed with what it owes.
    Abort {
        #[command(flatten)]
        sel: RunSel,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest run (or `--run N`): per member, each step with its times and outcome.
    Report {
        #[command(flatten)]
        sel: RunSel,
        /// Report run N of the pool instead of its latest (`ebb status` shows the latest
        /// run's id; an unknown N is refused, exit 2, naming the runs there are).
        #[arg(long, value_name = "N")]
        run: Option<i64>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Write a self-contained HTML page (timeline, in-service count) to this file.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Serve a live page (and /metrics) of the latest run of a pool, also one started by
    /// another ebb, from its journal; until Ctrl-C.
    Watch {
        #[command(flatten)]
        sel: RunSel,
        #[command(flatten)]
        web: web::WebArgs,
    },
    /// The pool's lock: who holds it (`status`), or record breaking a lapsed one (`break`).
    #[command(subcommand)]
    Lock(LockCommand),
    /// Run or control ebb's built-in load balancer.
    #[command(subcommand)]
    Lb(ebb_lb::cli::LbCommand),
    /// A real rolling update under live traffic on this machine, with proof.
    Demo(ebb_demo::DemoArgs),
    /// Write a first pool file from what a balancer knows: its members, the balancer
    /// section, and a runbook skeleton (never overwrites a file).
    Init(init::InitArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) for ebb and every subcommand.
    Man,
    /// Print a JSON Schema of the pool file (for editors: Taplo, Even Better TOML).
    Schema,
    #[command(flatten)]
    Internal(ebb_demo::InternalCommand),
}

/// `malloc`, without glibc's slow `posix_memalign` for tokio's 128-byte-aligned tasks and
/// socket registrations (see `ebb_lb::allocator`).
#[global_allocator]
static ALLOCATOR: ebb_lb::allocator::Malloc = ebb_lb::allocator::Malloc;

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Lb(cmd) => ebb_lb::cli::run(cmd),
        Command::Demo(args) => ebb_demo::run(args),
        Command::Internal(cmd) => ebb_demo::run_internal(cmd),
        Command::Completions { shell } => shell::completions(shell, Cli::command()),
        Command::Man => shell::man(Cli::command()),
        Command::Schema => schema::main(),
        Command::Init(args) => init::main(args),
        other => commands::main(other),
    };
    std::process::exit(code);
}
