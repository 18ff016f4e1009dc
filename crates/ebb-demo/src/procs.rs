//! The registry of every process the demo starts, so that Ctrl-C leaves none behind.
//!
//! Each child is started in its own process group (so the whole group, including the
//! shell commands `ebb run` starts for its steps, can be signalled at once) and with
//! `PR_SET_PDEATHSIG` so that even a `kill -9` of the demo takes the children with it.
//! Once shutdown has begun, the registry refuses to start anything new: a member that was
//! about to come back from its "reboot" must not outlive the demo.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// Tracks the process groups the demo started.
#[derive(Debug, Default)]
pub struct Processes {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    shutting_down: bool,
    groups: BTreeSet<i32>,
}

impl Processes {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `command` in a new process group, registered for [`Processes::kill_all`].
    pub fn spawn(&self, command: &mut Command, what: &str) -> anyhow::Result<Child> {
        let mut inner = self.lock();
        if inner.shutting_down {
            bail!("not starting {what}: the demo is shutting down");
        }
        command.process_group(0).kill_on_drop(true);
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        if let Some(pid) = child.id() {
            inner.groups.insert(pid as i32);
        }
        Ok(child)
    }

    /// Forgets a process group that has ended (so its number is never signalled again).
    pub fn forget(&self, pid: Option<u32>) {
        if let Some(pid) = pid {
            self.lock().groups.remove(&(pid as i32));
        }
    }

    /// Sends `signal` to one registered process group.
    pub fn signal(&self, pid: Option<u32>, signal: i32) {
        if let Some(pid) = pid {
            if self.lock().groups.contains(&(pid as i32)) {
                // SAFETY: plain syscall on a process group we started.
                unsafe {
                    libc::kill(-(pid as i32), signal);
                }
            }
        }
    }

    /// Stops everything: refuses new processes, sends SIGTERM to every group, gives them
    /// `grace` to exit (members remove their boot files), then SIGKILLs what is left.
    pub async fn kill_all(&self, grace: Duration) {
        let groups: Vec<i32> = {
            let mut inner = self.lock();
            inner.shutting_down = true;
            inner.groups.iter().copied().collect()
        };
        for &group in &groups {
            // SAFETY: plain syscall on process groups we started.
            unsafe {
                libc::kill(-group, libc::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline && groups.iter().any(|&g| group_alive(g)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for &group in &groups {
            // SAFETY: as above.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        self.lock().groups.clear();
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave it inconsistent (plain set updates).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether any process of the group still runs (zombies count as gone: they are only
/// waiting to be reaped).
fn group_alive(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may contain spaces) : state ppid pgrp ...
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == group.to_string() && fields[0] != "Z" {
            return true;
        }
    }
    false
}
