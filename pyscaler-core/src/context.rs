//! The data a run carries from step to step.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::report::{NodeOutcome, NodeSummary, RunReport};
use crate::{Cluster, Event, Node, RunId, StepInfo, Target};

/// What started a run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerInfo {
    /// The trigger's name (`manual`, `cpu-high`).
    pub name: String,
    /// Why it fired, in words (`asked by alice`, `avg load 3.2 > 2 for 5m`).
    pub reason: String,
    /// How many nodes the decision asks the run to add or remove, when it
    /// says (a trigger with a [`NodeStep`](crate::NodeStep), capped by the
    /// scaler's bounds); `None` leaves it to the steps' own counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
}

impl TriggerInfo {
    /// A trigger description.
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reason: reason.into(),
            nodes: None,
        }
    }

    /// Asking the run for `nodes` nodes.
    #[must_use]
    pub fn with_nodes(mut self, nodes: usize) -> Self {
        self.nodes = Some(nodes);
        self
    }
}

impl Default for TriggerInfo {
    fn default() -> Self {
        Self::new("manual", "run by hand")
    }
}

/// Typed outputs of earlier steps, one value per type.
///
/// A step stores what later steps (or its own compensation) need as a type of
/// its own (`Launched { instance_ids }`), and reads it back by type.
#[derive(Default)]
pub struct Outputs {
    values: HashMap<TypeId, (&'static str, Box<dyn Any + Send + Sync>)>,
}

impl Outputs {
    /// Stores `value`, replacing any earlier value of the same type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<T> {
        self.values
            .insert(
                TypeId::of::<T>(),
                (std::any::type_name::<T>(), Box::new(value)),
            )
            .and_then(|(_, old)| old.downcast().ok().map(|b| *b))
    }

    /// The value of type `T`, if a step stored one.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// The value of type `T`, mutably.
    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.values
            .get_mut(&TypeId::of::<T>())
            .and_then(|(_, v)| v.downcast_mut())
    }

    /// Takes the value of type `T` out.
    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        self.values
            .remove(&TypeId::of::<T>())
            .and_then(|(_, v)| v.downcast().ok().map(|b| *b))
    }
}

impl fmt::Debug for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.values.values().map(|(n, _)| *n).collect();
        names.sort_unstable();
        f.debug_struct("Outputs").field("types", &names).finish()
    }
}

/// A stored output: its type's name (for `Debug`) and the value.
type Stored = (&'static str, Box<dyn Any + Send + Sync>);

/// Typed outputs kept per step: one value per (step name, type).
#[derive(Default)]
struct StepOutputs {
    values: HashMap<(String, TypeId), Stored>,
}

impl fmt::Debug for StepOutputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<String> = self
            .values
            .iter()
            .map(|((step, _), (ty, _))| format!("{step}: {ty}"))
            .collect();
        keys.sort_unstable();
        f.debug_struct("StepOutputs")
            .field("values", &keys)
            .finish()
    }
}

/// The step being run: its name, target, resolved nodes and per-node outcomes.
#[derive(Debug, Default)]
pub(crate) struct StepScope {
    pub(crate) name: String,
    pub(crate) target: Option<Target>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) outcomes: Vec<NodeOutcome>,
    pub(crate) attempts: u32,
}

/// Everything a run knows: its id, the cluster, the nodes it created, typed
/// outputs of earlier steps, template variables and a cancellation token.
///
/// Providers are not in here: an action is handed its providers when it is built.
pub struct Context {
    run_id: RunId,
    cluster: Cluster,
    new_nodes: Vec<Node>,
    removed_nodes: Vec<Node>,
    outputs: Outputs,
    step_outputs: StepOutputs,
    vars: BTreeMap<String, String>,
    trigger: TriggerInfo,
    cancel: CancellationToken,
    /// Cancelled when the controller loses the cluster's lease.
    lease_lost: Option<CancellationToken>,
    resumed: bool,
    recovering: bool,
    pub(crate) pipeline: String,
    pub(crate) step: StepScope,
    pub(crate) report: Option<RunReport>,
    pub(crate) events: Option<broadcast::Sender<Event>>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("run_id", &self.run_id)
            .field("cluster", &self.cluster.name())
            .field("nodes", &self.cluster.len())
            .field("new_nodes", &self.new_nodes.len())
            .field("outputs", &self.outputs)
            .field("step_outputs", &self.step_outputs)
            .field("trigger", &self.trigger)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for a new run on `cluster`, with a fresh run id.
    pub fn new(cluster: Cluster) -> Self {
        Self {
            run_id: RunId::generate(),
            cluster,
            new_nodes: Vec::new(),
            removed_nodes: Vec::new(),
            outputs: Outputs::default(),
            step_outputs: StepOutputs::default(),
            vars: BTreeMap::new(),
            trigger: TriggerInfo::default(),
            cancel: CancellationToken::new(),
            lease_lost: None,
            resumed: false,
            recovering: false,
            pipeline: String::new(),
            step: StepScope::default(),
            report: None,
            events: None,
        }
    }

    /// Uses this run id (to resume a run, or in tests).
    pub fn with_run_id(mut self, run_id: RunId) -> Self {
        self.run_id = run_id;
        self
    }

    /// Records what started the run.
    pub fn with_trigger(mut self, trigger: TriggerInfo) -> Self {
        self.trigger = trigger;
        self
    }

    pub(crate) fn set_run_id(&mut self, run_id: RunId) {
        self.run_id = run_id;
    }

    pub(crate) fn set_resumed(&mut self) {
        self.resumed = true;
        self.recovering = true;
    }

    pub(crate) fn set_recovering(&mut self) {
        self.recovering = true;
    }

    /// The name of the pipeline running this context (empty before a run).
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// Whether this run was taken up again after its controller died
    /// ([`Recovery::resume`](crate::Recovery::resume)): what the interrupted
    /// step had done is on the provider's side, not in this context's outputs
    /// (a launch looks for the instances its earlier life started).
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// Whether a [`Recovery`](crate::Recovery) is resuming or undoing this
    /// run after its controller died. What that controller had started may
    /// still be running on the nodes (a script it never saw end), so an
    /// action's [`compensate`](crate::Action::compensate) ends it before the
    /// undo; in a run whose own controller is alive, a failed or timed-out
    /// step's commands were already ended by cancellation.
    pub fn is_recovering(&self) -> bool {
        self.recovering
    }

    pub(crate) fn set_trigger(&mut self, trigger: TriggerInfo) {
        self.trigger = trigger;
    }

    /// Adds a template variable.
    pub fn with_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    /// Uses this cancellation token: cancelling it stops the run after the current
    /// step and undoes what was done.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// The cluster as it is now (the nodes this run created included).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// What started the run.
    pub fn trigger(&self) -> &TriggerInfo {
        &self.trigger
    }

    /// The nodes this run created, in the order they were recorded.
    pub fn new_nodes(&self) -> &[Node] {
        &self.new_nodes
    }

    /// The nodes this run removed from the cluster.
    pub fn removed_nodes(&self) -> &[Node] {
        &self.removed_nodes
    }

    /// Whether the node with this id was created by this run.
    pub fn is_new(&self, id: &str) -> bool {
        self.new_nodes.iter().any(|n| n.id == id)
    }

    /// Records nodes this run created: they join the cluster and become the
    /// target [`Target::NewNodes`] of later steps.
    pub fn add_new_nodes(&mut self, nodes: impl IntoIterator<Item = Node>) {
        for node in nodes {
            self.emit(Event::NodeAdded {
                run_id: self.run_id.clone(),
                node: NodeSummary::from(&node),
            });
            self.cluster.upsert(node.clone());
            match self.new_nodes.iter_mut().find(|n| n.id == node.id) {
                Some(n) => *n = node,
                None => self.new_nodes.push(node),
            }
        }
    }

    /// Takes back nodes this run created (their compensation removed them).
    pub fn forget_new_nodes(&mut self, ids: &[String]) {
        for id in ids {
            if let Some(node) = self.cluster.remove(id) {
                self.emit(Event::NodeRemoved {
                    run_id: self.run_id.clone(),
                    node: NodeSummary::from(&node),
                });
            }
            self.new_nodes.retain(|n| &n.id != id);
        }
    }

    /// Records that this run removed a node from the cluster.
    pub fn remove_node(&mut self, id: &str) -> Option<Node> {
        let node = self.cluster.remove(id)?;
        self.new_nodes.retain(|n| n.id != id);
        self.emit(Event::NodeRemoved {
            run_id: self.run_id.clone(),
            node: NodeSummary::from(&node),
        });
        self.removed_nodes.push(node.clone());
        Some(node)
    }

    /// Typed outputs of earlier steps.
    pub fn outputs(&self) -> &Outputs {
        &self.outputs
    }

    /// Typed outputs of earlier steps, to add to.
    pub fn outputs_mut(&mut self) -> &mut Outputs {
        &mut self.outputs
    }

    /// The current step's output of type `T`, created with `T::default()`
    /// the first time: what a step keeps for itself (its compensation reads
    /// it back), per step, so two steps of one action each have their own.
    ///
    /// ```
    /// # use pyscaler_core::{Cluster, Context};
    /// #[derive(Debug, Default)]
    /// struct Deregistered(Vec<String>);
    ///
    /// let mut ctx = Context::new(Cluster::new("web"));
    /// ctx.step_output_mut::<Deregistered>().0.push("i-0abc".into());
    /// assert_eq!(ctx.step_output::<Deregistered>(ctx.step_name()).map(|d| d.0.len()), Some(1));
    /// ```
    pub fn step_output_mut<T: Default + Send + Sync + 'static>(&mut self) -> &mut T {
        let key = (self.step.name.clone(), TypeId::of::<T>());
        let (_, value) = self
            .step_outputs
            .values
            .entry(key)
            .or_insert_with(|| (std::any::type_name::<T>(), Box::new(T::default())));
        match value.downcast_mut::<T>() {
            Some(v) => v,
            // The key holds T's TypeId, so the value is a T.
            None => unreachable!("a step output stored under another type"),
        }
    }

    /// The output of type `T` the step named `step` kept, if it kept one
    /// ([`step_output_mut`](Self::step_output_mut)).
    pub fn step_output<T: Send + Sync + 'static>(&self, step: &str) -> Option<&T> {
        self.step_outputs
            .values
            .get(&(step.to_owned(), TypeId::of::<T>()))
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// A read-only view of the run for the current step's per-node work
    /// ([`FanOut::run`](crate::FanOut::run) hands it to each node's operation).
    pub fn step_info(&self) -> StepInfo {
        StepInfo::of(self)
    }

    /// Template variables: `cluster`, `run_id`, `trigger`, `reason`, and any added.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut vars = self.vars.clone();
        vars.insert("cluster".into(), self.cluster.name().to_owned());
        vars.insert("run_id".into(), self.run_id.to_string());
        vars.insert("trigger".into(), self.trigger.name.clone());
        vars.insert("reason".into(), self.trigger.reason.clone());
        vars
    }

    /// The run's cancellation token; inside a step, the step's own child of
    /// it, which the engine cancels when the run is cancelled, when an
    /// attempt times out and when the step ends. A provider that starts
    /// remote work (a command over SSH) watches it and ends that work, so
    /// nothing a step started outlives it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    pub(crate) fn replace_cancellation(&mut self, token: CancellationToken) -> CancellationToken {
        std::mem::replace(&mut self.cancel, token)
    }

    /// Whether the run was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Runs under a lease: `lost` is cancelled when the controller loses it
    /// ([`HeldLease::lost`](crate::HeldLease::lost)). A run whose lease is
    /// lost is abandoned, not undone: the lease's next holder recovers it.
    pub fn with_lease(mut self, lost: CancellationToken) -> Self {
        self.lease_lost = Some(lost);
        self
    }

    /// Whether the run's lease is lost ([`with_lease`](Self::with_lease)):
    /// no further side effect may start, undos included.
    pub fn is_fenced(&self) -> bool {
        self.lease_lost
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// The name of the step being run.
    pub fn step_name(&self) -> &str {
        &self.step.name
    }

    /// The current step's target.
    pub fn target(&self) -> Target {
        self.step.target.unwrap_or(Target::None)
    }

    /// The nodes the current step applies to (its target, resolved when it started).
    pub fn targets(&self) -> &[Node] {
        &self.step.nodes
    }

    /// Narrows the current step's nodes to those `keep` accepts: an undo
    /// with nothing to do on the nodes its run is taking away, say.
    pub fn keep_targets(&mut self, keep: impl Fn(&Node) -> bool) {
        self.step.nodes.retain(|n| keep(n));
    }

    /// Records the outcome of the current step on one node, for the run report.
    /// A later outcome for the same node (a retry) replaces the earlier one.
    pub fn record_node(&mut self, outcome: NodeOutcome) {
        match self
            .step
            .outcomes
            .iter_mut()
            .find(|o| o.node == outcome.node)
        {
            Some(o) => *o = outcome,
            None => self.step.outcomes.push(outcome),
        }
    }

    /// The attempt of the current step being run (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.step.attempts.max(1)
    }

    pub(crate) fn note_attempt(&mut self) -> u32 {
        self.step.attempts += 1;
        self.step.attempts
    }

    /// The report of the run so far: set before the `finally` steps run, so a
    /// notification can say how the run went.
    pub fn report(&self) -> Option<&RunReport> {
        self.report.as_ref()
    }

    pub(crate) fn emit(&self, event: Event) {
        let scope = crate::observe::Scope {
            cluster: self.cluster.name(),
            pipeline: &self.pipeline,
        };
        crate::observe::record(scope, &event);
        if matches!(event, Event::RunFinished { .. }) {
            crate::observe::cluster_size(self.cluster.name(), self.cluster.len());
        }
        if let Some(tx) = &self.events {
            // No subscriber is fine: events are for whoever listens.
            let _ = tx.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq)]
    struct Launched(Vec<String>);

    #[test]
    fn outputs_are_keyed_by_type() {
        let mut o = Outputs::default();
        assert!(o.insert(Launched(vec!["i-1".into()])).is_none());
        o.insert(7u32);
        assert_eq!(o.get::<Launched>(), Some(&Launched(vec!["i-1".into()])));
        assert_eq!(o.get::<u32>(), Some(&7));
        assert!(o.get::<String>().is_none());
        assert_eq!(o.remove::<u32>(), Some(7));
        assert!(o.get::<u32>().is_none());
    }

    #[test]
    fn step_outputs_are_kept_per_step_and_type() {
        let mut ctx = Context::new(Cluster::new("web"));
        ctx.step.name = "remove-a".into();
        ctx.step_output_mut::<Launched>().0.push("i-1".into());
        *ctx.step_output_mut::<u32>() += 2;
        ctx.step.name = "remove-b".into();
        ctx.step_output_mut::<Launched>().0.push("i-2".into());
        assert_eq!(
            ctx.step_output::<Launched>("remove-a"),
            Some(&Launched(vec!["i-1".into()]))
        );
        assert_eq!(
            ctx.step_output::<Launched>("remove-b"),
            Some(&Launched(vec!["i-2".into()]))
        );
        assert_eq!(ctx.step_output::<u32>("remove-a"), Some(&2));
        assert_eq!(ctx.step_output::<u32>("remove-b"), None);
        assert_eq!(ctx.step_output::<Launched>("other"), None);
    }

    #[test]
    fn new_nodes_join_the_cluster_and_can_be_taken_back() {
        let mut ctx = Context::new(Cluster::new("web").with_nodes([Node::new("a", "web-01")]));
        ctx.add_new_nodes([Node::new("b", "web-02")]);
        assert_eq!(ctx.cluster().len(), 2);
        assert!(ctx.is_new("b"));
        ctx.forget_new_nodes(&["b".to_string()]);
        assert_eq!(ctx.cluster().len(), 1);
        assert!(ctx.new_nodes().is_empty());
        assert_eq!(ctx.vars().get("cluster").map(String::as_str), Some("web"));
    }
}
