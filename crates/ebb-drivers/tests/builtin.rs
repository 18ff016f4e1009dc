//! The builtin driver against ebb's own balancer, running in this process on free ports
//! with real TCP backends: `pool_changes` reports exactly the members that changed since
//! the engine's previous read (by the driver or by an operator), every member after a
//! balancer restart, and `None` (read the whole pool) when the balancer cannot be asked.

mod support;

use ebb_drivers::balancer::builtin::Builtin;
use ebb_engine::interfaces::{Balancer, HostState};
use ebb_lb::client::ControlClient;
use std::path::Path;
use std::time::Duration;
use support::*;
use tokio::sync::oneshot;

/// The balancer, serving until dropped.
struct Lb {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Lb {
    async fn start(pool: &Path) -> Lb {
        let config = ebb_lb::LbConfig::from_pool_file(pool).unwrap();
        let server = ebb_lb::Server::bind(config).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Lb {
            stop: Some(tx),
            task,
        }
    }

    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

/// Changed members as (plan index, state), in plan order.
async fn changes(
    driver: &Builtin,
    plan: &ebb_engine::plan::Plan,
) -> Option<Vec<(usize, HostState)>> {
    let mut v: Vec<(usize, HostState)> = driver
        .pool_changes(&plan.members)
        .await?
        .into_iter()
        .map(|(i, s)| (i, s.unwrap().state))
        .collect();
    v.sort_by_key(|(i, _)| *i);
    Some(v)
}

/// Waits until the balancer's first health checks passed (each is a change: health
/// `unknown` to `up`), so that the reads below see only the changes the test makes.
async fn all_up(client: &ControlClient) {
    let up = eventually(Duration::from_secs(30), || async {
        client
            .members()
            .await
            .is_ok_and(|all| all.iter().all(|m| m.health == ebb_lb::Health::Up))
    })
    .await;
    assert!(
        up,
        "the members never became healthy: {:?}",
        client.members().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_changes_are_exactly_the_members_changed_since_the_last_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut backends = Vec::new();
    for name in ["web1", "web2", "web3"] {
        backends.push(Backend::start(name).await);
    }
    let control = format!("127.0.0.1:{}", free_port());
    let mut toml = format!(
        "[pool]\nname = \"t\"\n\n[balancer]\ndriver = \"builtin\"\nlisten = \"127.0.0.1:{}\"\ncontrol = \"http://{control}\"\nstate_file = \"{}\"\n\n[balancer.health]\ninterval = \"1h\"\n\n",
        free_port(),
        dir.path().join("lb-state.json").display()
    );
    for b in &backends {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            b.name, b.addr
        );
    }
    let plan = plan(dir.path(), &toml);
    let pool = dir.path().join("pool.toml");
    let lb = Lb::start(&pool).await;
    let driver = Builtin::from_plan(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    let operator = ControlClient::new(&format!("http://{control}"), None).unwrap();
    all_up(&operator).await;

    // Changes are relative to a full read: none before the first.
    assert!(driver.pool_changes(&plan.members).await.is_none());
    let all = driver.pool_state(&plan.members).await;
    assert_eq!(all.len(), 3);
    assert!(all
        .iter()
        .all(|s| s.as_ref().unwrap().state == HostState::Started));
    assert_eq!(changes(&driver, &plan).await, Some(vec![]));

    // A change the driver made, then one an operator made behind the engine's back.
    driver.drainstop(&plan.members[0]).await.unwrap();
    assert_eq!(
        changes(&driver, &plan).await,
        Some(vec![(0, HostState::Stopped)])
    );
    assert_eq!(changes(&driver, &plan).await, Some(vec![]));
    operator.stop("web3").await.unwrap();
    assert_eq!(
        changes(&driver, &plan).await,
        Some(vec![(2, HostState::Stopped)])
    );
    driver.start(&plan.members[0]).await.unwrap();
    operator.drainstop("web2").await.unwrap();
    assert_eq!(
        changes(&driver, &plan).await,
        Some(vec![(0, HostState::Started), (1, HostState::Stopped)])
    );

    // A restarted balancer has forgotten the cursor's counter: every member, as saved.
    lb.shutdown().await;
    let lb = Lb::start(&pool).await;
    all_up(&operator).await;
    assert_eq!(
        changes(&driver, &plan).await,
        Some(vec![
            (0, HostState::Started),
            (1, HostState::Stopped),
            (2, HostState::Stopped)
        ])
    );
    assert_eq!(changes(&driver, &plan).await, Some(vec![]));

    lb.shutdown().await;
    assert!(
        driver.pool_changes(&plan.members).await.is_none(),
        "a balancer that cannot be asked: read the whole pool"
    );
    let lb = Lb::start(&pool).await;
    all_up(&operator).await;
    assert!(
        driver.pool_changes(&plan.members).await.is_none(),
        "after a failed read the next one is a whole-pool read"
    );
    let all = driver.pool_state(&plan.members).await;
    assert_eq!(all[1].as_ref().unwrap().state, HostState::Stopped);
    assert_eq!(changes(&driver, &plan).await, Some(vec![]));
    operator.start("web3").await.unwrap();
    assert_eq!(
        changes(&driver, &plan).await,
        Some(vec![(2, HostState::Started)])
    );
    lb.shutdown().await;
}
