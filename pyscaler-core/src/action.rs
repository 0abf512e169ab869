//! The `Action` trait, its extension trait, and the wrappers that are actions too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::pipeline::Step;
use crate::{Context, Error, Result, RetryPolicy, Target};

/// What an action would do, for a dry run and for validating a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    /// Side effects in words (`launch 2 t3.small from ami-123 in eu-west-1`).
    pub summary: Vec<String>,
    /// Whether the action creates nodes (so later steps may target [`Target::NewNodes`]).
    pub creates_nodes: bool,
    /// Whether the action removes nodes from the cluster.
    pub removes_nodes: bool,
    /// How many nodes it adds at most, when it knows (0: unknown, or none).
    #[serde(default)]
    pub nodes_added: usize,
    /// How many nodes it removes at most, when it knows (0: unknown, or none).
    #[serde(default)]
    pub nodes_removed: usize,
}

impl Effects {
    /// No side effect worth naming.
    pub fn none() -> Self {
        Self::default()
    }

    /// One side effect, in words.
    pub fn says(what: impl Into<String>) -> Self {
        Self {
            summary: vec![what.into()],
            ..Self::default()
        }
    }

    /// Marks the action as one that creates nodes.
    pub fn creating_nodes(mut self) -> Self {
        self.creates_nodes = true;
        self
    }

    /// Marks the action as one that removes nodes.
    pub fn removing_nodes(mut self) -> Self {
        self.removes_nodes = true;
        self
    }

    /// Marks the action as one that adds up to `n` nodes (the scaler keeps
    /// a scale-out from going past its maximum with it).
    pub fn adding(mut self, n: usize) -> Self {
        self.creates_nodes = true;
        self.nodes_added = n;
        self
    }

    /// Marks the action as one that removes up to `n` nodes (the scaler keeps
    /// a scale-in from going below its minimum with it).
    pub fn removing(mut self, n: usize) -> Self {
        self.removes_nodes = true;
        self.nodes_removed = n;
        self
    }
}

/// One step of a scaling pipeline: launch a VM, run Puppet, send a mail.
///
/// `run` reads the nodes it applies to from [`Context::targets`] and records
/// what later steps need in the context. `compensate` undoes what `run` did —
/// also after a `run` that failed or timed out half-way — and must be safe to
/// call twice.
///
/// Conveniences (`.timeout()`, `.retry()`, `.on(target)`) come from [`ActionExt`].
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Action: Send + Sync {
    /// The action's name, shown in reports and logs (`deploy-ec2-node`).
    fn name(&self) -> &str;

    /// What the action would do, without doing it.
    fn describe(&self) -> Effects {
        Effects::none()
    }

    /// What the action is about to do in this run, in words: the intent
    /// the journal writes down before the step starts. Its
    /// [`describe`](Action::describe) summary unless the run tells it more
    /// (a launch names its client token and the run).
    fn intent(&self, _ctx: &Context) -> Vec<String> {
        self.describe().summary
    }

    /// Does the work.
    ///
    /// # Errors
    /// Whatever went wrong, classified ([`Error::kind`]) so the pipeline knows
    /// whether to retry.
    async fn run(&self, ctx: &mut Context) -> Result<()>;

    /// Undoes what `run` did (all of it, or the part it got to). Safe to call twice.
    ///
    /// # Errors
    /// When undoing failed; the report then says so.
    async fn compensate(&self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }

    /// Whether running the action again is safe after a run that may have
    /// done part of its work, or all of it: Puppet's apply, a script that
    /// rewrites a file, a launch under a client token. A run whose controller
    /// died is resumed ([`Pipeline::resume`](crate::Pipeline::resume)) only
    /// when every step it has left says so. `false` unless the action says
    /// otherwise; a pipeline step can override it
    /// ([`Step::repeatable`](crate::Step::repeatable)).
    fn repeatable(&self) -> bool {
        false
    }
}

#[async_trait]
impl<A: Action + ?Sized> Action for Box<A> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn describe(&self) -> Effects {
        (**self).describe()
    }
    fn repeatable(&self) -> bool {
        (**self).repeatable()
    }
    fn intent(&self, ctx: &Context) -> Vec<String> {
        (**self).intent(ctx)
    }
    async fn run(&self, ctx: &mut Context) -> Result<()> {
        (**self).run(ctx).await
    }
    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        (**self).compensate(ctx).await
    }
}

#[async_trait]
impl<A: Action + ?Sized> Action for Arc<A> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn describe(&self) -> Effects {
        (**self).describe()
    }
    fn repeatable(&self) -> bool {
        (**self).repeatable()
    }
    fn intent(&self, ctx: &Context) -> Vec<String> {
        (**self).intent(ctx)
    }
    async fn run(&self, ctx: &mut Context) -> Result<()> {
        (**self).run(ctx).await
    }
    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        (**self).compensate(ctx).await
    }
}

/// Conveniences every [`Action`] gets.
pub trait ActionExt: Action + Sized + 'static {
    /// Bounds each run of this action by `after` (not its undo, which must be
    /// allowed to finish and bounds its own waits).
    fn timeout(self, after: Duration) -> Timeout<Self> {
        Timeout::new(self, after)
    }

    /// Runs this action again on retryable errors, as `policy` says.
    fn retry(self, policy: RetryPolicy) -> Retry<Self> {
        Retry::new(self, policy)
    }

    /// Makes a pipeline step of this action, applied to `target`.
    fn on(self, target: Target) -> Step {
        Step::new(self, target)
    }

    /// Boxes the action.
    fn boxed(self) -> Box<dyn Action> {
        Box::new(self)
    }
}

impl<A: Action + Sized + 'static> ActionExt for A {}

/// An action whose every run is bounded in time (its undo is not: a
/// timed-out launch must still be terminated, however long that takes).
///
/// Inside a [`Retry`] it bounds one attempt; around a `Retry`, the whole loop.
#[derive(Debug, Clone)]
pub struct Timeout<A> {
    inner: A,
    after: Duration,
}

impl<A> Timeout<A> {
    /// Wraps `inner`.
    pub fn new(inner: A, after: Duration) -> Self {
        Self { inner, after }
    }

    /// The wrapped action.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

#[async_trait]
impl<A: Action> Action for Timeout<A> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn describe(&self) -> Effects {
        self.inner.describe()
    }

    fn repeatable(&self) -> bool {
        self.inner.repeatable()
    }

    fn intent(&self, ctx: &Context) -> Vec<String> {
        self.inner.intent(ctx)
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        match tokio::time::timeout(self.after, self.inner.run(ctx)).await {
            Ok(result) => result,
            Err(_) => Err(Error::StepTimedOut {
                step: self.inner.name().to_owned(),
                after: self.after,
            }),
        }
    }

    /// Not bounded by the timeout: undoing must be allowed to finish (an
    /// action bounds its own waits, such as waiting for termination).
    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        self.inner.compensate(ctx).await
    }
}

/// An action that is run again when it fails with a retryable error.
///
/// Errors whose [`Error::is_retryable`] is false end the loop at once. A
/// cancelled run stops waiting and returns the last error.
#[derive(Debug, Clone)]
pub struct Retry<A> {
    inner: A,
    policy: RetryPolicy,
}

impl<A> Retry<A> {
    /// Wraps `inner`.
    pub fn new(inner: A, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    /// The wrapped action.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

#[async_trait]
impl<A: Action> Action for Retry<A> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn describe(&self) -> Effects {
        self.inner.describe()
    }

    fn repeatable(&self) -> bool {
        self.inner.repeatable()
    }

    fn intent(&self, ctx: &Context) -> Vec<String> {
        self.inner.intent(ctx)
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let mut retry = 0;
        loop {
            let attempt = ctx.note_attempt();
            let error = match self.inner.run(ctx).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            retry += 1;
            if !error.is_retryable() || retry >= self.policy.max_attempts {
                return Err(error);
            }
            let delay = self.policy.delay(retry);
            tracing::warn!(
                step = self.inner.name(),
                attempt,
                delay = %humantime::format_duration(delay),
                error = %error,
                "Step failed with a retryable error; retrying."
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = ctx.cancellation().cancelled() => return Err(error),
            }
        }
    }

    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let mut retry = 0;
        loop {
            let error = match self.inner.compensate(ctx).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            retry += 1;
            if !error.is_retryable() || retry >= self.policy.max_attempts {
                return Err(error);
            }
            tokio::time::sleep(self.policy.delay(retry)).await;
        }
    }
}
