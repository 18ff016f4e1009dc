//! The `ebb` command line: a thin layer over the engine, the drivers, the built-in balancer
//! and the demo.
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ebb", version, about = "Rolling maintenance for load-balanced server arrays")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Control ebb's built-in load balancer.
    #[command(subcommand)]
    Lb(ebb_lb::cli::LbCommand),
    /// A real rolling update under live traffic on this machine.
    Demo(ebb_demo::DemoArgs),
    #[command(flatten)]
    Internal(ebb_demo::InternalCommand),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Lb(cmd) => ebb_lb::cli::run(cmd),
        Command::Demo(args) => ebb_demo::run(args),
        Command::Internal(cmd) => ebb_demo::run_internal(cmd),
    };
    std::process::exit(code);
}
