//! `ebb lb ...` subcommands.

/// `ebb lb` subcommands: run the balancer, or control a running one.
#[derive(Debug, clap::Subcommand)]
pub enum LbCommand {
    /// Run the built-in balancer for a pool file.
    Serve {
        /// The pool file.
        pool: std::path::PathBuf,
    },
}

/// Runs an `ebb lb` subcommand; returns the process exit code.
pub fn run(cmd: LbCommand) -> i32 {
    let _ = cmd;
    2
}
