//! The builtin driver against ebb's own balancer, running in this process on free ports
//! with real TCP backends: `pool_changes` reports exactly the members that changed since
//! the engine's previous read (by the driver or by an operator), every member after a
//! balancer restart, and `None` (read the whole pool) when the balancer cannot be asked;
//! the `balancer` check judges the balancer's per-member error counters.

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

/// The `balancer` check against ebb's own balancer through the builtin driver: its first
/// attempt takes the counters; after web2 refused its share of clients it fails with web2's
/// figures beside the clean members not yet updated, and a driver that counts passes
/// `ebb check`'s question (no preflight problem).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_check_judges_the_builtin_balancers_per_member_counters() {
    use ebb_engine::interfaces::{BuiltChecks, CheckContext, Checker};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut backends = Vec::new();
    for name in ["web1", "web2", "web3"] {
        backends.push(Backend::start(name).await);
    }
    let (listen, control) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut toml = format!(
        "[pool]\nname = \"t\"\n\n[balancer]\ndriver = \"builtin\"\nlisten = \"{listen}\"\ncontrol = \"http://{control}\"\n\n[balancer.health]\ninterval = \"1h\"\n\n"
    );
    for b in &backends {
        toml += &format!(
            "[[member]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            b.name, b.addr
        );
    }
    toml += "[[runbook.verify]]\nname = \"errors\"\nbalancer = { max_error_ratio = 2.0 }\n";
    let plan = plan(dir.path(), &toml);
    let lb = Lb::start(&dir.path().join("pool.toml")).await;
    let driver: Arc<dyn Balancer> =
        Arc::new(Builtin::from_plan(&plan).unwrap_or_else(|e| panic!("{e:?}")));
    all_up(&ControlClient::new(&format!("http://{control}"), None).unwrap()).await;
    let check = &plan.runbook.verify[0];
    assert_eq!(
        check
            .check
            .preflight(driver.as_ref(), "builtin", &plan.members)
            .await,
        None
    );
    let t = ebb_drivers::transport::build(&plan, &plan.members[1]).unwrap();
    let ctx = CheckContext {
        balancer: Some(driver.clone()),
        not_updated: vec![plan.members[0].clone(), plan.members[2].clone()].into(),
        ..Default::default()
    };
    let first = BuiltChecks
        .check_in(check, &plan.members[1], t.as_ref(), &ctx)
        .await
        .expect("the first attempt takes the counters");
    assert!(first.contains("took the balancer's counters"), "{first}");

    // web2 now refuses: each client it is picked for is counted against it and served by
    // another member.
    backends[1].stop();
    for i in 0..9 {
        let name = hello(&listen)
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_ne!(name, "web2");
    }
    let counted = driver.member_errors(&plan.members[1]).await.unwrap();
    let counted = counted.expect("the builtin driver counts");
    assert!(
        counted.errors > 0 && counted.errors == counted.requests,
        "{counted:?}"
    );
    let err = BuiltChecks
        .check_in(check, &plan.members[1], t.as_ref(), &ctx)
        .await
        .expect_err("web2 failed every connection since the first reading");
    assert!(
        err.contains(&format!(
            "\"web2\": {} error{} in {} request",
            counted.errors,
            if counted.errors == 1 { "" } else { "s" },
            counted.requests
        )) && err.contains("the members not yet updated: 0 errors in 9 requests"),
        "{err}"
    );
    lb.shutdown().await;
}
