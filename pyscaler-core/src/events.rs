//! Progress events an application can subscribe to.

use std::time::Duration;

use serde::Serialize;

use crate::report::{NodeSummary, RunReport, StepStatus};
use crate::{Decision, RunId, RunStatus, Target};

/// Something that happened in a run or in the scaler, in the order it happened.
///
/// Subscribe with [`Pipeline::subscribe`](crate::Pipeline::subscribe) or
/// [`Scaler::subscribe`](crate::Scaler::subscribe); a slow subscriber misses
/// events rather than slowing the run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A run started.
    RunStarted {
        /// The run.
        run_id: RunId,
        /// The pipeline.
        pipeline: String,
        /// The cluster.
        cluster: String,
        /// Why it started.
        reason: String,
        /// How many main steps it has.
        steps: usize,
    },
    /// A step started.
    StepStarted {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// Its target.
        target: Target,
        /// The nodes it applies to, by name.
        nodes: Vec<String>,
        /// Its place among the main steps (1 for the first); `None` for a `finally` step.
        position: Option<usize>,
    },
    /// A step ended.
    StepFinished {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// How it ended.
        status: StepStatus,
        /// How long it took.
        #[serde(with = "humantime_serde")]
        duration: Duration,
        /// Its error, when it failed.
        error: Option<String>,
    },
    /// A node joined the cluster.
    NodeAdded {
        /// The run.
        run_id: RunId,
        /// The node.
        node: NodeSummary,
    },
    /// A node left the cluster.
    NodeRemoved {
        /// The run.
        run_id: RunId,
        /// The node.
        node: NodeSummary,
    },
    /// A failed run asked a step to take its nodes out of service, before
    /// any undo ([`Action::withdraw`](crate::Action::withdraw)).
    Withdrawn {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// Whether it worked.
        succeeded: bool,
    },
    /// A step is being undone.
    Compensating {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
    },
    /// A step was undone (or undoing it failed).
    Compensated {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// Whether undoing it succeeded.
        succeeded: bool,
    },
    /// A run ended.
    RunFinished {
        /// The run.
        run_id: RunId,
        /// How it ended.
        status: RunStatus,
        /// Its report.
        report: Box<RunReport>,
    },
    /// A trigger fired.
    TriggerFired {
        /// The trigger.
        trigger: String,
        /// Why.
        reason: String,
    },
    /// A trigger could not read its counter: it has no data, and does what
    /// its [`MissingData`](crate::MissingData) policy says; nothing fires on it.
    SampleFailed {
        /// The trigger.
        trigger: String,
        /// The counter (`load1`).
        metric: String,
        /// The node the reading failed on, when the error names one.
        node: Option<String>,
        /// Why, in words.
        error: String,
    },
    /// A decision of the scaler or of a trigger, taken or not (a run
    /// started; skipped for a cooldown, a pause, a bound, a trigger that
    /// does not agree; no data), with the values that led to it.
    Decided(Box<Decision>),
    /// This controller holds the cluster's lease (after standing by, when
    /// another held it): it recovers and scales from now on.
    LeaseAcquired {
        /// The holder.
        owner: String,
        /// The fencing epoch of the grant.
        epoch: u64,
    },
    /// This controller lost the cluster's lease: the run in progress is
    /// cancelled and abandoned (the new holder recovers it), nothing new starts.
    LeaseLost {
        /// The holder it was.
        owner: String,
        /// The epoch it held.
        epoch: u64,
    },
    /// A trigger has not finished an evaluation within its bound
    /// ([`ScalerBuilder::stalled_after`](crate::ScalerBuilder::stalled_after)):
    /// its loop is stuck or gone, and nothing it watches can scale the
    /// cluster. Sent once per stall; an application may alarm or restart.
    EvaluationStalled {
        /// The trigger.
        trigger: String,
        /// How long since its last evaluation finished (or the scaler started).
        #[serde(with = "humantime_serde")]
        since: Duration,
        /// The bound it passed.
        #[serde(with = "humantime_serde")]
        bound: Duration,
    },
    /// A stalled trigger finished an evaluation again.
    EvaluationResumed {
        /// The trigger.
        trigger: String,
    },
}
