//! `NodeTask`: a Rust task applied to each target node, Fabric style.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use pyscaler_core::{
    Action, Context, Effects, FanOut, NodeFailure, NodeOutcome, OnNodeFailure, Result,
};

use crate::leftovers::end_leftovers;
use crate::{NodeSession, RemoteShell};

/// A task applied to one node: a one-line summary for the report.
type NodeTaskFn = Arc<
    dyn Fn(NodeSession) -> BoxFuture<'static, std::result::Result<String, NodeFailure>>
        + Send
        + Sync,
>;

/// Applies a Rust task to each target node, like a Fabric task: a closure
/// given a [`NodeSession`] per node (put a file, run, sudo, get; the run's
/// view, cluster members included, in [`NodeSession::step`]), run on the
/// nodes with a [`FanOut`]. Its summary line is the node's outcome in the report.
///
/// `?` works on any error that converts into the core error (an
/// [`SshError`](crate::SshError), say). An [`undo`](Self::undo) task, when
/// given, is run by compensation.
///
/// ```
/// # use std::sync::Arc;
/// # use pyscaler_ssh::{NodeTask, Ssh2Shell, SshConfig};
/// # fn demo() -> Result<(), pyscaler_ssh::SshError> {
/// let shell = Arc::new(Ssh2Shell::new(SshConfig::new("admin"))?);
/// let deploy = NodeTask::new("deploy-app", shell, |s| async move {
///     s.put(b"<war bytes>".to_vec(), "/tmp/app.war", 0o644).await?;
///     s.sudo("install -m 644 /tmp/app.war /var/lib/tomcat10/webapps/app.war").await?;
///     let status = s.run("systemctl is-active tomcat10").await?;
///     Ok(format!("tomcat {}", status.stdout.trim()))
/// })
/// .undo(|s| async move {
///     s.sudo("rm -f /var/lib/tomcat10/webapps/app.war").await?;
///     Ok("removed app.war".to_owned())
/// });
/// # let _ = deploy; Ok(()) }
/// ```
pub struct NodeTask {
    name: String,
    shell: Arc<dyn RemoteShell>,
    task: NodeTaskFn,
    undo: Option<NodeTaskFn>,
    fan_out: FanOut,
}

impl std::fmt::Debug for NodeTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTask")
            .field("name", &self.name)
            .field("undo", &self.undo.is_some())
            .field("fan_out", &self.fan_out)
            .finish_non_exhaustive()
    }
}

fn boxed<F, Fut>(f: F) -> NodeTaskFn
where
    F: Fn(NodeSession) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<String, NodeFailure>> + Send + 'static,
{
    Arc::new(move |s| Box::pin(f(s)))
}

impl NodeTask {
    /// A task named `name` applied to each target node through `shell`.
    pub fn new<F, Fut>(name: impl Into<String>, shell: Arc<dyn RemoteShell>, task: F) -> Self
    where
        F: Fn(NodeSession) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, NodeFailure>> + Send + 'static,
    {
        Self {
            name: name.into(),
            shell,
            task: boxed(task),
            undo: None,
            fan_out: FanOut::default(),
        }
    }

    /// What undoes the task on a node, run by compensation on every target
    /// node (also those where the task failed half-way, so it must be safe
    /// to run twice), whatever fails elsewhere.
    pub fn undo<F, Fut>(mut self, undo: F) -> Self
    where
        F: Fn(NodeSession) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, NodeFailure>> + Send + 'static,
    {
        self.undo = Some(boxed(undo));
        self
    }

    /// How many nodes at once, and what a failure does.
    pub fn fan_out(mut self, fan_out: FanOut) -> Self {
        self.fan_out = fan_out;
        self
    }

    async fn apply(&self, ctx: &mut Context, fan_out: FanOut, task: &NodeTaskFn) -> Result<()> {
        fan_out
            .run(ctx, |node, step| {
                let name = node.name.clone();
                let session = NodeSession::new(self.shell.clone(), node, step);
                async move { task(session).await.map(|s| NodeOutcome::ok(name, s)) }
            })
            .await
    }
}

#[async_trait]
impl Action for NodeTask {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> Effects {
        Effects::says(format!("apply task {} on each target node", self.name))
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        self.apply(ctx, self.fan_out, &self.task).await
    }

    /// When a [`Recovery`](pyscaler_core::Recovery) takes over a run whose
    /// controller died, what this step still runs on its nodes is ended
    /// first (see [`Context::is_recovering`]); here, not in `withdraw`, so
    /// that the run's nodes leave the load balancer before any SSH work.
    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let ended = end_leftovers(self.shell.as_ref(), self.fan_out, ctx).await;
        let undone = match &self.undo {
            Some(undo) => {
                let fan_out = self.fan_out.on_failure(OnNodeFailure::Continue);
                self.apply(ctx, fan_out, undo).await
            }
            None => Ok(()),
        };
        undone.and(ended)
    }
}

#[cfg(test)]
mod tests;
