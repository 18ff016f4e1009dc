//! A clock the test sets: maintenance windows judged at any time of any day, and a wait
//! for the next window that ends when the test moves the clock, not minutes later.

use crate::window::Clock;
use jiff::Timestamp;
use std::time::Duration;
use tokio::sync::watch;

/// A settable clock; [`Clock::sleep_until`] returns once the test has set it far enough.
#[derive(Debug)]
pub struct TestClock {
    now: watch::Sender<Timestamp>,
}

impl TestClock {
    /// A clock standing at `t`.
    pub fn at(t: Timestamp) -> TestClock {
        TestClock {
            now: watch::channel(t).0,
        }
    }

    /// Sets it to `t` (also backwards).
    pub fn set(&self, t: Timestamp) {
        self.now.send_replace(t);
    }

    /// Moves it on by `d`.
    pub fn advance(&self, d: Duration) {
        self.now
            .send_modify(|t| *t = t.checked_add(d).unwrap_or_else(|e| panic!("clock: {e}")));
    }
}

#[async_trait::async_trait]
impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    async fn sleep_until(&self, t: Timestamp) {
        let mut rx = self.now.subscribe();
        loop {
            if *rx.borrow_and_update() >= t {
                return;
            }
            // The sender lives as long as the clock, which outlives every run using it.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
