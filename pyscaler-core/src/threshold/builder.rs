//! Builds a [`ThresholdTrigger`] and checks its settings.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::{Condition, ThresholdTrigger};
use crate::{Aggregation, Comparison, Error, MetricSource, MissingData, NodeStep, Result};

/// Builds a [`ThresholdTrigger`].
#[derive(Debug)]
pub struct ThresholdTriggerBuilder {
    pub(super) name: String,
    pub(super) source: Arc<dyn MetricSource>,
    pub(super) comparison: Comparison,
    pub(super) threshold: Option<f64>,
    pub(super) aggregation: Aggregation,
    pub(super) interval: Duration,
    pub(super) window: Option<Duration>,
    pub(super) cooldown: Duration,
    pub(super) missing: MissingData,
    pub(super) staleness: Option<Duration>,
    pub(super) step: Option<NodeStep>,
    pub(super) enabled: bool,
}

impl ThresholdTriggerBuilder {
    /// Fires when the aggregated value `comparison` `threshold` holds.
    pub fn when(mut self, comparison: Comparison, threshold: f64) -> Self {
        self.comparison = comparison;
        self.threshold = Some(threshold);
        self
    }

    /// How samples across nodes are combined (default: average).
    pub fn aggregation(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = aggregation;
        self
    }

    /// How often to sample (default 10 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long the condition must hold before firing: the stabilization
    /// window. Without it, 1 minute for a scale-out and 5 minutes for a
    /// scale-in (the direction the scaler binds the trigger to; 1 minute
    /// for a trigger used alone).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    /// How long to stay quiet after firing (default 10 min).
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// What to do without data (default: [`MissingData::Hold`]).
    pub fn on_missing_data(mut self, policy: MissingData) -> Self {
        self.missing = policy;
        self
    }

    /// How old a sample may be before it counts as no data (default: two
    /// intervals). Only samples that say when they were measured
    /// ([`Sample::at`](crate::Sample::at)) can be stale.
    pub fn staleness(mut self, bound: Duration) -> Self {
        self.staleness = Some(bound);
        self
    }

    /// How many nodes each firing asks for (default: as many as the
    /// pipeline's steps say). With [`NodeStep::Proportional`] the condition
    /// is the tolerance band around the target: no [`when`](Self::when).
    pub fn step(mut self, step: NodeStep) -> Self {
        self.step = Some(step);
        self
    }

    /// Whether the trigger starts enabled (default: yes).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Checks and builds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when no threshold was set (and no
    /// proportional step), both were, a number is not finite, the interval
    /// or a staleness bound is zero, a fixed step is zero, or a target is
    /// not above zero or its tolerance not in `[0, 1)`.
    pub fn build(self) -> Result<ThresholdTrigger> {
        let name = self.name;
        let bad = |what: String| Error::InvalidConfig(format!("trigger `{name}`: {what}"));
        let condition = match (self.threshold, self.step) {
            (Some(_), Some(NodeStep::Proportional { .. })) => {
                return Err(bad(
                    "a proportional step sets its own condition (the band around the \
                     target); remove .when(...)"
                        .into(),
                ))
            }
            (None, Some(NodeStep::Proportional { target, tolerance })) => {
                if !(target.is_finite() && target > 0.0) {
                    return Err(bad(format!("the target {target} must be above zero")));
                }
                if !(0.0..1.0).contains(&tolerance) {
                    return Err(bad(format!(
                        "the tolerance {tolerance} must be at least 0 and below 1"
                    )));
                }
                Condition::Band { target, tolerance }
            }
            (Some(threshold), _) => {
                if !threshold.is_finite() {
                    return Err(bad("the threshold must be a finite number".into()));
                }
                Condition::Threshold(self.comparison, threshold)
            }
            (None, _) => {
                return Err(Error::InvalidConfig(format!(
                    "trigger `{name}` has no threshold; call .when(...)"
                )))
            }
        };
        if self.interval.is_zero() {
            return Err(bad("the interval must be above zero".into()));
        }
        if self.staleness.is_some_and(|s| s.is_zero()) {
            return Err(bad("the staleness bound must be above zero".into()));
        }
        if self.step == Some(NodeStep::Fixed(0)) {
            return Err(bad("a fixed step of 0 nodes changes nothing".into()));
        }
        if let MissingData::Value(v) = self.missing {
            if !v.is_finite() {
                return Err(bad(
                    "the value for missing data must be a finite number".into()
                ));
            }
        }
        Ok(ThresholdTrigger {
            staleness: self.staleness.unwrap_or(self.interval.saturating_mul(2)),
            name,
            source: self.source,
            condition,
            aggregation: self.aggregation,
            interval: self.interval,
            window: self.window,
            cooldown: self.cooldown,
            missing: self.missing,
            step: self.step,
            direction: None,
            enabled: Arc::new(AtomicBool::new(self.enabled)),
            breach_since: None,
            last_fired: None,
        })
    }
}
