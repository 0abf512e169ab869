//! What a run did: the run report.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind, Node, NodeAddress, RunId, Target, TriggerInfo};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// Not run yet.
    Pending,
    /// Ran and succeeded.
    Succeeded,
    /// Ran and failed.
    Failed,
    /// Not run (an earlier step stopped the run, or it was cancelled).
    Skipped,
    /// Succeeded, then was undone after a later failure.
    Compensated,
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Compensated => "compensated",
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Still running.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// The run's steps did their work, but a step with `FailurePolicy::Continue`
    /// or a `finally` step (a notification) failed.
    CompletedWithFailures,
    /// A step failed and stopped the run.
    Failed,
    /// The run was cancelled and stopped after a step.
    Cancelled,
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::CompletedWithFailures => "completed with failures",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        })
    }
}

/// An error as a report keeps it: its kind, its message and its causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The error's kind.
    pub kind: ErrorKind,
    /// The error's message.
    pub message: String,
    /// The messages of its causes, outermost first (the message itself included).
    pub chain: Vec<String>,
    /// The node it happened on, when it names one.
    pub node: Option<String>,
}

impl From<&Error> for ErrorReport {
    fn from(e: &Error) -> Self {
        Self {
            kind: e.kind(),
            message: e.to_string(),
            chain: e.chain(),
            node: e.node().map(str::to_owned),
        }
    }
}

/// The few facts of a node a report names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// The node's id.
    pub id: String,
    /// The node's name.
    pub name: String,
    /// The provider's instance id.
    pub instance_id: Option<String>,
    /// Its SSH address.
    pub address: Option<NodeAddress>,
}

impl From<&Node> for NodeSummary {
    fn from(n: &Node) -> Self {
        Self {
            id: n.id.clone(),
            name: n.name.clone(),
            instance_id: n.instance_id.clone(),
            address: n.address.clone(),
        }
    }
}

/// What a step did on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOutcome {
    /// The node's name.
    pub node: String,
    /// Whether the step succeeded there.
    pub succeeded: bool,
    /// Whether the step never started there (the fan-out stopped after
    /// failures elsewhere, or the run was cancelled); `succeeded` is false.
    #[serde(default)]
    pub not_run: bool,
    /// One line: `exit 0`, `puppet: 3 changes`, the error.
    pub summary: String,
    /// What the node printed, kept up to a cap.
    pub output: Option<String>,
    /// Whether `output` was cut at the cap.
    pub truncated: bool,
    /// How long it took on that node.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

impl NodeOutcome {
    /// A success on `node`.
    pub fn ok(node: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            succeeded: true,
            not_run: false,
            summary: summary.into(),
            output: None,
            truncated: false,
            duration: Duration::ZERO,
        }
    }

    /// A failure on `node`.
    pub fn failed(node: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            succeeded: false,
            ..Self::ok(node, summary)
        }
    }

    /// A node the step never started on, and why.
    pub fn not_run(node: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            succeeded: false,
            not_run: true,
            ..Self::ok(node, why)
        }
    }

    /// Adds the node's output.
    pub fn with_output(mut self, output: impl Into<String>, truncated: bool) -> Self {
        self.output = Some(output.into());
        self.truncated = truncated;
        self
    }

    /// Adds how long it took.
    pub fn with_duration(mut self, d: Duration) -> Self {
        self.duration = d;
        self
    }

    /// Keeps the first `cap` bytes of the output (on a character boundary),
    /// marking it truncated when that cut it: what a report keeps of a
    /// chatty node ([`FanOut::output_cap`](crate::FanOut::output_cap)).
    pub fn cap_output(mut self, cap: usize) -> Self {
        if let Some(text) = self.output.take() {
            let (text, cut) = cap_text(text, cap);
            self.output = Some(text);
            self.truncated |= cut;
        }
        self
    }
}

/// Keeps the first `cap` bytes of `text` (on a character boundary); says whether it cut.
fn cap_text(mut text: String, cap: usize) -> (String, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// Whether undoing a step worked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoOutcome {
    /// The step undone.
    pub step: String,
    /// Whether undoing it succeeded.
    pub succeeded: bool,
    /// Why it did not.
    pub error: Option<ErrorReport>,
    /// Why taking the step's nodes out of service before the undo
    /// ([`Action::withdraw`](crate::Action::withdraw)) failed; `None` when it
    /// worked or the step had nothing to withdraw.
    #[serde(default)]
    pub withdraw_error: Option<ErrorReport>,
}

/// One step of a run, as it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step's name.
    pub name: String,
    /// Its target.
    pub target: Target,
    /// How it ended.
    pub status: StepStatus,
    /// How many attempts it took (0 when it did not run).
    pub attempts: u32,
    /// How long it ran, retries included.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Its outcome on each node it applied to.
    pub nodes: Vec<NodeOutcome>,
    /// Why it failed.
    pub error: Option<ErrorReport>,
    /// Whether it was undone, and how that went.
    pub undo: Option<UndoOutcome>,
}

impl StepReport {
    pub(crate) fn pending(name: &str, target: Target) -> Self {
        Self {
            name: name.to_owned(),
            target,
            status: StepStatus::Pending,
            attempts: 0,
            duration: Duration::ZERO,
            nodes: Vec::new(),
            error: None,
            undo: None,
        }
    }
}

/// What one run of a pipeline did, serializable and readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// The run's id.
    pub run_id: RunId,
    /// The pipeline's name.
    pub pipeline: String,
    /// The cluster's name.
    pub cluster: String,
    /// What started it, and why.
    pub trigger: TriggerInfo,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended.
    pub status: RunStatus,
    /// The main steps, in order.
    pub steps: Vec<StepReport>,
    /// The `finally` steps, in order.
    pub finally: Vec<StepReport>,
    /// Nodes the run added (and kept).
    pub nodes_added: Vec<NodeSummary>,
    /// Nodes the run removed.
    pub nodes_removed: Vec<NodeSummary>,
    /// Why the run failed: which step, on which node, and what was undone.
    pub error: Option<ErrorReport>,
    /// What was undone after the failure, in the order it was undone.
    pub undone: Vec<UndoOutcome>,
    /// Set when this is a run taken up again after its controller died: the
    /// first step run again (the steps before it had finished then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
}

impl RunReport {
    /// Whether the run did everything it was asked to.
    pub fn is_success(&self) -> bool {
        self.status == RunStatus::Succeeded
    }

    /// Whether every undo after a failure succeeded (true when nothing was undone).
    pub fn undo_succeeded(&self) -> bool {
        self.undone.iter().all(|u| u.succeeded)
    }

    /// The report of the step with this name.
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps
            .iter()
            .chain(&self.finally)
            .find(|s| s.name == name)
    }

    /// How long the run took, when it has ended.
    pub fn duration(&self) -> Option<Duration> {
        self.ended_at
            .and_then(|e| (e - self.started_at).to_std().ok())
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Run {} of `{}` on cluster {}: {}",
            self.run_id, self.pipeline, self.cluster, self.status
        )?;
        writeln!(
            f,
            "  trigger: {} ({})",
            self.trigger.name, self.trigger.reason
        )?;
        if let Some(d) = self.duration() {
            writeln!(
                f,
                "  took: {}",
                humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
            )?;
        }
        let width = self
            .steps
            .iter()
            .chain(&self.finally)
            .map(|s| s.name.len())
            .max()
            .unwrap_or(4);
        for (label, steps) in [("steps", &self.steps), ("finally", &self.finally)] {
            if steps.is_empty() {
                continue;
            }
            writeln!(f, "  {label}:")?;
            for s in steps {
                write!(f, "    {:<width$}  {:<11}", s.name, s.status.to_string())?;
                if s.attempts > 1 {
                    write!(f, "  {} attempts", s.attempts)?;
                }
                write!(
                    f,
                    "  {}",
                    humantime::format_duration(
                        Duration::from_millis(s.duration.as_millis() as u64)
                    )
                )?;
                if let Some(u) = &s.undo {
                    write!(f, "  (undo {})", if u.succeeded { "ok" } else { "FAILED" })?;
                }
                writeln!(f)?;
                for n in &s.nodes {
                    writeln!(
                        f,
                        "      {} {}: {}",
                        match (n.succeeded, n.not_run) {
                            (true, _) => "ok  ",
                            (false, true) => "SKIP",
                            (false, false) => "FAIL",
                        },
                        n.node,
                        n.summary
                    )?;
                }
                if let Some(e) = &s.error {
                    writeln!(f, "      error ({}): {}", e.kind, e.message)?;
                }
            }
        }
        for n in &self.nodes_added {
            write!(f, "  added: {}", n.name)?;
            if let Some(i) = &n.instance_id {
                write!(f, " {i}")?;
            }
            if let Some(a) = &n.address {
                write!(f, " at {a}")?;
            }
            writeln!(f)?;
        }
        for n in &self.nodes_removed {
            writeln!(
                f,
                "  removed: {}{}",
                n.name,
                n.instance_id
                    .as_deref()
                    .map(|i| format!(" {i}"))
                    .unwrap_or_default()
            )?;
        }
        if let Some(e) = &self.error {
            writeln!(f, "  error ({}): {}", e.kind, e.message)?;
        }
        if !self.undone.is_empty() {
            let parts: Vec<String> = self
                .undone
                .iter()
                .map(|u| format!("{} ({})", u.step, if u.succeeded { "ok" } else { "FAILED" }))
                .collect();
            writeln!(f, "  undone: {}", parts.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_on_a_character_boundary() {
        let o = NodeOutcome::ok("web-01", "ok").with_output("aé€", false);
        let capped = o.clone().cap_output(4);
        assert_eq!(
            (capped.output.as_deref(), capped.truncated),
            (Some("aé"), true)
        );
        let kept = o.cap_output(64);
        assert_eq!(
            (kept.output.as_deref(), kept.truncated),
            (Some("aé€"), false)
        );
        // Nothing to cap: no output stays no output.
        assert_eq!(NodeOutcome::ok("web-01", "ok").cap_output(0).output, None);
    }
}
