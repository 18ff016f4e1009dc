//! The NLB driver's cmdlets through the winrm transport, step for step: each member of the
//! simulated cluster (tests/support/nlb.rs) sits behind its own fake WinRM endpoint
//! (tests/support_winrm), which takes the cmdlet back out of ebb's PowerShell wrapper and
//! lets the simulated node answer it.

mod support;
mod support_winrm;

use ebb_drivers::balancer::nlb::{Nlb, NlbSettings};
use ebb_engine::interfaces::{Balancer, HostState, Transport};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::nlb::*;
use support_winrm::{FakeWinrm, Reply};

const PASSWORD: &str = "nlb pass";

fn pool(urls: &[String]) -> String {
    let mut s = String::from(
        "[pool]\nname = \"cas-array\"\n\n[balancer]\ndriver = \"nlb\"\npoll_interval = \"10ms\"\nconverge_timeout = \"5s\"\ntimeout = \"5s\"\n\n[defaults]\nshell = \"powershell\"\ntransport = \"winrm\"\nwinrm_auth = \"basic\"\nwinrm_user = \"ebb\"\nwinrm_password_env = \"EBB_TEST_NLB_WINRM_PW\"\n",
    );
    for (i, u) in urls.iter().enumerate() {
        s += &format!(
            "\n[[member]]\nname = \"cas{n}\"\naddress = \"cas{n}.corp.example\"\nlb_name = \"CAS{n}\"\nwinrm_url = \"{u}\"\n",
            n = i + 1
        );
    }
    s
}

#[tokio::test]
async fn nlb_cmdlets_run_through_winrm_step_for_step() {
    std::env::set_var("EBB_TEST_NLB_WINRM_PW", PASSWORD);
    let c = cluster(&["CAS1", "CAS2", "CAS3"]);
    let mut fakes = Vec::new();
    for (member, node) in [("cas1", "CAS1"), ("cas2", "CAS2"), ("cas3", "CAS3")] {
        let fake = FakeWinrm::start("ebb", PASSWORD).await;
        let node = Arc::new(FakeTransport {
            member: member.into(),
            node: node.into(),
            cluster: c.clone(),
        });
        fake.respond(Arc::new(move |cmd: String| {
            let node = node.clone();
            Box::pin(async move {
                match node
                    .run(&cmd, &BTreeMap::new(), Duration::from_secs(5), None)
                    .await
                {
                    Ok(o) => Reply {
                        stdout: format!("{}\n", o.tail),
                        exit: o.exit_code.unwrap_or(1),
                        ..Reply::default()
                    },
                    Err(e) => Reply {
                        stderr: format!("{e}\n"),
                        exit: 1,
                        ..Reply::default()
                    },
                }
            })
        }));
        fakes.push(fake);
    }
    let urls: Vec<String> = fakes.iter().map(|f| f.url()).collect();
    let dir = tempfile::tempdir().unwrap();
    let plan = support::plan(dir.path(), &pool(&urls));
    let transports: Vec<Arc<dyn Transport>> = plan
        .members
        .iter()
        .map(|m| ebb_drivers::transport::build(&plan, m).expect("winrm transport"))
        .collect();
    let settings = NlbSettings::from_plan(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    let nlb = Nlb::with_transports(settings, &plan, transports);
    let cas2 = &plan.members[1];

    // Hold, drain, return: the same cmdlets the driver sends over ssh, each one through a
    // WinRM shell of the member (cas2's own endpoint).
    assert_eq!(
        nlb.initial_state(cas2).await.unwrap(),
        Some(HostState::Started)
    );
    nlb.set_initial_state(cas2, HostState::Stopped)
        .await
        .unwrap();
    assert_eq!(c.lock().unwrap().nodes[1].initial, "Stopped");
    nlb.drainstop(cas2).await.unwrap();
    let mut readings = 0;
    while nlb.state(cas2).await.unwrap().state != HostState::Stopped {
        readings += 1;
        assert!(readings < 100, "the drain never ended");
    }
    nlb.start(cas2).await.unwrap();
    assert!(nlb.state(cas2).await.unwrap().in_service());
    nlb.set_initial_state(cas2, HostState::Started)
        .await
        .unwrap();
    assert_eq!(c.lock().unwrap().nodes[1].initial, "Started");

    let log = take_log(&c);
    let sent: Vec<&str> = log.iter().map(|(_, cmd)| cmd.as_str()).collect();
    for want in [
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS2' | Set-NlbClusterNode -InitialHostState Stopped -Force",
        "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; Get-NlbClusterNode -NodeName 'CAS2' | Start-NlbClusterNode",
    ] {
        assert!(sent.contains(&want), "{want} in {sent:#?}");
    }
    // Every command the cluster answered came through a WinRM endpoint, wrapped, and each
    // endpoint's scripts carry exactly those commands.
    let scripts: usize = fakes.iter().map(|f| f.seen(|s| s.scripts.len())).sum();
    assert_eq!(scripts, log.len());
    let through_cas2 = fakes[1].seen(|s| {
        s.scripts
            .iter()
            .map(|x| support_winrm::wrapped_command(x))
            .collect::<Vec<_>>()
    });
    let cas2_log: Vec<String> = log
        .iter()
        .filter(|(m, _)| m == "cas2")
        .map(|(_, cmd)| cmd.clone())
        .collect();
    assert_eq!(through_cas2, cas2_log);
    assert!(fakes
        .iter()
        .all(|f| f.seen(|s| s.shells_created == s.shells_deleted)));
}
