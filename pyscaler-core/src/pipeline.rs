//! Pipelines: ordered steps, run with retries, timeouts, compensation and `finally` steps.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::action::{Retry, Timeout};
use crate::context::StepScope;
use crate::journal::{Journal, JournalEntry, RunCleanup, RunRecord, RunState};
use crate::report::{ErrorReport, NodeSummary, StepReport, StepStatus, UndoOutcome};
use crate::{
    Action, Cluster, Context, Error, Event, Result, RetryPolicy, RunReport, RunStatus, Target,
};

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
    name: String,
    action: Box<dyn Action>,
    target: Target,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    on_failure: FailurePolicy,
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

    /// Names the step (when one action is used twice in a pipeline).
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
    fn into_executor(mut self) -> Self {
        if let Some(after) = self.timeout {
            self.action = Box::new(Timeout::new(self.action, after));
        }
        if let Some(policy) = self.retry.clone() {
            self.action = Box::new(Retry::new(self.action, policy));
        }
        self
    }
}

/// Builds a [`Pipeline`]; `build()` reports the first mistake.
#[derive(Debug)]
pub struct PipelineBuilder {
    name: String,
    steps: Vec<Step>,
    finally: Vec<Step>,
    journal: Option<Arc<dyn Journal>>,
}

impl PipelineBuilder {
    /// Adds a step, run after the ones before it.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Adds a `finally` step: it runs after the main steps whether they
    /// succeeded or failed (after any undo), sees the report so far through
    /// [`Context::report`], and is never undone.
    pub fn finally(mut self, step: Step) -> Self {
        self.finally.push(step);
        self
    }

    /// Writes every run and step down in `journal` before its side effect
    /// starts and after it ends, so [`recover`](crate::recover) can clean up
    /// after a controller that died.
    pub fn journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Checks the pipeline and builds it.
    ///
    /// # Errors
    /// [`Error::InvalidPipeline`] when it has no steps, two steps share a name,
    /// a step targets the new nodes before any step can create them, or a
    /// timeout or retry policy is empty.
    pub fn build(self) -> Result<Pipeline> {
        let invalid = |message: String| Error::InvalidPipeline {
            pipeline: self.name.clone(),
            message,
        };
        if self.steps.is_empty() {
            return Err(invalid("it has no steps".into()));
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
        })
    }
}

/// An ordered list of steps that scales a cluster, and the engine that runs it.
///
/// ```
/// use pyscaler_core::{Action, ActionExt, Cluster, Context, Pipeline, Result, Target};
///
/// struct Hello;
///
/// #[async_trait::async_trait]
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

    /// The steps in order with their resolved targets and side effects; runs nothing.
    pub fn plan(&self, ctx: &Context) -> Plan {
        let mut creator: Option<String> = None;
        let mut plan_step = |s: &Step| {
            let effects = s.action.describe();
            let planned = PlannedStep {
                name: s.name.clone(),
                target: s.target,
                nodes: s.target.resolve(ctx).into_iter().map(|n| n.name).collect(),
                nodes_from: match s.target {
                    Target::NewNodes | Target::Cluster => creator.clone(),
                    _ => None,
                },
                effects: effects.summary,
                timeout: s.timeout,
                retry: s.retry.clone(),
                on_failure: s.on_failure,
            };
            if effects.creates_nodes {
                creator = Some(s.name.clone());
            }
            planned
        };
        let steps = self.steps.iter().map(&mut plan_step).collect();
        let finally = self.finally.iter().map(&mut plan_step).collect();
        Plan {
            pipeline: self.name.clone(),
            cluster: ctx.cluster().name().to_owned(),
            steps,
            finally,
        }
    }

    /// Runs the pipeline on `ctx` and reports what happened.
    ///
    /// Steps run in order. A failed step is retried when its policy and the
    /// error allow; then its [`FailurePolicy`] decides. On `Compensate` (and on
    /// cancellation, checked between steps) the steps that ran are undone in
    /// reverse order, the failed one first. `finally` steps run last, always.
    /// The run never panics on a failed step: the failure is in the report.
    pub async fn run(&self, ctx: &mut Context) -> RunReport {
        let span = info_span!("run", run_id = %ctx.run_id(), pipeline = %self.name, cluster = %ctx.cluster().name());
        self.run_inner(ctx, None).instrument(span).await
    }

    /// Takes up a run whose controller died, from its first unfinished step,
    /// instead of undoing it ([`recover`](crate::recover)).
    ///
    /// `run` is the journal's record of it ([`Journal::unfinished_runs`]).
    /// The run keeps its id (so its instances keep their `pyscaler:run` tag
    /// and a launch its client token) and the nodes the journal says it had
    /// created; `ctx` gives the cluster as it is now. The steps that had
    /// finished are not run again; the interrupted one and every one after
    /// it are, so each of them must be safe to repeat
    /// ([`Step::is_repeatable`]). If the resumed run fails, the steps that
    /// finished before the controller died are undone as well.
    ///
    /// # Errors
    /// [`Error::NotResumable`], before anything runs, when the run is not
    /// unfinished, belongs to another pipeline or a different list of steps,
    /// had begun undoing (a step of it failed), or has a step left that is
    /// not safe to repeat.
    pub async fn resume(&self, run: &RunRecord, ctx: &mut Context) -> Result<RunReport> {
        let from = self.resume_point(run)?;
        ctx.set_run_id(run.run_id.clone());
        ctx.set_resumed();
        if let Some(trigger) = &run.trigger {
            ctx.set_trigger(trigger.clone());
        }
        ctx.add_new_nodes(run.new_nodes.iter().cloned());
        let from_step = self.steps.get(from).map(|s| s.name.clone());
        self.record(JournalEntry::RunResumed {
            run_id: run.run_id.clone(),
            from_step: from_step.clone(),
            at: chrono::Utc::now(),
        })
        .await?;
        warn!(run_id = %run.run_id, from = ?from_step, "Resuming a run that never finished.");
        let span = info_span!("run", run_id = %ctx.run_id(), pipeline = %self.name, cluster = %ctx.cluster().name(), resumed = true);
        Ok(self.run_inner(ctx, Some(from)).instrument(span).await)
    }

    /// The index of the first step a resumed `run` runs again.
    fn resume_point(&self, run: &RunRecord) -> Result<usize> {
        let refuse = |reason: String| Error::NotResumable {
            run_id: run.run_id.to_string(),
            reason,
        };
        if run.state != RunState::Unfinished {
            return Err(refuse(format!("the journal says it is {:?}", run.state)));
        }
        match run.steps_ended {
            // Only the finally steps are left.
            Some(RunStatus::Succeeded | RunStatus::CompletedWithFailures)
                if run.steps.len() == self.steps.len() => {}
            Some(status) => {
                return Err(refuse(format!(
                    "its steps had ended ({status}); recover it to mark it finished"
                )))
            }
            None => {}
        }
        if run.pipeline != self.name {
            return Err(refuse(format!(
                "it is a run of pipeline `{}`, not `{}`",
                run.pipeline, self.name
            )));
        }
        let mut from = run.steps.len();
        for (i, (name, status)) in run.steps.iter().enumerate() {
            match self.steps.get(i) {
                Some(step) if step.name == *name => {}
                _ => {
                    return Err(refuse(format!(
                        "its step {} was `{name}`, which pipeline `{}` does not have there",
                        i + 1,
                        self.name
                    )))
                }
            }
            match status {
                Some(StepStatus::Succeeded) => {}
                None => {
                    from = i;
                    break;
                }
                Some(other) => {
                    return Err(refuse(format!(
                        "its step `{name}` ended {other:?} before the controller stopped; \
                         its undo may have begun"
                    )))
                }
            }
        }
        if let Some(step) = self.steps[from.min(self.steps.len())..]
            .iter()
            .find(|s| !s.is_repeatable())
        {
            return Err(refuse(format!(
                "step `{}` is left to run and is not safe to repeat",
                step.name
            )));
        }
        Ok(from)
    }

    /// Undoes, with this pipeline's own compensations, what an unfinished
    /// `run` had done: the steps it started, in reverse order, the
    /// interrupted one first. `ctx` gives the cluster as it is now; the run's
    /// id and the nodes the journal says it had created are put in it. Each
    /// undo is written to the journal. Returns what was undone, in words.
    ///
    /// This is what [`PipelineCleanup`] does for [`recover`](crate::recover).
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error
    /// when the run belongs to another pipeline or names a step this pipeline
    /// does not have; the first failed undo (the others are still tried).
    pub async fn undo_unfinished(&self, run: &RunRecord, ctx: &mut Context) -> Result<Vec<String>> {
        let cannot_undo = |why: String| {
            Error::other(
                crate::ErrorKind::InvalidInput,
                format!(
                    "cannot undo run {} with pipeline `{}`: {why}",
                    run.run_id, self.name
                ),
            )
        };
        if run.pipeline != self.name {
            return Err(cannot_undo(format!(
                "it is a run of pipeline `{}`",
                run.pipeline
            )));
        }
        let mut started = Vec::new();
        for (name, status) in &run.steps {
            let Some(step) = self.steps.iter().find(|s| s.name == *name) else {
                return Err(cannot_undo(format!(
                    "the journal names a step `{name}` the pipeline does not have"
                )));
            };
            // Already undone before the controller stopped, or never did anything.
            if matches!(status, Some(StepStatus::Compensated | StepStatus::Skipped)) {
                continue;
            }
            started.push(step);
        }
        ctx.set_run_id(run.run_id.clone());
        if let Some(trigger) = &run.trigger {
            ctx.set_trigger(trigger.clone());
        }
        ctx.add_new_nodes(run.new_nodes.iter().cloned());
        let token = ctx.replace_cancellation(CancellationToken::new());
        let mut undone = Vec::new();
        let mut first_error = None;
        for step in started.into_iter().rev() {
            let outcome = compensate_step(step, ctx).await;
            let entry = JournalEntry::StepUndone {
                run_id: run.run_id.clone(),
                step: outcome.step.clone(),
                succeeded: outcome.succeeded,
                at: chrono::Utc::now(),
            };
            if let Err(e) = self.record(entry).await {
                error!(error = %e, "Could not write the undo to the journal.");
            }
            if outcome.succeeded {
                undone.push(format!("undid step {}", outcome.step));
            } else if first_error.is_none() {
                first_error = Some(Error::other(
                    crate::ErrorKind::Unexpected,
                    format!(
                        "undoing step {} of run {} failed: {}",
                        outcome.step,
                        run.run_id,
                        outcome
                            .error
                            .as_ref()
                            .map_or("unknown error", |e| e.message.as_str())
                    ),
                ));
            }
        }
        ctx.replace_cancellation(token);
        match first_error {
            Some(e) => Err(e),
            None => Ok(undone),
        }
    }

    /// Runs the main steps, then the `finally` steps. A resumed run starts
    /// at index `resume` (the steps before it finished in an earlier life of
    /// the run: they count as done, and are undone if this one fails).
    async fn run_inner(&self, ctx: &mut Context, resume: Option<usize>) -> RunReport {
        let from = resume.unwrap_or(0);
        ctx.events = Some(self.events.clone());
        ctx.pipeline.clone_from(&self.name);
        ctx.report = None;
        let mut report = RunReport {
            run_id: ctx.run_id().clone(),
            pipeline: self.name.clone(),
            cluster: ctx.cluster().name().to_owned(),
            trigger: ctx.trigger().clone(),
            started_at: chrono::Utc::now(),
            ended_at: None,
            status: RunStatus::Running,
            steps: self
                .steps
                .iter()
                .map(|s| StepReport::pending(&s.name, s.target))
                .collect(),
            finally: self
                .finally
                .iter()
                .map(|s| StepReport::pending(&s.name, s.target))
                .collect(),
            nodes_added: Vec::new(),
            nodes_removed: Vec::new(),
            error: None,
            undone: Vec::new(),
            resumed_from: None,
        };
        if resume.is_some() {
            report.resumed_from = Some(
                self.steps
                    .get(from)
                    .map_or_else(|| "finally".to_owned(), |s| s.name.clone()),
            );
            for s in report.steps.iter_mut().take(from) {
                s.status = StepStatus::Succeeded;
            }
        }
        ctx.emit(Event::RunStarted {
            run_id: ctx.run_id().clone(),
            pipeline: self.name.clone(),
            cluster: ctx.cluster().name().to_owned(),
            reason: ctx.trigger().reason.clone(),
            steps: self.steps.len(),
        });
        info!(steps = self.steps.len(), trigger = %ctx.trigger().name, reason = %ctx.trigger().reason, "Run started.");

        // Resumed: the steps that finished before are done, and undone if this fails.
        let mut started: Vec<usize> = (0..from.min(self.steps.len())).collect();
        let mut failure: Option<(usize, Error)> = None;
        if resume.is_none() {
            let journaled = self
                .record(JournalEntry::RunStarted {
                    run_id: ctx.run_id().clone(),
                    pipeline: self.name.clone(),
                    cluster: ctx.cluster().name().to_owned(),
                    trigger: ctx.trigger().clone(),
                    at: chrono::Utc::now(),
                })
                .await;
            if let Err(e) = journaled {
                report.steps[0].status = StepStatus::Failed;
                report.steps[0].error = Some(ErrorReport::from(&e));
                failure = Some((0, e));
            }
        }
        let mut undo = false;
        let mut cancelled = false;
        let mut continued_past_failure = false;
        for (i, step) in self.steps.iter().enumerate().skip(from) {
            if failure.is_some() {
                break;
            }
            if ctx.is_cancelled() {
                info!(step = %step.name, "Run cancelled; not starting further steps.");
                cancelled = true;
                undo = true;
                break;
            }
            let (result, step_report) = self.run_journaled_step(step, i + 1, ctx).await;
            report.steps[i] = step_report;
            started.push(i);
            let Err(e) = result else { continue };
            if ctx.is_cancelled() && e.kind() == crate::ErrorKind::Cancelled {
                cancelled = true;
                undo = true;
                break;
            }
            match step.on_failure {
                FailurePolicy::Continue => {
                    warn!(step = %step.name, error = %e, "Step failed; continuing as its policy says.");
                    continued_past_failure = true;
                }
                FailurePolicy::Compensate => {
                    failure = Some((i, e));
                    undo = true;
                    break;
                }
                FailurePolicy::Abort => {
                    failure = Some((i, e));
                    break;
                }
            }
        }
        for s in &mut report.steps {
            if s.status == StepStatus::Pending {
                s.status = StepStatus::Skipped;
            }
        }

        // Undo and the finally steps must run to the end even when the run was
        // cancelled: they get a token of their own.
        let run_token = ctx.replace_cancellation(CancellationToken::new());
        if undo {
            for &i in started.iter().rev() {
                let outcome = compensate_step(&self.steps[i], ctx).await;
                let undone = JournalEntry::StepUndone {
                    run_id: ctx.run_id().clone(),
                    step: outcome.step.clone(),
                    succeeded: outcome.succeeded,
                    at: chrono::Utc::now(),
                };
                if let Err(e) = self.record(undone).await {
                    error!(error = %e, "Could not write the undo to the journal.");
                }
                let s = &mut report.steps[i];
                if s.status == StepStatus::Succeeded {
                    s.status = StepStatus::Compensated;
                }
                s.undo = Some(outcome.clone());
                report.undone.push(outcome);
            }
        }

        if let Some((i, e)) = failure {
            let err = Error::StepFailed {
                step: self.steps[i].name.clone(),
                node: e.node().map(str::to_owned),
                undone: report
                    .undone
                    .iter()
                    .map(|u| (u.step.clone(), u.succeeded))
                    .collect(),
                source: Box::new(e),
            };
            error!(error = %err, "Run failed.");
            report.error = Some(ErrorReport::from(&err));
        } else if cancelled {
            report.error = Some(ErrorReport::from(&Error::Cancelled));
        }
        report.status = if cancelled {
            RunStatus::Cancelled
        } else if report.error.is_some() {
            RunStatus::Failed
        } else if continued_past_failure {
            RunStatus::CompletedWithFailures
        } else {
            RunStatus::Succeeded
        };
        report.nodes_added = ctx.new_nodes().iter().map(NodeSummary::from).collect();
        report.nodes_removed = ctx.removed_nodes().iter().map(NodeSummary::from).collect();
        let ended = JournalEntry::StepsEnded {
            run_id: report.run_id.clone(),
            status: report.status,
            new_nodes: ctx.new_nodes().to_vec(),
            at: chrono::Utc::now(),
        };
        if let Err(e) = self.record(ended).await {
            error!(error = %e, "Could not write the end of the steps to the journal.");
        }

        for (j, step) in self.finally.iter().enumerate() {
            ctx.report = Some(report.clone());
            let (result, step_report) = run_step(step, None, ctx).await;
            report.finally[j] = step_report;
            if result.is_err() && report.status == RunStatus::Succeeded {
                report.status = RunStatus::CompletedWithFailures;
            }
        }
        ctx.replace_cancellation(run_token);
        report.ended_at = Some(chrono::Utc::now());
        let finished = JournalEntry::RunFinished {
            run_id: report.run_id.clone(),
            status: report.status,
            new_nodes: ctx.new_nodes().to_vec(),
            at: chrono::Utc::now(),
        };
        if let Err(e) = self.record(finished).await {
            error!(error = %e, "Could not write the end of the run to the journal; recovery will treat it as unfinished.");
        }
        ctx.report = Some(report.clone());
        info!(status = %report.status, "Run finished.");
        ctx.emit(Event::RunFinished {
            run_id: report.run_id.clone(),
            status: report.status,
            report: Box::new(report.clone()),
        });
        report
    }
}

impl Pipeline {
    async fn record(&self, entry: JournalEntry) -> Result<()> {
        match &self.journal {
            Some(journal) => journal.append(entry).await,
            None => Ok(()),
        }
    }

    /// Runs a step between its two journal entries. A step whose intent could
    /// not be written does not start; a step whose end could not be written
    /// counts as failed, so what it did is undone rather than unrecorded.
    async fn run_journaled_step(
        &self,
        step: &Step,
        position: usize,
        ctx: &mut Context,
    ) -> (Result<()>, StepReport) {
        if self.journal.is_some() {
            // The intent may name the step (a launch's client token is derived from it).
            ctx.step = StepScope {
                name: step.name.clone(),
                target: Some(step.target),
                ..StepScope::default()
            };
            let intent = JournalEntry::StepStarted {
                run_id: ctx.run_id().clone(),
                step: step.name.clone(),
                intent: step.action.intent(ctx),
                at: chrono::Utc::now(),
            };
            if let Err(e) = self.record(intent).await {
                let mut report = StepReport::pending(&step.name, step.target);
                report.status = StepStatus::Failed;
                report.error = Some(ErrorReport::from(&e));
                return (Err(e), report);
            }
        }
        let (mut result, mut report) = run_step(step, Some(position), ctx).await;
        let end = JournalEntry::StepFinished {
            run_id: ctx.run_id().clone(),
            step: step.name.clone(),
            status: report.status,
            new_nodes: ctx.new_nodes().to_vec(),
            at: chrono::Utc::now(),
        };
        if let Err(e) = self.record(end).await {
            if result.is_ok() {
                report.status = StepStatus::Failed;
                report.error = Some(ErrorReport::from(&e));
                result = Err(e);
            }
        }
        (result, report)
    }
}

async fn run_step(
    step: &Step,
    position: Option<usize>,
    ctx: &mut Context,
) -> (Result<()>, StepReport) {
    let nodes = step.target.resolve(ctx);
    let node_names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    ctx.step = StepScope {
        name: step.name.clone(),
        target: Some(step.target),
        nodes,
        outcomes: Vec::new(),
        attempts: 0,
    };
    ctx.emit(Event::StepStarted {
        run_id: ctx.run_id().clone(),
        step: step.name.clone(),
        target: step.target,
        nodes: node_names.clone(),
        position,
    });
    let span = info_span!("step", step = %step.name, target = %step.target);
    let started = tokio::time::Instant::now();
    let result = async {
        info!(nodes = ?node_names, "Step started.");
        let result = step.action.run(ctx).await;
        match &result {
            Ok(()) => info!("Step succeeded."),
            Err(e) => warn!(error = %e, "Step failed."),
        }
        result
    }
    .instrument(span)
    .await;
    let duration = started.elapsed();
    let status = if result.is_ok() {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    let report = StepReport {
        name: step.name.clone(),
        target: step.target,
        status,
        attempts: ctx.step.attempts.max(1),
        duration,
        nodes: std::mem::take(&mut ctx.step.outcomes),
        error: result.as_ref().err().map(ErrorReport::from),
        undo: None,
    };
    ctx.emit(Event::StepFinished {
        run_id: ctx.run_id().clone(),
        step: step.name.clone(),
        status,
        duration,
        error: result.as_ref().err().map(|e| e.to_string()),
    });
    (result, report)
}

async fn compensate_step(step: &Step, ctx: &mut Context) -> UndoOutcome {
    ctx.step = StepScope {
        name: step.name.clone(),
        target: Some(step.target),
        nodes: step.target.resolve(ctx),
        outcomes: Vec::new(),
        attempts: 0,
    };
    ctx.emit(Event::Compensating {
        run_id: ctx.run_id().clone(),
        step: step.name.clone(),
    });
    let span = info_span!("undo", step = %step.name);
    let result = step.action.compensate(ctx).instrument(span).await;
    match &result {
        Ok(()) => info!(step = %step.name, "Step undone."),
        Err(e) => error!(step = %step.name, error = %e, "Undoing the step failed."),
    }
    ctx.emit(Event::Compensated {
        run_id: ctx.run_id().clone(),
        step: step.name.clone(),
        succeeded: result.is_ok(),
    });
    UndoOutcome {
        step: step.name.clone(),
        succeeded: result.is_ok(),
        error: result.as_ref().err().map(ErrorReport::from),
    }
}

/// Recovery with a pipeline's own compensations: the [`RunCleanup`] that
/// [`recover`](crate::recover) (and [`Scaler::recover_with`](crate::Scaler::recover_with))
/// can use so that every step of an unfinished run is undone as in a failed
/// run — the launch terminated, and also the cluster's member lists rewritten
/// without the node. See [`Pipeline::undo_unfinished`].
#[derive(Debug, Clone)]
pub struct PipelineCleanup {
    pipeline: Arc<Pipeline>,
    cluster: Cluster,
}

impl PipelineCleanup {
    /// Undoes runs of `pipeline` on `cluster` (the cluster as it is now).
    pub fn new(pipeline: Arc<Pipeline>, cluster: Cluster) -> Self {
        Self { pipeline, cluster }
    }
}

#[async_trait::async_trait]
impl RunCleanup for PipelineCleanup {
    async fn cleanup(&self, run: &RunRecord) -> Result<Vec<String>> {
        let mut ctx = Context::new(self.cluster.clone());
        self.pipeline.undo_unfinished(run, &mut ctx).await
    }
}

/// What a run would do, step by step: the output of [`Pipeline::plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The pipeline.
    pub pipeline: String,
    /// The cluster.
    pub cluster: String,
    /// The main steps, in order.
    pub steps: Vec<PlannedStep>,
    /// The `finally` steps.
    pub finally: Vec<PlannedStep>,
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The step's name.
    pub name: String,
    /// Its target.
    pub target: Target,
    /// The nodes it would apply to now, by name.
    pub nodes: Vec<String>,
    /// For targets that include new nodes: the step that creates them.
    pub nodes_from: Option<String>,
    /// What it would do.
    pub effects: Vec<String>,
    /// Its timeout per attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Its retry policy.
    pub retry: Option<RetryPolicy>,
    /// What a failure does.
    pub on_failure: FailurePolicy,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Plan of `{}` on cluster {} (dry run: nothing is touched)",
            self.pipeline, self.cluster
        )?;
        let mut n = 0;
        for (label, steps) in [("", &self.steps), ("finally ", &self.finally)] {
            for s in steps {
                n += 1;
                write!(f, "  {n}. {label}{} -> {}", s.name, s.target)?;
                if !s.nodes.is_empty() {
                    write!(f, " [{}]", s.nodes.join(", "))?;
                }
                if let Some(from) = &s.nodes_from {
                    write!(f, " (+ nodes created by `{from}`)")?;
                }
                if let Some(t) = s.timeout {
                    write!(f, ", timeout {}", humantime::format_duration(t))?;
                }
                if let Some(r) = &s.retry {
                    write!(f, ", up to {} attempts", r.max_attempts)?;
                }
                writeln!(f)?;
                for e in &s.effects {
                    writeln!(f, "       - {e}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
