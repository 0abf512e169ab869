//! What the journal tells of a cluster, for a person asking "why did it
//! scale?" (or why not): each run with the decision that started it (the
//! trigger, its value against the threshold, the rule in words), its steps
//! with their outcomes and durations, the nodes it added or removed and
//! what was undone and why; and the decisions that started nothing, a
//! streak of the same skip as one entry with its count.
//!
//! [`History::from_entries`] folds a journal's entries
//! ([`Journal::entries`](crate::Journal::entries)); `text` prints it as a
//! table ([`History::table`]) and one run as a story ([`RunStory::explain`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::journal::{JournalEntry, RunState};
use crate::report::NodeSummary;
use crate::{Decision, Node, NodeOutcome, RunId, StepStatus, TriggerInfo, Verdict};

mod text;

/// The runs and decisions of one cluster, in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// The cluster.
    pub cluster: String,
    /// Its runs, in the order they started.
    pub runs: Vec<RunStory>,
    /// The decisions that started no run, in the order they were taken.
    pub skipped: Vec<DecisionStory>,
}

/// One run, as the journal tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStory {
    /// The run.
    pub run_id: RunId,
    /// The pipeline.
    pub pipeline: String,
    /// What started it.
    pub trigger: Option<TriggerInfo>,
    /// The scaler's decision that started it, with the trigger's value and
    /// threshold (`None` for a run started by hand, outside a scaler).
    pub decision: Option<Decision>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended (its `finally` steps included), if it did.
    pub ended_at: Option<DateTime<Utc>>,
    /// Where it stands.
    pub state: RunState,
    /// Its main steps, in the order they started.
    pub steps: Vec<StepStory>,
    /// Every node it created, kept or not.
    pub nodes_added: Vec<NodeSummary>,
    /// The nodes it created and kept.
    pub nodes_kept: Vec<NodeSummary>,
    /// The nodes it removed from the cluster.
    pub nodes_removed: Vec<NodeSummary>,
    /// The steps undone after a failure, in the order undone.
    pub undone: Vec<UndoStory>,
    /// What a recovery undid of it, when a controller died mid-run.
    pub recovered: Vec<String>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStory {
    /// The step.
    pub name: String,
    /// What it was about to do, in words.
    pub intent: Vec<String>,
    /// How it ended; `None`: started, never finished.
    pub status: Option<StepStatus>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    #[serde(with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// What it did on each node.
    pub outcomes: Vec<NodeOutcome>,
}

/// A step undone after a failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UndoStory {
    /// The step.
    pub step: String,
    /// Whether undoing it worked.
    pub succeeded: bool,
    /// Why undoing it failed, when it did.
    pub error: Option<String>,
}

/// A decision that started no run, taken `count` times in a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionStory {
    /// When it was first taken.
    pub at: DateTime<Utc>,
    /// When it was last taken (the same as `at` when taken once).
    pub last_at: DateTime<Utc>,
    /// How many times in a row.
    pub count: u32,
    /// The decision (the first of the streak).
    pub decision: Decision,
}

impl History {
    /// The history of `cluster` told by `entries` (a journal's, in the
    /// order written): the runs that started at or after `since` and the
    /// decisions last taken at or after it (everything when `None`).
    pub fn from_entries(
        entries: impl IntoIterator<Item = JournalEntry>,
        cluster: &str,
        since: Option<DateTime<Utc>>,
    ) -> Self {
        let mut runs: Vec<RunStory> = Vec::new();
        let mut skipped: Vec<DecisionStory> = Vec::new();
        let mut decisions: Vec<Decision> = Vec::new();
        for entry in entries {
            fold(entry, cluster, &mut runs, &mut skipped, &mut decisions);
        }
        for run in &mut runs {
            run.decision = decisions
                .iter()
                .find(|d| d.run_id.as_ref() == Some(&run.run_id))
                .cloned();
        }
        let after = |t: &DateTime<Utc>| since.is_none_or(|s| *t >= s);
        runs.retain(|r| after(&r.started_at));
        skipped.retain(|d| after(&d.last_at));
        Self {
            cluster: cluster.to_owned(),
            runs,
            skipped,
        }
    }

    /// The run `run_id`, if the history holds it.
    pub fn run(&self, run_id: &str) -> Option<&RunStory> {
        self.runs.iter().find(|r| r.run_id.as_str() == run_id)
    }
}

fn summaries(nodes: &[Node]) -> Vec<NodeSummary> {
    nodes.iter().map(NodeSummary::from).collect()
}

fn fold(
    entry: JournalEntry,
    cluster: &str,
    runs: &mut Vec<RunStory>,
    skipped: &mut Vec<DecisionStory>,
    decisions: &mut Vec<Decision>,
) {
    match entry {
        JournalEntry::RunStarted {
            run_id,
            pipeline,
            cluster: of,
            trigger,
            at,
        } if of == cluster => runs.push(RunStory {
            run_id,
            pipeline,
            trigger: Some(trigger),
            decision: None,
            started_at: at,
            ended_at: None,
            state: RunState::Unfinished,
            steps: Vec::new(),
            nodes_added: Vec::new(),
            nodes_kept: Vec::new(),
            nodes_removed: Vec::new(),
            undone: Vec::new(),
            recovered: Vec::new(),
        }),
        JournalEntry::Decided {
            cluster: of,
            decision,
            at,
        } if of == cluster => {
            if decision.run_id.is_some() || decision.verdict == Verdict::Scale {
                decisions.push(decision);
            } else {
                skipped.push(DecisionStory {
                    at,
                    last_at: at,
                    count: 1,
                    decision,
                });
            }
        }
        JournalEntry::DecisionRepeated {
            cluster: of,
            trigger,
            count,
            last_at,
        } if of == cluster => {
            if let Some(d) = skipped
                .iter_mut()
                .rev()
                .find(|d| d.decision.trigger == trigger)
            {
                d.count = count;
                d.last_at = last_at;
            }
        }
        other => {
            let Some(id) = other.run_id().cloned() else {
                return;
            };
            if let Some(run) = runs.iter_mut().rev().find(|r| r.run_id == id) {
                step_entry(run, other);
            }
        }
    }
}

/// What an entry about a run adds to its story.
fn step_entry(run: &mut RunStory, entry: JournalEntry) {
    match entry {
        JournalEntry::StepStarted {
            step, intent, at, ..
        } => run.steps.push(StepStory {
            name: step,
            intent,
            status: None,
            started_at: at,
            duration: None,
            error: None,
            outcomes: Vec::new(),
        }),
        JournalEntry::StepFinished {
            step,
            status,
            new_nodes,
            error,
            outcomes,
            removed_nodes,
            at,
            ..
        } => {
            if let Some(s) = run.steps.iter_mut().rev().find(|s| s.name == step) {
                s.status = Some(status);
                s.duration = (at - s.started_at).to_std().ok();
                s.error = error;
                s.outcomes = outcomes;
            }
            for node in summaries(&new_nodes) {
                if !run.nodes_added.iter().any(|n| n.id == node.id) {
                    run.nodes_added.push(node);
                }
            }
            run.nodes_kept = summaries(&new_nodes);
            run.nodes_removed = summaries(&removed_nodes);
        }
        JournalEntry::StepUndone {
            step,
            succeeded,
            error,
            ..
        } => {
            if succeeded {
                if let Some(s) = run.steps.iter_mut().rev().find(|s| s.name == step) {
                    if s.status == Some(StepStatus::Succeeded) {
                        s.status = Some(StepStatus::Compensated);
                    }
                }
            }
            run.undone.push(UndoStory {
                step,
                succeeded,
                error,
            });
        }
        JournalEntry::StepsEnded { new_nodes, .. } => run.nodes_kept = summaries(&new_nodes),
        JournalEntry::RunFinished {
            status,
            new_nodes,
            at,
            ..
        } => {
            run.state = RunState::Finished(status);
            run.nodes_kept = summaries(&new_nodes);
            run.ended_at = Some(at);
        }
        JournalEntry::RunResumed { from_step, .. } => {
            let keep = from_step
                .and_then(|f| run.steps.iter().position(|s| s.name == f))
                .unwrap_or(run.steps.len());
            run.steps.truncate(keep);
        }
        JournalEntry::RunRecovered {
            undone,
            succeeded,
            at,
            ..
        } => {
            run.state = RunState::Recovered { succeeded };
            run.recovered = undone;
            run.ended_at = Some(at);
        }
        JournalEntry::RunStarted { .. }
        | JournalEntry::Decided { .. }
        | JournalEntry::DecisionRepeated { .. } => {}
    }
}

#[cfg(test)]
mod tests;
