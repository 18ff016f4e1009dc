//! Drivers that ask the journal before every change: a run whose lock was lost (its etcd
//! lease lapsed while it was paused, asleep or cut off, and another ebb may have taken
//! over) makes no further balancer operation and runs no further command on a member.
//! Reads (state, connections, boot ids) stay allowed: they change nothing.

use crate::interfaces::{
    Balancer, CommandOutcome, Counters, DriverError, DriverResult, HostState, MemberLbState,
    OutputSink, StartedSink, Transport,
};
use crate::journal::Journal;
use crate::member::Drivers;
use crate::plan::Member;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn fence(journal: &Journal) -> DriverResult<()> {
    journal
        .fence()
        .map_err(|e| DriverError::new(format!("not done: {e}")))
}

/// `drivers` with every balancer change and member command fenced by `journal`.
pub fn fenced(journal: &Arc<Journal>, drivers: Drivers) -> Drivers {
    Drivers {
        balancer: Arc::new(FencedBalancer {
            inner: drivers.balancer.clone(),
            journal: journal.clone(),
        }),
        transports: drivers
            .transports
            .iter()
            .map(|t| {
                Arc::new(FencedTransport {
                    inner: t.clone(),
                    journal: journal.clone(),
                }) as Arc<dyn Transport>
            })
            .collect(),
        ..drivers
    }
}

struct FencedBalancer {
    inner: Arc<dyn Balancer>,
    journal: Arc<Journal>,
}

#[async_trait]
impl Balancer for FencedBalancer {
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        self.inner.state(member).await
    }
    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        fence(&self.journal)?;
        self.inner.drainstop(member).await
    }
    async fn stop(&self, member: &Member) -> DriverResult<()> {
        fence(&self.journal)?;
        self.inner.stop(member).await
    }
    async fn start(&self, member: &Member) -> DriverResult<()> {
        fence(&self.journal)?;
        self.inner.start(member).await
    }
    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        self.inner.initial_state(member).await
    }
    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        fence(&self.journal)?;
        self.inner.set_initial_state(member, state).await
    }
    async fn wait_change(&self, member: &Member, max: Duration) {
        self.inner.wait_change(member, max).await
    }
    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        self.inner.pool_state(members).await
    }
    async fn preflight(&self, members: &[Member]) -> Vec<String> {
        self.inner.preflight(members).await
    }
    async fn preflight_problems(&self, members: &[Member]) -> Vec<String> {
        self.inner.preflight_problems(members).await
    }
    async fn member_errors(&self, member: &Member) -> DriverResult<Option<Counters>> {
        self.inner.member_errors(member).await
    }
    async fn pool_changes(
        &self,
        members: &[Member],
    ) -> Option<Vec<(usize, DriverResult<MemberLbState>)>> {
        self.inner.pool_changes(members).await
    }
}

struct FencedTransport {
    inner: Arc<dyn Transport>,
    journal: Arc<Journal>,
}

#[async_trait]
impl Transport for FencedTransport {
    async fn run(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
    ) -> DriverResult<CommandOutcome> {
        fence(&self.journal)?;
        self.inner.run(command, env, timeout, output).await
    }
    async fn boot_id(&self) -> DriverResult<String> {
        self.inner.boot_id().await
    }
    async fn run_tracked(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
        started: StartedSink,
    ) -> DriverResult<CommandOutcome> {
        fence(&self.journal)?;
        self.inner
            .run_tracked(command, env, timeout, output, started)
            .await
    }
    async fn still_running(&self, process: &str) -> DriverResult<bool> {
        self.inner.still_running(process).await
    }
    async fn stop_process(&self, process: &str) -> DriverResult<()> {
        fence(&self.journal)?;
        self.inner.stop_process(process).await
    }
    fn describe_process(&self, process: &str) -> String {
        self.inner.describe_process(process)
    }
}
