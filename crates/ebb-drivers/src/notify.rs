//! `[[notify]]`: messages about a run (started, paused, done, failed; a member failed,
//! skipped or rolled back; a capacity wait begun), POSTed in the background with bounded retries. A message that cannot be sent
//! never fails or slows the run: its fate is logged (`notifications.jsonl` in the state
//! dir, read by `ebb report`) and the run goes on.

use ebb_engine::events::{Event, EventSink, WaitKind};
use ebb_engine::plan::{NotifyEvent, NotifyFormat, NotifySpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The log of notifications in the state dir.
pub const LOG_FILE: &str = "notifications.jsonl";

/// Attempts per message.
const ATTEMPTS: u32 = 3;
/// Bound on one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between attempts.
const PAUSE: Duration = Duration::from_millis(500);

/// One notification's fate: a line of [`LOG_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    /// The run it is about.
    pub run_id: i64,
    /// When it was given up on or delivered (unix ms).
    pub t_ms: i64,
    /// `run_done`, `member_failed`, ...
    pub event: String,
    /// Where it went.
    pub url: String,
    /// Delivered (a 2xx answer).
    pub ok: bool,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, when not delivered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Sends a run's notifications.
pub struct Notifier {
    specs: Vec<NotifySpec>,
    pool: String,
    log: Option<PathBuf>,
    run_id: Mutex<i64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    write: Arc<Mutex<()>>,
}

impl Notifier {
    /// A notifier for the `[[notify]]` receivers of pool `pool`, logging to `state_dir`.
    pub fn new(specs: Vec<NotifySpec>, pool: &str, state_dir: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Notifier {
            specs,
            pool: pool.to_string(),
            log: state_dir.map(|d| d.join(LOG_FILE)),
            run_id: Mutex::new(0),
            tasks: Mutex::new(Vec::new()),
            write: Arc::new(Mutex::new(())),
        })
    }

    /// `inner`, and a notification for each event a receiver asked for.
    pub fn sink(self: &Arc<Self>, inner: EventSink) -> EventSink {
        if self.specs.is_empty() {
            return inner;
        }
        let me = self.clone();
        Arc::new(move |e: &Event| {
            inner(e);
            me.on(e, &inner);
        })
    }

    /// Sends the notifications `e` asks for; a message that could not be sent (or logged)
    /// is told to the operator as a warning through `inner`, the run's own output.
    fn on(&self, e: &Event, inner: &EventSink) {
        if let Event::RunStarted { run_id, .. } = e {
            *self.run_id.lock().unwrap_or_else(|p| p.into_inner()) = *run_id;
        }
        let Some((kind, member, text)) = classify(e) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let run_id = *self.run_id.lock().unwrap_or_else(|p| p.into_inner());
        for spec in self.specs.iter().filter(|s| s.events.contains(&kind)) {
            let body = body(spec.format, kind, &self.pool, run_id, member, &text);
            let (url, log, write) = (spec.url.clone(), self.log.clone(), self.write.clone());
            let warn = inner.clone();
            let task = rt.spawn(async move {
                let sent = send(&url, &body, kind, run_id).await;
                if !sent.ok {
                    warn(&Event::Warning {
                        message: format!(
                            "notification {} to {url} not sent ({} attempts): {}",
                            kind.as_str(),
                            sent.attempts,
                            sent.error
                        ),
                    });
                }
                if let Some(path) = log {
                    if let Err(e) = append(&path, &sent, &write) {
                        warn(&Event::Warning {
                            message: format!(
                                "cannot log notification {} in {}: {e}",
                                kind.as_str(),
                                path.display()
                            ),
                        });
                    }
                }
            });
            self.tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task);
        }
    }

    /// Waits, at most `bound`, for the messages still being sent (the run's last one is
    /// sent as it ends); those still trying after it are dropped (and not logged).
    pub async fn finish(&self, bound: Duration) {
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let all = async {
            for t in tasks {
                // A send task does not panic; a cancelled one has nothing to report.
                let _ = t.await;
            }
        };
        if tokio::time::timeout(bound, all).await.is_err() {
            aborts.iter().for_each(|a| a.abort());
        }
    }
}

/// The notification an event calls for: its kind, member and text.
fn classify(e: &Event) -> Option<(NotifyEvent, Option<&str>, String)> {
    match e {
        Event::RunStarted {
            run_id, resumed, ..
        } => Some((
            NotifyEvent::RunStarted,
            None,
            format!(
                "run {run_id} {}",
                if *resumed { "resumed" } else { "started" }
            ),
        )),
        Event::RunFinished { state, message, .. } => {
            let kind = match state.as_str() {
                "paused" => NotifyEvent::RunPaused,
                "done" => NotifyEvent::RunDone,
                _ => NotifyEvent::RunFailed,
            };
            let text = if message.is_empty() {
                format!("run {state}")
            } else {
                format!("run {state}: {message}")
            };
            Some((kind, None, text))
        }
        Event::MemberFinished {
            member,
            state,
            reason,
            ..
        } => {
            let kind = match state.as_str() {
                "failed" => NotifyEvent::MemberFailed,
                "skipped" => NotifyEvent::MemberSkipped,
                "rolled-back" => NotifyEvent::MemberRolledBack,
                _ => return None,
            };
            Some((
                kind,
                Some(member.as_str()),
                format!("{member} {state}: {reason}"),
            ))
        }
        Event::Waiting {
            member,
            kind: WaitKind::Capacity,
            reason,
        } => Some((
            NotifyEvent::CapacityWaitBegun,
            member.as_deref(),
            format!("capacity wait begun: {reason}"),
        )),
        _ => None,
    }
}

/// The body of a `format = "json"` notification.
#[derive(Debug, serde::Serialize)]
struct JsonBody<'a> {
    /// What happened (`run_started`, `member_failed`, ...).
    event: &'static str,
    /// The member it is about, if any.
    member: Option<&'a str>,
    /// For humans.
    message: &'a str,
    /// The pool's name.
    pool: &'a str,
    /// The run.
    run_id: i64,
}

/// The body of a Slack or Teams notification: one line of text.
#[derive(Debug, serde::Serialize)]
struct TextBody {
    text: String,
}

/// The message body in the receiver's format.
fn body(
    format: NotifyFormat,
    kind: NotifyEvent,
    pool: &str,
    run_id: i64,
    member: Option<&str>,
    text: &str,
) -> String {
    let encoded = match format {
        NotifyFormat::Json => serde_json::to_string(&JsonBody {
            event: kind.as_str(),
            member,
            message: text,
            pool,
            run_id,
        }),
        NotifyFormat::Slack | NotifyFormat::Teams => serde_json::to_string(&TextBody {
            text: format!("ebb, pool {pool}: {text}"),
        }),
    };
    encoded.unwrap_or_default()
}

/// POSTs `body` to `url`, up to [`ATTEMPTS`] times.
async fn send(url: &str, body: &str, kind: NotifyEvent, run_id: i64) -> Sent {
    let headers = [("content-type", "application/json".to_string())];
    let mut error = String::new();
    let mut attempts = 0;
    while attempts < ATTEMPTS {
        if attempts > 0 {
            tokio::time::sleep(PAUSE).await;
        }
        attempts += 1;
        match crate::http::request("POST", url, Some(body), &headers, ATTEMPT_TIMEOUT).await {
            Ok(r) if (200..300).contains(&r.status) => {
                error.clear();
                break;
            }
            Ok(r) => error = format!("POST {url}: answered {}", r.status),
            Err(e) => error = e,
        }
    }
    Sent {
        run_id,
        t_ms: ebb_engine::events::now_ms(),
        event: kind.as_str().to_string(),
        url: url.to_string(),
        ok: error.is_empty(),
        attempts,
        error,
    }
}

/// Appends `sent` to the log at `path`.
fn append(path: &std::path::Path, sent: &Sent, write: &Mutex<()>) -> std::io::Result<()> {
    use std::io::Write;
    let _g = write.lock().unwrap_or_else(|p| p.into_inner());
    let line = serde_json::to_string(sent)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"))
}

/// The notifications logged in `state_dir` for run `run_id`.
pub fn logged(state_dir: &std::path::Path, run_id: i64) -> Vec<Sent> {
    std::fs::read_to_string(state_dir.join(LOG_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Sent>(l).ok())
        .filter(|s| s.run_id == run_id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_their_shape() {
        assert_eq!(
            body(
                NotifyFormat::Json,
                NotifyEvent::RunStarted,
                "web",
                7,
                Some("web1"),
                "began \"x\""
            ),
            r#"{"event":"run_started","member":"web1","message":"began \"x\"","pool":"web","run_id":7}"#
        );
        assert_eq!(
            body(
                NotifyFormat::Json,
                NotifyEvent::RunDone,
                "web",
                7,
                None,
                "done"
            ),
            r#"{"event":"run_done","member":null,"message":"done","pool":"web","run_id":7}"#
        );
        for format in [NotifyFormat::Slack, NotifyFormat::Teams] {
            assert_eq!(
                body(format, NotifyEvent::RunDone, "web", 7, None, "done"),
                r#"{"text":"ebb, pool web: done"}"#
            );
        }
    }
}
