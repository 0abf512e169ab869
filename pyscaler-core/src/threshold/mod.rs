//! A counter that stays past a threshold (or away from a target) for a
//! whole window starts a run: [`ThresholdTrigger`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::trigger::{ClusterView, Opinion};
use crate::{
    Aggregation, Cluster, Comparison, Decision, Direction, Event, Fire, MetricSource, MissingData,
    NodeStep, Sample, Trigger, Verdict,
};

mod builder;

pub use builder::ThresholdTriggerBuilder;

/// How long a scale-out's condition must hold by default.
const OUT_WINDOW: Duration = Duration::from_secs(60);
/// How long a scale-in's condition must hold by default: longer, as the
/// Kubernetes HPA's 5-minute downscale stabilization.
const IN_WINDOW: Duration = Duration::from_secs(300);

/// What the trigger compares its value with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Condition {
    /// `value <op> threshold`.
    Threshold(Comparison, f64),
    /// Outside `target * (1 ± tolerance)`, on the side of the direction.
    Band { target: f64, tolerance: f64 },
}

/// The verdict of one evaluation of a [`ThresholdTrigger`].
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The aggregated value (for `AnyNode`/`AllNodes`, the largest value);
    /// `None` when there was no data and the policy holds.
    pub value: Option<f64>,
    /// Whether the condition held on this sample.
    pub breaching: bool,
    /// Set when the trigger fires.
    pub fire: Option<Fire>,
    /// Why there was no data, when there was none (the value is then the
    /// policy's, or none).
    pub no_data: Option<String>,
}

/// Fires when a counter stays past a threshold for a whole window of time.
///
/// Every `interval` it reads a [`MetricSource`], aggregates across nodes and
/// compares with the threshold. The condition must hold on every sample for
/// `window` (a dip restarts it); after firing, it stays quiet for `cooldown`
/// and needs a new whole window of breaching samples, counted from the first
/// one after it fired.
///
/// No data is never a number: a source that fails or is slower than the
/// interval, an empty answer, a value that is not a number, or samples
/// older than the staleness bound (default two intervals) are "no data",
/// and the trigger does what its [`MissingData`] policy says (default: hold,
/// the window restarts).
///
/// Bound to a scale-in ([`Direction::In`]), its window defaults to 5
/// minutes instead of 1. With a [`NodeStep`], each firing says how many
/// nodes it asks for; the scaler caps that by its bounds.
#[derive(Debug)]
pub struct ThresholdTrigger {
    name: String,
    source: Arc<dyn MetricSource>,
    condition: Condition,
    aggregation: Aggregation,
    interval: Duration,
    window: Option<Duration>,
    cooldown: Duration,
    missing: MissingData,
    staleness: Duration,
    step: Option<NodeStep>,
    direction: Option<Direction>,
    enabled: Arc<AtomicBool>,
    breach_since: Option<Instant>,
    last_fired: Option<Instant>,
}

impl ThresholdTrigger {
    /// Starts building a trigger called `name` on `source`.
    pub fn builder(
        name: impl Into<String>,
        source: Arc<dyn MetricSource>,
    ) -> ThresholdTriggerBuilder {
        ThresholdTriggerBuilder {
            name: name.into(),
            source,
            comparison: Comparison::Greater,
            threshold: None,
            aggregation: Aggregation::Average,
            interval: Duration::from_secs(10),
            window: None,
            cooldown: Duration::from_secs(600),
            missing: MissingData::default(),
            staleness: None,
            step: None,
            enabled: true,
        }
    }

    /// A switch that enables or disables the trigger while it runs.
    pub fn switch(&self) -> Arc<AtomicBool> {
        self.enabled.clone()
    }

    /// The stabilization window in force: the one set, or the direction's default.
    pub fn window(&self) -> Duration {
        self.window.unwrap_or(match self.direction {
            Some(Direction::In) => IN_WINDOW,
            _ => OUT_WINDOW,
        })
    }

    fn threshold(&self) -> f64 {
        match self.condition {
            Condition::Threshold(_, t) => t,
            Condition::Band { target, .. } => target,
        }
    }

    /// Judges one round of samples of `cluster` taken at `now`; fires when
    /// the condition has held for the whole window and the cooldown is over.
    /// Samples that are not numbers or older than the staleness bound are
    /// left out; when none is left, it is no data.
    pub fn evaluate(&mut self, now: Instant, cluster: &Cluster, samples: &[Sample]) -> Evaluation {
        let wall = Utc::now();
        let fresh: Vec<Sample> = samples
            .iter()
            .filter(|s| s.value.is_finite())
            .filter(|s| {
                s.at.is_none_or(|at| {
                    (wall - at)
                        .to_std()
                        .map_or(true, |age| age <= self.staleness)
                })
            })
            .cloned()
            .collect();
        if fresh.is_empty() {
            let why = if samples.is_empty() {
                "the source gave no sample".to_owned()
            } else if samples.iter().all(|s| !s.value.is_finite()) {
                "no value is a number".to_owned()
            } else {
                format!(
                    "every sample is older than {}",
                    humantime::format_duration(self.staleness)
                )
            };
            return self.missing_data(now, cluster, why);
        }
        self.judge(now, cluster, &fresh)
    }

    /// No data, for `why`: the policy decides.
    fn missing_data(&mut self, now: Instant, cluster: &Cluster, why: String) -> Evaluation {
        if let MissingData::Value(v) = self.missing {
            let mut eval = self.judge(now, cluster, &[Sample::new(cluster.name(), v)]);
            eval.no_data = Some(why);
            return eval;
        }
        self.breach_since = None;
        Evaluation {
            value: None,
            breaching: false,
            fire: None,
            no_data: Some(why),
        }
    }

    fn judge(&mut self, now: Instant, cluster: &Cluster, samples: &[Sample]) -> Evaluation {
        let (value, breaching, change) = self.aggregate(cluster.len(), samples);
        let not_yet = |breaching| Evaluation {
            value,
            breaching,
            fire: None,
            no_data: None,
        };
        if !breaching {
            self.breach_since = None;
            return not_yet(false);
        }
        let since = *self.breach_since.get_or_insert(now);
        let held = now.duration_since(since);
        let cooling = self
            .last_fired
            .is_some_and(|t| now.duration_since(t) < self.cooldown);
        if held < self.window() || cooling {
            return not_yet(true);
        }
        self.breach_since = None;
        self.last_fired = Some(now);
        let shown = value.map(|v| format!("{v:.2}")).unwrap_or_default();
        let held = humantime::format_duration(Duration::from_secs(held.as_secs()));
        let (metric, aggregation) = (self.source.name(), self.aggregation);
        let reason = match self.condition {
            Condition::Threshold(op, t) => {
                format!("{metric} {aggregation:?} {shown} {} {t} for {held}", op.symbol())
            }
            Condition::Band { target, tolerance } => format!(
                "{metric} {aggregation:?} {shown} is off the target {target} (±{:.0}%) for {held}: {} node(s) to {}",
                tolerance * 100.0,
                change,
                match self.direction {
                    Some(Direction::In) => "remove",
                    _ => "add",
                }
            ),
        };
        let mut fire = Fire::new(self.name.clone(), reason);
        fire.nodes = match self.step {
            Some(NodeStep::Fixed(n)) => Some(n),
            Some(NodeStep::Proportional { .. }) => Some(change),
            None => None,
        };
        Evaluation {
            value,
            breaching: true,
            fire: Some(fire),
            no_data: None,
        }
    }

    /// The aggregated value, whether the condition holds, and for a band
    /// how many nodes would bring the value back to the target.
    fn aggregate(&self, nodes: usize, samples: &[Sample]) -> (Option<f64>, bool, usize) {
        if samples.is_empty() {
            return (None, false, 0);
        }
        let max = samples
            .iter()
            .map(|s| s.value)
            .fold(f64::NEG_INFINITY, f64::max);
        let avg = || samples.iter().map(|s| s.value).sum::<f64>() / samples.len() as f64;
        match self.condition {
            Condition::Threshold(op, t) => {
                let (value, breaching) = match self.aggregation {
                    Aggregation::AnyNode => (max, samples.iter().any(|s| op.holds(s.value, t))),
                    Aggregation::AllNodes => (max, samples.iter().all(|s| op.holds(s.value, t))),
                    Aggregation::Max => (max, op.holds(max, t)),
                    Aggregation::Average => {
                        let avg = avg();
                        (avg, op.holds(avg, t))
                    }
                };
                (Some(value), breaching, 0)
            }
            Condition::Band { target, tolerance } => {
                let value = match self.aggregation {
                    Aggregation::Average => avg(),
                    _ => max,
                };
                let ratio = value / target;
                let n = nodes as f64;
                let desired = (n * ratio).ceil().max(0.0);
                let change = match self.direction {
                    Some(Direction::In) if ratio < 1.0 - tolerance => (n - desired).max(0.0),
                    Some(Direction::In) => 0.0,
                    _ if ratio > 1.0 + tolerance => (desired - n).max(1.0),
                    _ => 0.0,
                };
                // Bounded by what a cluster can hold; a float past it is a
                // value that makes no sense, and the scaler caps it anyway.
                let change = change.min(u32::MAX as f64) as usize;
                (Some(value), change > 0, change)
            }
        }
    }

    /// Tells the subscribers about no data (and fails loudly when the
    /// policy says so).
    fn report_no_data(&self, view: &ClusterView, eval: &Evaluation, why: &str) {
        let nodes = view.snapshot().len();
        let direction = self.direction.unwrap_or(Direction::Out);
        let (verdict, reason) = match self.missing {
            MissingData::Hold => (Verdict::NoData, format!("no data ({why}): holding")),
            MissingData::Value(v) => (Verdict::NoData, format!("no data ({why}): taken as {v}")),
            MissingData::Fail => (Verdict::Failed, format!("no data ({why})")),
        };
        if verdict == Verdict::Failed {
            warn!(trigger = %self.name, metric = self.source.name(), %reason, "Trigger failed: no data.");
        } else {
            info!(trigger = %self.name, metric = self.source.name(), %reason, "No data.");
        }
        let decision = Decision::new(&self.name, direction, verdict, nodes, reason)
            .with_values(eval.value, Some(self.threshold()));
        view.report(Event::Decided(Box::new(decision)));
    }

    /// A sample could not be taken: says so (log and event); the caller
    /// then takes it as no data.
    fn sample_error(&self, view: &ClusterView, node: Option<String>, error: String) {
        warn!(trigger = %self.name, metric = self.source.name(), node = ?node, %error, "Could not read the counter.");
        view.report(Event::SampleFailed {
            trigger: self.name.clone(),
            metric: self.source.name().to_owned(),
            node,
            error,
        });
    }

    /// Reads the source once; `Err` says why there is no data.
    async fn read(&self, view: &ClusterView, cluster: &Cluster) -> Result<Vec<Sample>, String> {
        match tokio::time::timeout(self.interval, self.source.sample(cluster)).await {
            Ok(Ok(samples)) => Ok(samples),
            Ok(Err(e)) => {
                let error = e.to_string();
                self.sample_error(view, e.node().map(str::to_owned), error.clone());
                Err(error)
            }
            Err(_) => {
                let error = format!(
                    "reading the counter took longer than the interval ({})",
                    humantime::format_duration(self.interval)
                );
                self.sample_error(view, None, error.clone());
                Err(error)
            }
        }
    }
}

impl fmt::Display for ThresholdTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.name, self.source.name())
    }
}

#[async_trait]
impl Trigger for ThresholdTrigger {
    fn name(&self) -> &str {
        &self.name
    }

    fn bind(&mut self, direction: Direction) {
        self.direction = Some(direction);
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn next(&mut self, cluster: &ClusterView) -> Option<Fire> {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !self.enabled.load(Ordering::Relaxed) {
                self.breach_since = None;
                cluster.forget(&self.name);
                continue;
            }
            let snapshot = cluster.snapshot();
            let eval = match self.read(cluster, &snapshot).await {
                Ok(samples) => self.evaluate(Instant::now(), &snapshot, &samples),
                Err(why) => self.missing_data(Instant::now(), &snapshot, why),
            };
            let held = eval.no_data.is_some() && eval.value.is_none();
            cluster.observe(
                &self.name,
                Opinion {
                    breaching: (!held).then_some(eval.breaching),
                    value: eval.value,
                    threshold: Some(self.threshold()),
                },
            );
            if let Some(why) = &eval.no_data {
                self.report_no_data(cluster, &eval, why);
            }
            debug!(trigger = %self.name, value = ?eval.value, breaching = eval.breaching, "Counter sampled.");
            if let Some(fire) = eval.fire {
                info!(trigger = %self.name, reason = %fire.reason, "Trigger fired.");
                return Some(fire);
            }
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
