//! A member reached in memory: commands answer as scripted, a reboot changes the boot
//! identity after a short time down, and the member can be unreachable for a while.

use super::{dead, Fate, Recorder, REBOOT_COMMAND};
use crate::interfaces::{CommandOutcome, DriverError, DriverResult, OutputSink, Transport};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How one run of a command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Exits with this code at once.
    Exit(i32),
    /// Prints these lines, then exits with this code.
    Output(i32, String),
    /// Runs for this long, then exits 0 (or is killed at its timeout, if shorter).
    Slow(Duration),
    /// Never ends: killed at its timeout.
    Hang,
    /// The member cannot be reached (the transport fails, the command never starts).
    Unreachable,
    /// The command started, then the connection to the member dropped: its outcome is
    /// unknown (it did take effect on the member).
    Lost,
    /// Reboots the member: it is down for this long, then comes back with a new boot id.
    /// The command itself exits 0.
    Reboot(Duration),
    /// The member goes down and never comes back.
    RebootForever,
}

struct Sim {
    /// Replies per command and how many times it ran; the last reply repeats.
    scripts: HashMap<String, (usize, Vec<Reply>)>,
    boot: u64,
    down_until: Option<Instant>,
    unreachable_until: Option<Instant>,
}

/// The fake transport of one member.
pub struct FakeTransport {
    member: String,
    log: Recorder,
    sim: Mutex<Sim>,
}

impl FakeTransport {
    pub(crate) fn new(log: Recorder, member: &str) -> Self {
        FakeTransport {
            member: member.into(),
            log,
            sim: Mutex::new(Sim {
                scripts: HashMap::new(),
                boot: 0,
                down_until: None,
                unreachable_until: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        self.sim.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How `command` answers: the n-th run gets the n-th reply, and the last reply
    /// repeats. Unscripted commands exit 0; the unscripted [`REBOOT_COMMAND`] reboots.
    pub fn script(&self, command: &str, replies: impl IntoIterator<Item = Reply>) {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a script needs at least one reply");
        self.lock().scripts.insert(command.into(), (0, replies));
    }

    /// The member cannot be reached (commands and boot id fail) for `d` from now.
    pub fn unreachable_for(&self, d: Duration) {
        self.log
            .note(&self.member, format!("external unreachable for {d:?}"));
        self.lock().unreachable_until = Some(Instant::now() + d);
    }

    /// The boot identity the member has now (or will have once it is back up).
    pub fn boot(&self) -> String {
        format!("boot-{}", self.lock().boot)
    }

    fn next_reply(&self, command: &str) -> Reply {
        let mut sim = self.lock();
        match sim.scripts.get_mut(command) {
            Some((n, replies)) => {
                let r = replies[(*n).min(replies.len() - 1)].clone();
                *n += 1;
                r
            }
            None if command == REBOOT_COMMAND => Reply::Reboot(Duration::from_millis(5)),
            None => Reply::Exit(0),
        }
    }

    fn down(&self) -> Option<&'static str> {
        let sim = self.lock();
        let now = Instant::now();
        if sim.unreachable_until.is_some_and(|t| now < t) {
            Some("unreachable")
        } else if sim.down_until.is_some_and(|t| now < t) {
            Some("down (rebooting)")
        } else {
            None
        }
    }

    async fn answer(
        &self,
        reply: Reply,
        timeout: Duration,
        output: Option<OutputSink>,
    ) -> DriverResult<CommandOutcome> {
        let exited = |code| CommandOutcome {
            exit_code: Some(code),
            timed_out: false,
            tail: String::new(),
            connection_lost: false,
            signal: None,
        };
        let killed = CommandOutcome {
            exit_code: None,
            timed_out: true,
            tail: String::new(),
            connection_lost: false,
            signal: None,
        };
        Ok(match reply {
            Reply::Exit(code) => exited(code),
            Reply::Output(code, text) => {
                if let Some(sink) = &output {
                    text.lines().for_each(|l| sink(l));
                }
                CommandOutcome {
                    tail: text,
                    ..exited(code)
                }
            }
            Reply::Slow(d) if d <= timeout => {
                tokio::time::sleep(d).await;
                exited(0)
            }
            Reply::Slow(_) | Reply::Hang => {
                tokio::time::sleep(timeout).await;
                killed
            }
            Reply::Lost => CommandOutcome {
                exit_code: None,
                connection_lost: true,
                ..exited(0)
            },
            Reply::Unreachable => {
                return Err(DriverError::new(format!(
                    "fake transport: \"{}\" is unreachable",
                    self.member
                )))
            }
            Reply::Reboot(d) => {
                let mut sim = self.lock();
                sim.boot += 1;
                sim.down_until = Some(Instant::now() + d);
                exited(0)
            }
            Reply::RebootForever => {
                let mut sim = self.lock();
                sim.boot += 1;
                sim.down_until = Some(Instant::now() + Duration::from_secs(3600));
                exited(0)
            }
        })
    }
}

#[async_trait]
impl Transport for FakeTransport {
    async fn run(
        &self,
        command: &str,
        _env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
    ) -> DriverResult<CommandOutcome> {
        let down = self.down();
        let reply = if down.is_some() {
            Reply::Unreachable
        } else {
            self.next_reply(command)
        };
        let call = match (down, &reply) {
            (Some(why), _) => format!("run {command} ({why})"),
            (None, Reply::Unreachable) => format!("run {command} (unreachable)"),
            (None, _) => format!("run {command}"),
        };
        let fate = self.log.effect(&self.member, call);
        if fate == Fate::DieBefore {
            return dead().await;
        }
        let out = self.answer(reply, timeout, output).await;
        if fate == Fate::DieAfter {
            return dead().await;
        }
        out
    }

    async fn boot_id(&self) -> DriverResult<String> {
        match self.down() {
            Some(why) => Err(DriverError::new(format!(
                "fake transport: \"{}\" is {why}",
                self.member
            ))),
            None => Ok(self.boot()),
        }
    }
}
