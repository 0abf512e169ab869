//! Taking up, or undoing, a run whose controller died: what
//! [`Recovery`](crate::Recovery) does with a pipeline's own steps.

use tokio_util::sync::CancellationToken;
use tracing::{info_span, warn, Instrument};

use super::Pipeline;
use crate::journal::{JournalEntry, RunRecord, RunState};
use crate::step::Step;
use crate::{Context, Error, Result, RunReport, RunStatus, StepStatus};

impl Pipeline {
    /// Takes up a run whose controller died, from its first unfinished step,
    /// instead of undoing it (what [`Recovery::resume`](crate::Recovery::resume) asks for).
    ///
    /// `run` is the journal's record of it ([`Journal::unfinished_runs`](crate::Journal::unfinished_runs)).
    /// The run keeps its id (so its instances keep their `pyscaler:run` tag
    /// and a launch its client token) and the nodes the journal says it had
    /// created; `ctx` gives the cluster as it is now. The steps that had
    /// finished are not run again; the interrupted one and every one after
    /// it are, so each of them must be safe to repeat
    /// ([`Step::is_repeatable`](crate::Step::is_repeatable)). If the resumed run fails, the steps that
    /// finished before the controller died are undone as well.
    ///
    /// # Errors
    /// [`Error::NotResumable`], before anything runs, when the run is not
    /// unfinished, belongs to another pipeline or a different list of steps,
    /// had begun undoing (a step of it failed), or has a step left that is
    /// not safe to repeat.
    pub(crate) async fn resume(&self, run: &RunRecord, ctx: &mut Context) -> Result<RunReport> {
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
    /// Like a failed run's undo, every started step is first asked to take
    /// its nodes out of service, then undone ([`Pipeline::run`]).
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error
    /// when the run belongs to another pipeline or names a step this pipeline
    /// does not have; the first failed undo (the others are still tried).
    pub(crate) async fn undo_unfinished(
        &self,
        run: &RunRecord,
        ctx: &mut Context,
    ) -> Result<Vec<String>> {
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
        let mut started: Vec<&Step> = Vec::new();
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
        ctx.set_recovering();
        if let Some(trigger) = &run.trigger {
            ctx.set_trigger(trigger.clone());
        }
        ctx.add_new_nodes(run.new_nodes.iter().cloned());
        let token = ctx.replace_cancellation(CancellationToken::new());
        let outcomes = self.compensate_started(&started, ctx).await;
        let mut undone = Vec::new();
        let mut first_error = None;
        for outcome in outcomes {
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
}
