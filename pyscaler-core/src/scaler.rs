//! The controller loop: triggers bound to pipelines, with bounds and cooldowns.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::recovery::Recovery;
use crate::trigger::ClusterView;
use crate::{
    Cluster, Context, Error, Event, Fire, Pipeline, Result, RunReport, Trigger, TriggerInfo,
};

/// Which way a pipeline scales the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Adds nodes.
    Out,
    /// Removes nodes.
    In,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Out => "scale-out",
            Self::In => "scale-in",
        })
    }
}

/// What the scaler did with one firing of a trigger.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ScalerOutcome {
    /// A run happened.
    Ran(Box<RunReport>),
    /// No run happened, and why.
    Skipped {
        /// The trigger that fired.
        trigger: String,
        /// The direction it asked for.
        direction: Direction,
        /// Why nothing ran.
        reason: String,
    },
}

struct Binding {
    trigger: Box<dyn Trigger>,
    direction: Direction,
    pipeline: Arc<Pipeline>,
}

/// Builds a [`Scaler`].
pub struct ScalerBuilder {
    recovery: Option<Recovery>,
    cluster: Cluster,
    bindings: Vec<Binding>,
    min_nodes: usize,
    max_nodes: usize,
    cooldown_out: Duration,
    cooldown_in: Duration,
}

impl fmt::Debug for ScalerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScalerBuilder")
            .field("cluster", &self.cluster.name())
            .field("bindings", &self.bindings.len())
            .field("min_nodes", &self.min_nodes)
            .field("max_nodes", &self.max_nodes)
            .finish_non_exhaustive()
    }
}

impl ScalerBuilder {
    /// Runs `pipeline` when `trigger` fires; `direction` says whether it adds or removes nodes.
    pub fn bind(
        mut self,
        trigger: impl Trigger + 'static,
        direction: Direction,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        self.bindings.push(Binding {
            trigger: Box::new(trigger),
            direction,
            pipeline,
        });
        self
    }

    /// The fewest nodes the cluster may have: a scale-in at this size, or one
    /// whose pipeline would remove more nodes than are above it, is skipped (default 1).
    pub fn min_nodes(mut self, n: usize) -> Self {
        self.min_nodes = n;
        self
    }

    /// The most nodes the cluster may have: a scale-out at this size, or one
    /// whose pipeline would add more nodes than fit under it, is skipped (default 10).
    pub fn max_nodes(mut self, n: usize) -> Self {
        self.max_nodes = n;
        self
    }

    /// How long after a run in `direction` another run in that direction is skipped.
    pub fn cooldown(mut self, direction: Direction, d: Duration) -> Self {
        match direction {
            Direction::Out => self.cooldown_out = d,
            Direction::In => self.cooldown_in = d,
        }
        self
    }

    /// Before watching triggers, recovers the runs a controller that died
    /// mid-run left unfinished with `recovery`, and takes the nodes of each
    /// run it undid out of the cluster. The pipelines bound to the scaler
    /// are added to the ones `recovery` dispatches to.
    pub fn recover_first(mut self, recovery: Recovery) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// Checks and builds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when no trigger is bound or `min_nodes > max_nodes`.
    pub fn build(self) -> Result<Scaler> {
        if self.bindings.is_empty() {
            return Err(Error::InvalidConfig(
                "the scaler has no trigger bound to a pipeline".into(),
            ));
        }
        if self.min_nodes > self.max_nodes {
            return Err(Error::InvalidConfig(format!(
                "min_nodes ({}) is above max_nodes ({})",
                self.min_nodes, self.max_nodes
            )));
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Scaler {
            recovery: self.recovery,
            cluster: self.cluster,
            bindings: self.bindings,
            min_nodes: self.min_nodes,
            max_nodes: self.max_nodes,
            cooldown_out: self.cooldown_out,
            cooldown_in: self.cooldown_in,
            events,
        })
    }
}

/// The controller loop of one cluster.
///
/// Triggers are watched together; when one fires, the bound pipeline runs —
/// unless the cluster is at its bound for that direction or the direction is
/// cooling down, which is reported as a skipped run. At most one run happens
/// at a time: triggers that fire during a run are coalesced into it.
/// Cancelling the token given to [`run`](Self::run) stops the loop; a run in
/// progress finishes its current step and is undone, never dropped mid-step.
pub struct Scaler {
    recovery: Option<Recovery>,
    cluster: Cluster,
    bindings: Vec<Binding>,
    min_nodes: usize,
    max_nodes: usize,
    cooldown_out: Duration,
    cooldown_in: Duration,
    events: broadcast::Sender<Event>,
}

impl fmt::Debug for Scaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scaler")
            .field("cluster", &self.cluster.name())
            .field("nodes", &self.cluster.len())
            .field("min_nodes", &self.min_nodes)
            .field("max_nodes", &self.max_nodes)
            .finish_non_exhaustive()
    }
}

impl Scaler {
    /// Starts building a scaler for `cluster`.
    pub fn builder(cluster: Cluster) -> ScalerBuilder {
        ScalerBuilder {
            recovery: None,
            cluster,
            bindings: Vec::new(),
            min_nodes: 1,
            max_nodes: 10,
            cooldown_out: Duration::from_secs(300),
            cooldown_in: Duration::from_secs(600),
        }
    }

    /// Scaler events (trigger fired, run skipped, run finished) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The cluster as the scaler sees it.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Watches the triggers and runs pipelines until `shutdown` is cancelled
    /// or every trigger is done; returns what happened, in order.
    pub async fn run(&mut self, shutdown: CancellationToken) -> Vec<ScalerOutcome> {
        let span = info_span!("scaler", cluster = %self.cluster.name());
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(&mut self, shutdown: CancellationToken) -> Vec<ScalerOutcome> {
        let bound: Vec<(Direction, Arc<Pipeline>)> = self
            .bindings
            .iter()
            .map(|b| (b.direction, b.pipeline.clone()))
            .collect();
        self.recover(&bound).await;
        let (cluster_tx, view) = ClusterView::new(self.cluster.clone());
        let view = view.with_events(self.events.clone());
        let (fire_tx, mut fires) = mpsc::channel::<(usize, Fire)>(64);
        let mut tasks = tokio::task::JoinSet::new();
        let mut pipelines = Vec::new();
        for (i, binding) in std::mem::take(&mut self.bindings).into_iter().enumerate() {
            pipelines.push((binding.direction, binding.pipeline));
            let mut trigger = binding.trigger;
            let (tx, view, stop) = (fire_tx.clone(), view.clone(), shutdown.clone());
            tasks.spawn(async move {
                loop {
                    let fire = tokio::select! {
                        _ = stop.cancelled() => break,
                        fire = trigger.next(&view) => fire,
                    };
                    let Some(fire) = fire else { break };
                    if tx.send((i, fire)).await.is_err() {
                        break;
                    }
                }
                trigger
            });
        }
        drop(fire_tx);

        let mut outcomes = Vec::new();
        let mut last_run: [Option<Instant>; 2] = [None, None];
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => None,
                next = fires.recv() => next,
            };
            let Some((i, fire)) = next else { break };
            let (direction, pipeline) = pipelines[i].clone();
            let _ = self.events.send(Event::TriggerFired {
                trigger: fire.trigger.clone(),
                reason: fire.reason.clone(),
            });
            if let Some(reason) = self.refusal(direction, &pipeline, &last_run) {
                outcomes.push(self.skip(&fire, direction, reason));
                continue;
            }
            info!(trigger = %fire.trigger, reason = %fire.reason, %direction, pipeline = pipeline.name(), "Starting a run.");
            let mut ctx = Context::new(self.cluster.clone())
                .with_trigger(TriggerInfo::new(&fire.trigger, &fire.reason))
                .with_cancellation(shutdown.child_token());
            let report = pipeline.run(&mut ctx).await;
            self.cluster = ctx.cluster().clone();
            let _ = cluster_tx.send(self.cluster.clone());
            last_run[slot(direction)] = Some(Instant::now());
            let _ = self.events.send(Event::RunFinished {
                run_id: report.run_id.clone(),
                status: report.status,
                report: Box::new(report.clone()),
            });
            outcomes.push(ScalerOutcome::Ran(Box::new(report)));
            while let Ok((j, late)) = fires.try_recv() {
                // Each late fire is reported with its own binding's direction.
                let (late_direction, _) = &pipelines[j];
                outcomes.push(self.skip(
                    &late,
                    *late_direction,
                    "a run was in progress when it fired".into(),
                ));
            }
        }
        tasks.abort_all();
        while let Some(done) = tasks.join_next().await {
            if let Ok(trigger) = done {
                tracing::debug!(trigger = trigger.name(), "Trigger stopped.");
            }
        }
        outcomes
    }

    /// Recovers the runs the journal shows as unfinished, and takes the nodes
    /// of each run undone out of the cluster: they are gone.
    async fn recover(&mut self, pipelines: &[(Direction, Arc<Pipeline>)]) {
        let Some(mut recovery) = self.recovery.clone() else {
            return;
        };
        for (_, pipeline) in pipelines {
            if !recovery.knows(pipeline.name()) {
                recovery = recovery.pipeline(pipeline.clone());
            }
        }
        let report = match recovery.run(&self.cluster).await {
            Ok(report) => report,
            Err(e) => {
                warn!(error = %e, "Could not recover the unfinished runs.");
                return;
            }
        };
        for r in &report.runs {
            if let Some(e) = &r.error {
                warn!(run_id = %r.run_id, error = %e, "Could not recover an unfinished run; will try again at the next start.");
                continue;
            }
            info!(run_id = %r.run_id, action = ?r.action, undone = ?r.undone, cleanup = ?r.cleanup, "Recovered an unfinished run.");
            for node in &r.nodes {
                if let Some(gone) = self.cluster.nodes().iter().find(|n| n.id == node.id) {
                    info!(run_id = %r.run_id, node = %gone.name, "Removed a node of the recovered run from the cluster.");
                    let _ = self.events.send(Event::NodeRemoved {
                        run_id: r.run_id.clone(),
                        node: gone.into(),
                    });
                }
            }
        }
        self.cluster = report.cluster;
    }

    fn refusal(
        &self,
        direction: Direction,
        pipeline: &Pipeline,
        last_run: &[Option<Instant>; 2],
    ) -> Option<String> {
        let n = self.cluster.len();
        let (added, removed) = pipeline.node_change();
        match direction {
            Direction::Out if n >= self.max_nodes => {
                return Some(format!(
                    "the cluster is at its maximum of {} nodes",
                    self.max_nodes
                ));
            }
            Direction::Out if n + added > self.max_nodes => {
                return Some(format!(
                    "adding {added} nodes to {n} would go past the maximum of {}",
                    self.max_nodes
                ));
            }
            Direction::In if n <= self.min_nodes => {
                return Some(format!(
                    "the cluster is at its minimum of {} nodes",
                    self.min_nodes
                ));
            }
            Direction::In if n < self.min_nodes + removed => {
                return Some(format!(
                    "removing {removed} nodes from {n} would go below the minimum of {}",
                    self.min_nodes
                ));
            }
            _ => {}
        }
        let cooldown = match direction {
            Direction::Out => self.cooldown_out,
            Direction::In => self.cooldown_in,
        };
        let since = last_run[slot(direction)]?.elapsed();
        (since < cooldown).then(|| {
            format!(
                "{direction} is cooling down ({} of {} left)",
                humantime::format_duration(Duration::from_secs((cooldown - since).as_secs())),
                humantime::format_duration(cooldown)
            )
        })
    }

    fn skip(&self, fire: &Fire, direction: Direction, reason: String) -> ScalerOutcome {
        info!(trigger = %fire.trigger, %direction, %reason, "Run skipped.");
        let _ = self.events.send(Event::RunSkipped {
            trigger: fire.trigger.clone(),
            reason: reason.clone(),
        });
        ScalerOutcome::Skipped {
            trigger: fire.trigger.clone(),
            direction,
            reason,
        }
    }
}

fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Out => 0,
        Direction::In => 1,
    }
}

#[cfg(test)]
#[path = "scaler_tests.rs"]
mod tests;
