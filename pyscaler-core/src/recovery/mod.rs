//! Recovery after a controller died mid-run: one entry point, [`Recovery`].
//!
//! A run whose controller died is left unfinished in the journal. A
//! `Recovery` reads those runs, finds each one's pipeline by name, and
//! either undoes it with that pipeline's own compensations or, when asked
//! and every step it has left is safe to repeat, finishes it; then it runs
//! the extra clean-ups ([`RunCleanup`]: a provider's sweep of what the run
//! tagged) and says what it did in a [`RecoveryReport`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::journal::{Journal, JournalEntry, RunRecord};
use crate::{Cluster, Context, Error, HeldLease, Node, Pipeline, Result, RunId, RunReport};

/// An extra clean-up of what an unfinished run left behind, run after the
/// pipeline's own undo: found from the provider's side (pyscaler-aws's
/// `Ec2RunCleanup` terminates what is still tagged with the run, such as a
/// launch whose completion was never journaled).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RunCleanup: Send + Sync {
    /// Cleans up after `run`; returns what was undone, in words.
    ///
    /// # Errors
    /// When something could not be undone; the run stays unfinished in the journal.
    async fn cleanup(&self, run: &RunRecord) -> Result<Vec<String>>;
}

#[async_trait]
impl<C: RunCleanup + ?Sized> RunCleanup for Arc<C> {
    async fn cleanup(&self, run: &RunRecord) -> Result<Vec<String>> {
        (**self).cleanup(run).await
    }
}

/// Recovers the runs a dead controller left unfinished, for one cluster.
///
/// Give it every pipeline that runs on the cluster: each unfinished run is
/// dispatched by the pipeline name its journal gives. Each run is then:
/// - **resumed**, when [`resume(true)`](Self::resume) and every step it has
///   left is safe to repeat ([`Step::is_repeatable`](crate::Step::is_repeatable)):
///   it keeps its id and nodes and goes on from its interrupted step;
/// - else **marked finished**, when its main steps had ended (the
///   controller died in a `finally` step, such as the notification): its
///   nodes stay;
/// - else **undone**: every step it started is taken out of service and
///   undone with the pipeline's own compensation (the launch terminated,
///   the member lists rewritten without its nodes), then each extra
///   [`then`](Self::then) clean-up runs. When all of that succeeded the run
///   is marked recovered in the journal; else it stays unfinished, so the
///   next recovery tries again.
///
/// ```
/// use std::sync::Arc;
/// use pyscaler_core::{Cluster, MemoryJournal, Pipeline, Recovery};
/// # use pyscaler_core::{async_trait, Action, ActionExt, Context, Result, Target};
/// # struct Launch;
/// # #[async_trait]
/// # impl Action for Launch {
/// #     fn name(&self) -> &str { "launch" }
/// #     async fn run(&self, _ctx: &mut Context) -> Result<()> { Ok(()) }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let journal = Arc::new(MemoryJournal::new());
/// let scale_out = Arc::new(
///     Pipeline::builder("scale-out").journal(journal.clone()).step(Launch.on(Target::None)).build()?,
/// );
/// let report = Recovery::new(journal)
///     .pipeline(scale_out)
///     .resume(true)
///     .run(&Cluster::new("web"))
///     .await?;
/// assert!(report.is_success());
/// print!("{report}"); // "No unfinished run to recover."
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Recovery {
    journal: Arc<dyn Journal>,
    pipelines: Vec<Arc<Pipeline>>,
    cleanups: Vec<Arc<dyn RunCleanup>>,
    resume: bool,
    /// The lease held while recovering: its lost token, epoch and duration.
    lease: Option<(CancellationToken, u64, Duration)>,
}

impl fmt::Debug for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovery")
            .field("journal", &self.journal)
            .field(
                "pipelines",
                &self.pipelines.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field("cleanups", &self.cleanups.len())
            .field("resume", &self.resume)
            .field(
                "under_lease",
                &self.lease.as_ref().map(|(_, epoch, _)| epoch),
            )
            .finish()
    }
}

impl Recovery {
    /// Recovers the unfinished runs of `journal`.
    pub fn new(journal: Arc<dyn Journal>) -> Self {
        Self {
            journal,
            pipelines: Vec::new(),
            cleanups: Vec::new(),
            resume: false,
            lease: None,
        }
    }

    /// Recovers under `held`, the cluster's lease: when a predecessor held
    /// it (the epoch is past 1) and left runs unfinished, waits one lease
    /// duration before undoing anything, so a paused predecessor's last call
    /// has landed; and stops (runs it has not reached stay unfinished) the
    /// moment the lease is lost.
    pub fn under_lease(mut self, held: &HeldLease) -> Self {
        self.lease = Some((held.lost().clone(), held.epoch(), held.duration()));
        self
    }

    /// A pipeline whose runs this recovers (give every pipeline of the cluster).
    pub fn pipeline(mut self, pipeline: Arc<Pipeline>) -> Self {
        self.pipelines.push(pipeline);
        self
    }

    /// An extra clean-up, run on each undone run after the pipeline's own
    /// undo and the clean-ups before it; every one runs, and the run is
    /// recovered only when all succeeded.
    pub fn then(mut self, cleanup: impl RunCleanup + 'static) -> Self {
        self.cleanups.push(Arc::new(cleanup));
        self
    }

    /// Finishes each run from its interrupted step instead of undoing it,
    /// when every step it has left is safe to repeat (off by default). A
    /// run that cannot be resumed is undone, and the report says why.
    pub fn resume(mut self, yes: bool) -> Self {
        self.resume = yes;
        self
    }

    /// A context for recovering on `cluster`, under the lease when there is one.
    fn context(&self, cluster: Cluster) -> Context {
        let ctx = Context::new(cluster);
        match &self.lease {
            Some((lost, ..)) => ctx.with_lease(lost.clone()),
            None => ctx,
        }
    }

    pub(crate) fn knows(&self, pipeline: &str) -> bool {
        self.pipelines.iter().any(|p| p.name() == pipeline)
    }

    /// Recovers every unfinished run of `cluster` (the cluster as it is now,
    /// as a restarted controller discovered it).
    ///
    /// # Errors
    /// [`Error::UnknownPipeline`], before anything is undone, when a run is
    /// of a pipeline this recovery was not given; when the journal cannot
    /// be read or written. A run that could not be cleaned up is not an
    /// error: its [`RecoveredRun::error`] says why.
    pub async fn run(&self, cluster: &Cluster) -> Result<RecoveryReport> {
        self.run_with(None, cluster).await
    }

    /// [`run`](Self::run), with `pipeline` among the pipelines (a pipeline
    /// that recovers before it runs).
    pub(crate) async fn run_including(
        &self,
        pipeline: &Pipeline,
        cluster: &Cluster,
    ) -> Result<RecoveryReport> {
        self.run_with(Some(pipeline), cluster).await
    }

    async fn run_with(
        &self,
        extra: Option<&Pipeline>,
        cluster: &Cluster,
    ) -> Result<RecoveryReport> {
        let find = |name: &str| {
            self.pipelines
                .iter()
                .map(Arc::as_ref)
                .chain(extra)
                .find(|p| p.name() == name)
        };
        let runs: Vec<RunRecord> = self
            .journal
            .unfinished_runs()
            .await?
            .into_iter()
            .filter(|r| r.cluster == cluster.name())
            .collect();
        if let Some(run) = runs.iter().find(|r| find(&r.pipeline).is_none()) {
            return Err(Error::UnknownPipeline {
                run_id: run.run_id.to_string(),
                pipeline: run.pipeline.clone(),
            });
        }
        let mut report = RecoveryReport {
            runs: Vec::new(),
            cluster: cluster.clone(),
        };
        if let Some((lost, epoch, duration)) = &self.lease {
            if *epoch > 1 && !runs.is_empty() {
                info!(runs = runs.len(), wait = ?duration,
                    "A predecessor left runs unfinished; waiting one lease duration before recovering them.");
                tokio::select! {
                    _ = lost.cancelled() => {}
                    _ = tokio::time::sleep(*duration) => {}
                }
            }
        }
        for run in runs {
            let Some(pipeline) = find(&run.pipeline) else {
                continue;
            };
            if self.lease.as_ref().is_some_and(|(l, ..)| l.is_cancelled()) {
                return Err(Error::LeaseLost {
                    message: format!(
                        "stopped recovering before run {}: the lease is another's",
                        run.run_id
                    ),
                });
            }
            let done = self
                .recover_run(pipeline, &run, &mut report.cluster)
                .await?;
            report.runs.push(done);
        }
        Ok(report)
    }

    /// Resumes, marks finished or undoes `run`; `cluster` becomes the
    /// cluster after it.
    async fn recover_run(
        &self,
        pipeline: &Pipeline,
        run: &RunRecord,
        cluster: &mut Cluster,
    ) -> Result<RecoveredRun> {
        let mut done = RecoveredRun {
            run_id: run.run_id.clone(),
            pipeline: run.pipeline.clone(),
            interrupted_step: run.interrupted_step().map(str::to_owned),
            action: RecoveryAction::Undone,
            not_resumed: None,
            resumed: None,
            undone: Vec::new(),
            cleanup: Vec::new(),
            nodes: Vec::new(),
            error: None,
        };
        if self.resume {
            // The cluster without the run's own nodes: they come back from the journal.
            let mut without = cluster.clone();
            for node in &run.new_nodes {
                without.remove(&node.id);
            }
            let mut ctx = self.context(without);
            match pipeline.resume(run, &mut ctx).await {
                Ok(resumed) => {
                    *cluster = ctx.cluster().clone();
                    done.action = RecoveryAction::Resumed;
                    done.resumed = Some(Box::new(resumed));
                    return Ok(done);
                }
                Err(e) => {
                    warn!(run_id = %run.run_id, error = %e, "Not resuming the run; undoing it instead.");
                    done.not_resumed = Some(e.to_string());
                }
            }
        }
        if let Some(status) = run.steps_ended {
            warn!(run_id = %run.run_id, %status, "A run whose steps had ended never finished its finally steps; marking it finished.");
            let finished = JournalEntry::RunFinished {
                run_id: run.run_id.clone(),
                status,
                new_nodes: run.new_nodes.clone(),
                at: Utc::now(),
            };
            crate::journal::write(self.journal.as_ref(), finished).await?;
            done.action = RecoveryAction::MarkedFinished;
            done.interrupted_step = None;
            done.undone = vec![format!(
                "nothing: its steps had ended ({status}); only its finally steps were cut short"
            )];
            return Ok(done);
        }
        warn!(run_id = %run.run_id, step = ?run.interrupted_step(), "Recovering a run that never finished.");
        let mut first_error = None;
        let mut ctx = self.context(cluster.clone());
        match pipeline.undo_unfinished(run, &mut ctx).await {
            Ok(lines) => done.undone = lines,
            Err(e) => first_error = Some(e),
        }
        for cleanup in &self.cleanups {
            match cleanup.cleanup(run).await {
                Ok(lines) => done.cleanup.extend(lines),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(e) => error!(run_id = %run.run_id, error = %e, "A clean-up failed."),
            }
        }
        done.nodes.clone_from(&run.new_nodes);
        if let Some(e) = first_error {
            done.error = Some(e.to_string());
            return Ok(done);
        }
        let recovered = JournalEntry::RunRecovered {
            run_id: run.run_id.clone(),
            undone: done.undone.iter().chain(&done.cleanup).cloned().collect(),
            succeeded: true,
            at: Utc::now(),
        };
        crate::journal::write(self.journal.as_ref(), recovered).await?;
        for node in &run.new_nodes {
            cluster.remove(&node.id);
        }
        Ok(done)
    }
}

/// What a [`Recovery`] did with a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryAction {
    /// Its steps were undone (and the clean-ups ran).
    Undone,
    /// It was finished from its interrupted step.
    Resumed,
    /// Its main steps had ended: it was marked finished, its nodes kept.
    MarkedFinished,
}

/// What a [`Recovery`] did with one unfinished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveredRun {
    /// The run.
    pub run_id: RunId,
    /// Its pipeline.
    pub pipeline: String,
    /// The step it was in when the controller died.
    pub interrupted_step: Option<String>,
    /// What was done with it.
    pub action: RecoveryAction,
    /// Why it was not resumed, when resuming was asked for and refused.
    pub not_resumed: Option<String>,
    /// The resumed run's report.
    pub resumed: Option<Box<RunReport>>,
    /// What the pipeline's own undo did, in words (or why nothing was undone).
    pub undone: Vec<String>,
    /// What the extra clean-ups did, in words.
    pub cleanup: Vec<String>,
    /// The nodes the undone run had created (from its last journal record):
    /// gone once the recovery succeeded, so they no longer belong in the cluster.
    pub nodes: Vec<Node>,
    /// Why recovering it failed (it then stays unfinished in the journal).
    pub error: Option<String>,
}

impl RecoveredRun {
    /// Whether the run was recovered: undone or marked finished without an
    /// error, or resumed and the resumed run succeeded.
    pub fn is_success(&self) -> bool {
        self.error.is_none() && self.resumed.as_ref().is_none_or(|r| r.is_success())
    }
}

/// What [`Recovery::run`] did, run by run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Each unfinished run, in the order they started.
    pub runs: Vec<RecoveredRun>,
    /// The cluster after the recovery: without the undone runs' nodes, with
    /// the resumed runs' changes.
    pub cluster: Cluster,
}

impl RecoveryReport {
    /// Whether every run was recovered ([`RecoveredRun::is_success`]).
    pub fn is_success(&self) -> bool {
        self.runs.iter().all(RecoveredRun::is_success)
    }

    /// The reports of the runs that were resumed.
    pub fn resumed(&self) -> impl Iterator<Item = &RunReport> {
        self.runs.iter().filter_map(|r| r.resumed.as_deref())
    }
}

/// One line per run: `Recovered run R (interrupted in S): …`,
/// `Resumed run R from S: succeeded`, `Not resuming run R: …`,
/// `Could NOT recover run R (interrupted in S): …`.
impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.runs.is_empty() {
            return writeln!(f, "No unfinished run to recover.");
        }
        for r in &self.runs {
            if let Some(why) = &r.not_resumed {
                writeln!(
                    f,
                    "Not resuming run {}: {why}; undoing it instead.",
                    r.run_id
                )?;
            }
            if let Some(resumed) = &r.resumed {
                let from = resumed.resumed_from.as_deref().unwrap_or("-");
                writeln!(
                    f,
                    "Resumed run {} from {from}: {}",
                    r.run_id, resumed.status
                )?;
                continue;
            }
            let step = r.interrupted_step.as_deref().unwrap_or("between steps");
            match &r.error {
                Some(e) => writeln!(
                    f,
                    "Could NOT recover run {} (interrupted in {step}): {e}",
                    r.run_id
                )?,
                None => {
                    let lines: Vec<&str> = r
                        .undone
                        .iter()
                        .chain(&r.cleanup)
                        .map(String::as_str)
                        .collect();
                    let undone = if lines.is_empty() {
                        "nothing to undo".to_owned()
                    } else {
                        lines.join("; ")
                    };
                    writeln!(
                        f,
                        "Recovered run {} (interrupted in {step}): {undone}",
                        r.run_id
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
