//! Retry policies: exponential backoff with jitter and a cap.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often, and how far apart, to try again.
///
/// The delay before retry `n` (1-based) is `initial * multiplier^(n-1)`, capped
/// at `max_delay`; with jitter, a random point in the upper half of it (so
/// retries from many controllers spread out but never come sooner than half
/// the delay). Only errors whose `is_retryable()` is true are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// How many attempts in all, the first included. `1` means no retry.
    pub max_attempts: u32,
    /// The delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// The largest delay between two attempts.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// How much the delay grows after each retry.
    pub multiplier: f64,
    /// Whether to add random jitter.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// Three attempts, 1 s then 2 s apart (with jitter), capped at 30 s.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` attempts with the default delays.
    pub fn attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// No retry at all.
    pub fn never() -> Self {
        Self::attempts(1)
    }

    /// Sets the first delay.
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }

    /// Sets the cap on delays.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Sets the growth factor (at least 1).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = if m.is_finite() { m.max(1.0) } else { 1.0 };
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The delay before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = self.multiplier.powi(retry.saturating_sub(1).min(64) as i32);
        let base = self.initial_delay.as_secs_f64() * exp;
        let capped = base.min(self.max_delay.as_secs_f64()).max(0.0);
        let secs = if self.jitter {
            capped / 2.0 + fastrand::f64() * capped / 2.0
        } else {
            capped
        };
        Duration::from_secs_f64(secs)
    }

    /// The delays between attempts, in order: `max_attempts - 1` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        (1..self.max_attempts).map(|n| self.delay(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy::attempts(6)
            .initial_delay(Duration::from_secs(1))
            .max_delay(Duration::from_secs(5))
            .jitter(false);
        let d: Vec<u64> = p.delays().map(|d| d.as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let p = RetryPolicy::attempts(2).initial_delay(Duration::from_secs(8));
        for _ in 0..200 {
            let d = p.delay(1);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }
}
