//! The `local` transport: commands run on this machine through `sh -c` (or PowerShell),
//! each in its own process group so that a timeout or Ctrl-C kills everything it started.

use super::OutputTail;
use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key, Section};
use ebb_engine::interfaces::{CommandOutcome, DriverError, DriverResult, OutputSink, Transport};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{Member, Plan, Shell};
use ebb_engine::registry::TransportKind;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The `local` transport's descriptor, registered in [`crate::registry`]. It has no keys
/// of its own; it cannot know a member's boot identity without `boot_id`.
pub struct LocalTransport;

impl TransportKind for LocalTransport {
    fn name(&self) -> &'static str {
        "local"
    }

    fn keys(&self) -> Vec<Key> {
        Vec::new()
    }

    fn validate(&self, _: &mut Context, _: &mut Section<'_>) {}

    fn knows_boot_identity(&self) -> bool {
        false
    }

    fn build(&self, plan: &Plan, member: &Member) -> Result<Arc<dyn Transport>, ConfigErrors> {
        Ok(Arc::new(Local::new(member).in_dir(crate::pool_dir(plan))))
    }
}

/// Runs a member's commands on this machine.
pub struct Local {
    member: String,
    dir: Option<std::path::PathBuf>,
    shell: Shell,
    boot_id: Option<String>,
}

impl Local {
    /// The local transport for `member`.
    pub fn new(member: &Member) -> Self {
        Local {
            member: member.name.clone(),
            dir: None,
            shell: member.shell,
            boot_id: member
                .boot_id
                .as_ref()
                .map(|b| render(b, member, Quote::from(member.shell), &BTreeMap::new())),
        }
    }
}

impl Local {
    /// Runs commands in `dir` (the pool file's directory), so relative paths in commands
    /// mean the same wherever ebb is started from.
    pub fn in_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.dir = dir;
        self
    }
}

/// Kills a whole process group when dropped while armed (timeout, Ctrl-C, a cancelled run).
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: signalling a process group we created; harmless if it is gone.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
    }
}

/// Runs `command` with `shell` on this machine; shared by the local transport and the
/// command balancer driver.
pub async fn run_local(
    dir: Option<&std::path::Path>,
    shell: Shell,
    command: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    output: Option<OutputSink>,
) -> DriverResult<CommandOutcome> {
    let mut cmd = match shell {
        Shell::Sh => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(command);
            c
        }
        Shell::PowerShell => {
            let mut c = Command::new("pwsh");
            c.args(["-NoProfile", "-NonInteractive", "-Command", command]);
            c
        }
    };
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| DriverError::new(format!("cannot start `{command}`: {e}")))?;
    let mut guard = GroupKill(child.id().map(|p| p as i32));
    let tail = OutputTail::default();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            BufReader::new(out),
            tail.clone(),
            output.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            BufReader::new(err),
            tail.clone(),
            output.clone(),
        )));
    }
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let (exit_code, timed_out) = match waited {
        Ok(Ok(status)) => (status.code(), false),
        Ok(Err(e)) => return Err(DriverError::new(format!("waiting for `{command}`: {e}"))),
        Err(_) => (None, true),
    };
    if timed_out {
        // Everything the command started goes with it.
        drop(std::mem::replace(&mut guard, GroupKill(None)));
        let _ = child.kill().await;
    } else {
        // A command may leave a daemon running on purpose (`nohup svc &`): keep it.
        guard.0 = None;
    }
    // Output still in the pipes is read at once; a background process that keeps the
    // pipe open must not hold the step.
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_millis(300), r).await;
    }
    let tail = tail.text();
    Ok(CommandOutcome {
        exit_code,
        timed_out,
        tail,
        connection_lost: false,
    })
}

async fn read_lines<R: tokio::io::AsyncRead + Unpin>(
    reader: BufReader<R>,
    tail: OutputTail,
    output: Option<OutputSink>,
) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tail.keep(line, &output);
    }
}

#[async_trait]
impl Transport for Local {
    async fn run(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
    ) -> DriverResult<CommandOutcome> {
        run_local(
            self.dir.as_deref(),
            self.shell,
            command,
            env,
            timeout,
            output,
        )
        .await
    }

    async fn boot_id(&self) -> DriverResult<String> {
        let Some(cmd) = &self.boot_id else {
            return Err(DriverError::new(format!(
                "member \"{}\" has no boot_id command",
                self.member
            )));
        };
        let out = run_local(
            self.dir.as_deref(),
            self.shell,
            cmd,
            &BTreeMap::new(),
            Duration::from_secs(10),
            None,
        )
        .await?;
        match out.exit_code {
            Some(0) if !out.tail.trim().is_empty() => Ok(out.tail.trim().to_string()),
            _ => Err(DriverError::new(format!(
                "member \"{}\" is not answering: `{cmd}` gave {:?}",
                self.member, out.exit_code
            ))),
        }
    }
}
