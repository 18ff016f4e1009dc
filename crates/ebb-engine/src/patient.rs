//! A balancer that rides out a short outage: every call that fails is tried again, with a
//! growing pause, for a bounded time before its error counts.
//!
//! A balancer restarted by its operator, or a link that drops for a second or two, must not
//! fail a member that is half-way through its maintenance (a false failure leaves it held
//! out for a human to resolve). Every balancer operation is safe to repeat: the reads
//! change nothing, and drainstop, stop, start and set-initial-state each set a state, so
//! doing one twice ends where doing it once does.

use crate::interfaces::{Balancer, Counters, DriverResult, HostState, MemberLbState};
use crate::plan::Member;
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a failing balancer call is retried before its error counts, by default
/// (`[runbook] balancer_retry`).
pub const BALANCER_RETRY: Duration = Duration::from_secs(10);

/// Wraps a balancer so each failing call is retried for up to `patience`.
pub struct Patient {
    inner: Arc<dyn Balancer>,
    patience: Duration,
}

impl Patient {
    /// `inner`, retried for up to `patience` per call.
    pub fn new(inner: Arc<dyn Balancer>, patience: Duration) -> Patient {
        Patient { inner, patience }
    }

    async fn retry<T, F, Fut>(&self, mut call: F) -> DriverResult<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = DriverResult<T>> + Send,
        T: Send,
    {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if started.elapsed() + pause >= self.patience => return Err(e),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

#[async_trait]
impl Balancer for Patient {
    async fn state(&self, member: &Member) -> DriverResult<MemberLbState> {
        self.retry(|| self.inner.state(member)).await
    }
    async fn drainstop(&self, member: &Member) -> DriverResult<()> {
        self.retry(|| self.inner.drainstop(member)).await
    }
    async fn stop(&self, member: &Member) -> DriverResult<()> {
        self.retry(|| self.inner.stop(member)).await
    }
    async fn start(&self, member: &Member) -> DriverResult<()> {
        self.retry(|| self.inner.start(member)).await
    }
    async fn initial_state(&self, member: &Member) -> DriverResult<Option<HostState>> {
        self.retry(|| self.inner.initial_state(member)).await
    }
    async fn set_initial_state(&self, member: &Member, state: HostState) -> DriverResult<()> {
        self.retry(|| self.inner.set_initial_state(member, state))
            .await
    }
    async fn wait_change(&self, member: &Member, max: Duration) {
        self.inner.wait_change(member, max).await
    }
    async fn pool_state(&self, members: &[Member]) -> Vec<DriverResult<MemberLbState>> {
        // Read once: callers (the policy, samples) already decide what an error means.
        self.inner.pool_state(members).await
    }
    async fn pool_changes(
        &self,
        members: &[Member],
    ) -> Option<Vec<(usize, DriverResult<MemberLbState>)>> {
        // As pool_state: once, the policy decides what an error means.
        self.inner.pool_changes(members).await
    }
    async fn preflight(&self, members: &[Member]) -> Vec<String> {
        self.inner.preflight(members).await
    }
    async fn preflight_problems(&self, members: &[Member]) -> Vec<String> {
        self.inner.preflight_problems(members).await
    }
    async fn member_errors(&self, member: &Member) -> DriverResult<Option<Counters>> {
        self.retry(|| self.inner.member_errors(member)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interfaces::DriverError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails its first `failures` calls of `start`.
    struct Flaky {
        failures: usize,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Balancer for Flaky {
        async fn state(&self, _: &Member) -> DriverResult<MemberLbState> {
            Err(DriverError::new("down for good"))
        }
        async fn drainstop(&self, _: &Member) -> DriverResult<()> {
            Ok(())
        }
        async fn stop(&self, _: &Member) -> DriverResult<()> {
            Ok(())
        }
        async fn start(&self, _: &Member) -> DriverResult<()> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                Err(DriverError::new("connection refused"))
            } else {
                Ok(())
            }
        }
        async fn initial_state(&self, _: &Member) -> DriverResult<Option<HostState>> {
            Ok(None)
        }
        async fn set_initial_state(&self, _: &Member, _: HostState) -> DriverResult<()> {
            Ok(())
        }
    }

    fn member() -> Member {
        let dir = std::env::temp_dir();
        let p = dir.join(format!("ebb-patient-{}.toml", std::process::id()));
        std::fs::write(
            &p,
            "[pool]\nname = \"p\"\n[balancer]\ndriver = \"command\"\n[[member]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n",
        )
        .expect("write");
        let plan = crate::config::load(&p, &crate::registry::tests::inert()).expect("plan");
        let _ = std::fs::remove_file(&p);
        plan.members[0].clone()
    }

    #[tokio::test]
    async fn a_short_outage_is_ridden_out_and_a_long_one_is_reported() {
        let flaky = Arc::new(Flaky {
            failures: 3,
            calls: AtomicUsize::new(0),
        });
        let p = Patient::new(flaky.clone(), Duration::from_secs(5));
        let m = member();
        p.start(&m).await.expect("the fourth try succeeds");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
        let t = Instant::now();
        let err = Patient::new(flaky, Duration::from_millis(700))
            .state(&m)
            .await
            .expect_err("never answers");
        assert_eq!(err.to_string(), "down for good");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
}
