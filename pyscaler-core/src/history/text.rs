//! A history in words: a table of runs and skipped decisions, and one
//! run's story ("why did it scale?").

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{DecisionStory, History, RunStory};
use crate::journal::RunState;
use crate::report::NodeSummary;
use crate::{StepStatus, Verdict};

/// A moment, to the second, in UTC: `2026-12-02 03:41:07`.
fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A duration to the second (`1m 4s`; `0s` under a second).
fn took(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn state(s: &RunState) -> String {
    match s {
        RunState::Unfinished => "unfinished".to_owned(),
        RunState::Finished(status) => status.to_string(),
        RunState::Recovered { succeeded: true } => "recovered".to_owned(),
        RunState::Recovered { succeeded: false } => "recovery failed".to_owned(),
    }
}

fn node(n: &NodeSummary) -> String {
    match &n.instance_id {
        Some(id) => format!("{} ({id})", n.name),
        None => n.name.clone(),
    }
}

fn value(v: f64) -> String {
    format!("{v:.2}")
}

impl DecisionStory {
    /// What became of the decision, in a few words: `skipped: cooldown x3`.
    fn outcome(&self) -> String {
        let what = match &self.decision.verdict {
            Verdict::Scale => "scale".to_owned(),
            Verdict::Skipped(skip) => format!("skipped: {}", skip.as_str()),
            Verdict::NoData => "no data".to_owned(),
            Verdict::Failed => "failed: no data".to_owned(),
        };
        if self.count > 1 {
            format!("{what} x{}", self.count)
        } else {
            what
        }
    }

    fn why(&self) -> String {
        let d = &self.decision;
        let mut why = d.reason.clone();
        if let (Some(v), Some(t)) = (d.value, d.threshold) {
            let _ = write!(why, " (value {}, threshold {})", value(v), value(t));
        }
        if self.count > 1 {
            let _ = write!(why, "; last at {}", when(&self.last_at));
        }
        why
    }
}

impl RunStory {
    fn took(&self) -> Option<Duration> {
        self.ended_at
            .and_then(|end| (end - self.started_at).to_std().ok())
    }

    /// The run's story in plain words, a line each: why it started (the
    /// trigger, its value against the threshold, the rule), what each step
    /// did on which node, what was undone and why, the nodes, how it ended.
    pub fn explain(&self) -> String {
        let mut out = Vec::new();
        out.push(format!(
            "Run {} of {}, started {} UTC.",
            self.run_id,
            self.pipeline,
            when(&self.started_at)
        ));
        if let Some(t) = &self.trigger {
            out.push(format!("Why: trigger {} fired: {}.", t.name, t.reason));
        }
        match &self.decision {
            Some(d) => {
                let reading = match (d.value, d.threshold) {
                    (Some(v), Some(t)) => format!(
                        "{} read {} against the threshold {}",
                        d.trigger,
                        value(v),
                        value(t)
                    ),
                    _ => format!("{} had no value to show", d.trigger),
                };
                let size = if d.change > 0 {
                    format!(" of {} node(s)", d.change)
                } else {
                    " (its steps say how many nodes)".to_owned()
                };
                out.push(format!(
                    "The decision: {reading}; with {} node(s) in the cluster, the scaler chose a {}{size}.",
                    d.nodes, d.direction
                ));
                if d.triggers.len() > 1 {
                    out.push(format!("Triggers that agreed: {}.", d.triggers.join(", ")));
                }
            }
            None => out.push(
                "No scaler decision is journaled for it (a run by hand, or a scaler that does not journal its decisions).".to_owned(),
            ),
        }
        out.push("Steps:".to_owned());
        for (i, s) in self.steps.iter().enumerate() {
            let status = s
                .status
                .map_or_else(|| "started, never finished".to_owned(), |st| st.to_string());
            let duration = s
                .duration
                .map(|d| format!(" in {}", took(d)))
                .unwrap_or_default();
            let intent = if s.intent.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.intent.join("; "))
            };
            out.push(format!(
                "  {}. {}{intent}: {status}{duration}.",
                i + 1,
                s.name
            ));
            for o in &s.outcomes {
                out.push(format!("       on {}: {}", o.node, o.summary));
            }
            if let Some(e) = &s.error {
                out.push(format!("       error: {e}"));
            }
        }
        if self.steps.is_empty() {
            out.push("  none started.".to_owned());
        }
        if self.undone.is_empty() {
            out.push("Nothing was undone.".to_owned());
        } else {
            let failed = self
                .steps
                .iter()
                .find(|s| s.status == Some(StepStatus::Failed));
            out.push(match failed {
                Some(s) => format!(
                    "Undone, because {} failed{}: the last step first.",
                    s.name,
                    s.error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
                None => "Undone, because the run was cancelled: the last step first.".to_owned(),
            });
            for u in &self.undone {
                out.push(match (&u.succeeded, &u.error) {
                    (true, _) => format!("  {}: undone.", u.step),
                    (false, Some(e)) => format!("  {}: UNDO FAILED: {e}", u.step),
                    (false, None) => format!("  {}: UNDO FAILED.", u.step),
                });
            }
        }
        if !self.recovered.is_empty() {
            out.push(format!(
                "A recovery cleaned it up after its controller died: {}.",
                self.recovered.join("; ")
            ));
        }
        for n in &self.nodes_added {
            let kept = self.nodes_kept.iter().any(|k| k.id == n.id);
            out.push(if kept {
                format!("Added {} and kept it.", node(n))
            } else {
                format!("Added {}, then took it away again.", node(n))
            });
        }
        for n in &self.nodes_removed {
            out.push(format!("Removed {} from the cluster.", node(n)));
        }
        if self.nodes_added.is_empty() && self.nodes_removed.is_empty() {
            out.push("No node was added or removed.".to_owned());
        }
        out.push(match (self.ended_at, self.took()) {
            (Some(end), Some(d)) => format!(
                "Ended {} at {} UTC, after {}.",
                state(&self.state),
                when(&end),
                took(d)
            ),
            _ => format!("It has not ended: {}.", state(&self.state)),
        });
        out.join("\n") + "\n"
    }
}

impl History {
    /// The runs and skipped decisions as a table, in the order they
    /// happened: when, the run (or the trigger that decided), the pipeline
    /// (or the direction), the outcome, how long, the nodes kept and
    /// removed, and why.
    pub fn table(&self) -> String {
        let mut rows: Vec<(DateTime<Utc>, [String; 7])> = Vec::new();
        for r in &self.runs {
            let why = r
                .trigger
                .as_ref()
                .map(|t| format!("{}: {}", t.name, t.reason))
                .unwrap_or_default();
            rows.push((
                r.started_at,
                [
                    when(&r.started_at),
                    r.run_id.to_string(),
                    r.pipeline.clone(),
                    state(&r.state),
                    r.took().map_or_else(|| "-".to_owned(), took),
                    format!("+{} -{}", r.nodes_kept.len(), r.nodes_removed.len()),
                    why,
                ],
            ));
        }
        for d in &self.skipped {
            rows.push((
                d.at,
                [
                    when(&d.at),
                    format!("decision of {}", d.decision.trigger),
                    d.decision.direction.to_string(),
                    d.outcome(),
                    "-".to_owned(),
                    "-".to_owned(),
                    d.why(),
                ],
            ));
        }
        rows.sort_by_key(|(at, _)| *at);
        let header = [
            "WHEN",
            "RUN OR DECISION",
            "PIPELINE",
            "OUTCOME",
            "TOOK",
            "NODES",
            "WHY",
        ]
        .map(str::to_owned);
        let all: Vec<&[String; 7]> = std::iter::once(&header)
            .chain(rows.iter().map(|(_, r)| r))
            .collect();
        let mut widths = [0usize; 7];
        for row in &all {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!(
            "History of cluster {}: {} run(s), {} skipped decision(s)\n",
            self.cluster,
            self.runs.len(),
            self.skipped.len()
        );
        for row in all {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}
