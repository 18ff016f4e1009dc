//! Keeping the view current: the journal is read again every [`REFRESH`] (or at once when a
//! drain's connection count changes), and a new snapshot is published only when something
//! changed. Connection counts come from the engine's own events when the run is in this
//! process, or from the balancer when `ebb watch` attaches to a run started elsewhere.

use super::view::{snapshot, Snapshot};
use ebb_engine::events::{Event, EventSink};
use ebb_engine::interfaces::Balancer;
use ebb_engine::journal::{ActionKind, Journal};
use ebb_engine::plan::Plan;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How often the journal is read for changes.
pub const REFRESH: Duration = Duration::from_millis(250);
/// How often `ebb watch` asks the balancer for a draining member's connections.
const BALANCER_POLL: Duration = Duration::from_secs(1);
/// Bound on one such question.
const BALANCER_TIMEOUT: Duration = Duration::from_secs(5);

/// The last connection count seen for each draining member, shared by whoever learns it
/// (the engine's events, or the balancer) and the view.
#[derive(Clone, Default)]
pub struct ConnectionCounts(Arc<(Mutex<BTreeMap<String, u64>>, Notify)>);

impl ConnectionCounts {
    fn set(&self, member: &str, n: u64) {
        let mut m = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if m.insert(member.to_string(), n) != Some(n) {
            self.0 .1.notify_one();
        }
    }

    fn remove(&self, member: &str) {
        let mut m = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if m.remove(member).is_some() {
            self.0 .1.notify_one();
        }
    }

    fn all(&self) -> BTreeMap<String, u64> {
        self.0 .0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn changed(&self) {
        self.0 .1.notified().await;
    }

    /// Passes every event on to `sink`, keeping the connection counts drains report.
    pub fn tee(&self, sink: EventSink) -> EventSink {
        let counts = self.clone();
        Arc::new(move |e: &Event| {
            match e {
                Event::DrainProgress {
                    member,
                    active_connections,
                } => counts.set(member, *active_connections),
                Event::StepFinished { member, kind, .. } if *kind == ActionKind::Drain => {
                    counts.remove(member)
                }
                _ => {}
            }
            sink(e)
        })
    }
}

/// A snapshot and its JSON, as published to the page and `/metrics`.
#[derive(Debug)]
pub struct Published {
    pub snapshot: Snapshot,
    pub json: String,
    /// Why the journal could not be read, when it could not (the last good view stays).
    pub error: Option<String>,
}

/// What the web view shows: the latest run of `pool` in the journal `sel` names (the state
/// dir's SQLite file, or etcd when the pool file's `[state]` says so).
pub struct Feed {
    pub sel: crate::RunSel,
    pub pool: Option<String>,
    pub counts: ConnectionCounts,
}

impl Feed {
    /// Opens the journal and publishes a first snapshot; then keeps publishing changes
    /// until `shutdown`.
    pub(super) fn start(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<watch::Receiver<Arc<Published>>, String> {
        let journal = Arc::new(
            crate::locate::open_journal(&self.sel, false)
                .map_err(|_| "cannot open the journal (see above)".to_string())?,
        );
        let first = read(&journal, self.pool.as_deref(), &self.counts.all(), None);
        let (tx, rx) = watch::channel(Arc::new(first));
        tokio::spawn(refresh(self, journal, tx, shutdown));
        Ok(rx)
    }
}

/// What the page's JSON holds when there is no view to show: `{"error": "..."}`.
#[derive(serde::Serialize)]
struct ViewError {
    error: String,
}

impl ViewError {
    fn json(error: String) -> String {
        serde_json::to_string(&ViewError { error }).unwrap_or_default()
    }
}

fn read(
    journal: &Journal,
    pool: Option<&str>,
    counts: &BTreeMap<String, u64>,
    last: Option<&Published>,
) -> Published {
    match snapshot(journal, pool, counts) {
        Ok(snapshot) => {
            let json = serde_json::to_string(&snapshot.view)
                .unwrap_or_else(|e| ViewError::json(format!("cannot encode the view: {e}")));
            Published {
                snapshot,
                json,
                error: None,
            }
        }
        Err(e) => match last {
            Some(l) => Published {
                snapshot: l.snapshot.clone(),
                json: l.json.clone(),
                error: Some(e.to_string()),
            },
            None => Published {
                snapshot: Snapshot {
                    view: super::view::View::empty(pool),
                    finished: Vec::new(),
                },
                json: ViewError::json(e.to_string()),
                error: Some(e.to_string()),
            },
        },
    }
}

async fn refresh(
    feed: Feed,
    journal: Arc<Journal>,
    tx: watch::Sender<Arc<Published>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The last read error told (once per distinct error, not at every refresh).
    let mut told: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = feed.counts.changed() => {}
            _ = shutdown.changed() => return,
        }
        let (j, pool, counts, last) = (
            journal.clone(),
            feed.pool.clone(),
            feed.counts.all(),
            tx.borrow().clone(),
        );
        let next =
            tokio::task::spawn_blocking(move || read(&j, pool.as_deref(), &counts, Some(&last)))
                .await;
        let Ok(next) = next else { continue };
        // The page keeps showing the last view it had; the operator hears why it stopped
        // changing.
        if next.error != told {
            if let Some(e) = &next.error {
                ebb_out::errln!(
                    "ebb web: cannot read the journal (the page shows the last view read): {e}"
                );
            }
            told = next.error.clone();
        }
        tx.send_if_modified(|cur| {
            if cur.json == next.json {
                false
            } else {
                *cur = Arc::new(next);
                true
            }
        });
    }
}

/// For `ebb watch`: asks the balancer for the connections of each draining member, since
/// the engine's events are in another process.
pub(super) fn poll_balancer(
    counts: ConnectionCounts,
    balancer: Arc<dyn Balancer>,
    plan: Arc<Plan>,
    views: watch::Receiver<Arc<Published>>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let draining: Vec<String> = views
                .borrow()
                .snapshot
                .view
                .draining()
                .map(|m| m.name.clone())
                .collect();
            for name in counts.all().keys() {
                if !draining.contains(name) {
                    counts.remove(name);
                }
            }
            for name in draining {
                let Some(member) = plan.members.iter().find(|m| m.name == name) else {
                    continue;
                };
                match tokio::time::timeout(BALANCER_TIMEOUT, balancer.state(member)).await {
                    Ok(Ok(st)) => {
                        if let Some(c) = st.active_connections {
                            counts.set(&name, c);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(member = %name, error = %e, "web view: balancer state")
                    }
                    Err(_) => tracing::debug!(member = %name, "web view: balancer did not answer"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(BALANCER_POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}
