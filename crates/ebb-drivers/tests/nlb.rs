//! The nlb driver on the exact command lines it generates and on recorded cmdlet outputs:
//! Windows cannot run here, so a simulated cluster (tests/support/nlb.rs) answers the way
//! the documented cmdlets do, and every command the driver sends is checked verbatim.

mod support;

use ebb_drivers::balancer::nlb::commands::{decode_command, Commands};
use ebb_drivers::balancer::nlb::parse::{self, parse_nodes};
use ebb_drivers::balancer::nlb::{Nlb, NlbSettings};
use ebb_engine::interfaces::{Balancer, HostState};
use ebb_engine::plan::Plan;
use std::time::Duration;
use support::nlb::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/nlb")
            .join(name),
    )
    .unwrap()
}

const POOL: &str = r#"[pool]
name = "cas-array"

[balancer]
driver = "nlb"
poll_interval = "10ms"
converge_timeout = "2s"
timeout = "2s"

[defaults]
shell = "powershell"

[[member]]
name = "cas1"
address = "cas1.corp.example"
lb_name = "CAS1"

[[member]]
name = "cas2"
address = "cas2.corp.example"
lb_name = "CAS2"

[[member]]
name = "cas3"
address = "cas3.corp.example"
lb_name = "CAS3"
"#;

fn setup(pool: &str) -> (tempfile::TempDir, Plan, Shared, Nlb) {
    let dir = tempfile::tempdir().unwrap();
    let plan = support::plan(dir.path(), pool);
    let c = cluster(&["CAS1", "CAS2", "CAS3"]);
    let settings = NlbSettings::from_plan(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    let nlb = Nlb::with_transports(settings, &plan, transports(&plan, &c));
    (dir, plan, c, nlb)
}

fn commands_of(log: &[(String, String)]) -> Vec<&str> {
    log.iter().map(|(_, c)| c.as_str()).collect()
}

const NODES: &str = "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode";

#[test]
fn recorded_outputs_parse_and_map_to_ebb_states() {
    let rows = parse_nodes(&fixture("get-nlbclusternode-converged.txt")).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (rows[0].name.as_str(), rows[0].state.as_str()),
        ("CAS1", "Converged(default)")
    );
    assert_eq!(
        (rows[2].interface.as_str(), rows[2].host_id.as_str()),
        ("NLB", "3")
    );
    for r in &rows {
        let s = parse::to_member_state(r);
        assert!(s.in_service(), "{r:?}");
        assert_eq!(s.active_connections, None);
    }
    assert_eq!(
        parse::to_member_state(&rows[0]).detail,
        "Converged(default)"
    );

    let rows = parse_nodes(&fixture("get-nlbclusternode-draining.txt")).unwrap();
    assert_eq!(parse::to_member_state(&rows[0]).state, HostState::Draining);

    let rows = parse_nodes(&fixture("get-nlbclusternode-converging.txt")).unwrap();
    assert!(rows[1].converging());
    let s = parse::to_member_state(&rows[1]);
    assert_eq!(s.state, HostState::Started);
    assert!(!s.in_service(), "a converging node is not yet in service");
    assert_eq!(parse::to_member_state(&rows[0]).state, HostState::Stopped);

    let rows = parse_nodes(&fixture("get-nlbclusternode-stopped-suspended.txt")).unwrap();
    let s = parse::to_member_state(&rows[1]);
    assert_eq!(
        (s.state, s.detail.as_str()),
        (HostState::Stopped, "Suspended")
    );

    let rows = parse_nodes(&fixture(
        "get-nlbclusternode-autosize-interface-with-spaces.txt",
    ))
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].interface, "Ethernet 2 (NLB)");
    assert_eq!(rows[1].host_id, "2");

    let info = fixture("get-nlbclusterdriverinfo.txt");
    assert_eq!(
        parse::list_value(&info, "InitialHostState").as_deref(),
        Some("Started")
    );
    assert_eq!(parse::initial_state("Stopped"), Some(HostState::Stopped));
    assert_eq!(parse::initial_state("Suspended"), None);

    let e = parse_nodes(&fixture("get-nlbclusternode-not-installed.txt")).unwrap_err();
    assert!(e.contains("is not recognized"), "{e}");
    // The simulated cluster prints exactly the recorded format.
    let c = cluster(&["CAS1", "CAS2", "CAS3"]);
    assert_eq!(
        table(&c.lock().unwrap().nodes, false),
        fixture("get-nlbclusternode-converged.txt")
    );
}

#[test]
fn command_lines_are_exact_and_quoted() {
    let c = Commands { interface: None };
    assert_eq!(c.nodes(), NODES);
    assert_eq!(
        c.stop("CAS1"),
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS1' | Stop-NlbClusterNode"
    );
    assert_eq!(
        c.start("CAS1"),
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS1' | Start-NlbClusterNode"
    );
    assert_eq!(
        c.resume("CAS1"),
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS1' | Resume-NlbClusterNode"
    );
    assert_eq!(
        c.set_initial_state("CAS1", HostState::Stopped),
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS1' | Set-NlbClusterNode -InitialHostState Stopped -Force"
    );
    assert_eq!(
        c.set_initial_state("CAS1", HostState::Started),
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS1' | Set-NlbClusterNode -InitialHostState Started -Force"
    );
    assert_eq!(
        c.driver_info(),
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterDriverInfo"
    );
    let d = c.drainstop("CAS1");
    let enc = d
        .split("-EncodedCommand ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert_eq!(
        d,
        format!("$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; $null = Get-NlbClusterNode -NodeName 'CAS1'; $r = ([wmiclass]'Win32_Process').Create('powershell.exe -NoProfile -NonInteractive -EncodedCommand {enc}'); if ($r.ReturnValue -ne 0) {{ throw \"could not start the drain (Win32_Process.Create returned $($r.ReturnValue))\" }}")
    );
    assert_eq!(
        decode_command(enc).unwrap(),
        "Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS1' | Stop-NlbClusterNode -Drain"
    );
    // Names are PowerShell-quoted: a quote cannot end the string and inject a command.
    let c = Commands {
        interface: Some("Ethernet 2 (NLB)".into()),
    };
    assert_eq!(
        c.stop("O'Brien; Restart-Computer"),
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'O''Brien; Restart-Computer' -InterfaceName 'Ethernet 2 (NLB)' | Stop-NlbClusterNode"
    );
    assert_eq!(
        c.nodes(),
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -InterfaceName 'Ethernet 2 (NLB)'"
    );
}

#[tokio::test]
async fn drainstop_starts_the_drain_detached_and_waits_until_it_has_begun() {
    let (_d, plan, c, nlb) = setup(POOL);
    let cas1 = &plan.members[0];
    nlb.drainstop(cas1).await.unwrap();
    let log = take_log(&c);
    let cmds = commands_of(&log);
    assert_eq!(cmds[0], NODES, "reads the node first");
    assert!(
        cmds[1].contains("Win32_Process") && cmds[1].contains("-NodeName 'CAS1'"),
        "{}",
        cmds[1]
    );
    assert!(cmds[2..].iter().all(|c| *c == NODES));
    assert!(
        log.iter().all(|(m, _)| m == "cas1"),
        "commands run on the member itself: {log:?}"
    );
    // The engine then watches Draining -> Stopped; NLB gives no connection count.
    let st = nlb.state(cas1).await.unwrap();
    assert_eq!(
        (st.state, st.active_connections),
        (HostState::Draining, None)
    );
    let mut n = 0;
    while nlb.state(cas1).await.unwrap().state != HostState::Stopped {
        n += 1;
        assert!(n < 10);
    }
    // A second drainstop (a resumed run) does not start another drain.
    take_log(&c);
    nlb.drainstop(cas1).await.unwrap();
    assert_eq!(commands_of(&take_log(&c)), vec![NODES]);
}

#[tokio::test]
async fn hold_and_return_set_the_initial_state_and_wait_for_the_cluster_to_converge() {
    let (_d, plan, c, nlb) = setup(POOL);
    let cas2 = &plan.members[1];
    assert_eq!(
        nlb.initial_state(cas2).await.unwrap(),
        Some(HostState::Started)
    );
    assert_eq!(
        commands_of(&take_log(&c)),
        vec!["$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterDriverInfo"]
    );
    nlb.set_initial_state(cas2, HostState::Stopped)
        .await
        .unwrap();
    let log = take_log(&c);
    let cmds = commands_of(&log);
    assert_eq!(
        cmds[0],
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS2' | Set-NlbClusterNode -InitialHostState Stopped -Force"
    );
    // Then it reads the cluster until no node is converging, twice in a row.
    assert!(cmds[1..].iter().all(|c| *c == NODES));
    assert!(
        cmds.len() >= 1 + 2 + 2,
        "waited through the reconvergence: {cmds:?}"
    );
    assert_eq!(c.lock().unwrap().nodes[1].initial, "Stopped");
    assert_eq!(c.lock().unwrap().converging_readings, 0);

    // The return: start, then the initial state found (Started) restored.
    nlb.drainstop(cas2).await.unwrap();
    while nlb.state(cas2).await.unwrap().state != HostState::Stopped {}
    take_log(&c);
    nlb.start(cas2).await.unwrap();
    let log = take_log(&c);
    assert_eq!(
        log[1].1,
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS2' | Start-NlbClusterNode"
    );
    assert!(nlb.state(cas2).await.unwrap().in_service());
    nlb.set_initial_state(cas2, HostState::Started)
        .await
        .unwrap();
    assert_eq!(c.lock().unwrap().nodes[1].initial, "Started");
}

#[tokio::test]
async fn a_suspended_node_is_resumed_then_started() {
    let (_d, plan, c, nlb) = setup(POOL);
    c.lock().unwrap().nodes[2].state = "Suspended".into();
    let cas3 = &plan.members[2];
    assert_eq!(nlb.state(cas3).await.unwrap().detail, "Suspended");
    take_log(&c);
    nlb.start(cas3).await.unwrap();
    let log = take_log(&c);
    let ops: Vec<&str> = commands_of(&log)
        .into_iter()
        .filter(|c| *c != NODES)
        .collect();
    assert_eq!(
        ops,
        vec![
            "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS3' | Resume-NlbClusterNode",
            "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS3' | Start-NlbClusterNode",
        ]
    );
    assert!(nlb.state(cas3).await.unwrap().in_service());
}

#[tokio::test]
async fn a_rebooting_member_is_read_through_another_and_the_whole_pool_in_one_reading() {
    let (_d, plan, c, nlb) = setup(POOL);
    c.lock().unwrap().nodes[0].down = true;
    c.lock().unwrap().nodes[0].state = "Stopped".into();
    let st = nlb.state(&plan.members[0]).await.unwrap();
    assert_eq!(st.state, HostState::Stopped);
    let log = take_log(&c);
    assert_eq!(
        log.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
        vec!["cas1", "cas2"]
    );
    let all = nlb.pool_state(&plan.members).await;
    assert_eq!(all.len(), 3);
    assert!(all[1].as_ref().unwrap().in_service() && all[2].as_ref().unwrap().in_service());
    assert_eq!(
        take_log(&c).len(),
        2,
        "one failed try on cas1, one reading on cas2"
    );
}

/// `ebb check` says a member's failed connection once: in the balancer's problem when
/// that quotes it (`DriverError::unreached`), not again on its own.
#[tokio::test]
async fn an_error_says_whose_failed_connection_it_quotes() {
    let (_d, plan, c, nlb) = setup(POOL);
    // cas1 cannot be reached; on cas2 and cas3 the cmdlet fails.
    c.lock().unwrap().nodes[0].down = true;
    c.lock().unwrap().failing.insert(
        "Get-NlbClusterNode".into(),
        "Get-NlbClusterNode : The cluster service is not running.".into(),
    );
    let unreached: Vec<Vec<String>> = nlb
        .pool_state(&plan.members)
        .await
        .into_iter()
        .map(|r| r.expect_err("the cluster cannot be read").unreached)
        .collect();
    assert_eq!(unreached, [vec!["cas1".to_string()], vec![], vec![]]);
    let e = nlb.start(&plan.members[0]).await.unwrap_err();
    assert_eq!(e.unreached, ["cas1"], "{e}");
    // cas2's own failure is its cmdlet's: cas1 is named as tried, its error not quoted.
    let e = nlb.start(&plan.members[1]).await.unwrap_err();
    assert!(e.unreached.is_empty(), "{e}");
    assert!(!e.to_string().contains("Connection refused"), "{e}");
}

#[tokio::test]
async fn errors_name_the_member_the_node_the_command_and_what_it_printed() {
    let (_d, plan, c, nlb) = setup(POOL);
    let mut ghost = plan.members[0].clone();
    ghost.lb_name = "CAS9".into();
    let e = nlb.state(&ghost).await.unwrap_err().to_string();
    for want in [
        "member \"cas1\"",
        "NLB node \"CAS9\"",
        "no node \"CAS9\"",
        "CAS1, CAS2, CAS3",
        "lb_name",
    ] {
        assert!(e.contains(want), "{want:?} missing in: {e}");
    }
    let e = nlb.stop(&ghost).await.unwrap_err().to_string();
    assert!(
        e.contains("-NodeName 'CAS9'") && e.contains("was not found") && e.contains("exit code 1"),
        "{e}"
    );

    c.lock().unwrap().failing.insert(
        "Start-NlbClusterNode".into(),
        "Start-NlbClusterNode : Access is denied.".into(),
    );
    let e = nlb.start(&plan.members[1]).await.unwrap_err().to_string();
    assert!(
        e.contains("on \"cas2\"") && e.contains("Access is denied."),
        "{e}"
    );

    // Every member down: the cluster cannot be read at all.
    for n in c.lock().unwrap().nodes.iter_mut() {
        n.down = true;
    }
    let e = nlb.state(&plan.members[2]).await.unwrap_err().to_string();
    assert!(
        e.contains("could not be read on \"cas3\": ssh: connect to host cas3.corp.example port 22: Connection refused")
            && e.contains("nor on any other member (\"cas1\", \"cas2\" tried)"),
        "{e}"
    );

    // A Suspended initial host state cannot be recorded as started | stopped.
    for n in c.lock().unwrap().nodes.iter_mut() {
        n.down = false;
    }
    c.lock().unwrap().nodes[0].initial = "Suspended".into();
    let e = nlb
        .initial_state(&plan.members[0])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"Suspended\"") && e.contains("Started or Stopped"),
        "{e}"
    );
}

#[tokio::test]
async fn a_cluster_that_never_converges_is_reported_with_every_node_state() {
    let (_d, plan, c, nlb) = setup(POOL);
    c.lock().unwrap().converge_for = u32::MAX;
    let t = std::time::Instant::now();
    let e = nlb.start(&plan.members[0]).await.unwrap_err().to_string();
    assert!(t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(4));
    for want in [
        "not converged 2s after Start-NlbClusterNode",
        "CAS2 Converging",
        "converge_timeout",
    ] {
        assert!(e.contains(want), "{want:?} missing in: {e}");
    }
}

#[test]
fn settings_and_shell_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    std::fs::write(
        &path,
        "[pool]\nname = \"t\"\n\n[balancer]\ndriver = \"nlb\"\nconverge_timeout = \"later\"\ninterfce = \"NLB\"\n\n[[member]]\nname = \"a\"\naddress = \"a.corp.example\"\n",
    )
    .unwrap();
    let e = match ebb_engine::config::load(&path, &ebb_drivers::registry()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    for want in [
        "pool.toml:6: balancer.converge_timeout:",
        "pool.toml:7: balancer.interfce: unknown key for the nlb driver",
        "member \"a\": the nlb driver runs the NLB PowerShell cmdlets on the member itself: set shell = \"powershell\"",
    ] {
        assert!(e.contains(want), "{want:?} missing in:\n{e}");
    }
}
