//! `demo-ctl`: what the demo's runbook steps run.
//!
//! `maintenance-on`/`maintenance-off` write and remove a marker file
//! (`DIR/maintenance/MEMBER`), standing in for "put monitoring into maintenance mode" and
//! its undo. `install` and `reboot` ask the supervisor (see [`crate::supervisor`]) and wait
//! for its answer, so the step's exit code says whether it worked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::supervisor::{ctl_addr_file, CtlReply, CtlRequest};

/// Options of the hidden `demo-ctl` command.
#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// The demo's working directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub action: CtlAction,
}

/// What `demo-ctl` can do to a member.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlAction {
    /// Put the member's monitoring into maintenance mode (writes a marker file).
    MaintenanceOn {
        /// The member.
        member: String,
    },
    /// Take the member's monitoring out of maintenance mode.
    MaintenanceOff {
        /// The member.
        member: String,
    },
    /// Install a version: the member process is replaced by one reporting it.
    Install {
        /// The member.
        member: String,
        /// The version to install.
        #[arg(long, default_value = "1.1")]
        version: String,
        /// How long installing takes (default: the demo's `--install-time`).
        #[arg(long, value_parser = ebb_config::parse_duration)]
        delay: Option<Duration>,
    },
    /// Reboot the member: it goes down now and comes back after the demo's `--reboot-time`.
    Reboot {
        /// The member.
        member: String,
    },
}

/// Runs `demo-ctl`; returns the exit code.
pub fn run(args: CtlArgs) -> i32 {
    match execute(args) {
        Ok(message) => {
            ebb_out::outln!("{message}");
            0
        }
        Err(e) => {
            ebb_out::errln!("demo-ctl: {e:#}");
            1
        }
    }
}

fn execute(args: CtlArgs) -> anyhow::Result<String> {
    let (request, limit) = match args.action {
        CtlAction::MaintenanceOn { member } => {
            let path = marker(&args.dir, &member)?;
            std::fs::write(&path, "maintenance\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            return Ok(format!("{member}: monitoring in maintenance mode"));
        }
        CtlAction::MaintenanceOff { member } => {
            let path = marker(&args.dir, &member)?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
            }
            return Ok(format!("{member}: monitoring back to normal"));
        }
        CtlAction::Install {
            member,
            version,
            delay,
        } => {
            let limit = delay.unwrap_or(Duration::from_secs(60)) + Duration::from_secs(60);
            let request = CtlRequest {
                op: "install".into(),
                member,
                version: Some(version),
                delay_ms: delay.map(|d| d.as_millis() as u64),
            };
            (request, limit)
        }
        CtlAction::Reboot { member } => {
            let request = CtlRequest {
                op: "reboot".into(),
                member,
                version: None,
                delay_ms: None,
            };
            (request, Duration::from_secs(30))
        }
    };
    let runtime = crate::runtime()?;
    let reply = runtime.block_on(ask(&args.dir, &request, limit))?;
    if reply.ok {
        Ok(reply.message)
    } else {
        bail!("{}: {}", request.member, reply.message)
    }
}

fn marker(dir: &Path, member: &str) -> anyhow::Result<PathBuf> {
    if member.is_empty() || member.contains('/') || member.starts_with('.') {
        bail!("`{member}` is not a member name");
    }
    let folder = dir.join("maintenance");
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    Ok(folder.join(member))
}

/// Sends one request to the supervisor and waits (bounded) for its answer.
async fn ask(dir: &Path, request: &CtlRequest, limit: Duration) -> anyhow::Result<CtlReply> {
    let addr_file = ctl_addr_file(dir);
    let addr = std::fs::read_to_string(&addr_file).with_context(|| {
        format!(
            "cannot read {} (is `ebb demo` running for this dir?)",
            addr_file.display()
        )
    })?;
    let addr = addr.trim();
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to the demo supervisor at {addr} timed out"))?
        .with_context(|| format!("cannot reach the demo supervisor at {addr}"))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .context("sending the request to the supervisor")?;
    let mut answer = String::new();
    let mut reader = BufReader::new(read);
    tokio::time::timeout(limit, reader.read_line(&mut answer))
        .await
        .with_context(|| format!("the supervisor did not answer within {limit:?}"))?
        .context("reading the supervisor's answer")?;
    if answer.trim().is_empty() {
        bail!("the supervisor closed the connection without answering");
    }
    serde_json::from_str(&answer).context("the supervisor's answer is not valid JSON")
}
