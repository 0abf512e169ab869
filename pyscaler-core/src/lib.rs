//! # pyscaler-core
//!
//! The vocabulary and the engine of pyscaler: a scaling pipeline is an ordered
//! list of [`Step`]s, each an [`Action`] applied to a [`Target`]; a [`Pipeline`]
//! runs them with timeouts, retries and compensation, and says what happened in
//! a [`RunReport`]. A [`Scaler`] runs pipelines when [`Trigger`]s fire: a person
//! ([`ManualTrigger`]) or a counter past a threshold for a while ([`ThresholdTrigger`]).
//!
//! Providers (EC2, SSH, SMTP) live in the sibling crates; this crate knows none of them.
//!
//! With a [`Journal`], every run is written down step by step; after a
//! controller died mid-run, one [`Recovery`] (given every pipeline of the
//! cluster) undoes or finishes each unfinished run, and a new run refuses
//! to start until that is done ([`Error::UnfinishedRun`]). A [`Lease`]
//! ([`HeldLease`], [`ScalerBuilder::lease`]) keeps a second controller of
//! the cluster standing by until the first is gone; a run whose lease is
//! lost is abandoned, for the next holder to recover.
//!
//! ```
//! use pyscaler_core::{async_trait, Action, ActionExt, Cluster, Context, FailurePolicy, Pipeline,
//!                     Result, RetryPolicy, Target};
//! use std::time::Duration;
//!
//! struct Announce;
//!
//! #[async_trait]
//! impl Action for Announce {
//!     fn name(&self) -> &str { "announce" }
//!     async fn run(&self, ctx: &mut Context) -> Result<()> {
//!         println!("scaling {} because {}", ctx.cluster().name(), ctx.trigger().reason);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! let pipeline = Pipeline::builder("scale-out")
//!     .step(Announce.on(Target::None)
//!         .timeout(Duration::from_secs(30))
//!         .retry(RetryPolicy::attempts(3))
//!         .on_failure(FailurePolicy::Compensate))
//!     .build()?;
//! println!("{}", pipeline.plan(&Context::new(Cluster::new("web"))));
//! # Ok(())
//! # }
//! ```
#![doc = include_str!("docs/writing_an_action.md")]

mod action;
mod cluster;
mod config_text;
mod context;
mod decision;
mod direction;
mod error;
mod events;
mod fanout;
mod forward;
mod history;
mod journal;
mod lease;
mod metric;
mod observe;
mod pipeline;
mod progress;
mod recovery;
mod report;
mod retry;
mod scaler;
mod step;
mod target;
#[cfg(test)]
mod test_support;
// Documented whatever the features, so the crate docs can point at it.
#[cfg(any(test, feature = "mocks", doc))]
pub mod testing;
mod threshold;
mod trigger;
mod wrappers;

#[cfg(any(test, feature = "mocks"))]
pub use action::MockAction;
pub use action::{Action, Effects};
pub use cluster::{Cluster, Node, NodeAddress, NodeState, RunId, PROTECTED_TAG};
pub use config_text::config_error_at;
pub use context::{Context, Outputs, TriggerInfo};
pub use decision::{Decision, MissingData, NodeStep, Skip, Verdict};
pub use direction::Direction;
pub use error::{BoxError, Classify, Error, ErrorKind, ProviderError, Result};
pub use events::Event;
pub use fanout::{FanOut, NodeFailure, OnNodeFailure, StepInfo};
pub use history::{DecisionStory, History, RunStory, StepStory, UndoStory};
#[cfg(any(test, feature = "mocks"))]
pub use journal::MockJournal;
pub use journal::{FileJournal, Journal, JournalEntry, MemoryJournal, RunRecord, RunState};
pub use lease::{FileLease, HeldLease, Lease, LeaseGrant, LeaseTiming};
#[cfg(any(test, feature = "mocks"))]
pub use metric::MockMetricSource;
pub use metric::{Aggregation, Comparison, MetricSource, Sample};
pub use observe::{
    describe_metrics, names as metric_names, record_provider_call, MetricInfo, MetricType,
    ProviderCall, METRICS,
};
pub use pipeline::{Pipeline, PipelineBuilder, Plan, PlannedStep};
pub use progress::{print_progress, progress_line};
#[cfg(any(test, feature = "mocks"))]
pub use recovery::MockRunCleanup;
pub use recovery::{RecoveredRun, Recovery, RecoveryAction, RecoveryReport, RunCleanup};
pub use report::{
    ErrorReport, NodeOutcome, NodeSummary, RunReport, RunStatus, StepReport, StepStatus,
    UndoOutcome,
};
pub use retry::RetryPolicy;
pub use scaler::{Scaler, ScalerBuilder, ScalerControls, ScalerOutcome};
pub use step::{ActionExt, FailurePolicy, Step};
pub use target::Target;
pub use threshold::{Evaluation, ThresholdTrigger, ThresholdTriggerBuilder};
pub use trigger::{ClusterView, Fire, ManualTrigger, Opinion, Trigger};

/// Re-exported so actions can be written without naming the crate separately.
pub use async_trait::async_trait;
/// Re-exported for [`Context::cancellation`].
pub use tokio_util::sync::CancellationToken;
