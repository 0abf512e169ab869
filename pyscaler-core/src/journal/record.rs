//! What the journal says of each run: entries folded into [`RunRecord`]s.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JournalEntry;
use crate::{Node, RunId, RunStatus, StepStatus, TriggerInfo};

/// Where a run stands according to the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunState {
    /// Started and never finished: the controller died (or is still running it).
    Unfinished,
    /// Finished with this status.
    Finished(RunStatus),
    /// Never finished, then cleaned up by a [`Recovery`](crate::Recovery).
    Recovered {
        /// Whether everything was undone.
        succeeded: bool,
    },
}

/// A run as the journal tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub run_id: RunId,
    /// The pipeline.
    pub pipeline: String,
    /// The cluster.
    pub cluster: String,
    /// What started it.
    #[serde(default)]
    pub trigger: Option<TriggerInfo>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Where it stands.
    pub state: RunState,
    /// Each step that started, in order, with its last known status
    /// (`None`: started, never finished).
    pub steps: Vec<(String, Option<StepStatus>)>,
    /// The nodes it had created at its last record.
    pub new_nodes: Vec<Node>,
    /// How its main steps ended, when they had (only `finally` steps were
    /// left or running).
    #[serde(default)]
    pub steps_ended: Option<RunStatus>,
}

impl RunRecord {
    /// Whether the run ended well (its nodes belong in the cluster).
    pub fn succeeded(&self) -> bool {
        matches!(
            self.state,
            RunState::Finished(RunStatus::Succeeded | RunStatus::CompletedWithFailures)
        )
    }

    /// The first step that started and never finished, if any.
    pub fn interrupted_step(&self) -> Option<&str> {
        self.steps
            .iter()
            .find(|(_, s)| s.is_none())
            .map(|(n, _)| n.as_str())
    }
}

impl RunRecord {
    /// Folds journal entries, in the order they were written, into one
    /// record per run, in the order runs started: what a [`Journal`]'s
    /// `runs` returns, for a journal kept in a store of the application's.
    ///
    /// [`Journal`]: crate::Journal
    pub fn from_entries(entries: impl IntoIterator<Item = JournalEntry>) -> Vec<RunRecord> {
        replay(entries)
    }
}

/// Folds journal entries into one record per run, in the order runs started.
pub(crate) fn replay(entries: impl IntoIterator<Item = JournalEntry>) -> Vec<RunRecord> {
    let mut order = Vec::new();
    let mut runs: BTreeMap<RunId, RunRecord> = BTreeMap::new();
    for entry in entries {
        if let JournalEntry::RunStarted {
            run_id,
            pipeline,
            cluster,
            trigger,
            at,
        } = &entry
        {
            order.push(run_id.clone());
            runs.insert(
                run_id.clone(),
                RunRecord {
                    run_id: run_id.clone(),
                    pipeline: pipeline.clone(),
                    cluster: cluster.clone(),
                    trigger: Some(trigger.clone()),
                    started_at: *at,
                    state: RunState::Unfinished,
                    steps: Vec::new(),
                    new_nodes: Vec::new(),
                    steps_ended: None,
                },
            );
            continue;
        }
        let Some(run) = entry.run_id().and_then(|id| runs.get_mut(id)) else {
            continue;
        };
        match entry {
            JournalEntry::StepStarted { step, .. } => run.steps.push((step, None)),
            JournalEntry::StepFinished {
                step,
                status,
                new_nodes,
                ..
            } => {
                if let Some(s) = run.steps.iter_mut().rev().find(|(n, _)| *n == step) {
                    s.1 = Some(status);
                }
                run.new_nodes = new_nodes;
            }
            JournalEntry::StepUndone {
                step, succeeded, ..
            } => {
                if succeeded {
                    if let Some(s) = run.steps.iter_mut().rev().find(|(n, _)| *n == step) {
                        if s.1 == Some(StepStatus::Succeeded) {
                            s.1 = Some(StepStatus::Compensated);
                        }
                    }
                }
            }
            JournalEntry::StepsEnded {
                status, new_nodes, ..
            } => {
                run.steps_ended = Some(status);
                run.new_nodes = new_nodes;
            }
            JournalEntry::RunFinished {
                status, new_nodes, ..
            } => {
                run.state = RunState::Finished(status);
                run.new_nodes = new_nodes;
            }
            JournalEntry::RunResumed { from_step, .. } => {
                // The steps from `from_step` on run again and are written down anew.
                let keep = from_step
                    .and_then(|f| run.steps.iter().position(|(n, _)| *n == f))
                    .unwrap_or(run.steps.len());
                run.steps.truncate(keep);
            }
            JournalEntry::RunRecovered { succeeded, .. } => {
                run.state = RunState::Recovered { succeeded }
            }
            JournalEntry::RunStarted { .. }
            | JournalEntry::Decided { .. }
            | JournalEntry::DecisionRepeated { .. } => {}
        }
    }
    order
        .into_iter()
        .filter_map(|id| runs.remove(&id))
        .collect()
}
