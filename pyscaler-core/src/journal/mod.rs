//! The run journal: every run and step written down before its side effect
//! starts and after it ends, so a controller that dies can be recovered from.
//!
//! The format ([`JournalEntry`]) and the storage trait ([`Journal`]) are
//! here; `record` folds entries into [`RunRecord`]s, `file` is the embedded
//! [`FileJournal`], `memory` the in-memory [`MemoryJournal`] for tests.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Decision, Node, NodeOutcome, Result, RunId, RunStatus, StepStatus, TriggerInfo};

mod file;
mod memory;
mod record;

pub use file::FileJournal;
pub use memory::MemoryJournal;
pub(crate) use record::replay;
pub use record::{RunRecord, RunState};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JournalEntry {
    /// A run is about to start its first step.
    RunStarted {
        /// The run.
        run_id: RunId,
        /// The pipeline.
        pipeline: String,
        /// The cluster.
        cluster: String,
        /// Why it started.
        trigger: TriggerInfo,
        /// When.
        at: DateTime<Utc>,
    },
    /// A step is about to run: its intent, in words (`launch 2 t3.small with client token T`).
    StepStarted {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// What it is about to do.
        intent: Vec<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A step ended; `new_nodes` are the nodes this run has created so far
    /// (what undoing it needs: instance ids, addresses).
    StepFinished {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// How it ended.
        status: StepStatus,
        /// The nodes the run has created so far.
        new_nodes: Vec<Node>,
        /// Its error, when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// What it did on each node, in one line each.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        outcomes: Vec<NodeOutcome>,
        /// The nodes the run has removed from the cluster so far.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed_nodes: Vec<Node>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A step was undone (or undoing it failed).
    StepUndone {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// Whether undoing succeeded.
        succeeded: bool,
        /// Why undoing it failed, when it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The main steps (and the undo after a failure) ended with this
    /// status; the `finally` steps come next. A controller that dies in a
    /// `finally` step (a mail server that hangs) leaves a run whose work is
    /// done: recovery marks it finished rather than undoing it.
    StepsEnded {
        /// The run.
        run_id: RunId,
        /// How the main steps ended.
        status: RunStatus,
        /// The nodes it created and kept.
        new_nodes: Vec<Node>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The run ended (its `finally` steps included).
    RunFinished {
        /// The run.
        run_id: RunId,
        /// How it ended.
        status: RunStatus,
        /// The nodes it created and kept.
        new_nodes: Vec<Node>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A run that never finished is taken up again by a
    /// [`Recovery`](crate::Recovery) that resumes, from `from_step` (`None`:
    /// every main step had finished; only the `finally` steps are left).
    RunResumed {
        /// The run.
        run_id: RunId,
        /// The first step run again.
        from_step: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A run that never finished was cleaned up by a [`Recovery`](crate::Recovery).
    RunRecovered {
        /// The run.
        run_id: RunId,
        /// What was undone, in words.
        undone: Vec<String>,
        /// Whether everything was undone.
        succeeded: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// A decision of the scaler, taken (with the run it started) or
    /// skipped, with the values that led to it.
    Decided {
        /// The cluster.
        cluster: String,
        /// The decision.
        decision: Decision,
        /// When.
        at: DateTime<Utc>,
    },
    /// The decision before it (of the same trigger, the same verdict) was
    /// taken again and again: one entry for a streak, not one an interval.
    DecisionRepeated {
        /// The cluster.
        cluster: String,
        /// The trigger.
        trigger: String,
        /// How many times in all, the first included.
        count: u32,
        /// When it was taken the last time.
        last_at: DateTime<Utc>,
    },
}

impl JournalEntry {
    /// The kind of entry, as its `entry` tag in the journal says (`run_started`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RunStarted { .. } => "run_started",
            Self::StepStarted { .. } => "step_started",
            Self::StepFinished { .. } => "step_finished",
            Self::StepUndone { .. } => "step_undone",
            Self::StepsEnded { .. } => "steps_ended",
            Self::RunFinished { .. } => "run_finished",
            Self::RunResumed { .. } => "run_resumed",
            Self::RunRecovered { .. } => "run_recovered",
            Self::Decided { .. } => "decided",
            Self::DecisionRepeated { .. } => "decision_repeated",
        }
    }

    /// The run this entry is about; `None` for a decision that started
    /// no run.
    pub fn run_id(&self) -> Option<&RunId> {
        match self {
            Self::RunStarted { run_id, .. }
            | Self::StepStarted { run_id, .. }
            | Self::StepFinished { run_id, .. }
            | Self::StepUndone { run_id, .. }
            | Self::StepsEnded { run_id, .. }
            | Self::RunFinished { run_id, .. }
            | Self::RunResumed { run_id, .. }
            | Self::RunRecovered { run_id, .. } => Some(run_id),
            Self::Decided { decision, .. } => decision.run_id.as_ref(),
            Self::DecisionRepeated { .. } => None,
        }
    }
}

/// Where runs are written down. Writes are durable when `append` returns.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Journal: Send + Sync + fmt::Debug {
    /// Writes one entry, durably.
    ///
    /// # Errors
    /// When the entry could not be written; the pipeline then does not start
    /// the side effect the entry announces.
    async fn append(&self, entry: JournalEntry) -> Result<()>;

    /// Every run the journal knows, in the order they started.
    ///
    /// # Errors
    /// When the journal cannot be read.
    async fn runs(&self) -> Result<Vec<RunRecord>>;

    /// Every entry, in the order written: what [`History`](crate::History)
    /// is told from.
    ///
    /// # Errors
    /// When the journal cannot be read; the default, for a journal that
    /// cannot list its entries, says so.
    async fn entries(&self) -> Result<Vec<JournalEntry>> {
        Err(crate::Error::other(
            crate::ErrorKind::InvalidInput,
            "this journal cannot list its entries",
        ))
    }

    /// The runs that started and never finished nor were recovered.
    ///
    /// # Errors
    /// When the journal cannot be read.
    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .runs()
            .await?
            .into_iter()
            .filter(|r| r.state == RunState::Unfinished)
            .collect())
    }

    /// Whether this journal refuses writes because its controller no longer
    /// holds the cluster's lease (a fenced journal whose write was refused
    /// as stale). A run on a fenced journal is abandoned: no further step,
    /// undo or `finally` step starts. The default: never.
    fn is_fenced(&self) -> bool {
        false
    }
}

/// Appends `entry` to `journal`, and records how long the durable write
/// took (and whether it failed) with the other metrics.
pub(crate) async fn write(journal: &dyn Journal, entry: JournalEntry) -> Result<()> {
    let kind = entry.kind();
    let started = std::time::Instant::now();
    let result = journal.append(entry).await;
    crate::observe::journal_write(kind, started.elapsed(), result.is_ok());
    result
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
