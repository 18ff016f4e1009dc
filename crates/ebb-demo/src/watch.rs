//! Watches the balancer through its control API, independently of the engine.
//!
//! Every ~50 ms it reads `GET /members` and counts the members out of service (state not
//! `started`, or health not `up`). The most seen at once is the demo's proof that the
//! availability policy held, measured from the balancer's own view rather than taken from
//! ebb's word.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::traffic::unix_ms;

/// Poll interval.
const POLL: Duration = Duration::from_millis(50);

/// One member as the balancer reports it (unknown fields ignored, missing ones defaulted).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct LbMember {
    /// Member name.
    pub name: String,
    /// Address the balancer forwards to.
    pub address: String,
    /// `started`, `draining` or `stopped`.
    pub state: String,
    /// `started` or `stopped`: the state after a restart of the balancer.
    pub initial_state: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    /// Connections open through the balancer now.
    pub active_connections: u64,
    /// Connections since the balancer started.
    pub total_connections: u64,
}

impl LbMember {
    /// In service: started and healthy.
    pub fn in_service(&self) -> bool {
        self.state == "started" && self.health == "up"
    }
}

#[derive(Debug, Deserialize)]
struct MembersReply {
    #[serde(default)]
    members: Vec<LbMember>,
}

/// What the watcher has seen.
#[derive(Debug, Clone, Default)]
pub struct PoolView {
    /// The latest member list (empty until the first answer).
    pub members: Vec<LbMember>,
    /// Unix ms of the latest successful poll.
    pub updated_ms: u64,
    /// The most members out of service at once since counting was armed.
    pub max_out_of_service: usize,
    /// Unix ms when that maximum was first seen.
    pub max_out_at_ms: u64,
    /// Polls that failed (balancer unreachable or odd answer).
    pub failed_polls: u64,
    /// Successful polls since counting was armed.
    pub polls: u64,
    /// (unix ms, in service, total) whenever the in-service count changed.
    pub in_service_changes: Vec<(u64, usize, usize)>,
}

impl PoolView {
    /// Members in service in the latest answer.
    pub fn in_service(&self) -> usize {
        self.members.iter().filter(|m| m.in_service()).count()
    }
}

/// The running watcher.
pub struct Watcher {
    view: Arc<Mutex<PoolView>>,
    armed: Arc<std::sync::atomic::AtomicBool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Starts polling `control` (`http://127.0.0.1:PORT`).
    pub fn start(control: String) -> Self {
        let view = Arc::new(Mutex::new(PoolView::default()));
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop, mut stopped) = watch::channel(false);
        let url = format!("{}/members", control.trim_end_matches('/'));
        let task = {
            let view = view.clone();
            let armed = armed.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(POLL);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stopped.changed() => break,
                    }
                    let members = fetch_members(&url).await;
                    let counting = armed.load(std::sync::atomic::Ordering::Relaxed);
                    record(&view, members, counting);
                }
            })
        };
        Self {
            view,
            armed,
            stop,
            task,
        }
    }

    /// Starts counting members out of service (call once the pool is up and healthy).
    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A copy of what has been seen.
    pub fn view(&self) -> PoolView {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A handle to the shared view, for the live display.
    pub fn shared(&self) -> Arc<Mutex<PoolView>> {
        self.view.clone()
    }

    /// Stops polling and returns the final view.
    pub async fn stop(self) -> PoolView {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Reads the balancer's member list once.
pub async fn fetch_members(url: &str) -> Option<Vec<LbMember>> {
    let response = crate::http::get_url(url, Duration::from_secs(1))
        .await
        .ok()?;
    if response.status != 200 {
        return None;
    }
    serde_json::from_slice::<MembersReply>(&response.body)
        .ok()
        .map(|r| r.members)
}

fn record(view: &Mutex<PoolView>, members: Option<Vec<LbMember>>, counting: bool) {
    let mut view = view.lock().unwrap_or_else(|p| p.into_inner());
    let Some(members) = members else {
        view.failed_polls += 1;
        return;
    };
    let now = unix_ms();
    let total = members.len();
    let in_service = members.iter().filter(|m| m.in_service()).count();
    let out = total - in_service;
    view.members = members;
    view.updated_ms = now;
    if counting && view.polls == 0 {
        // The timeline starts when counting does: before that the pool was still coming up.
        view.in_service_changes.clear();
    }
    if counting {
        view.polls += 1;
        if out > view.max_out_of_service {
            view.max_out_of_service = out;
            view.max_out_at_ms = now;
        }
    }
    if view.in_service_changes.last().map(|&(_, n, t)| (n, t)) != Some((in_service, total)) {
        view.in_service_changes.push((now, in_service, total));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(state: &str, health: &str) -> LbMember {
        LbMember {
            state: state.into(),
            health: health.into(),
            ..Default::default()
        }
    }

    #[test]
    fn counts_out_of_service_only_when_armed() {
        let view = Mutex::new(PoolView::default());
        record(
            &view,
            Some(vec![member("started", "unknown"), member("started", "up")]),
            false,
        );
        assert_eq!(view.lock().map(|v| v.max_out_of_service).unwrap_or(9), 0);
        record(
            &view,
            Some(vec![member("draining", "up"), member("started", "up")]),
            true,
        );
        record(
            &view,
            Some(vec![member("stopped", "down"), member("started", "down")]),
            true,
        );
        record(&view, None, true);
        let v = view.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(v.max_out_of_service, 2);
        assert_eq!(v.failed_polls, 1);
        assert_eq!(v.in_service(), 0);
    }

    #[test]
    fn tolerates_missing_and_extra_fields() {
        let reply: MembersReply =
            serde_json::from_str(r#"{"members":[{"name":"web1","state":"started","extra":1}]}"#)
                .unwrap_or(MembersReply { members: vec![] });
        assert_eq!(reply.members.len(), 1);
        assert_eq!(reply.members[0].health, "");
    }
}
