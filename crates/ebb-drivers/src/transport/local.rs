//! The `local` transport: commands run on this machine through `sh -c` (or PowerShell),
//! each in its own process group so that a timeout or Ctrl-C kills everything it started.

use super::OutputTail;
use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key, Section};
use ebb_engine::interfaces::{
    CommandOutcome, DriverError, DriverResult, OutputSink, StartedSink, Transport,
};
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
    run_local_tracked(dir, shell, command, env, timeout, output, None).await
}

/// `run_local`, handing `started` the identity of the command's process group
/// ([`process_identity`]) as soon as it runs.
pub async fn run_local_tracked(
    dir: Option<&std::path::Path>,
    shell: Shell,
    command: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    output: Option<OutputSink>,
    started: Option<StartedSink>,
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
    if let (Some(started), Some(pid)) = (&started, child.id()) {
        started(&process_identity(pid));
    }
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
    let (exit_code, signal, timed_out) = match waited {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            (status.code(), status.signal(), false)
        }
        Ok(Err(e)) => return Err(DriverError::new(format!("waiting for `{command}`: {e}"))),
        Err(_) => (None, None, true),
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
        signal,
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

    async fn run_tracked(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
        started: StartedSink,
    ) -> DriverResult<CommandOutcome> {
        run_local_tracked(
            self.dir.as_deref(),
            self.shell,
            command,
            env,
            timeout,
            output,
            Some(started),
        )
        .await
    }

    async fn still_running(&self, process: &str) -> DriverResult<bool> {
        let p = LocalProcess::parse(process)?;
        Ok(p.running())
    }

    async fn stop_process(&self, process: &str) -> DriverResult<()> {
        let p = LocalProcess::parse(process)?;
        p.stop().await
    }

    fn describe_process(&self, process: &str) -> String {
        match LocalProcess::parse(process) {
            Ok(p) => format!("process group {} on this machine", p.pgid),
            Err(_) => process.to_string(),
        }
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
                "member \"{}\" is not answering: `{cmd}` gave {}",
                self.member,
                out.ended()
            ))),
        }
    }
}

/// The identity of a process group ebb started on this machine, as the journal keeps it:
/// `local PGID START BOOT`, where START is the leader's start time (clock ticks after
/// boot, from `/proc/PID/stat`) and BOOT this machine's boot id, so that a process id
/// reused by something else, or a reboot since, is never taken for the step.
/// `-` stands for what this system cannot tell (no `/proc`).
pub fn process_identity(pid: u32) -> String {
    format!(
        "local {pid} {} {}",
        start_ticks(pid).unwrap_or_else(|| "-".into()),
        this_boot().unwrap_or_else(|| "-".into())
    )
}

/// Fields 3 onward of `/proc/PID/stat` (state, ppid, pgrp, ...): the command name (field
/// 2) may hold spaces, so they are counted from after its closing parenthesis.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks after boot.
fn start_ticks(pid: u32) -> Option<String> {
    stat_fields(&pid.to_string())?.get(19).cloned()
}

/// Whether a live (not zombie) process is in process group `pgid`; `None` without `/proc`.
fn group_alive(pgid: i32) -> Option<bool> {
    let want = pgid.to_string();
    let dir = std::fs::read_dir("/proc").ok()?;
    Some(dir.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        stat_fields(pid).is_some_and(|f| f.get(2) == Some(&want) && f[0] != "Z" && f[0] != "X")
    }))
}

fn this_boot() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A process group recorded by [`process_identity`].
struct LocalProcess {
    pgid: i32,
    start: Option<String>,
    boot: Option<String>,
}

impl LocalProcess {
    fn parse(s: &str) -> DriverResult<LocalProcess> {
        let bad = || DriverError::new(format!("\"{s}\" is not a local process identity"));
        let f: Vec<&str> = s.split_whitespace().collect();
        let [kind, pgid, start, boot] = f.as_slice() else {
            return Err(bad());
        };
        let pgid: i32 = pgid.parse().map_err(|_| bad())?;
        if *kind != "local" || pgid <= 1 {
            return Err(bad());
        }
        let known = |v: &str| (v != "-").then(|| v.to_string());
        Ok(LocalProcess {
            pgid,
            start: known(start),
            boot: known(boot),
        })
    }

    fn running(&self) -> bool {
        if let (Some(then), Some(now)) = (&self.boot, this_boot()) {
            if *then != now {
                return false;
            }
        }
        if let (Some(now), Some(then)) = (start_ticks(self.pgid as u32), &self.start) {
            // A leader that started at another time is another process with a reused id.
            if now != *then {
                return false;
            }
        }
        // The group lives while any live process is in it (the leader may have exited, or be
        // a zombie nobody reaped); while it lives, its id is not handed out again.
        // SAFETY (fallback without /proc): signal 0 only asks whether the group exists.
        group_alive(self.pgid).unwrap_or_else(|| unsafe { libc::killpg(self.pgid, 0) == 0 })
    }

    async fn stop(&self) -> DriverResult<()> {
        if !self.running() {
            return Ok(());
        }
        // SAFETY: signalling the process group just confirmed to be the step's.
        unsafe { libc::killpg(self.pgid, libc::SIGKILL) };
        for _ in 0..100 {
            if !self.running() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(DriverError::new(format!(
            "process group {} did not end within 5 s of SIGKILL",
            self.pgid
        )))
    }
}
