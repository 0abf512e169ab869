//! The `Action` trait and what an action says about itself ([`Effects`]).
//!
//! The bottom of the engine's module graph: action, then the wrappers
//! (`forward`, `wrappers`), then `step`, then `pipeline`; nothing here
//! imports those above it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Context, Node, Result};

/// What an action would do, for a dry run and for validating a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    /// Side effects in words (`launch 2 t3.small from ami-123 in eu-west-1`).
    pub summary: Vec<String>,
    /// Whether the action creates nodes (so later steps may target [`Target::NewNodes`](crate::Target::NewNodes)).
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
/// Required: [`name`](Action::name) and [`run`](Action::run). Optional:
/// [`describe`](Action::describe), [`intent`](Action::intent),
/// [`nodes_to_remove`](Action::nodes_to_remove),
/// [`compensate`](Action::compensate), [`withdraw`](Action::withdraw) and
/// [`repeatable`](Action::repeatable). A step's timeout, retry and name are
/// set on its [`Step`](crate::Step) (made with [`ActionExt::on`](crate::ActionExt::on)).
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

    /// The nodes of `ctx` a run of this action would take out of the
    /// cluster, for the dry run ([`Pipeline::plan`](crate::Pipeline::plan)),
    /// so the plan does not list them among the targets of later steps (a
    /// scale-in's cluster update). [`Context::targets`] are the step's nodes.
    /// A removal names the nodes it would pick; none by default.
    fn nodes_to_remove(&self, _ctx: &Context) -> Vec<Node> {
        Vec::new()
    }

    /// Does the work.
    ///
    /// # Errors
    /// Whatever went wrong, classified ([`Error::kind`](crate::Error::kind)) so the pipeline knows
    /// whether to retry.
    async fn run(&self, ctx: &mut Context) -> Result<()>;

    /// Undoes what `run` did (all of it, or the part it got to). Safe to call twice.
    ///
    /// # Errors
    /// When undoing failed; the report then says so.
    async fn compensate(&self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }

    /// Takes this step's nodes out of service before any undo starts
    /// (deregisters them from the load balancers), so a node a failed run
    /// leaves behind never keeps serving while slower undos run. After a
    /// failure the engine calls it on every started step, in reverse order,
    /// before the first [`compensate`](Action::compensate); the outcome is
    /// in the step's [`UndoOutcome`](crate::UndoOutcome). Must be quick and
    /// safe to call twice; `compensate` still runs afterwards. Nothing to
    /// do by default.
    ///
    /// # Errors
    /// When taking a node out of service failed; the undo still runs.
    async fn withdraw(&self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }

    /// Whether running the action again is safe after a run that may have
    /// done part of its work, or all of it: Puppet's apply, a script that
    /// rewrites a file, a launch under a client token. A run whose controller
    /// died is resumed ([`Recovery::resume`](crate::Recovery::resume)) only
    /// when every step it has left says so. `false` unless the action says
    /// otherwise; a pipeline step can override it
    /// ([`Step::repeatable`](crate::Step::repeatable)).
    fn repeatable(&self) -> bool {
        false
    }
}
