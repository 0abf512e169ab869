//! Triggers: what starts a run. A person ([`ManualTrigger`]) or a counter
//! that stays past a threshold for a while
//! ([`ThresholdTrigger`](crate::ThresholdTrigger)).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch, Mutex};
use tokio::time::Instant;

use crate::{Cluster, Direction, Event};

/// A trigger fired: the name of the trigger and why, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fire {
    /// The trigger's name.
    pub trigger: String,
    /// Why it fired.
    pub reason: String,
    /// How many nodes it asks for; `None` leaves it to the pipeline's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
}

impl Fire {
    /// `trigger` fired, saying why; the pipeline decides how many nodes.
    pub fn new(trigger: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            trigger: trigger.into(),
            reason: reason.into(),
            nodes: None,
        }
    }

    /// Asking for `nodes` nodes.
    #[must_use]
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = Some(nodes);
        self
    }
}

/// What an automatic trigger thinks of the cluster at its latest
/// evaluation, as the scaler reads it to combine several triggers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Opinion {
    /// Whether its condition holds; `None` when it has no data.
    pub breaching: Option<bool>,
    /// Its value, when it had one.
    pub value: Option<f64>,
    /// The threshold (or target) it compares with.
    pub threshold: Option<f64>,
}

/// The scaler's current view of the cluster, as triggers see it; where
/// triggers report what they observe (a counter that could not be read) to
/// the scaler's subscribers, and leave their latest [`Opinion`].
///
/// What a trigger leaves here is also what the scaler's metrics and its
/// liveness check see: each [`observe`](Self::observe) is one evaluation
/// (counted, with its value and threshold) and a heartbeat of the trigger's
/// loop, as is a [`forget`](Self::forget) of a disabled trigger; a trigger
/// that stops leaving either is stalled ([`ScalerBuilder::stalled_after`](crate::ScalerBuilder::stalled_after)).
#[derive(Debug, Clone)]
pub struct ClusterView {
    cluster: watch::Receiver<Cluster>,
    events: Option<broadcast::Sender<Event>>,
    opinions: Arc<std::sync::Mutex<HashMap<String, Opinion>>>,
    beats: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
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
                opinions: Arc::default(),
                beats: Arc::default(),
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
        let cluster = self.cluster.borrow().name().to_owned();
        let scope = crate::observe::Scope {
            cluster: &cluster,
            pipeline: "",
        };
        crate::observe::record(scope, &event);
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    /// Leaves `trigger`'s latest opinion, replacing the one before.
    /// One evaluation of `trigger`, recorded in the metrics.
    pub fn observe(&self, trigger: &str, opinion: Opinion) {
        let cluster = self.cluster.borrow().name().to_owned();
        crate::observe::evaluation(
            &cluster,
            trigger,
            opinion.breaching,
            opinion.value,
            opinion.threshold,
        );
        {
            let mut opinions = self.opinions.lock().unwrap_or_else(|e| e.into_inner());
            opinions.insert(trigger.to_owned(), opinion);
        }
        self.beat(&cluster, trigger);
    }

    /// Takes `trigger`'s opinion away: a disabled trigger has no say (its
    /// loop is alive all the same: this is a heartbeat too).
    pub fn forget(&self, trigger: &str) {
        {
            let mut opinions = self.opinions.lock().unwrap_or_else(|e| e.into_inner());
            opinions.remove(trigger);
        }
        let cluster = self.cluster.borrow().name().to_owned();
        self.beat(&cluster, trigger);
    }

    fn beat(&self, cluster: &str, trigger: &str) {
        crate::observe::heartbeat(cluster, trigger);
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats.insert(trigger.to_owned(), Instant::now());
    }

    /// When `trigger`'s loop last went round (an evaluation finished, or it
    /// found itself disabled); `None` when it never did.
    pub fn last_heartbeat(&self, trigger: &str) -> Option<Instant> {
        let beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats.get(trigger).copied()
    }

    /// `trigger`'s latest opinion; `None` when it never left one (a manual trigger).
    pub fn opinion(&self, trigger: &str) -> Option<Opinion> {
        let opinions = self.opinions.lock().unwrap_or_else(|e| e.into_inner());
        opinions.get(trigger).copied()
    }
}

/// Something that decides when a run starts.
#[async_trait]
pub trait Trigger: Send + Sync + fmt::Debug {
    /// The trigger's name.
    fn name(&self) -> &str;

    /// Waits until the trigger fires; `None` when it never will again.
    async fn next(&mut self, cluster: &ClusterView) -> Option<Fire>;

    /// Called once when the trigger is bound to a pipeline that scales in
    /// `direction`, before it first runs: a trigger whose defaults depend on
    /// the direction (a longer window for a scale-in) takes them here. The
    /// default does nothing.
    fn bind(&mut self, direction: Direction) {
        let _ = direction;
    }

    /// How often it evaluates, when it does so on a clock; the scaler then
    /// expects an evaluation (a [`ClusterView::observe`] or
    /// [`ClusterView::forget`]) at least every 3 intervals, and reports a
    /// stall otherwise. The default, `None` (a person pulls it), is never
    /// stalled.
    fn interval(&self) -> Option<Duration> {
        None
    }
}

/// A trigger a person pulls: a cloneable handle whose [`fire`](Self::fire) starts a run.
#[derive(Debug, Clone)]
pub struct ManualTrigger {
    name: String,
    tx: mpsc::UnboundedSender<Fire>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Fire>>>,
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

    /// Asks for a run, saying why; the pipeline's steps say how many nodes.
    pub fn fire(&self, reason: impl Into<String>) {
        self.send(Fire::new(self.name.clone(), reason));
    }

    /// Asks for a run that adds or removes `nodes` nodes, saying why (the
    /// scaler caps it by its bounds, as any trigger's step).
    pub fn fire_nodes(&self, nodes: usize, reason: impl Into<String>) {
        self.send(Fire::new(self.name.clone(), reason).nodes(nodes));
    }

    fn send(&self, fire: Fire) {
        // The receiver lives as long as any clone of this handle, so this cannot fail.
        let _ = self.tx.send(fire);
    }
}

#[async_trait]
impl Trigger for ManualTrigger {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self, _cluster: &ClusterView) -> Option<Fire> {
        self.rx.lock().await.recv().await
    }
}

#[cfg(test)]
#[path = "trigger_tests.rs"]
mod tests;
