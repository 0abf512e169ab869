//! The controller loop: triggers bound to pipelines, with bounds,
//! cooldowns, caps and pauses per direction, and a decision event for every
//! firing, taken or skipped.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::journal::Journal;
use crate::recovery::Recovery;
use crate::trigger::ClusterView;
use crate::{
    Cluster, Context, Decision, Direction, Event, Fire, HeldLease, Lease, LeaseTiming, Pipeline,
    RunReport, Skip, Trigger, TriggerInfo, Verdict,
};

mod builder;
mod controls;
mod decide;
mod decision_log;
mod liveness;

pub use builder::ScalerBuilder;
pub use controls::ScalerControls;
use controls::{slot, Protect};

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
        /// Why nothing ran, as a kind.
        skip: Skip,
    },
}

struct Binding {
    trigger: Box<dyn Trigger>,
    direction: Direction,
    pipeline: Arc<Pipeline>,
}

/// The controller loop of one cluster.
///
/// Triggers are watched together; when one fires, the scaler decides: a
/// run starts unless the direction is paused ([`ScalerControls`]), the
/// cluster is at its bound for that direction, the direction is cooling
/// down, every node a scale-in could pick is protected, or — for a
/// scale-in — another trigger watching the cluster does not agree (scale
/// out if any trigger says out; scale in only if every scale-in trigger
/// agrees and no scale-out trigger breaches). A trigger's step
/// ([`NodeStep`](crate::NodeStep)) is capped by [`ScalerBuilder::max_step`]
/// and the bounds and handed to the run ([`TriggerInfo::nodes`]). Every
/// decision is an [`Event::Decided`] with the values that led to it.
///
/// Each trigger on a clock ([`Trigger::interval`]) is watched: one that has
/// not finished an evaluation within its bound (3 intervals, or
/// [`ScalerBuilder::stalled_after`]) is reported as
/// [`Event::EvaluationStalled`].
///
/// At most one run happens at a time: triggers that fire during a run are
/// coalesced into it. Cancelling the token given to [`run`](Self::run)
/// stops the loop; a run in progress finishes its current step and is
/// undone, never dropped mid-step.
pub struct Scaler {
    recovery: Option<Recovery>,
    lease: Option<(Arc<dyn Lease>, LeaseTiming)>,
    held: Option<HeldLease>,
    cluster: Cluster,
    bindings: Vec<Binding>,
    /// Each bound trigger's name and direction, by binding.
    watchers: Vec<(String, Direction)>,
    min_nodes: usize,
    max_nodes: usize,
    cooldowns: [Duration; 2],
    max_step: [Option<usize>; 2],
    stalled_after: Option<Duration>,
    decisions: Option<Arc<dyn Journal>>,
    events: broadcast::Sender<Event>,
    controls: ScalerControls,
    protect: Option<mpsc::UnboundedReceiver<Protect>>,
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
            cooldowns: [Duration::from_secs(300), Duration::from_secs(600)],
            max_step: [None, None],
            lease: None,
            held: None,
            stalled_after: None,
            decisions: None,
        }
    }

    /// Scaler events (trigger fired, decisions, runs) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// A handle to pause and resume a direction and to protect nodes while
    /// the scaler runs.
    pub fn controls(&self) -> ScalerControls {
        self.controls.clone()
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
        // Under a lease, everything below stops the moment it is lost.
        let held = match (self.held.take(), self.lease.clone()) {
            (Some(held), _) => Some(held),
            (None, None) => None,
            (None, Some((lease, timing))) => {
                match HeldLease::acquire(lease, timing, &shutdown).await {
                    Ok(Some(held)) => Some(held),
                    Ok(None) => return Vec::new(),
                    Err(e) => {
                        warn!(error = %e, "Could not take the cluster's lease; not scaling.");
                        return Vec::new();
                    }
                }
            }
        };
        let shutdown = match &held {
            None => shutdown,
            Some(held) => {
                let grant = held.grant();
                info!(owner = %grant.owner, epoch = grant.epoch, "Holding the cluster's lease.");
                crate::observe::lease_held(self.cluster.name(), true);
                let _ = self.events.send(Event::LeaseAcquired {
                    owner: grant.owner,
                    epoch: grant.epoch,
                });
                let stop = shutdown.child_token();
                let (lost, s) = (held.lost().clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = lost.cancelled() => s.cancel(),
                        _ = s.cancelled() => {}
                    }
                });
                stop
            }
        };
        let bound: Vec<(Direction, Arc<Pipeline>)> = self
            .bindings
            .iter()
            .map(|b| (b.direction, b.pipeline.clone()))
            .collect();
        if let Some(held) = &held {
            self.recovery = self.recovery.take().map(|r| r.under_lease(held));
        }
        // Subscribed first, so it sees every decision from the start.
        let decision_log = self.decisions.clone().map(|journal| {
            let stop = CancellationToken::new();
            let log = decision_log::DecisionLog::new(journal, self.cluster.name().to_owned());
            let task = tokio::spawn(log.run(self.events.subscribe(), stop.clone()));
            (stop, task)
        });
        self.recover(&bound).await;
        crate::observe::cluster_size(self.cluster.name(), self.cluster.len());
        let (cluster_tx, view) = ClusterView::new(self.cluster.clone());
        let view = view.with_events(self.events.clone());
        let (fire_tx, mut fires) = mpsc::channel::<(usize, Fire)>(64);
        let watched = self.bindings.iter().filter_map(|b| {
            let bound = self.stalled_after.or(b.trigger.interval().map(|i| i * 3))?;
            Some((b.trigger.name().to_owned(), bound))
        });
        let watchdog = liveness::Watchdog::new(watched.collect(), self.events.clone())
            .map(|w| tokio::spawn(w.run(view.clone())));
        let mut tasks = tokio::task::JoinSet::new();
        let mut pipelines = Vec::new();
        for (i, binding) in std::mem::take(&mut self.bindings).into_iter().enumerate() {
            pipelines.push(binding.pipeline);
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
        let mut protect = self.protect.take();

        let mut outcomes = Vec::new();
        let mut last_run: [Option<Instant>; 2] = [None, None];
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => None,
                Some(change) = recv(&mut protect) => {
                    self.apply(change, &cluster_tx);
                    continue;
                }
                next = fires.recv() => next,
            };
            let Some((i, fire)) = next else { break };
            let pipeline = pipelines[i].clone();
            let direction = self.watchers[i].1;
            let _ = self.events.send(Event::TriggerFired {
                trigger: fire.trigger.clone(),
                reason: fire.reason.clone(),
            });
            let go = match self.decide(i, &fire, &pipeline, &last_run, &view) {
                Ok(go) => go,
                Err(no) => {
                    outcomes.push(self.skip(&fire, direction, no.skip, no.reason, &view));
                    continue;
                }
            };
            info!(trigger = %fire.trigger, reason = %fire.reason, %direction, nodes = ?go.nodes, pipeline = pipeline.name(), "Starting a run.");
            // The run's report says which triggers decided, when more than one did.
            let reason = match go.triggers.as_slice() {
                [_, _, ..] => format!("{} (agreed: {})", fire.reason, go.triggers.join(", ")),
                _ => fire.reason.clone(),
            };
            let mut trigger = TriggerInfo::new(&fire.trigger, reason.clone());
            trigger.nodes = go.nodes;
            let mut ctx = Context::new(self.cluster.clone())
                .with_trigger(trigger)
                .with_cancellation(shutdown.child_token());
            if let Some(held) = &held {
                ctx = ctx.with_lease(held.lost().clone());
            }
            let mut decision = self.decision(&fire, direction, Verdict::Scale, &reason, &view);
            decision.change = go.nodes.unwrap_or(0);
            decision.triggers = go.triggers;
            decision.run_id = Some(ctx.run_id().clone());
            self.decided(decision);
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
                let late_direction = self.watchers[j].1;
                outcomes.push(self.skip(
                    &late,
                    late_direction,
                    Skip::RunInProgress,
                    "a run was in progress when it fired".into(),
                    &view,
                ));
            }
        }
        tasks.abort_all();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        if let Some((stop, task)) = decision_log {
            stop.cancel();
            let _ = task.await;
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(trigger) = done {
                tracing::debug!(trigger = trigger.name(), "Trigger stopped.");
            }
        }
        self.protect = protect;
        if let Some(held) = held {
            let grant = held.grant();
            crate::observe::lease_held(self.cluster.name(), false);
            if held.is_held() {
                held.release().await;
            } else {
                warn!(owner = %grant.owner, epoch = grant.epoch, "Lost the cluster's lease: stopped.");
                let _ = self.events.send(Event::LeaseLost {
                    owner: grant.owner,
                    epoch: grant.epoch,
                });
            }
        }
        outcomes
    }

    /// Marks or unmarks a node protected in the scaler's view.
    fn apply(&mut self, change: Protect, cluster_tx: &watch::Sender<Cluster>) {
        match self.cluster.node_mut(&change.node) {
            Some(node) => {
                node.set_protected(change.protected);
                info!(node = %node.name, protected = change.protected, "Scale-in protection changed.");
                let _ = cluster_tx.send(self.cluster.clone());
            }
            None => warn!(node = %change.node, "No such node to protect or unprotect."),
        }
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

    /// A decision on `fire`, with the trigger's latest values.
    fn decision(
        &self,
        fire: &Fire,
        direction: Direction,
        verdict: Verdict,
        reason: &str,
        view: &ClusterView,
    ) -> Decision {
        let opinion = view.opinion(&fire.trigger).unwrap_or_default();
        Decision::new(
            &fire.trigger,
            direction,
            verdict,
            self.cluster.len(),
            reason,
        )
        .with_values(opinion.value, opinion.threshold)
    }

    /// Records `decision` in the metrics and tells the subscribers.
    fn decided(&self, decision: Decision) {
        let event = Event::Decided(Box::new(decision));
        let scope = crate::observe::Scope {
            cluster: self.cluster.name(),
            pipeline: "",
        };
        crate::observe::record(scope, &event);
        let _ = self.events.send(event);
    }

    fn skip(
        &self,
        fire: &Fire,
        direction: Direction,
        skip: Skip,
        reason: String,
        view: &ClusterView,
    ) -> ScalerOutcome {
        info!(trigger = %fire.trigger, %direction, %reason, "Run skipped.");
        let decision = self.decision(fire, direction, Verdict::Skipped(skip), &reason, view);
        self.decided(decision);
        ScalerOutcome::Skipped {
            trigger: fire.trigger.clone(),
            direction,
            reason,
            skip,
        }
    }
}

/// The next protection change, or never when there is no channel.
async fn recv(rx: &mut Option<mpsc::UnboundedReceiver<Protect>>) -> Option<Protect> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod decision_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod tests;
