//! Bounded polling with backoff, on the core's `RetryPolicy` and tokio's clock.

use std::time::Duration;

use pyscaler_core::{CancellationToken, Error, Result, RetryPolicy};
use tokio::time::Instant;

/// The default polling backoff: first poll after at most half a second,
/// doubling, capped at 5 s.
pub(crate) fn default_poll() -> RetryPolicy {
    RetryPolicy::attempts(u32::MAX)
        .initial_delay(Duration::from_millis(500))
        .max_delay(Duration::from_secs(5))
}

/// A bounded wait: each [`Poller::tick`] sleeps the policy's next delay (never
/// past the bound) and says whether to poll again.
#[derive(Debug)]
pub(crate) struct Poller {
    policy: RetryPolicy,
    until: Instant,
    within: Duration,
    n: u32,
}

impl Poller {
    pub(crate) fn new(policy: &RetryPolicy, within: Duration) -> Self {
        Self {
            policy: policy.clone(),
            until: Instant::now() + within,
            within,
            n: 0,
        }
    }

    /// The bound.
    pub(crate) fn within(&self) -> Duration {
        self.within
    }

    /// Sleeps before the next poll. `Ok(false)` once the bound has passed.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the run is cancelled while sleeping.
    pub(crate) async fn tick(&mut self, cancel: &CancellationToken) -> Result<bool> {
        let now = Instant::now();
        if now >= self.until {
            return Ok(false);
        }
        self.n = self.n.saturating_add(1);
        let delay = self.policy.delay(self.n).min(self.until - now);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(true),
            _ = cancel.cancelled() => Err(Error::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn polls_back_off_to_the_cap_and_stop_at_the_bound() {
        let policy = default_poll().jitter(false);
        let mut p = Poller::new(&policy, Duration::from_secs(20));
        let start = Instant::now();
        let cancel = CancellationToken::new();
        let mut at = Vec::new();
        while p.tick(&cancel).await.expect("not cancelled") {
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, vec![500, 1500, 3500, 7500, 12_500, 17_500, 20_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_the_wait() {
        let mut p = Poller::new(&default_poll(), Duration::from_secs(60));
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(matches!(p.tick(&cancel).await, Err(Error::Cancelled)));
    }
}
