//! The `builtin` balancer driver: ebb's own balancer, through its control API and its
//! event stream, exactly as an operator would use `ebb lb`.
//!
//! Its keys are the balancer's own (`ebb_lb::config::BALANCER_KEYS`), read by the
//! balancer's reader from the plan's `[balancer]` and members: the driver connects to the
//! `control` address that reader settles on, with its `token` (or `EBB_LB_TOKEN`).

use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key};
use ebb_engine::interfaces::{
    Balancer, Counters, DriverError, DriverResult, HostState, MemberLbState, Transport,
};
use ebb_engine::plan::{Member, Plan};
use ebb_engine::registry::BalancerDriver;
use ebb_lb::client::ControlClient;
use ebb_lb::config::{LbConfig, BALANCER_KEYS, TOKEN_ENV};
use ebb_lb::status::{Health, HostState as LbState, InitialState, MemberStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// The builtin driver's descriptor, registered in [`crate::registry`].
pub struct BuiltinDriver;

impl BalancerDriver for BuiltinDriver {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn keys(&self) -> Vec<Key> {
        BALANCER_KEYS.to_vec()
    }

    fn validate(&self, plan: &Plan, cx: &mut Context) {
        lb_config(plan, cx);
    }

    fn build(
        &self,
        plan: &Plan,
        _: &[Arc<dyn Transport>],
    ) -> Result<Arc<dyn Balancer>, ConfigErrors> {
        Ok(Arc::new(Builtin::from_plan(plan)?))
    }
}

/// The balancer's own reading of the plan: `[balancer]` and the members as `ebb lb serve`
/// sees them, with the plan's lines.
fn lb_config(plan: &Plan, cx: &mut Context) -> Option<LbConfig> {
    let mut balancer = plan.balancer.settings.clone();
    balancer.insert("driver".into(), "builtin".into());
    let members: Vec<toml::Value> = plan
        .members
        .iter()
        .map(|m| {
            let mut t = toml::Table::new();
            t.insert("name".into(), m.name.clone().into());
            t.insert("lb_name".into(), m.lb_name.clone().into());
            t.insert("address".into(), m.address.clone().into());
            t.insert("weight".into(), i64::from(m.weight).into());
            toml::Value::Table(t)
        })
        .collect();
    let mut root = toml::Table::new();
    root.insert("balancer".into(), toml::Value::Table(balancer));
    root.insert("member".into(), toml::Value::Array(members));
    let env_token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    LbConfig::read(cx, &root, &plan.file, env_token)
}

/// Drives ebb's built-in balancer.
pub struct Builtin {
    client: ControlClient,
    /// One wake-up per member, fed by the event stream (started on first use).
    wakeups: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    events: OnceLock<tokio::task::JoinHandle<()>>,
    /// The balancer's change cursor after the engine's latest pool read (`pool_changes`
    /// asks for the members changed since); `None` before the first read and with a
    /// balancer too old to have cursors.
    cursor: Mutex<Option<String>>,
    /// Plan members by balancer name (for mapping answers back to indices).
    index: OnceLock<HashMap<String, usize>>,
}

impl Drop for Builtin {
    fn drop(&mut self) {
        if let Some(h) = self.events.get() {
            h.abort();
        }
    }
}

impl Builtin {
    /// Reads `[balancer]` for the builtin driver.
    pub fn from_plan(plan: &Plan) -> Result<Self, ConfigErrors> {
        let cfg = super::read(plan, lb_config)?;
        let client =
            ControlClient::new(&format!("http://{}", cfg.control), cfg.token).map_err(|e| {
                ConfigErrors(vec![ebb_engine::registry::plan_error(
                    plan,
                    "balancer.control",
                    e.to_string(),
                )])
            })?;
        Ok(Builtin {
            client,
            wakeups: Arc::default(),
            events: OnceLock::new(),
            cursor: Mutex::new(None),
            index: OnceLock::new(),
        })
    }

    fn set_cursor(&self, cursor: Option<String>) {
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = cursor;
    }

    fn wakeup(&self, lb_name: &str) -> Arc<Notify> {
        let mut map = self.wakeups.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(lb_name.to_string()).or_default().clone()
    }

    fn ensure_events(&self) {
        self.events.get_or_init(|| {
            let client = self.client.clone();
            let wakeups = self.wakeups.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(mut stream) = client.events().await {
                        while let Some(Ok(status)) = stream.next().await {
                            let n = wakeups
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(status.name.clone())
                                .or_default()
                                .clone();
                            // notify_one keeps a permit: an event that lands before the
                            // engine waits is not lost.
                            n.notify_one();
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        });
    }
}

fn to_engine(s: &MemberStatus) -> MemberLbState {
    let state = match s.state {
        LbState::Started => HostState::Started,
        LbState::Draining => HostState::Draining,
        LbState::Stopped => HostState::Stopped,
    };
    let healthy = match s.health {
        Health::Up => Some(true),
        Health::Down => Some(false),
        Health::Unknown => None,
    };
    MemberLbState {
        state,
        healthy: if matches!(s.health, Health::Unknown) {
            Some(false)
        } else {
            healthy
        },
        active_connections: Some(s.active_connections),
        detail: format!(
            "{} (initial {}, health {})",
            s.state.as_str(),
            s.initial_state.as_str(),
            s.health.as_str()
        ),
    }
}

fn err(e: impl std::fmt::Display) -> DriverError {
    DriverError::new(e.to_string())
}

#[async_trait]
impl Balancer for Builtin {
    /// Connections offered to the member (opened, or failed to open) and those that
    /// failed (could not be opened, or ended with an error on its side): a TCP balancer
    /// sees connections, not requests.
    async fn member_errors(&self, member: &Member) -> DriverResult<Option<Counters>> {
        let s = self.client.member(&member.lb_name).await.map_err(err)?;
        Ok(Some(Counters {
            requests: s.total_connections + s.connect_failures,
            errors: s.connect_failures + s.resets,
        }))
    }

    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        self.client
            .member(&member.lb_name)
            .await
            .map(|s| to_engine(&s))
            .map_err(err)
    }

    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        match self.client.members_since(None).await {
            Ok(answer) => {
                self.set_cursor(answer.cursor);
                let all = answer.members;
                // By name: a scan of the list per member is O(pool²) for a large pool.
                let by_name: HashMap<&str, &MemberStatus> =
                    all.iter().map(|s| (s.name.as_str(), s)).collect();
                members
                    .iter()
                    .map(|m| {
                        by_name
                            .get(m.lb_name.as_str())
                            .map(|s| to_engine(s))
                            .ok_or_else(|| {
                                DriverError::new(format!(
                                    "the built-in balancer at {} has no member \"{}\"",
                                    self.client.url(),
                                    m.lb_name
                                ))
                            })
                    })
                    .collect()
            }
            Err(e) => {
                self.set_cursor(None);
                let msg = e.to_string();
                members
                    .iter()
                    .map(|_| Err(DriverError::new(msg.clone())))
                    .collect()
            }
        }
    }

    /// One `GET /members?since=CURSOR`: the balancer answers with the members whose
    /// state, health or (draining) connection count changed since the previous read, by
    /// a change counter of its own (exact: unlike the event stream it cannot drop any),
    /// so a decision costs the changes, not the pool. `None` (read the whole pool) before
    /// the first read, when the read fails, and for a balancer without cursors.
    async fn pool_changes(
        &self,
        members: &[Member],
    ) -> Option<Vec<(usize, DriverResult<MemberLbState>)>> {
        let since = self
            .cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let answer = match self.client.members_since(Some(&since)).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "reading the built-in balancer's changes failed; reading the whole pool");
                self.set_cursor(None);
                return None;
            }
        };
        // A balancer replaced by one without cursors: read in full from now on.
        self.set_cursor(answer.cursor.clone());
        answer.cursor.as_ref()?;
        let index = self
            .index
            .get_or_init(|| ebb_engine::plan::index_by_lb_name(members));
        Some(
            answer
                .members
                .iter()
                .filter_map(|s| Some((*index.get(&s.name)?, Ok(to_engine(s)))))
                .collect(),
        )
    }

    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        self.ensure_events();
        self.client
            .drainstop(&member.lb_name)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn stop(&self, member: &Member) -> DriverResult<()> {
        self.client
            .stop(&member.lb_name)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn start(&self, member: &Member) -> DriverResult<()> {
        self.ensure_events();
        self.client
            .start(&member.lb_name)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        let s = self.client.member(&member.lb_name).await.map_err(err)?;
        Ok(Some(match s.initial_state {
            InitialState::Started => HostState::Started,
            InitialState::Stopped => HostState::Stopped,
        }))
    }

    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        let st = match state {
            HostState::Stopped => InitialState::Stopped,
            _ => InitialState::Started,
        };
        self.client
            .set_initial_state(&member.lb_name, st)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn wait_change(&self, member: &Member, max: Duration) {
        self.ensure_events();
        let n = self.wakeup(&member.lb_name);
        let _ = tokio::time::timeout(max, n.notified()).await;
    }
}
