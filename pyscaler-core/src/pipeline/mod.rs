//! Pipelines: ordered steps, run with retries, timeouts, compensation and
//! `finally` steps.
//!
//! The top of the engine's module graph: `builder` checks and builds a
//! pipeline, `run` is the engine, `resume` takes up or undoes a run whose
//! controller died (for [`Recovery`](crate::Recovery)), `plan` is the dry run.

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::journal::{Journal, JournalEntry};
use crate::recovery::Recovery;
use crate::step::Step;
use crate::{Event, Result};

mod builder;
mod plan;
mod resume;
mod run;

pub use builder::PipelineBuilder;
pub use plan::{Plan, PlannedStep};

/// An ordered list of steps that scales a cluster, and the engine that runs it.
///
/// ```
/// use pyscaler_core::{async_trait, Action, ActionExt, Cluster, Context, Pipeline, Result, Target};
///
/// struct Hello;
///
/// #[async_trait]
/// impl Action for Hello {
///     fn name(&self) -> &str { "hello" }
///     async fn run(&self, ctx: &mut Context) -> Result<()> {
///         println!("hello, {}", ctx.cluster().name());
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let pipeline = Pipeline::builder("greet").step(Hello.on(Target::None)).build()?;
/// let report = pipeline.run(&mut Context::new(Cluster::new("web"))).await;
/// assert!(report.is_success());
/// # Ok(())
/// # }
/// ```
pub struct Pipeline {
    name: String,
    steps: Vec<Step>,
    finally: Vec<Step>,
    events: broadcast::Sender<Event>,
    journal: Option<Arc<dyn Journal>>,
    recover_first: Option<Recovery>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field(
                "steps",
                &self.steps.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field(
                "finally",
                &self.finally.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Pipeline {
    /// Starts building a pipeline called `name`.
    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder {
            name: name.into(),
            steps: Vec::new(),
            finally: Vec::new(),
            journal: None,
            recover_first: None,
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many nodes a run adds and removes at most, from what its main
    /// steps describe (an action that does not say counts as one when it
    /// creates or removes nodes).
    pub fn node_change(&self) -> (usize, usize) {
        self.steps.iter().fold((0, 0), |(added, removed), s| {
            let e = s.action.describe();
            let a = if e.creates_nodes {
                e.nodes_added.max(1)
            } else {
                0
            };
            let r = if e.removes_nodes {
                e.nodes_removed.max(1)
            } else {
                0
            };
            (added + a, removed + r)
        })
    }

    /// Events of every run of this pipeline from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

impl Pipeline {
    /// Whether the run must issue no further side effect: its lease is lost
    /// ([`Context::is_fenced`]) or its journal refuses it as stale.
    fn fenced(&self, ctx: &crate::Context) -> bool {
        ctx.is_fenced() || self.journal.as_ref().is_some_and(|j| j.is_fenced())
    }

    async fn record(&self, entry: JournalEntry) -> Result<()> {
        match &self.journal {
            Some(journal) => crate::journal::write(journal.as_ref(), entry).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
