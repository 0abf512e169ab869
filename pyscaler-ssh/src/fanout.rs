//! Fan-out: one operation on many nodes at once, bounded, with a failure policy.

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};
use pyscaler_core::{Context, Error, Node, NodeOutcome, Result};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{CommandOutput, SshError};

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

/// What the operation did on a node that succeeded: one line and its output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeResult {
    /// One line for the report (`exit 0`, `puppet: changes applied`).
    pub summary: String,
    /// What the node printed.
    pub output: Option<String>,
    /// Whether the output was already cut.
    pub truncated: bool,
}

impl NodeResult {
    /// A result with a summary and no output.
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            ..Self::default()
        }
    }

    /// Adds output.
    pub fn with_output(mut self, output: impl Into<String>, truncated: bool) -> Self {
        self.output = Some(output.into());
        self.truncated = truncated;
        self
    }
}

impl From<&CommandOutput> for NodeResult {
    fn from(out: &CommandOutput) -> Self {
        Self::new(out.status_line()).with_output(out.combined(), out.truncated)
    }
}

/// Why the operation failed on a node, with what the node printed.
#[derive(Debug)]
pub struct NodeFailure {
    /// The error.
    pub error: Error,
    /// What the node printed, when something ran.
    pub output: Option<String>,
    /// Whether the output was already cut.
    pub truncated: bool,
}

impl NodeFailure {
    /// Adds the node's output.
    pub fn with_output(mut self, output: impl Into<String>, truncated: bool) -> Self {
        self.output = Some(output.into());
        self.truncated = truncated;
        self
    }
}

impl From<Error> for NodeFailure {
    fn from(error: Error) -> Self {
        Self {
            error,
            output: None,
            truncated: false,
        }
    }
}

impl From<NodeFailure> for Error {
    /// The error, without the output (which the report keeps).
    fn from(f: NodeFailure) -> Self {
        f.error
    }
}

impl From<SshError> for NodeFailure {
    fn from(error: SshError) -> Self {
        Error::from(error).into()
    }
}

/// Runs an operation on the current step's target nodes, at most
/// `concurrency` at a time, and records each node's outcome in the run report.
///
/// ```
/// # use pyscaler_ssh::{FanOut, OnNodeFailure};
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

/// Keeps the first `cap` bytes of `text` (on a character boundary); says whether it cut.
fn cap_text(text: String, cap: usize) -> (String, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
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
    /// # Errors
    /// The first node's error (naming the node) when the policy says the step
    /// failed: any failure for `FailFast` and `Continue`, more than the
    /// tolerated share for `MaxFailedPercent`; [`Error::Cancelled`] when the run
    /// was cancelled before every node was started.
    pub async fn run<F, Fut>(&self, ctx: &mut Context, op: F) -> Result<()>
    where
        F: Fn(Node) -> Fut,
        Fut: Future<Output = std::result::Result<NodeResult, NodeFailure>>,
    {
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
                running.push(async move {
                    let started = Instant::now();
                    let name = node.name.clone();
                    let result = op(node).await;
                    (name, result, started.elapsed())
                });
            }
            let Some((name, result, took)) = running.next().await else {
                break;
            };
            match result {
                Ok(r) => {
                    let mut outcome = NodeOutcome::ok(&name, r.summary).with_duration(took);
                    if let Some(out) = r.output {
                        let (out, cut) = cap_text(out, self.output_cap);
                        outcome = outcome.with_output(out, cut || r.truncated);
                    }
                    ctx.record_node(outcome);
                }
                Err(f) => {
                    tracing::warn!(node = %name, error = %f.error, "Failed on a node.");
                    let mut outcome =
                        NodeOutcome::failed(&name, f.error.to_string()).with_duration(took);
                    if let Some(out) = f.output {
                        let (out, cut) = cap_text(out, self.output_cap);
                        outcome = outcome.with_output(out, cut || f.truncated);
                    }
                    ctx.record_node(outcome);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use pyscaler_core::{Cluster, ErrorKind};

    use super::*;

    fn ctx_with(n: usize) -> Context {
        let mut ctx = Context::new(Cluster::new("web"));
        ctx.add_new_nodes((0..n).map(|i| Node::new(format!("i-{i}"), format!("web-{i:02}"))));
        ctx
    }

    /// Steps only set their targets inside a pipeline: run `f` as one.
    async fn in_step<F>(ctx: &mut Context, f: F) -> pyscaler_core::RunReport
    where
        F: for<'a> Fn(&'a mut Context) -> futures::future::BoxFuture<'a, Result<()>>
            + Send
            + Sync
            + 'static,
    {
        struct Step<F>(F);
        #[async_trait::async_trait]
        impl<F> pyscaler_core::Action for Step<F>
        where
            F: for<'a> Fn(&'a mut Context) -> futures::future::BoxFuture<'a, Result<()>>
                + Send
                + Sync,
        {
            fn name(&self) -> &str {
                "fan-out"
            }
            async fn run(&self, ctx: &mut Context) -> Result<()> {
                (self.0)(ctx).await
            }
        }
        use pyscaler_core::ActionExt;
        let pipeline = pyscaler_core::Pipeline::builder("t")
            .step(Step(f).on(pyscaler_core::Target::Cluster))
            .build()
            .expect("pipeline");
        pipeline.run(ctx).await
    }

    fn fails_on(
        names: &'static [&'static str],
        fan: FanOut,
    ) -> impl Fn(&mut Context) -> futures::future::BoxFuture<'_, Result<()>> + Send + Sync + 'static
    {
        move |ctx| {
            Box::pin(async move {
                fan.run(ctx, |node| async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if names.contains(&node.name.as_str()) {
                        Err(NodeFailure::from(Error::other(
                            ErrorKind::RemoteCommandFailed,
                            "exit 1",
                        ))
                        .with_output("boom", false))
                    } else {
                        Ok(NodeResult::new("exit 0").with_output("x".repeat(100), false))
                    }
                })
                .await
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded() {
        let running = std::sync::Arc::new(AtomicUsize::new(0));
        let peak = std::sync::Arc::new(AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let mut ctx = ctx_with(50);
        let report = in_step(&mut ctx, move |ctx| {
            let (r, p) = (r.clone(), p.clone());
            Box::pin(async move {
                FanOut::new()
                    .concurrency(7)
                    .run(ctx, |_node| {
                        let (r, p) = (r.clone(), p.clone());
                        async move {
                            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                            p.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            r.fetch_sub(1, Ordering::SeqCst);
                            Ok(NodeResult::new("ok"))
                        }
                    })
                    .await
            })
        })
        .await;
        assert!(report.is_success(), "{report:?}");
        assert_eq!(peak.load(Ordering::SeqCst), 7);
        assert_eq!(report.steps[0].nodes.len(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn fail_fast_stops_starting_nodes_and_names_the_node() {
        let mut ctx = ctx_with(10);
        let fan = FanOut::new().concurrency(1).output_cap(10);
        let report = in_step(&mut ctx, fails_on(&["web-02"], fan)).await;
        assert!(!report.is_success());
        let step = &report.steps[0];
        let ok: Vec<_> = step.nodes.iter().filter(|n| n.succeeded).collect();
        assert_eq!(ok.len(), 2);
        assert!(ok[0].truncated && ok[0].output.as_deref() == Some("xxxxxxxxxx"));
        let failed = step
            .nodes
            .iter()
            .find(|n| n.node == "web-02")
            .expect("web-02");
        assert_eq!(failed.output.as_deref(), Some("boom"));
        let not_run = step
            .nodes
            .iter()
            .filter(|n| n.summary.starts_with("not run"))
            .count();
        assert_eq!(not_run, 7);
        // Typed too: a node never started on is neither ok nor failed there.
        assert_eq!(step.nodes.iter().filter(|n| n.not_run).count(), 7);
        assert!(step.nodes.iter().all(|n| !(n.not_run && n.succeeded)));
        assert!(format!("{report}").contains("SKIP"), "{report}");
        let error = report.error.as_ref().expect("error");
        assert_eq!(error.node.as_deref(), Some("web-02"));
    }

    #[tokio::test(start_paused = true)]
    async fn continue_runs_everywhere_and_still_fails_the_step() {
        let mut ctx = ctx_with(10);
        let fan = FanOut::new().on_failure(OnNodeFailure::Continue);
        let report = in_step(&mut ctx, fails_on(&["web-02", "web-05"], fan)).await;
        assert!(!report.is_success());
        let step = &report.steps[0];
        assert_eq!(step.nodes.iter().filter(|n| n.succeeded).count(), 8);
        assert_eq!(step.nodes.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tolerated_share_of_failures_passes_and_more_stops() {
        let mut ctx = ctx_with(10);
        let fan = FanOut::new()
            .concurrency(1)
            .on_failure(OnNodeFailure::MaxFailedPercent(20));
        let report = in_step(&mut ctx, fails_on(&["web-02", "web-05"], fan)).await;
        assert!(report.is_success(), "{report:?}");
        assert_eq!(
            report.steps[0]
                .nodes
                .iter()
                .filter(|n| !n.succeeded)
                .count(),
            2
        );

        let mut ctx = ctx_with(10);
        let report = in_step(&mut ctx, fails_on(&["web-01", "web-02", "web-03"], fan)).await;
        assert!(!report.is_success());
        let not_run = report.steps[0]
            .nodes
            .iter()
            .filter(|n| n.summary.starts_with("not run"))
            .count();
        assert_eq!(not_run, 6);
    }
}
