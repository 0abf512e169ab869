//! A pipeline step ([`Step`]): an action, where it applies, and how it is
//! run; and [`ActionExt`], which makes one.
//!
//! Above the wrappers and below the pipeline in the module graph: a step
//! applies `Timeout`/`Retry` to its action; the pipeline runs steps.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wrappers::{Retry, Timeout};
use crate::{Action, RetryPolicy, Target};

/// What a failed step does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Stop, and undo the steps that ran (the failed one included) in reverse order.
    #[default]
    Compensate,
    /// Record the failure and go on with the next step.
    Continue,
    /// Stop, and undo nothing (to look at a failed node by hand).
    Abort,
}

/// One step of a pipeline: an action, where it applies, and how it is run.
pub struct Step {
    pub(crate) name: String,
    pub(crate) action: Box<dyn Action>,
    pub(crate) target: Target,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) on_failure: FailurePolicy,
    repeatable: Option<bool>,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("on_failure", &self.on_failure)
            .field("repeatable", &self.is_repeatable())
            .finish_non_exhaustive()
    }
}

impl Step {
    /// A step running `action` on `target`, named after the action.
    pub fn new(action: impl Action + 'static, target: Target) -> Self {
        Self {
            name: action.name().to_owned(),
            action: Box::new(action),
            target,
            timeout: None,
            retry: None,
            on_failure: FailurePolicy::default(),
            repeatable: None,
        }
    }

    /// Names the step (when one action is used twice in a pipeline); by
    /// default it is the action's name.
    ///
    /// The name pins the step's journal entries: a run is resumed or undone
    /// by matching the steps its journal names against the pipeline's steps
    /// by name (and position, for a resume). Renaming a step while a run of
    /// it is unfinished makes that run impossible to resume or undo with the
    /// pipeline; naming a step what it is already called changes nothing.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Bounds each attempt of the step by `after` (its undo is not bounded by it).
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Retries the step on retryable errors. A step timeout bounds each attempt.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// What a failure of this step does to the run.
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// Says whether the step is safe to run again after a run that may have
    /// done part of it (it overrides the action's own [`Action::repeatable`]):
    /// a script the application knows to be idempotent, say.
    pub fn repeatable(mut self, yes: bool) -> Self {
        self.repeatable = Some(yes);
        self
    }

    /// Whether the step is safe to run again: the step's own word, else the action's.
    pub fn is_repeatable(&self) -> bool {
        self.repeatable.unwrap_or_else(|| self.action.repeatable())
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step's target.
    pub fn target(&self) -> Target {
        self.target
    }

    /// Wraps the action in the step's timeout (inside) and retry (outside).
    pub(crate) fn into_executor(mut self) -> Self {
        if let Some(after) = self.timeout {
            self.action = Box::new(Timeout::new(self.action, after));
        }
        if let Some(policy) = self.retry.clone() {
            self.action = Box::new(Retry::new(self.action, policy));
        }
        self
    }
}

/// Conveniences every [`Action`] gets.
pub trait ActionExt: Action + Sized + 'static {
    /// Makes a pipeline step of this action, applied to `target`; set its
    /// timeout, retry and name on the [`Step`].
    fn on(self, target: Target) -> Step {
        Step::new(self, target)
    }

    /// Boxes the action.
    fn boxed(self) -> Box<dyn Action> {
        Box::new(self)
    }
}

impl<A: Action + Sized + 'static> ActionExt for A {}
