//! Bounded polling with backoff, on tokio's clock.

use std::time::Duration;

use pyscaler_core::{CancellationToken, Error, Result, RetryPolicy};
use tokio::time::Instant;

/// How the polls of a wait are spaced (until an instance runs, is InService,
/// is terminated): the first after `initial`, each next one twice as late,
/// capped at `max`, with jitter unless turned off. How long a wait lasts is
/// its own bound (`running_within`, ...), not the backoff's.
///
/// ```
/// use std::time::Duration;
/// use pyscaler_aws::Backoff;
/// let quick = Backoff::new(Duration::from_millis(10), Duration::from_millis(50)).jitter(false);
/// # let _ = quick;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff(RetryPolicy);

impl Backoff {
    /// Polls after `initial`, doubling, capped at `max`, with jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        // The core's retry delays, used only for their spacing: a wait ends at its bound.
        Self(
            RetryPolicy::attempts(u32::MAX)
                .initial_delay(initial)
                .max_delay(max),
        )
    }

    /// Turns the jitter on or off (on by default; off for exact tests).
    pub fn jitter(self, on: bool) -> Self {
        Self(self.0.jitter(on))
    }

    /// The delay before poll `n` (1 for the first).
    fn delay(&self, n: u32) -> Duration {
        self.0.delay(n)
    }
}

impl Default for Backoff {
    /// First poll after at most half a second, doubling, capped at 5 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(5))
    }
}

/// The default polling backoff ([`Backoff::default`]).
pub(crate) fn default_poll() -> Backoff {
    Backoff::default()
}

/// A bounded wait: each [`Poller::tick`] sleeps the backoff's next delay (never
/// past the bound) and says whether to poll again.
#[derive(Debug)]
pub(crate) struct Poller {
    policy: Backoff,
    until: Instant,
    within: Duration,
    n: u32,
}

impl Poller {
    pub(crate) fn new(policy: &Backoff, within: Duration) -> Self {
        // A bound too far to represent is as good as none (a century).
        let now = Instant::now();
        let until = now
            .checked_add(within)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        Self {
            policy: policy.clone(),
            until,
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
