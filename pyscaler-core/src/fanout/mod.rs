//! Fan-out: one operation on many nodes at once, bounded, with a failure policy.

mod failure;
mod step_info;
#[cfg(test)]
mod tests;

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use failure::NodeFailure;
pub use step_info::StepInfo;

use crate::{Context, Error, Node, NodeOutcome, Result};

/// What to do when the operation fails on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OnNodeFailure {
    /// Start no further node after the first failure; the step fails (the default).
    #[default]
    FailFast,
    /// Run on every node; the step fails if any node failed.
    Continue,
    /// Tolerate failures on up to this percentage of the target nodes (the
    /// step succeeds, the failures are in the report); past it, start no
    /// further node and fail the step.
    MaxFailedPercent(u8),
}

/// Runs an operation on the current step's target nodes, at most
/// `concurrency` at a time, and records each node's outcome in the run report.
///
/// Any provider crate's action fans out with it: the operation is a closure
/// given each target [`Node`] and a [`StepInfo`] (the run id, the step, the
/// variables and the cluster as the run sees it), returning the node's
/// [`NodeOutcome`] or a [`NodeFailure`] (`?` converts any error that
/// converts into the core [`Error`]).
///
/// ```
/// # use pyscaler_core::{FanOut, OnNodeFailure};
/// let fan_out = FanOut::new().concurrency(10).on_failure(OnNodeFailure::MaxFailedPercent(20));
/// # let _ = fan_out;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    /// How many nodes at once (default 32).
    pub concurrency: usize,
    /// What a failure on a node does.
    pub on_failure: OnNodeFailure,
    /// How many bytes of a node's output the report keeps (default 64 KiB).
    pub output_cap: usize,
}

impl Default for FanOut {
    fn default() -> Self {
        Self {
            concurrency: 32,
            on_failure: OnNodeFailure::FailFast,
            output_cap: 64 * 1024,
        }
    }
}

impl FanOut {
    /// 32 at a time, failing fast.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many nodes run at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the failure policy.
    pub fn on_failure(mut self, policy: OnNodeFailure) -> Self {
        self.on_failure = policy;
        self
    }

    /// Sets how many bytes of each node's output the report keeps.
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }

    /// Runs `op` on each of `ctx.targets()` and records every node's outcome
    /// with [`Context::record_node`]. Nodes not started because the run
    /// stopped (the policy, or a cancellation) are recorded as not run.
    ///
    /// An `Ok` outcome is a success on that node: it is recorded under the
    /// node's name, with the time the operation took (unless it set one) and
    /// its output cut at [`output_cap`](Self::output_cap).
    ///
    /// # Errors
    /// The first node's error (naming the node) when the policy says the step
    /// failed: any failure for `FailFast` and `Continue`, more than the
    /// tolerated share for `MaxFailedPercent`; [`Error::Cancelled`] when the run
    /// was cancelled before every node was started.
    pub async fn run<F, Fut>(&self, ctx: &mut Context, op: F) -> Result<()>
    where
        F: Fn(Node, StepInfo) -> Fut,
        Fut: Future<Output = std::result::Result<NodeOutcome, NodeFailure>>,
    {
        let info = ctx.step_info();
        let nodes = ctx.targets().to_vec();
        let total = nodes.len();
        let tolerated = match self.on_failure {
            OnNodeFailure::FailFast => 0,
            OnNodeFailure::Continue => usize::MAX,
            OnNodeFailure::MaxFailedPercent(p) => total * usize::from(p.min(100)) / 100,
        };
        let mut pending = nodes.into_iter();
        let mut running = FuturesUnordered::new();
        let mut failures: Vec<(String, Error)> = Vec::new();
        let mut stopped = false;
        loop {
            while !stopped && running.len() < self.concurrency.max(1) {
                if ctx.is_cancelled() {
                    stopped = true;
                    break;
                }
                let Some(node) = pending.next() else { break };
                let op = &op;
                let info = info.clone();
                running.push(async move {
                    let started = Instant::now();
                    let name = node.name.clone();
                    let result = op(node, info).await;
                    (name, result, started.elapsed())
                });
            }
            let Some((name, result, took)) = running.next().await else {
                break;
            };
            match result {
                Ok(mut outcome) => {
                    outcome.node.clone_from(&name);
                    outcome.succeeded = true;
                    outcome.not_run = false;
                    if outcome.duration.is_zero() {
                        outcome.duration = took;
                    }
                    ctx.record_node(outcome.cap_output(self.output_cap));
                }
                Err(f) => {
                    tracing::warn!(node = %name, error = %f.error, "Failed on a node.");
                    let mut outcome =
                        NodeOutcome::failed(&name, f.error.to_string()).with_duration(took);
                    if let Some(out) = f.output {
                        outcome = outcome.with_output(out, f.truncated);
                    }
                    ctx.record_node(outcome.cap_output(self.output_cap));
                    failures.push((name, f.error));
                    if failures.len() > tolerated {
                        stopped = true;
                    }
                }
            }
        }
        let not_run: Vec<Node> = pending.collect();
        for node in &not_run {
            ctx.record_node(NodeOutcome::not_run(
                &node.name,
                format!("not run: stopped after {} failed node(s)", failures.len()),
            ));
        }
        let failed = failures.len();
        let step_failed = match self.on_failure {
            OnNodeFailure::MaxFailedPercent(_) => failed > tolerated,
            _ => failed > 0,
        };
        if step_failed {
            let (name, error) = failures.swap_remove(0);
            tracing::warn!(failed, total, "The step failed on some nodes.");
            return Err(error.on_node(name));
        }
        if !not_run.is_empty() {
            return Err(Error::Cancelled);
        }
        if failed > 0 {
            tracing::warn!(
                failed,
                total,
                "Some nodes failed, within the tolerated share."
            );
        }
        Ok(())
    }
}
