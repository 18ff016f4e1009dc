//! `ebb init --from nlb HOST` reads the cluster's nodes on one host with
//! `Get-NlbClusterNode`: here against the simulated NLB cluster (Windows cannot run here;
//! see tests/support/nlb.rs), through the same driver code and command line a real host
//! gets over ssh.

mod support;

use ebb_drivers::balancer::nlb::{Nlb, NlbSettings};
use ebb_drivers::discover::nlb_nodes;
use support::nlb::*;

const PROBE: &str = r#"[pool]
name = "init"

[balancer]
driver = "nlb"
timeout = "2s"

[defaults]
transport = "ssh"
shell = "powershell"

[[member]]
name = "probe"
address = "cas2.corp.example"
lb_name = "CAS2"
"#;

fn driver(cluster: &Shared) -> (tempfile::TempDir, Nlb) {
    let dir = tempfile::tempdir().unwrap();
    let plan = support::plan(dir.path(), PROBE);
    let settings = NlbSettings::from_plan(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    let nlb = Nlb::with_transports(settings, &plan, transports(&plan, cluster));
    (dir, nlb)
}

#[tokio::test]
async fn every_node_of_the_cluster_becomes_a_member() {
    let cluster = cluster(&["CAS1", "CAS2", "CAS3"]);
    cluster.lock().unwrap().nodes[2].state = "Stopped".into();
    let (_dir, nlb) = driver(&cluster);
    let found = nlb_nodes(&nlb).await.expect("nodes");
    let names: Vec<(&str, &str)> = found
        .iter()
        .map(|f| (f.name.as_str(), f.address.as_str()))
        .collect();
    assert_eq!(
        names,
        [("CAS1", "CAS1"), ("CAS2", "CAS2"), ("CAS3", "CAS3")]
    );
    // Read-only: one Get-NlbClusterNode, on the host named, and nothing else.
    let log = take_log(&cluster);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].0, "probe");
    assert!(log[0].1.contains("Get-NlbClusterNode"), "{log:?}");
}

#[tokio::test]
async fn a_host_that_does_not_answer_is_an_error() {
    let cluster = cluster(&["CAS1", "CAS2"]);
    cluster.lock().unwrap().nodes[1].down = true;
    let (_dir, nlb) = driver(&cluster);
    let err = nlb_nodes(&nlb).await.expect_err("host down");
    assert!(err.contains("probe"), "{err}");
}
