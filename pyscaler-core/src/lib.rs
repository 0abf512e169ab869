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
//! ```
//! use pyscaler_core::{Action, ActionExt, Cluster, Context, FailurePolicy, Pipeline, Result,
//!                     RetryPolicy, Target};
//! use std::time::Duration;
//!
//! struct Announce;
//!
//! #[async_trait::async_trait]
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

mod action;
mod cluster;
mod context;
mod error;
mod events;
mod journal;
mod pipeline;
mod report;
mod retry;
mod scaler;
mod target;
#[cfg(test)]
mod test_support;
mod trigger;

#[cfg(any(test, feature = "mocks"))]
pub use action::MockAction;
pub use action::{Action, ActionExt, Effects, Retry, Timeout};
pub use cluster::{Cluster, Node, NodeAddress, NodeState, RunId};
pub use context::{Context, Outputs, TriggerInfo};
pub use error::{BoxError, Classify, Error, ErrorKind, ProviderError, Result};
pub use events::Event;
pub use journal::{
    recover, replay, CleanupChain, FileJournal, Journal, JournalEntry, Recovery, RunCleanup,
    RunRecord, RunState,
};
#[cfg(any(test, feature = "mocks"))]
pub use journal::{MockJournal, MockRunCleanup};
pub use pipeline::{
    FailurePolicy, Pipeline, PipelineBuilder, PipelineCleanup, Plan, PlannedStep, Step,
};
pub use report::{
    ErrorReport, NodeOutcome, NodeSummary, RunReport, RunStatus, StepReport, StepStatus,
    UndoOutcome,
};
pub use retry::RetryPolicy;
pub use scaler::{Direction, Scaler, ScalerBuilder, ScalerOutcome};
pub use target::Target;
#[cfg(any(test, feature = "mocks"))]
pub use trigger::MockMetricSource;
pub use trigger::{
    Aggregation, ClusterView, Comparison, Evaluation, Fire, ManualTrigger, MetricSource,
    OnSampleError, Sample, ThresholdTrigger, ThresholdTriggerBuilder, Trigger,
};

/// Re-exported so actions can be written without naming the crate separately.
pub use async_trait::async_trait;
/// Re-exported for [`Context::cancellation`].
pub use tokio_util::sync::CancellationToken;
