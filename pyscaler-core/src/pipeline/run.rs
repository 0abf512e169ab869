//! The engine: runs a pipeline's steps in order, with their timeouts,
//! retries and failure policies, takes a failed run's nodes out of service,
//! undoes what it did, runs the `finally` steps and journals every step.

use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use super::Pipeline;
use crate::context::StepScope;
use crate::journal::JournalEntry;
use crate::report::{ErrorReport, NodeSummary, StepReport, StepStatus, UndoOutcome};
use crate::step::Step;
use crate::{Context, Error, Event, FailurePolicy, Result, RunReport, RunStatus};

impl Pipeline {
    /// Runs the pipeline on `ctx` and reports what happened.
    ///
    /// Steps run in order. A failed step is retried when its policy and the
    /// error allow; then its [`FailurePolicy`] decides. On `Compensate` (and on
    /// cancellation, checked between steps) every step that ran is first
    /// asked to take its nodes out of service ([`Action::withdraw`](crate::Action::withdraw),
    /// in reverse order), then undone in reverse order, the failed one
    /// first. `finally` steps run last, always. The run never panics on a
    /// failed step: the failure is in the report.
    ///
    /// Each step runs under a child of `ctx`'s cancellation token, which is
    /// cancelled when the step ends (and, for a timed-out attempt, when the
    /// timeout fires): work a step left behind (a remote command it stopped
    /// waiting for) is told to stop before its undo starts.
    ///
    /// With a journal that holds an unfinished run of the same cluster (a
    /// controller died mid-run), no step runs: the report's error is
    /// [`Error::UnfinishedRun`], naming that run — unless the pipeline was
    /// built with [`recover_first`](crate::PipelineBuilder::recover_first),
    /// which recovers it first (and takes its nodes out of `ctx`'s cluster).
    pub async fn run(&self, ctx: &mut Context) -> RunReport {
        let span = info_span!("run", run_id = %ctx.run_id(), pipeline = %self.name, cluster = %ctx.cluster().name());
        async {
            if let Err(e) = self.clear_unfinished(ctx).await {
                return self.refused(ctx, &e);
            }
            self.run_inner(ctx, None).await
        }
        .instrument(span)
        .await
    }

    /// Refuses to start over an unfinished run of the cluster, or recovers it
    /// first when the pipeline was built to.
    async fn clear_unfinished(&self, ctx: &mut Context) -> Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let cluster = ctx.cluster().name().to_owned();
        let unfinished =
            |runs: Vec<crate::RunRecord>| runs.into_iter().find(|r| r.cluster == cluster);
        let Some(run) = unfinished(journal.unfinished_runs().await?) else {
            return Ok(());
        };
        if let Some(recovery) = &self.recover_first {
            warn!(run_id = %run.run_id, pipeline = %run.pipeline, "Recovering an unfinished run before this one.");
            let report = recovery.run_including(self, ctx.cluster()).await?;
            info!(recovery = %report, "Recovered before running.");
            let gone: Vec<String> = report
                .runs
                .iter()
                .filter(|r| r.error.is_none())
                .flat_map(|r| r.nodes.iter().map(|n| n.id.clone()))
                .collect();
            ctx.forget_new_nodes(&gone);
            match unfinished(journal.unfinished_runs().await?) {
                None => return Ok(()),
                Some(left) => return Err(Error::unfinished(&left)),
            }
        }
        Err(Error::unfinished(&run))
    }

    /// The report of a run that was refused before any step ran.
    fn refused(&self, ctx: &Context, e: &Error) -> RunReport {
        error!(error = %e, "Run refused.");
        let now = chrono::Utc::now();
        let mut report = self.pending_report(ctx);
        report.status = RunStatus::Failed;
        report.error = Some(ErrorReport::from(e));
        report.ended_at = Some(now);
        for s in report.steps.iter_mut().chain(&mut report.finally) {
            s.status = StepStatus::Skipped;
        }
        report
    }

    fn pending_report(&self, ctx: &Context) -> RunReport {
        RunReport {
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
        }
    }
}

impl Pipeline {
    /// Runs the main steps, then the `finally` steps. A resumed run starts
    /// at index `resume` (the steps before it finished in an earlier life of
    /// the run: they count as done, and are undone if this one fails).
    pub(crate) async fn run_inner(&self, ctx: &mut Context, resume: Option<usize>) -> RunReport {
        let from = resume.unwrap_or(0);
        ctx.events = Some(self.events.clone());
        ctx.pipeline.clone_from(&self.name);
        ctx.report = None;
        let mut report = self.pending_report(ctx);
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
            if failure.is_some() || self.fenced(ctx) {
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
        if self.fenced(ctx) {
            return self.abandon(ctx, report);
        }

        // Undo and the finally steps must run to the end even when the run was
        // cancelled: they get a token of their own.
        let run_token = ctx.replace_cancellation(CancellationToken::new());
        if undo {
            let steps: Vec<&Step> = started.iter().map(|&i| &self.steps[i]).collect();
            let outcomes = self.compensate_started(&steps, ctx).await;
            for (&i, outcome) in started.iter().rev().zip(outcomes) {
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

    /// Ends a run whose lease is lost: nothing more is done (no undo, no
    /// `finally` step, no journal write, which a fenced journal would refuse
    /// anyway); the run stays unfinished in the journal, for the lease's new
    /// holder to recover.
    fn abandon(&self, ctx: &mut Context, mut report: RunReport) -> RunReport {
        let err = Error::LeaseLost {
            message: format!(
                "run {} abandoned unfinished; the lease's new holder recovers it",
                report.run_id
            ),
        };
        warn!(error = %err, "Run abandoned: the lease is lost.");
        report.status = RunStatus::Cancelled;
        report.error = Some(ErrorReport::from(&err));
        report.nodes_added = ctx.new_nodes().iter().map(NodeSummary::from).collect();
        report.nodes_removed = ctx.removed_nodes().iter().map(NodeSummary::from).collect();
        report.ended_at = Some(chrono::Utc::now());
        ctx.report = Some(report.clone());
        ctx.emit(Event::RunFinished {
            run_id: report.run_id.clone(),
            status: report.status,
            report: Box::new(report.clone()),
        });
        report
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
            error: result.as_ref().err().map(ToString::to_string),
            outcomes: report.nodes.clone(),
            removed_nodes: ctx.removed_nodes().to_vec(),
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
    // The step's own token: cancelled when the step ends, so what it left
    // running (a command it timed out waiting for) stops before any undo.
    let step_token = ctx.cancellation().child_token();
    let run_token = ctx.replace_cancellation(step_token.clone());
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
    step_token.cancel();
    ctx.replace_cancellation(run_token);
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

impl Pipeline {
    /// Undoes `started` (in run order) in reverse: first every step's
    /// [`withdraw`](crate::Action::withdraw), last started first, so no node
    /// of the run keeps serving while the slower undos run; then every
    /// step's compensation. Each undo is journaled. Returns the outcomes in
    /// the order the steps were undone (the last started first).
    pub(crate) async fn compensate_started(
        &self,
        started: &[&Step],
        ctx: &mut Context,
    ) -> Vec<UndoOutcome> {
        let mut withdrawn = Vec::new();
        for step in started.iter().rev() {
            withdrawn.push(withdraw_step(step, ctx).await);
        }
        let mut outcomes = Vec::new();
        for (step, withdraw_error) in started.iter().rev().zip(withdrawn) {
            let mut outcome = compensate_step(step, ctx).await;
            outcome.withdraw_error = withdraw_error;
            let undone = JournalEntry::StepUndone {
                run_id: ctx.run_id().clone(),
                step: outcome.step.clone(),
                succeeded: outcome.succeeded,
                error: outcome.error.as_ref().map(|e| e.message.clone()),
                at: chrono::Utc::now(),
            };
            if let Err(e) = self.record(undone).await {
                error!(error = %e, "Could not write the undo to the journal.");
            }
            outcomes.push(outcome);
        }
        outcomes
    }
}

/// Sets the step scope of `step` for an undo (its target resolved now).
fn undo_scope(step: &Step, ctx: &mut Context) {
    ctx.step = StepScope {
        name: step.name.clone(),
        target: Some(step.target),
        nodes: step.target.resolve(ctx),
        outcomes: Vec::new(),
        attempts: 0,
    };
}

/// Takes `step`'s nodes out of service; the error, when that failed.
async fn withdraw_step(step: &Step, ctx: &mut Context) -> Option<ErrorReport> {
    undo_scope(step, ctx);
    let span = info_span!("withdraw", step = %step.name);
    let result = step.action.withdraw(ctx).instrument(span).await;
    ctx.emit(Event::Withdrawn {
        run_id: ctx.run_id().clone(),
        step: step.name.clone(),
        succeeded: result.is_ok(),
    });
    match result {
        Ok(()) => None,
        Err(e) => {
            error!(step = %step.name, error = %e, "Taking the step's nodes out of service failed.");
            Some(ErrorReport::from(&e))
        }
    }
}

async fn compensate_step(step: &Step, ctx: &mut Context) -> UndoOutcome {
    undo_scope(step, ctx);
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
        withdraw_error: None,
    }
}
