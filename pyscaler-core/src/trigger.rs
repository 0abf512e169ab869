//! Triggers: what starts a run. A person (`ManualTrigger`) or a counter that
//! stays past a threshold for a while (`ThresholdTrigger`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch, Mutex};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{Cluster, Error, Event, Result};

/// A trigger fired: the name of the trigger and why, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fire {
    /// The trigger's name.
    pub trigger: String,
    /// Why it fired.
    pub reason: String,
}

/// The scaler's current view of the cluster, as triggers see it, and where
/// triggers report what they observe (a counter that could not be read) to
/// the scaler's subscribers.
#[derive(Debug, Clone)]
pub struct ClusterView {
    cluster: watch::Receiver<Cluster>,
    events: Option<broadcast::Sender<Event>>,
}

impl ClusterView {
    /// A view that is updated through the returned sender; what triggers
    /// report goes nowhere until [`with_events`](Self::with_events).
    pub fn new(cluster: Cluster) -> (watch::Sender<Cluster>, Self) {
        let (tx, rx) = watch::channel(cluster);
        (
            tx,
            Self {
                cluster: rx,
                events: None,
            },
        )
    }

    /// Sends what triggers report to `events` (the scaler's subscribers).
    pub fn with_events(mut self, events: broadcast::Sender<Event>) -> Self {
        self.events = Some(events);
        self
    }

    /// The cluster as it is now.
    pub fn snapshot(&self) -> Cluster {
        self.cluster.borrow().clone()
    }

    /// Tells the subscribers about `event`; without subscribers it is dropped.
    pub fn report(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }
}

/// Something that decides when a run starts.
#[async_trait]
pub trait Trigger: Send + Sync + fmt::Debug {
    /// The trigger's name.
    fn name(&self) -> &str;

    /// Waits until the trigger fires; `None` when it never will again.
    async fn next(&mut self, cluster: &ClusterView) -> Option<Fire>;
}

/// A trigger a person pulls: a cloneable handle whose [`fire`](Self::fire) starts a run.
#[derive(Debug, Clone)]
pub struct ManualTrigger {
    name: String,
    tx: mpsc::UnboundedSender<String>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<String>>>,
}

impl ManualTrigger {
    /// A manual trigger called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            name: name.into(),
            tx,
            rx: Arc::new(Mutex::new(rx)),
        }
    }

    /// Asks for a run, saying why.
    pub fn fire(&self, reason: impl Into<String>) {
        // The receiver lives as long as any clone of this handle, so this cannot fail.
        let _ = self.tx.send(reason.into());
    }
}

#[async_trait]
impl Trigger for ManualTrigger {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, _cluster: &ClusterView) -> Option<Fire> {
        let reason = self.rx.lock().await.recv().await?;
        Some(Fire {
            trigger: self.name.clone(),
            reason,
        })
    }
}

/// One sample of a counter on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The node's name.
    pub node: String,
    /// The value read.
    pub value: f64,
}

/// Where counters come from: per-node samples for a cluster (load average over SSH, a JVM counter).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait MetricSource: Send + Sync {
    /// The counter's name (`load1`).
    fn name(&self) -> &str;

    /// One sample per node that could be read.
    ///
    /// # Errors
    /// When no sample could be taken; the trigger then reports it and does not fire.
    async fn sample(&self, cluster: &Cluster) -> Result<Vec<Sample>>;
}

/// How a value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Comparison {
    /// `<`
    #[serde(rename = "<")]
    Less,
    /// `<=`
    #[serde(rename = "<=")]
    LessOrEqual,
    /// `==`
    #[serde(rename = "==")]
    Equal,
    /// `>=`
    #[serde(rename = ">=")]
    GreaterOrEqual,
    /// `>`
    #[serde(rename = ">")]
    Greater,
}

impl Comparison {
    /// Whether `value <op> threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Less => value < threshold,
            Self::LessOrEqual => value <= threshold,
            Self::Equal => value == threshold,
            Self::GreaterOrEqual => value >= threshold,
            Self::Greater => value > threshold,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Equal => "==",
            Self::GreaterOrEqual => ">=",
            Self::Greater => ">",
        }
    }
}

/// How per-node samples become one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Aggregation {
    /// Breaching when any node breaches.
    AnyNode,
    /// Breaching when every node breaches.
    AllNodes,
    /// The average across nodes is compared.
    Average,
    /// The largest value is compared.
    Max,
}

/// What a failed sample counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSampleError {
    /// Not breaching: the sustain window restarts (the default; a failing counter never fires a run).
    #[default]
    NotBreaching,
    /// Ignored: the window neither restarts nor advances on this sample.
    Ignore,
}

/// The verdict of one evaluation of a [`ThresholdTrigger`].
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The aggregated value (for `AnyNode`/`AllNodes`, the largest value).
    pub value: Option<f64>,
    /// Whether the condition held on this sample.
    pub breaching: bool,
    /// Set when the trigger fires.
    pub fire: Option<Fire>,
}

/// Fires when a counter stays past a threshold for a whole window of time.
///
/// Every `interval` it reads a [`MetricSource`], aggregates across nodes and
/// compares with the threshold. The condition must hold on every sample for
/// `window` (a dip restarts it); after firing, it stays quiet for `cooldown`
/// and needs a new whole window of breaching samples, counted from the first
/// one after it fired.
#[derive(Debug)]
pub struct ThresholdTrigger {
    name: String,
    source: Arc<dyn MetricSource>,
    comparison: Comparison,
    threshold: f64,
    aggregation: Aggregation,
    interval: Duration,
    window: Duration,
    cooldown: Duration,
    on_error: OnSampleError,
    enabled: Arc<AtomicBool>,
    breach_since: Option<Instant>,
    last_fired: Option<Instant>,
}

impl fmt::Debug for dyn MetricSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetricSource({})", self.name())
    }
}

/// Builds a [`ThresholdTrigger`].
#[derive(Debug)]
pub struct ThresholdTriggerBuilder {
    name: String,
    source: Arc<dyn MetricSource>,
    comparison: Comparison,
    threshold: Option<f64>,
    aggregation: Aggregation,
    interval: Duration,
    window: Duration,
    cooldown: Duration,
    on_error: OnSampleError,
    enabled: bool,
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

    /// How long the condition must hold before firing (default 5 min).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How long to stay quiet after firing (default 10 min).
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// What a failed sample counts as (default: not breaching).
    pub fn on_sample_error(mut self, on_error: OnSampleError) -> Self {
        self.on_error = on_error;
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
    /// [`Error::InvalidConfig`] when no threshold was set, the threshold is not
    /// a number, or the interval is zero.
    pub fn build(self) -> Result<ThresholdTrigger> {
        let threshold = self.threshold.ok_or_else(|| {
            Error::InvalidConfig(format!(
                "trigger `{}` has no threshold; call .when(...)",
                self.name
            ))
        })?;
        if !threshold.is_finite() {
            return Err(Error::InvalidConfig(format!(
                "trigger `{}`: the threshold must be a finite number",
                self.name
            )));
        }
        if self.interval.is_zero() {
            return Err(Error::InvalidConfig(format!(
                "trigger `{}`: the interval must be above zero",
                self.name
            )));
        }
        Ok(ThresholdTrigger {
            name: self.name,
            source: self.source,
            comparison: self.comparison,
            threshold,
            aggregation: self.aggregation,
            interval: self.interval,
            window: self.window,
            cooldown: self.cooldown,
            on_error: self.on_error,
            enabled: Arc::new(AtomicBool::new(self.enabled)),
            breach_since: None,
            last_fired: None,
        })
    }
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
            window: Duration::from_secs(300),
            cooldown: Duration::from_secs(600),
            on_error: OnSampleError::default(),
            enabled: true,
        }
    }

    /// A switch that enables or disables the trigger while it runs.
    pub fn switch(&self) -> Arc<AtomicBool> {
        self.enabled.clone()
    }

    /// Judges one round of samples taken at `now`; fires when the condition has
    /// held for the whole window and the cooldown is over.
    pub fn evaluate(&mut self, now: Instant, samples: &[Sample]) -> Evaluation {
        let (value, breaching) = self.aggregate(samples);
        if !breaching {
            self.breach_since = None;
            return Evaluation {
                value,
                breaching,
                fire: None,
            };
        }
        let since = *self.breach_since.get_or_insert(now);
        let held = now.duration_since(since);
        let cooling = self
            .last_fired
            .is_some_and(|t| now.duration_since(t) < self.cooldown);
        if held < self.window || cooling {
            return Evaluation {
                value,
                breaching,
                fire: None,
            };
        }
        self.breach_since = None;
        self.last_fired = Some(now);
        let shown = value.map(|v| format!("{v:.2}")).unwrap_or_default();
        let fire = Fire {
            trigger: self.name.clone(),
            reason: format!(
                "{} {:?} {shown} {} {} for {}",
                self.source.name(),
                self.aggregation,
                self.comparison.symbol(),
                self.threshold,
                humantime::format_duration(Duration::from_secs(held.as_secs()))
            ),
        };
        Evaluation {
            value,
            breaching,
            fire: Some(fire),
        }
    }

    /// A sample could not be taken: says so (log and event), then counts it
    /// as `on_error` says.
    fn sample_error(&mut self, view: &ClusterView, node: Option<String>, error: String) {
        warn!(trigger = %self.name, metric = self.source.name(), node = ?node, %error, "Could not read the counter.");
        view.report(Event::SampleFailed {
            trigger: self.name.clone(),
            metric: self.source.name().to_owned(),
            node,
            error,
        });
        if self.on_error == OnSampleError::NotBreaching {
            self.breach_since = None;
        }
    }

    fn aggregate(&self, samples: &[Sample]) -> (Option<f64>, bool) {
        if samples.is_empty() {
            return (None, false);
        }
        let (op, t) = (self.comparison, self.threshold);
        let max = samples
            .iter()
            .map(|s| s.value)
            .fold(f64::NEG_INFINITY, f64::max);
        match self.aggregation {
            Aggregation::AnyNode => (Some(max), samples.iter().any(|s| op.holds(s.value, t))),
            Aggregation::AllNodes => (Some(max), samples.iter().all(|s| op.holds(s.value, t))),
            Aggregation::Max => (Some(max), op.holds(max, t)),
            Aggregation::Average => {
                let avg = samples.iter().map(|s| s.value).sum::<f64>() / samples.len() as f64;
                (Some(avg), op.holds(avg, t))
            }
        }
    }
}

#[async_trait]
impl Trigger for ThresholdTrigger {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, cluster: &ClusterView) -> Option<Fire> {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !self.enabled.load(Ordering::Relaxed) {
                self.breach_since = None;
                continue;
            }
            let snapshot = cluster.snapshot();
            let sampled = tokio::time::timeout(self.interval, self.source.sample(&snapshot)).await;
            let samples = match sampled {
                Ok(Ok(samples)) => samples,
                Ok(Err(e)) => {
                    self.sample_error(cluster, e.node().map(str::to_owned), e.to_string());
                    continue;
                }
                Err(_) => {
                    let error = format!(
                        "reading the counter took longer than the interval ({})",
                        humantime::format_duration(self.interval)
                    );
                    self.sample_error(cluster, None, error);
                    continue;
                }
            };
            let eval = self.evaluate(Instant::now(), &samples);
            debug!(trigger = %self.name, value = ?eval.value, breaching = eval.breaching, "Counter sampled.");
            if let Some(fire) = eval.fire {
                info!(trigger = %self.name, reason = %fire.reason, "Trigger fired.");
                return Some(fire);
            }
        }
    }
}

#[cfg(test)]
#[path = "trigger_tests.rs"]
mod tests;
