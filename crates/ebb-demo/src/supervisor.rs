//! The supervisor: owns the member processes and installs or reboots them on request.
//!
//! It runs inside the `ebb demo` process and listens on a loopback TCP port written to
//! `DIR/ctl.addr`. The runbook's steps run `ebb demo-ctl ...` (see [`crate::ctl`]), which
//! sends one JSON line and waits for the one-line answer. Keeping the member processes in
//! one owner means one place knows every pid, so Ctrl-C can stop them all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::member::boot_file;
use crate::procs::Processes;

/// How long a member may take to start listening and write its boot id.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One request from `demo-ctl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CtlRequest {
    /// `install` or `reboot`.
    pub op: String,
    /// The member's name.
    pub member: String,
    /// For `install`: the version to install.
    #[serde(default)]
    pub version: Option<String>,
    /// For `install`: how long installing takes (default: the demo's `--install-time`).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// The supervisor's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CtlReply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What happened, for the step's output.
    pub message: String,
}

/// What a member process is doing right now, for the live view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// The version the member runs (or will run once it is back).
    pub version: String,
    /// `running`, `installing`, `down`, `starting`.
    pub phase: String,
}

/// Timings and paths the supervisor needs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The `ebb` binary, re-executed as `ebb demo-member`.
    pub exe: PathBuf,
    /// The demo's working directory.
    pub dir: PathBuf,
    /// Default duration of an install.
    pub install_time: Duration,
    /// How long a reboot keeps a member down.
    pub reboot_time: Duration,
    /// How long `GET /stream` lasts on the members.
    pub stream_time: Duration,
}

/// Owns the member processes.
pub struct Supervisor {
    config: SupervisorConfig,
    procs: Arc<Processes>,
    slots: BTreeMap<String, Arc<tokio::sync::Mutex<Slot>>>,
    status: Arc<Mutex<BTreeMap<String, MemberStatus>>>,
}

struct Slot {
    name: String,
    address: String,
    version: String,
    child: Option<Child>,
}

impl Supervisor {
    /// Creates a supervisor for `members` (name, address), all at `version`; starts nothing.
    pub fn new(
        config: SupervisorConfig,
        procs: Arc<Processes>,
        members: &[(String, String)],
        version: &str,
    ) -> Arc<Self> {
        let mut slots = BTreeMap::new();
        let mut status = BTreeMap::new();
        for (name, address) in members {
            let slot = Slot {
                name: name.clone(),
                address: address.clone(),
                version: version.to_string(),
                child: None,
            };
            slots.insert(name.clone(), Arc::new(tokio::sync::Mutex::new(slot)));
            status.insert(
                name.clone(),
                MemberStatus {
                    version: version.to_string(),
                    phase: "down".into(),
                },
            );
        }
        Arc::new(Self {
            config,
            procs,
            slots,
            status: Arc::new(Mutex::new(status)),
        })
    }

    /// A snapshot of every member's process status.
    pub fn status(&self) -> BTreeMap<String, MemberStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts every member and waits until each has written its boot id.
    pub async fn start_all(&self) -> anyhow::Result<()> {
        for slot in self.slots.values() {
            let mut slot = slot.lock().await;
            self.start(&mut slot).await?;
        }
        Ok(())
    }

    /// Listens for `demo-ctl` on a loopback port, written to `DIR/ctl.addr`.
    pub async fn serve(self: &Arc<Self>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open the supervisor's control port")?;
        let addr = listener.local_addr().context("supervisor port")?;
        let path = ctl_addr_file(&self.config.dir);
        std::fs::write(&path, addr.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let me = me.clone();
                tokio::spawn(async move { me.answer(stream).await });
            }
        }))
    }

    async fn answer(self: Arc<Self>, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(read).take(64 * 1024);
        let got = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
        let reply = match got {
            Ok(Ok(n)) if n > 0 => match serde_json::from_str::<CtlRequest>(&line) {
                Ok(request) => match self.handle(request).await {
                    Ok(message) => CtlReply { ok: true, message },
                    Err(e) => CtlReply {
                        ok: false,
                        message: format!("{e:#}"),
                    },
                },
                Err(e) => CtlReply {
                    ok: false,
                    message: format!("bad request: {e}"),
                },
            },
            _ => CtlReply {
                ok: false,
                message: "no request received".into(),
            },
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
    }

    /// Carries out one request; the message goes into the step's output.
    pub async fn handle(self: &Arc<Self>, request: CtlRequest) -> anyhow::Result<String> {
        let slot = self
            .slots
            .get(&request.member)
            .with_context(|| format!("no member named `{}` in this demo", request.member))?
            .clone();
        match request.op.as_str() {
            "install" => {
                let version = request.version.clone().unwrap_or_else(|| "1.1".into());
                let delay = request
                    .delay_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.config.install_time);
                let mut slot = slot.lock().await;
                self.set_phase(&slot.name, "installing", &version);
                tokio::time::sleep(delay).await;
                // The new version replaces the running process.
                self.stop(&mut slot).await;
                slot.version = version.clone();
                self.start(&mut slot).await?;
                Ok(format!("{} now runs {version}", slot.name))
            }
            "reboot" => {
                let mut locked = slot.lock().await;
                self.stop(&mut locked).await;
                let name = locked.name.clone();
                drop(locked);
                // Like `shutdown -r now`: answer at once, come back later with a new boot id.
                let reboot_time = self.config.reboot_time;
                let me = self.clone();
                tokio::spawn(async move { me.restart_later(slot, reboot_time).await });
                Ok(format!(
                    "{name} is rebooting (back in {})",
                    ebb_config::duration::format_exact(reboot_time)
                ))
            }
            other => bail!("unknown operation `{other}` (install, reboot)"),
        }
    }

    async fn start(&self, slot: &mut Slot) -> anyhow::Result<()> {
        let boot = boot_file(&self.config.dir, &slot.name);
        let _ = std::fs::remove_file(&boot);
        self.set_phase(&slot.name, "starting", &slot.version.clone());
        let log_path = self
            .config
            .dir
            .join("logs")
            .join(format!("{}.log", slot.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let log2 = log.try_clone().context("log file")?;
        let mut command = Command::new(&self.config.exe);
        command
            .arg("demo-member")
            .arg("--name")
            .arg(&slot.name)
            .arg("--listen")
            .arg(&slot.address)
            .arg("--version")
            .arg(&slot.version)
            .arg("--dir")
            .arg(&self.config.dir)
            .arg("--stream-time")
            .arg(ebb_config::duration::format_exact(self.config.stream_time))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let mut child = self
            .procs
            .spawn(&mut command, &format!("member {}", slot.name))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if boot.exists() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                self.procs.forget(child.id());
                bail!(
                    "member {} exited while starting ({status}); see {}",
                    slot.name,
                    log_path.display()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                self.procs.signal(child.id(), libc::SIGKILL);
                bail!(
                    "member {} did not start within {START_TIMEOUT:?}",
                    slot.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        slot.child = Some(child);
        self.set_phase(&slot.name, "running", &slot.version.clone());
        Ok(())
    }

    async fn stop(&self, slot: &mut Slot) {
        if let Some(mut child) = slot.child.take() {
            let pid = child.id();
            self.procs.signal(pid, libc::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                self.procs.signal(pid, libc::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            }
            self.procs.forget(pid);
        }
        // A killed member cannot clean up after itself; a down member has no boot id.
        let _ = std::fs::remove_file(boot_file(&self.config.dir, &slot.name));
        self.set_phase(&slot.name, "down", &slot.version.clone());
    }

    async fn restart_later(&self, slot: Arc<tokio::sync::Mutex<Slot>>, after: Duration) {
        tokio::time::sleep(after).await;
        if self.procs.shutting_down() {
            return;
        }
        let mut slot = slot.lock().await;
        if slot.child.is_none() {
            if let Err(e) = self.start(&mut slot).await {
                ebb_out::errln!("ebb demo: {e:#}");
            }
        }
    }

    fn set_phase(&self, name: &str, phase: &str, version: &str) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.insert(
            name.to_string(),
            MemberStatus {
                version: version.to_string(),
                phase: phase.to_string(),
            },
        );
    }
}

/// Where the supervisor's address is written.
pub fn ctl_addr_file(dir: &Path) -> PathBuf {
    dir.join("ctl.addr")
}
