//! The one place the engine records its metrics: from its events, the
//! triggers' evaluations, a step's retries and the journal's writes.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::names;
use crate::{Decision, Direction, ErrorKind, Event, RunStatus, StepStatus, Verdict};

/// Where an event happened: the labels every run metric carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// The cluster's name.
    pub(crate) cluster: &'a str,
    /// The pipeline's name (empty for the scaler's own events).
    pub(crate) pipeline: &'a str,
}

/// Records what `event` says, in `scope`.
pub(crate) fn record(scope: Scope<'_>, event: &Event) {
    let cluster = || ("cluster", scope.cluster.to_owned());
    let pipeline = || ("pipeline", scope.pipeline.to_owned());
    match event {
        Event::RunStarted { .. } => {
            counter!(names::RUNS_STARTED, &[cluster(), pipeline()]).increment(1);
            gauge!(names::RUNS_IN_PROGRESS, &[cluster(), pipeline()]).increment(1.0);
        }
        Event::StepFinished {
            step,
            status,
            duration,
            ..
        } => {
            let labels = [
                cluster(),
                pipeline(),
                ("step", step.clone()),
                ("status", step_status(*status).to_owned()),
            ];
            counter!(names::STEPS, &labels).increment(1);
            histogram!(names::STEP_DURATION, &labels).record(duration.as_secs_f64());
        }
        Event::Withdrawn {
            step, succeeded, ..
        } => {
            let labels = [
                cluster(),
                pipeline(),
                ("step", step.clone()),
                ("status", outcome(*succeeded).to_owned()),
            ];
            counter!(names::WITHDRAWALS, &labels).increment(1);
        }
        Event::Compensated {
            step, succeeded, ..
        } => {
            let labels = [
                cluster(),
                pipeline(),
                ("step", step.clone()),
                ("status", outcome(*succeeded).to_owned()),
            ];
            counter!(names::UNDOS, &labels).increment(1);
        }
        Event::NodeAdded { .. } => {
            counter!(names::NODES_ADDED, &[cluster(), pipeline()]).increment(1);
        }
        Event::NodeRemoved { .. } => {
            counter!(names::NODES_REMOVED, &[cluster(), pipeline()]).increment(1);
        }
        Event::RunFinished { status, report, .. } => {
            let labels = [
                cluster(),
                pipeline(),
                ("status", run_status(*status).to_owned()),
            ];
            counter!(names::RUNS_FINISHED, &labels).increment(1);
            gauge!(names::RUNS_IN_PROGRESS, &[cluster(), pipeline()]).decrement(1.0);
            if let Some(ended) = report.ended_at {
                let took = (ended - report.started_at).to_std().unwrap_or_default();
                histogram!(names::RUN_DURATION, &labels).record(took.as_secs_f64());
            }
        }
        Event::Decided(decision) => decided(scope.cluster, decision),
        Event::SampleFailed { trigger, .. } => {
            counter!(
                names::SAMPLE_FAILURES,
                &[cluster(), ("trigger", trigger.clone())]
            )
            .increment(1);
        }
        _ => {}
    }
}

fn decided(cluster: &str, d: &Decision) {
    let labels = [
        ("cluster", cluster.to_owned()),
        ("trigger", d.trigger.clone()),
        ("direction", direction(d.direction).to_owned()),
        ("kind", decision_kind(&d.verdict).to_owned()),
    ];
    counter!(names::DECISIONS, &labels).increment(1);
}

/// The cluster has `nodes` nodes.
pub(crate) fn cluster_size(cluster: &str, nodes: usize) {
    gauge!(names::CLUSTER_NODES, "cluster" => cluster.to_owned()).set(nodes as f64);
}

/// One evaluation of `trigger`: whether its condition held (`None`: no
/// data), its value and threshold.
pub(crate) fn evaluation(
    cluster: &str,
    trigger: &str,
    breaching: Option<bool>,
    value: Option<f64>,
    threshold: Option<f64>,
) {
    let result = match breaching {
        Some(true) => "breaching",
        Some(false) => "not_breaching",
        None => "no_data",
    };
    let labels = [
        ("cluster", cluster.to_owned()),
        ("trigger", trigger.to_owned()),
    ];
    counter!(
        names::TRIGGER_EVALUATIONS,
        "cluster" => cluster.to_owned(),
        "trigger" => trigger.to_owned(),
        "result" => result,
    )
    .increment(1);
    if let Some(v) = value {
        gauge!(names::TRIGGER_VALUE, &labels).set(v);
    }
    if let Some(t) = threshold {
        gauge!(names::TRIGGER_THRESHOLD, &labels).set(t);
    }
}

/// `trigger`'s loop went round (an evaluation finished, or it is disabled).
pub(crate) fn heartbeat(cluster: &str, trigger: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    gauge!(
        names::LAST_EVALUATION,
        "cluster" => cluster.to_owned(),
        "trigger" => trigger.to_owned(),
    )
    .set(now.as_secs_f64());
}

/// Whether `trigger` is stalled now (see the scaler's liveness check).
/// Whether this controller holds `cluster`'s lease.
pub(crate) fn lease_held(cluster: &str, held: bool) {
    gauge!(names::LEASE_HELD, "cluster" => cluster.to_owned()).set(if held { 1.0 } else { 0.0 });
}

pub(crate) fn stalled(cluster: &str, trigger: &str, stalled: bool) {
    gauge!(
        names::EVALUATION_STALLED,
        "cluster" => cluster.to_owned(),
        "trigger" => trigger.to_owned(),
    )
    .set(if stalled { 1.0 } else { 0.0 });
}

/// A step's attempt failed with a retryable error of `kind` and is tried again.
pub(crate) fn step_retry(scope: Scope<'_>, step: &str, kind: ErrorKind) {
    counter!(
        names::STEP_RETRIES,
        "cluster" => scope.cluster.to_owned(),
        "pipeline" => scope.pipeline.to_owned(),
        "step" => step.to_owned(),
        "error_kind" => error_kind(kind),
    )
    .increment(1);
}

/// One journal write of an `entry` (its kind) took `took`; `ok`: it was durable.
pub(crate) fn journal_write(entry: &'static str, took: Duration, ok: bool) {
    histogram!(names::JOURNAL_WRITE, "entry" => entry).record(took.as_secs_f64());
    if !ok {
        counter!(names::JOURNAL_WRITE_ERRORS, "entry" => entry).increment(1);
    }
}

fn outcome(succeeded: bool) -> &'static str {
    if succeeded {
        "succeeded"
    } else {
        "failed"
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Out => "out",
        Direction::In => "in",
    }
}

fn step_status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Compensated => "compensated",
    }
}

fn run_status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::CompletedWithFailures => "completed_with_failures",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

/// A decision's kind, the `kind` label of [`names::DECISIONS`].
pub(crate) fn decision_kind(v: &Verdict) -> &'static str {
    match v {
        Verdict::Scale => "scale",
        Verdict::Skipped(skip) => skip.as_str(),
        Verdict::NoData => "no_data",
        Verdict::Failed => "failed",
    }
}

/// An error kind as a label value: snake case, as in reports' JSON.
pub(crate) fn error_kind(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::NotFound => "not_found",
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::Throttled => "throttled",
        ErrorKind::Transient => "transient",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Conflict => "conflict",
        ErrorKind::RemoteCommandFailed => "remote_command_failed",
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::Unexpected => "unexpected",
    }
}
