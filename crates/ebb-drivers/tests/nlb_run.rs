//! The shipped example `examples/exchange-2010-cas-array.toml` run through the engine with
//! the nlb driver, every member's commands going to the simulated NLB cluster
//! (tests/support/nlb.rs): the tutorial's procedure happens step for step, in order, on
//! each CAS server, one at a time, and the cluster ends with every node converged and its
//! initial host state Started again.

mod support;

use async_trait::async_trait;
use ebb_drivers::balancer::nlb::{Nlb, NlbSettings};
use ebb_drivers::check::command::CommandCheck;
use ebb_engine::events::{Event, EventSink};
use ebb_engine::interfaces::{
    Balancer, CheckContext, Checker, DriverResult, Maintenance, Transport,
};
use ebb_engine::journal::Journal;
use ebb_engine::plan::{CheckSpec, GateSpec, MaintenanceSpec, Member};
use ebb_engine::run::{run, RunOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::nlb::*;

/// Command checks run on the member (so they are recorded); the others (services, logs,
/// tcp) are recorded by name and pass: what they send is the checks' own tests' business.
struct RecordingChecker(Shared);

#[async_trait]
impl Checker for RecordingChecker {
    async fn check_in(
        &self,
        check: &CheckSpec,
        member: &Member,
        transport: &dyn Transport,
        _: &CheckContext,
    ) -> Result<String, String> {
        let command = check.check.as_any().downcast_ref::<CommandCheck>();
        match command.map(|c| &c.command) {
            Some(command) => {
                let cmd = ebb_engine::placeholder::render(
                    command,
                    member,
                    ebb_engine::placeholder::Quote::PowerShell,
                    &BTreeMap::new(),
                );
                let out = transport
                    .run(&cmd, &BTreeMap::new(), Duration::from_secs(5), None)
                    .await
                    .map_err(|e| e.to_string())?;
                if out.exit_code == Some(0) {
                    Ok(String::new())
                } else {
                    Err(out.tail)
                }
            }
            _ => {
                self.0
                    .lock()
                    .unwrap()
                    .log
                    .push((member.name.clone(), format!("[check {}]", check.name)));
                Ok("simulated".into())
            }
        }
    }
}

/// Monitoring maintenance, recorded.
struct RecordingMaintenance(Shared);

#[async_trait]
impl Maintenance for RecordingMaintenance {
    async fn begin(&self, _: &MaintenanceSpec, m: &Member, _: &str) -> DriverResult<String> {
        let mut c = self.0.lock().unwrap();
        c.log.push((m.name.clone(), "[maintenance begin]".into()));
        Ok("token".into())
    }
    async fn end(&self, _: &MaintenanceSpec, m: &Member, _: &str, _: &str) -> DriverResult<String> {
        let mut c = self.0.lock().unwrap();
        c.log.push((m.name.clone(), "[maintenance end]".into()));
        Ok(String::new())
    }
    async fn gate_alerts(&self, _: &GateSpec) -> DriverResult<Vec<String>> {
        Ok(Vec::new())
    }
}

const P: &str = "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorials_procedure_runs_step_for_step_on_each_cas_server() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/exchange-2010-cas-array.toml"),
    )
    .unwrap();
    let mut plan = support::plan(dir.path(), &text);
    // Simulated time: poll fast.
    if let Some(r) = plan.runbook.reboot.as_mut() {
        r.poll_interval = Duration::from_millis(10);
    }
    let c = cluster(&["CAS1", "CAS2", "CAS3"]);
    c.lock()
        .unwrap()
        .scripted
        .push(("msiexec.exe".into(), 3010, "reboot required".into()));
    let mut settings = NlbSettings::from_plan(&plan).unwrap();
    settings.poll_interval = Duration::from_millis(10);
    let transports = transports(&plan, &c);
    let nlb = Arc::new(Nlb::with_transports(settings, &plan, transports.clone()));
    let mut drivers = ebb_drivers::build(&plan).unwrap_or_else(|e| panic!("{e:?}"));
    drivers.balancer = nlb.clone();
    drivers.transports = transports;
    drivers.checker = Arc::new(RecordingChecker(c.clone()));
    drivers.maintenance = Arc::new(RecordingMaintenance(c.clone()));

    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let sink: EventSink =
        Arc::new(move |e: &Event| ev.lock().unwrap().push(serde_json::to_value(e).unwrap()));
    let journal = Arc::new(Journal::open(&dir.path().join(".ebb")).unwrap());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let plan = Arc::new(plan);
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        run(
            plan.clone(),
            drivers,
            journal,
            sink,
            RunOptions::default(),
            rx,
        ),
    )
    .await
    .expect("the run finishes")
    .unwrap();
    let failures: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "failed")
        .cloned()
        .collect();
    assert_eq!(out.exit_code, 0, "{}: {failures:#?}", out.message);

    // Each member's own operations, in order (reads of the cluster left out, and the pool
    // checks a rejoin runs on the other members).
    let log = take_log(&c);
    let reads = |cmd: &str| {
        cmd == format!("{P}Get-NlbClusterNode")
            || cmd == format!("{P}Get-NlbClusterDriverInfo")
            || cmd == "[check https]"
    };
    for (i, m) in ["cas1", "cas2", "cas3"].iter().enumerate() {
        let node = format!("CAS{}", i + 1);
        let ops: Vec<String> = log
            .iter()
            .filter(|(who, cmd)| who == m && !reads(cmd))
            .map(|(_, cmd)| {
                if cmd.contains("Win32_Process") {
                    "[drain, detached]".to_string()
                } else if cmd.starts_with("\nNew-Item") || cmd.contains("msiexec.exe") {
                    "[msiexec /update rollup]".to_string()
                } else {
                    cmd.clone()
                }
            })
            .collect();
        // Monitoring maintenance begins before the member goes out and ends after it is back.
        let mut want: Vec<String> = vec![
            "[maintenance begin]".into(),
            format!("{P}Get-NlbClusterNode -NodeName '{node}' | Set-NlbClusterNode -InitialHostState Stopped -Force"),
            "[drain, detached]".into(),
            "fscutility /disable".into(),
        ];
        if i == 0 {
            want.push(r"wbadmin start backup -backupTarget:\\backup.corp.example\cas-array -allCritical -quiet".into());
        }
        want.extend([
            "[msiexec /update rollup]".to_string(),
            "Restart-Computer -Force".into(),
            "[check exchange services]".into(),
            "if (-not (Select-String -Quiet -Path (Join-Path 'C:\\ebb' 'rollup.log') -Pattern 'Installation success or error status: (0|3010)')) { exit 1 }".into(),
            "[check application log]".into(),
            "[check system log]".into(),
            "[check owa]".into(),
            "fscutility /enable".into(),
            format!("{P}Get-NlbClusterNode -NodeName '{node}' | Start-NlbClusterNode"),
            format!("{P}Get-NlbClusterNode -NodeName '{node}' | Set-NlbClusterNode -InitialHostState Started -Force"),
            "[maintenance end]".into(),
        ]);
        assert_eq!(ops, want, "{m}");
    }
    // One at a time: a member's first operation comes after the previous one's last.
    let pos = |m: &str, pat: &str| {
        log.iter()
            .position(|(w, c)| w == m && c.contains(pat))
            .unwrap()
    };
    let last = |m: &str, pat: &str| {
        log.iter()
            .rposition(|(w, c)| w == m && c.contains(pat))
            .unwrap()
    };
    assert!(last("cas1", "-InitialHostState Started") < pos("cas2", "-InitialHostState Stopped"));
    assert!(last("cas2", "-InitialHostState Started") < pos("cas3", "-InitialHostState Stopped"));
    // The cluster as the tutorial leaves it.
    {
        let cl = c.lock().unwrap();
        for n in &cl.nodes {
            assert_eq!(
                (n.state.as_str(), n.initial.as_str(), n.boot),
                ("Converged", "Started", 2),
                "{n:?}"
            );
        }
    }
    for m in &plan.members {
        assert!(nlb.state(m).await.unwrap().in_service());
    }
}
