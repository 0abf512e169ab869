//! Building a [`Pipeline`]: `build()` checks it before anything runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::Pipeline;
use crate::journal::Journal;
use crate::recovery::Recovery;
use crate::step::Step;
use crate::{Error, Result, Target};

/// Builds a [`Pipeline`]; `build()` reports the first mistake.
#[derive(Debug)]
pub struct PipelineBuilder {
    pub(super) name: String,
    pub(super) steps: Vec<Step>,
    pub(super) finally: Vec<Step>,
    pub(super) journal: Option<Arc<dyn Journal>>,
    pub(super) recover_first: Option<Recovery>,
}

impl PipelineBuilder {
    /// Adds a step, run after the ones before it.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Adds a `finally` step: it runs after the main steps whether they
    /// succeeded or failed (after any undo), sees the report so far through
    /// [`Context::report`](crate::Context::report), and is never undone.
    pub fn finally(mut self, step: Step) -> Self {
        self.finally.push(step);
        self
    }

    /// Writes every run and step down in `journal` before its side effect
    /// starts and after it ends, so a [`Recovery`] can clean up after a
    /// controller that died. A run then refuses to start while the journal
    /// holds an unfinished run of the same cluster
    /// ([`Error::UnfinishedRun`]), unless [`recover_first`](Self::recover_first) is set.
    pub fn journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Before each run, recovers the unfinished runs of the cluster the
    /// journal holds, with `recovery` (this pipeline is added to the ones it
    /// dispatches to), instead of refusing to run. The recovered runs' nodes
    /// are taken out of the run's cluster. Use the same journal as
    /// [`journal`](Self::journal).
    pub fn recover_first(mut self, recovery: Recovery) -> Self {
        self.recover_first = Some(recovery);
        self
    }

    /// Checks the pipeline and builds it.
    ///
    /// # Errors
    /// [`Error::InvalidPipeline`] when it has no steps, two steps share a name,
    /// a step targets the new nodes before any step can create them, or a
    /// timeout or retry policy is empty, or `recover_first` is set without a
    /// journal.
    pub fn build(self) -> Result<Pipeline> {
        let invalid = |message: String| Error::InvalidPipeline {
            pipeline: self.name.clone(),
            message,
        };
        if self.steps.is_empty() {
            return Err(invalid("it has no steps".into()));
        }
        if self.recover_first.is_some() && self.journal.is_none() {
            return Err(invalid(
                "it recovers first but has no journal to read unfinished runs from".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut can_create = false;
        for step in self.steps.iter().chain(&self.finally) {
            if !names.insert(step.name.as_str()) {
                return Err(invalid(format!(
                    "two steps are named `{}`; name one with Step::named",
                    step.name
                )));
            }
            if step.target == Target::NewNodes && !can_create {
                return Err(invalid(format!(
                    "step `{}` targets the new nodes, but no step before it creates nodes",
                    step.name
                )));
            }
            if step.timeout == Some(Duration::ZERO) {
                return Err(invalid(format!("step `{}` has a zero timeout", step.name)));
            }
            if step.retry.as_ref().is_some_and(|r| r.max_attempts == 0) {
                return Err(invalid(format!(
                    "step `{}` allows zero attempts",
                    step.name
                )));
            }
            can_create |= step.action.describe().creates_nodes;
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Pipeline {
            name: self.name,
            steps: self.steps.into_iter().map(Step::into_executor).collect(),
            finally: self.finally.into_iter().map(Step::into_executor).collect(),
            events,
            journal: self.journal,
            recover_first: self.recover_first,
        })
    }
}
