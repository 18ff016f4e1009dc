//! `ebb demo` (skeleton; see issue 4).

/// Options of `ebb demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of members.
    #[arg(long, default_value_t = 4)]
    pub members: usize,
}

/// Hidden helper commands the demo runs as separate processes.
#[derive(Debug, clap::Subcommand)]
pub enum InternalCommand {
    /// Run one demo member (an HTTP server answering with its name and version).
    #[command(hide = true, name = "demo-member")]
    DemoMember {
        #[arg(long)]
        name: String,
    },
}

/// Runs `ebb demo`; returns the exit code.
pub fn run(args: DemoArgs) -> i32 {
    let _ = args;
    2
}

/// Runs a hidden helper command; returns the exit code.
pub fn run_internal(cmd: InternalCommand) -> i32 {
    let _ = cmd;
    2
}

/// Renders `ebb report --json` output (plus optional demo traffic) as one HTML page.
pub fn render_report_html(report: &serde_json::Value) -> String {
    format!("<!doctype html><pre>{report}</pre>")
}
