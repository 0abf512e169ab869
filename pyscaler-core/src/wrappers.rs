//! The engine's wrappers around a step's action: [`Timeout`] bounds one
//! attempt, [`Retry`] the loop of attempts. [`Step`](crate::Step) applies
//! them (timeout inside, retry outside) from `Step::timeout` and
//! `Step::retry`: the one place a step's timeout and retry are set, shown
//! in the plan and checked by `PipelineBuilder::build`.

use std::time::Duration;

use crate::forward::forward_action;
use crate::{Action, Context, Error, Result, RetryPolicy};

/// An action whose every run is bounded in time (its undo is not: a
/// timed-out launch must still be terminated, however long that takes).
///
/// Each attempt runs under a child of the run's cancellation token; when
/// the attempt times out, that token is cancelled before the error is
/// returned, so a provider watching [`Context::cancellation`] ends the
/// remote work it started (an SSH command, a wait) instead of leaving it
/// running behind the undo.
#[derive(Debug, Clone)]
pub(crate) struct Timeout<A> {
    inner: A,
    after: Duration,
}

impl<A> Timeout<A> {
    pub(crate) fn new(inner: A, after: Duration) -> Self {
        Self { inner, after }
    }
}

impl<A> AsRef<A> for Timeout<A> {
    fn as_ref(&self) -> &A {
        &self.inner
    }
}

forward_action! {
    impl[A: Action] for Timeout<A> => A;
    forward(name, describe, intent, nodes_to_remove, repeatable, withdraw);

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let attempt = ctx.cancellation().child_token();
        let run_token = ctx.replace_cancellation(attempt.clone());
        let result = tokio::time::timeout(self.after, self.inner.run(ctx)).await;
        ctx.replace_cancellation(run_token);
        match result {
            Ok(result) => result,
            Err(_) => {
                // The attempt's future is dropped; what it started elsewhere
                // (a blocking SSH call) is told to stop through its token.
                attempt.cancel();
                Err(Error::StepTimedOut {
                    step: self.inner.name().to_owned(),
                    after: self.after,
                    nodes: ctx.targets().iter().map(|n| n.name.clone()).collect(),
                })
            }
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
pub(crate) struct Retry<A> {
    inner: A,
    policy: RetryPolicy,
}

impl<A> Retry<A> {
    pub(crate) fn new(inner: A, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }
}

impl<A> AsRef<A> for Retry<A> {
    fn as_ref(&self) -> &A {
        &self.inner
    }
}

forward_action! {
    impl[A: Action] for Retry<A> => A;
    forward(name, describe, intent, nodes_to_remove, repeatable, withdraw);

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
            let scope = crate::observe::Scope {
                cluster: ctx.cluster().name(),
                pipeline: ctx.pipeline(),
            };
            crate::observe::step_retry(scope, &ctx.step.name, error.kind());
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
