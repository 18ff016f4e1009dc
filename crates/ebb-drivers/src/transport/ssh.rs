//! The `ssh` transport: commands run on the member through the system OpenSSH client,
//! one multiplexed connection per member (ControlMaster), host keys always checked.
//!
//! Why the system `ssh` and not an SSH library: it is what operators already trust and
//! configure (agents, `~/.ssh/config`, jump hosts, hardware keys, `known_hosts` with hashed
//! names and `@cert-authority` lines all keep working), it costs ebb no dependency, and
//! OpenSSH's ControlMaster gives connection reuse across a member's steps for free. The
//! price is one `ssh` process per command, which is small next to the steps it runs.
//!
//! A step's timeout must kill the remote command, not only the local `ssh`: closing an
//! SSH channel without a terminal does not signal the remote process. So the remote
//! wrapper first prints its process id (the session leader sshd made for the command) on
//! stderr, and on timeout or cancellation ebb kills that process group (and session) on the
//! member over a second connection.

use super::command_line::{
    remote_alive, remote_command, remote_kill, RemoteShell, EXIT_MARKER, PID_MARKER,
};
use super::OutputTail;
use async_trait::async_trait;
use ebb_config::{display_value, ConfigErrors, Context, Key, Kind, Section};
use ebb_engine::interfaces::{
    CommandOutcome, DriverError, DriverResult, OutputSink, StartedSink, Transport,
};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{Member, Plan, Shell};
use ebb_engine::registry::TransportKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Boot identity on Linux (changes at every boot).
pub const LINUX_BOOT_ID: &str = "cat /proc/sys/kernel/random/boot_id";

/// Boot identity on Windows: the last boot time, in UTC.
pub const WINDOWS_BOOT_ID: &str =
    "(Get-CimInstance Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')";

/// Options a pool file may not set through `ssh_options`: they would weaken host-key
/// checking or break ebb's own connection handling.
pub const FORBIDDEN_OPTIONS: &[&str] = &[
    "stricthostkeychecking",
    "userknownhostsfile",
    "globalknownhostsfile",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "batchmode",
    "requesttty",
    "permitlocalcommand",
    "localcommand",
];

/// The keys the ssh transport owns in `[[member]]` and `[defaults]`.
pub const KEYS: &[Key] = &[
    Key::new(
        "ssh_host",
        Kind::String,
        "ssh: where to connect (default: the host part of address)",
    ),
    Key::new("ssh_port", Kind::Integer, "ssh: the port (default 22)"),
    Key::new(
        "ssh_user",
        Kind::String,
        "ssh: the login (default: ssh's own)",
    ),
    Key::new(
        "ssh_key",
        Kind::String,
        "ssh: a private key file (relative to the pool file)",
    ),
    Key::new(
        "ssh_known_hosts",
        Kind::String,
        "ssh: the known-hosts file (default ~/.ssh/known_hosts); host keys are always checked",
    ),
    Key::new(
        "ssh_options",
        Kind::Strings,
        "ssh: extra \"Key=Value\" options (not the host-key or connection-sharing ones)",
    ),
    Key::new(
        "ssh_connect_timeout",
        Kind::Duration,
        "ssh: bound on connecting (default \"10s\")",
    ),
];

/// The `ssh` transport's descriptor, registered in [`crate::registry`].
pub struct SshTransport;

impl TransportKind for SshTransport {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }

    fn validate(&self, cx: &mut Context, section: &mut Section<'_>) {
        SshSettings::read(cx, section, "", Path::new(""));
    }

    fn knows_boot_identity(&self) -> bool {
        true
    }

    fn build(&self, plan: &Plan, member: &Member) -> Result<Arc<dyn Transport>, ConfigErrors> {
        Ok(Arc::new(Ssh::new(plan, member)?))
    }
}

/// How one member is reached over ssh, from its `ssh_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// Host name or address (`ssh_host`, default the host of `address`).
    pub host: String,
    /// `ssh_port` (default 22).
    pub port: u16,
    /// `ssh_user` (default: ssh's own default, the local user or `~/.ssh/config`).
    pub user: Option<String>,
    /// `ssh_key`: private key file.
    pub key: Option<PathBuf>,
    /// `ssh_known_hosts`: the known-hosts file (default: ssh's, `~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// `ssh_options`: extra `-o Key=Value` options.
    pub options: Vec<String>,
    /// `ssh_connect_timeout` (default 10 s).
    pub connect_timeout: Duration,
}

impl SshSettings {
    /// Reads the ssh keys of one table (a member's, `[defaults]`, or a member's merged
    /// settings), every problem into `cx`. `address` gives the default host; relative
    /// paths are taken from `base` (the pool file's folder).
    pub fn read(cx: &mut Context, s: &mut Section<'_>, address: &str, base: &Path) -> SshSettings {
        let port = match s.get("ssh_port") {
            None => 22,
            Some(toml::Value::Integer(p)) if (1..=65535).contains(p) => *p as u16,
            Some(other) => {
                let m = format!(
                    "expected a port number from 1 to 65535, found {}",
                    display_value(other)
                );
                s.error(cx, "ssh_port", m);
                22
            }
        };
        let options = ssh_options(cx, s);
        let connect_timeout = s.duration(cx, "ssh_connect_timeout", Duration::from_secs(10));
        let mut text = |k: &str| match s.get(k) {
            None => None,
            Some(toml::Value::String(v)) if !v.trim().is_empty() => Some(v.clone()),
            Some(other) => {
                let m = format!(
                    "expected a non-empty string, found {}",
                    display_value(other)
                );
                s.error(cx, k, m);
                None
            }
        };
        let path = |p: String| {
            let p = expand_home(&p);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        SshSettings {
            host: text("ssh_host").unwrap_or_else(|| host_of(address)),
            port,
            user: text("ssh_user"),
            key: text("ssh_key").map(path),
            known_hosts: text("ssh_known_hosts").map(path),
            options,
            connect_timeout,
        }
    }
}

/// `ssh_options`: a list of `"Key=Value"`, none of them an option ebb owns.
fn ssh_options(cx: &mut Context, s: &mut Section<'_>) -> Vec<String> {
    let Some(v) = s.get("ssh_options") else {
        return Vec::new();
    };
    let items = v
        .as_array()
        .map(|a| a.iter().map(|i| i.as_str()).collect::<Vec<_>>());
    let Some(items) = items.filter(|i| i.iter().all(Option::is_some)) else {
        let m = format!(
            "expected a list of \"Key=Value\" strings, found {}",
            display_value(v)
        );
        s.error(cx, "ssh_options", m);
        return Vec::new();
    };
    let mut out = Vec::new();
    for o in items.into_iter().flatten() {
        match check_option(o) {
            Ok(()) => out.push(o.to_string()),
            Err(e) => s.error(cx, "ssh_options", e),
        }
    }
    out
}

/// Validates one `ssh_options` entry: `Key=Value`, and not an option ebb must own.
pub fn check_option(o: &str) -> Result<(), String> {
    let Some((k, _)) = o.split_once('=') else {
        return Err(format!("\"{o}\" is not of the form Key=Value"));
    };
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("\"{o}\" is not of the form Key=Value"));
    }
    if FORBIDDEN_OPTIONS.contains(&k.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "\"{k}\" is set by ebb (host keys are always checked; use ssh_known_hosts for the file)"
        ));
    }
    Ok(())
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The host part of `host:port`, `[v6]:port`, `v6` or `host`.
pub fn host_of(address: &str) -> String {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match address.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h.into(),
        _ => address.to_string(),
    }
}

/// Runs a member's commands over ssh.
pub struct Ssh {
    member: String,
    shell: RemoteShell,
    settings: SshSettings,
    boot_id: String,
    control_dir: PathBuf,
}

static CONTROL_DIRS: AtomicUsize = AtomicUsize::new(0);

impl Ssh {
    /// The ssh transport for `member` of `plan`; relative paths are taken from the pool
    /// file's folder.
    pub fn new(plan: &Plan, member: &Member) -> Result<Ssh, ConfigErrors> {
        let (base, at) = super::member_settings_origin(plan, member);
        let mut cx = ebb_engine::config::context(plan);
        let mut section = Section::new(&member.settings, at, KEYS);
        let settings = SshSettings::read(&mut cx, &mut section, &member.address, &base);
        let settings = cx.into_result(settings)?;
        let shell = match member.shell {
            Shell::Sh => RemoteShell::Sh,
            Shell::PowerShell => RemoteShell::PowerShell,
        };
        let boot_id = match &member.boot_id {
            Some(b) => render(b, member, Quote::from(member.shell), &BTreeMap::new()),
            None => match member.shell {
                Shell::Sh => LINUX_BOOT_ID.to_string(),
                Shell::PowerShell => WINDOWS_BOOT_ID.to_string(),
            },
        };
        // A short folder of our own: socket paths are limited to ~100 bytes.
        let control_dir = std::env::temp_dir().join(format!(
            "ebb-ssh-{}-{}",
            std::process::id(),
            CONTROL_DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        Ok(Ssh {
            member: member.name.clone(),
            shell,
            settings,
            boot_id,
            control_dir,
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    /// The `ssh` arguments before the remote command: host-key checking always on,
    /// connection reuse, bounded connect and keep-alive.
    pub fn base_args(&self) -> Vec<String> {
        let s = &self.settings;
        let mut a: Vec<String> = vec!["-T".into()];
        let mut opt = |o: String| {
            a.push("-o".into());
            a.push(o);
        };
        // ssh keeps the first value of each option: ebb's own come first.
        opt("BatchMode=yes".into());
        opt("StrictHostKeyChecking=yes".into());
        opt("ControlMaster=auto".into());
        opt(format!(
            "ControlPath={}",
            self.control_dir.join("%C").display()
        ));
        opt("ControlPersist=60".into());
        opt(format!(
            "ConnectTimeout={}",
            s.connect_timeout.as_secs().max(1)
        ));
        opt("ServerAliveInterval=5".into());
        opt("ServerAliveCountMax=3".into());
        opt("LogLevel=ERROR".into());
        if let Some(k) = &s.known_hosts {
            opt(format!("UserKnownHostsFile={}", k.display()));
        }
        if s.key.is_some() {
            opt("IdentitiesOnly=yes".into());
        }
        for o in &s.options {
            opt(o.clone());
        }
        if let Some(k) = &s.key {
            a.push("-i".into());
            a.push(k.display().to_string());
        }
        if let Some(u) = &s.user {
            a.push("-l".into());
            a.push(u.clone());
        }
        a.push("-p".into());
        a.push(s.port.to_string());
        a.push("--".into());
        a.push(self.settings.host.clone());
        a
    }

    fn where_(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    /// Explains an ssh failure (exit 255 before the remote command started) for humans.
    fn connection_error(&self, stderr: &str) -> DriverError {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("ssh exited with 255 and said nothing")
            .trim()
            .to_string();
        let kh = self
            .settings
            .known_hosts
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.ssh/known_hosts".into());
        let msg = if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("Host key verification failed")
            || stderr.contains("host key is known")
        {
            let why = if stderr.contains("HAS CHANGED") {
                "the host key it presented does not match the one recorded"
            } else {
                "its host key is not recorded (or does not match)"
            };
            format!(
                "member \"{}\": host key verification failed for {}: {why} in {kh}. ebb never accepts an unknown or changed key: if the server was reinstalled, verify its new key and update {kh} (ssh_known_hosts)",
                self.member,
                self.where_()
            )
        } else if stderr.contains("Permission denied") {
            format!(
                "member \"{}\": ssh login to {} was refused ({last}); check ssh_user and ssh_key",
                self.member,
                self.where_()
            )
        } else {
            format!(
                "member \"{}\" is unreachable over ssh at {}: {last}",
                self.member,
                self.where_()
            )
        };
        DriverError::new(msg)
    }

    async fn kill_remote(&self, pid: u32) {
        let mut cmd = Command::new("ssh");
        cmd.args(self.base_args())
            .arg(remote_kill(self.shell, pid))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Ok(mut child) = cmd.spawn() {
            let _ = tokio::time::timeout(
                self.settings.connect_timeout + Duration::from_secs(5),
                child.wait(),
            )
            .await;
        }
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        // Close the shared connection, if one was opened, and remove its folder.
        if self.control_dir.exists() {
            let _ = std::process::Command::new("ssh")
                .args(self.base_args())
                .args(["-O", "exit"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&self.control_dir);
        }
    }
}

/// Kills the remote command when a run is cancelled while it runs (Ctrl-C, abort): the
/// future is dropped, so the kill goes to a detached `ssh`.
struct RemoteKillOnDrop {
    args: Vec<String>,
    shell: RemoteShell,
    pid: Arc<Mutex<Option<u32>>>,
    armed: bool,
}

impl Drop for RemoteKillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let pid = self.pid.lock().ok().and_then(|p| *p);
        if let Some(pid) = pid {
            let _ = std::process::Command::new("ssh")
                .args(&self.args)
                .arg(remote_kill(self.shell, pid))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
    }
}

/// A command ebb started on a member over ssh, as the journal keeps it:
/// `ssh PID START BOOT` from the wrapper's first line (`-` for what the member did not
/// tell).
struct RemoteProcess {
    pid: u32,
    start: String,
    boot: String,
}

impl RemoteProcess {
    /// From the wrapper's marker line (after the marker).
    fn from_marker(rest: &str) -> Option<RemoteProcess> {
        let mut f = rest.split_whitespace();
        let pid = f.next()?.parse().ok()?;
        let clean = |v: Option<&str>| {
            v.filter(|v| v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                .unwrap_or("-")
                .to_string()
        };
        Some(RemoteProcess {
            pid,
            start: clean(f.next()),
            boot: clean(f.next()),
        })
    }

    fn identity(&self) -> String {
        format!("ssh {} {} {}", self.pid, self.start, self.boot)
    }

    fn parse(s: &str) -> DriverResult<RemoteProcess> {
        s.strip_prefix("ssh ")
            .and_then(RemoteProcess::from_marker)
            .ok_or_else(|| DriverError::new(format!("\"{s}\" is not an ssh process identity")))
    }
}

impl Ssh {
    async fn run_inner(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
        started: Option<StartedSink>,
    ) -> DriverResult<CommandOutcome> {
        if let Err(e) = std::fs::create_dir_all(&self.control_dir) {
            return Err(DriverError::new(format!(
                "member \"{}\": cannot create {} for the ssh connection: {e}",
                self.member,
                self.control_dir.display()
            )));
        }
        let args = self.base_args();
        let mut cmd = Command::new("ssh");
        cmd.args(&args)
            .arg(remote_command(self.shell, command, env))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            DriverError::new(format!(
                "member \"{}\": cannot start the ssh client: {e} (is OpenSSH's `ssh` installed?)",
                self.member
            ))
        })?;
        let pid: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
        let mut guard = RemoteKillOnDrop {
            args: args.clone(),
            shell: self.shell,
            pid: pid.clone(),
            armed: true,
        };
        let tail = OutputTail::default();
        let stderr_all: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let exit_seen: Arc<Mutex<Option<i32>>> = Arc::new(Mutex::new(None));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(read_lines(
                BufReader::new(out),
                tail.clone(),
                output.clone(),
                None,
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(read_lines(
                BufReader::new(err),
                tail.clone(),
                output.clone(),
                Some(StderrSlots {
                    pid: pid.clone(),
                    before_start: stderr_all.clone(),
                    exit: exit_seen.clone(),
                    started,
                }),
            )));
        }
        let waited = tokio::time::timeout(timeout, child.wait()).await;
        let (status, timed_out) = match waited {
            Ok(Ok(status)) => (status.code(), false),
            Ok(Err(e)) => {
                return Err(DriverError::new(format!(
                    "member \"{}\": waiting for ssh: {e}",
                    self.member
                )))
            }
            Err(_) => (None, true),
        };
        if timed_out {
            let _ = child.kill().await;
        }
        // ssh has exited, so its pipes end at once; a 255 waits longer for the exit marker,
        // since its absence means the connection was lost.
        let drain = if status == Some(255) { 2000 } else { 300 };
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_millis(drain), r).await;
        }
        let started = pid.lock().ok().and_then(|p| *p);
        let reported = exit_seen.lock().ok().and_then(|e| *e);
        if timed_out {
            if let Some(p) = started {
                self.kill_remote(p).await;
            }
        }
        guard.armed = false;
        let tail = tail.text();
        if !timed_out && started.is_none() {
            // The command never started: ssh itself failed (255), or the remote shell
            // could not run the wrapper.
            let err = stderr_all.lock().map(|s| s.clone()).unwrap_or_default();
            if status != Some(255) {
                return Err(DriverError::new(format!(
                    "member \"{}\": the remote login shell at {} did not run ebb's wrapper ({}): {}; ebb needs a POSIX login shell (sh, bash, zsh, ksh) for shell = \"sh\", or powershell.exe for shell = \"powershell\"",
                    self.member,
                    self.where_(),
                    ebb_engine::interfaces::ended_text(status, None),
                    err.trim()
                )));
            }
            return Err(self.connection_error(&err));
        }
        // 255 is ssh's own failure code; the member's shell prints the command's real exit
        // code last, so a 255 without it is a connection that dropped mid-command.
        let connection_lost = !timed_out && status == Some(255) && reported.is_none();
        Ok(CommandOutcome {
            exit_code: if connection_lost { None } else { status },
            timed_out,
            tail,
            connection_lost,
            signal: None,
        })
    }
}

#[async_trait]
impl Transport for Ssh {
    async fn run(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
    ) -> DriverResult<CommandOutcome> {
        self.run_inner(command, env, timeout, output, None).await
    }

    async fn run_tracked(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
        started: StartedSink,
    ) -> DriverResult<CommandOutcome> {
        self.run_inner(command, env, timeout, output, Some(started))
            .await
    }

    async fn still_running(&self, process: &str) -> DriverResult<bool> {
        let p = RemoteProcess::parse(process)?;
        super::ask_alive(
            self,
            &self.member,
            &format!("process {}", p.pid),
            &remote_alive(self.shell, p.pid, &p.start, &p.boot),
            self.settings.connect_timeout + Duration::from_secs(20),
        )
        .await
    }

    async fn stop_process(&self, process: &str) -> DriverResult<()> {
        let p = RemoteProcess::parse(process)?;
        // Only a process confirmed to be the command: its id may belong to another now.
        if !self.still_running(process).await? {
            return Ok(());
        }
        self.kill_remote(p.pid).await;
        for _ in 0..10 {
            if !self.still_running(process).await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(DriverError::new(format!(
            "member \"{}\": process group {} did not end after it was killed",
            self.member, p.pid
        )))
    }

    fn describe_process(&self, process: &str) -> String {
        match RemoteProcess::parse(process) {
            Ok(p) => format!("process group {} on {}", p.pid, self.settings.host),
            Err(_) => process.to_string(),
        }
    }

    async fn boot_id(&self) -> DriverResult<String> {
        super::ask_boot_id(
            self,
            &self.member,
            &self.boot_id,
            "",
            self.settings.connect_timeout + Duration::from_secs(10),
        )
        .await
    }
}

/// What the stderr reader picks out of a wrapped command's stderr.
struct StderrSlots {
    /// The command's pid on the member, from [`PID_MARKER`] (set: the command started).
    pid: Arc<Mutex<Option<u32>>>,
    /// ssh's own messages, before the command started.
    before_start: Arc<Mutex<String>>,
    /// The exit code the member reported ([`EXIT_MARKER`]).
    exit: Arc<Mutex<Option<i32>>>,
    /// Told the command's identity on the member (`ssh PID START BOOT`) once it started.
    started: Option<StartedSink>,
}

async fn read_lines<R: tokio::io::AsyncRead + Unpin>(
    reader: BufReader<R>,
    tail: OutputTail,
    output: Option<OutputSink>,
    stderr: Option<StderrSlots>,
) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim_end_matches('\r').to_string();
        if let Some(StderrSlots {
            pid,
            before_start: all,
            exit,
            started,
        }) = &stderr
        {
            if let Some(code) = line
                .strip_prefix(EXIT_MARKER)
                .and_then(|c| c.trim().parse::<i32>().ok())
            {
                if let Ok(mut slot) = exit.lock() {
                    *slot = Some(code);
                    continue;
                }
            }
            if let Some(p) = line.strip_prefix(PID_MARKER) {
                if let (Ok(mut slot), Some(proc_)) = (pid.lock(), RemoteProcess::from_marker(p)) {
                    if slot.is_none() {
                        *slot = Some(proc_.pid);
                        if let Some(s) = started {
                            s(&proc_.identity());
                        }
                        continue;
                    }
                }
            }
            let started = pid.lock().map(|p| p.is_some()).unwrap_or(false);
            if !started {
                // ssh's own messages (before the command started) explain failures.
                if let Ok(mut a) = all.lock() {
                    a.push_str(&line);
                    a.push('\n');
                }
                continue;
            }
        }
        tail.keep(line, &output);
    }
}
