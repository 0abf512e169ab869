//! `StepInfo`: what a per-node operation may read of the run.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{Cluster, Context, Node, RunId, TriggerInfo};

/// A read-only view of the run for a step's per-node work: the run id, the
/// pipeline and step names, the template variables and the cluster as this
/// run sees it (the nodes it created included, the ones it removed left out).
///
/// Taken from the [`Context`] when the step's fan-out starts
/// ([`Context::step_info`]); cheap to clone (one shared allocation), so a
/// per-node future can own it.
#[derive(Clone)]
pub struct StepInfo {
    inner: Arc<Inner>,
}

struct Inner {
    run_id: RunId,
    pipeline: String,
    step: String,
    attempt: u32,
    vars: BTreeMap<String, String>,
    cluster: Cluster,
    new_nodes: Vec<String>,
    removed_nodes: Vec<Node>,
    trigger: TriggerInfo,
    cancellation: CancellationToken,
}

impl fmt::Debug for StepInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepInfo")
            .field("run_id", &self.inner.run_id)
            .field("pipeline", &self.inner.pipeline)
            .field("step", &self.inner.step)
            .field("members", &self.inner.cluster.len())
            .finish_non_exhaustive()
    }
}

impl StepInfo {
    pub(crate) fn of(ctx: &Context) -> Self {
        Self {
            inner: Arc::new(Inner {
                run_id: ctx.run_id().clone(),
                pipeline: ctx.pipeline().to_owned(),
                step: ctx.step_name().to_owned(),
                attempt: ctx.attempt(),
                vars: ctx.vars(),
                cluster: ctx.cluster().clone(),
                new_nodes: ctx.new_nodes().iter().map(|n| n.id.clone()).collect(),
                removed_nodes: ctx.removed_nodes().to_vec(),
                trigger: ctx.trigger().clone(),
                cancellation: ctx.cancellation().clone(),
            }),
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.inner.run_id
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.inner.pipeline
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        &self.inner.step
    }

    /// The attempt of the step being run (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The run's template variables ([`Context::vars`]).
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.inner.vars
    }

    /// One template variable.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.inner.vars.get(name).map(String::as_str)
    }

    /// The cluster as this run sees it when the step started: its members
    /// after this run's changes (nodes it created are in, nodes it removed are out).
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// Whether this run created the node with this id.
    pub fn is_new(&self, id: &str) -> bool {
        self.inner.new_nodes.iter().any(|n| n == id)
    }

    /// The nodes this run removed from the cluster, so far.
    pub fn removed_nodes(&self) -> &[Node] {
        &self.inner.removed_nodes
    }

    /// The step's cancellation: cancelled when the step times out, the run
    /// is cancelled, or the step ends. Remote work started for the step
    /// should end when it is.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancellation
    }

    /// What started the run.
    pub fn trigger(&self) -> &TriggerInfo {
        &self.inner.trigger
    }
}
