//! The scaler's own metrics, recorded through the [`metrics`] facade: the
//! application installs the recorder it wants (a Prometheus exporter, a
//! StatsD bridge, none); without one, recording costs next to nothing. The
//! library holds no exporter.
//!
//! They are recorded in one place, `record`, from what the engine already
//! says: its [`Event`](crate::Event)s (runs, steps, undos, nodes,
//! decisions), the opinions triggers leave on the
//! [`ClusterView`](crate::ClusterView) at each evaluation, the retries of
//! a step, the journal's writes, and the provider calls a provider crate
//! reports with [`record_provider_call`].
//!
//! Names follow Prometheus' conventions: a `pyscaler_` prefix, `_total` on
//! counters, `_seconds` on durations (histograms, base units). Labels are
//! bounded: a cluster, pipeline, step or trigger name comes from the
//! configuration, the others from short fixed lists. A run id, node id,
//! instance id or address is never a label (a thousand runs add no series).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `pyscaler_runs_started_total` | counter | cluster, pipeline | runs started |
//! | `pyscaler_runs_finished_total` | counter | cluster, pipeline, status | runs finished, by [`RunStatus`](crate::RunStatus) |
//! | `pyscaler_run_duration_seconds` | histogram | cluster, pipeline, status | a run's duration, `finally` steps included |
//! | `pyscaler_runs_in_progress` | gauge | cluster, pipeline | runs going on now |
//! | `pyscaler_steps_total` | counter | cluster, pipeline, step, status | steps ended (`succeeded`, `failed`) |
//! | `pyscaler_step_duration_seconds` | histogram | cluster, pipeline, step, status | a step's duration, its retries included |
//! | `pyscaler_step_retries_total` | counter | cluster, pipeline, step, error_kind | attempts retried after a retryable error |
//! | `pyscaler_undos_total` | counter | cluster, pipeline, step, status | steps undone (`succeeded`, `failed`) |
//! | `pyscaler_withdrawals_total` | counter | cluster, pipeline, step, status | steps whose nodes were taken out of service before the undo |
//! | `pyscaler_nodes_added_total` | counter | cluster, pipeline | nodes that joined the cluster |
//! | `pyscaler_nodes_removed_total` | counter | cluster, pipeline | nodes that left it (a scale-in, or an undo) |
//! | `pyscaler_cluster_nodes` | gauge | cluster | nodes in the cluster |
//! | `pyscaler_trigger_evaluations_total` | counter | cluster, trigger, result | evaluations: `breaching`, `not_breaching`, `no_data` |
//! | `pyscaler_trigger_value` | gauge | cluster, trigger | the trigger's value at its last evaluation |
//! | `pyscaler_trigger_threshold` | gauge | cluster, trigger | the threshold (or target) it compares with |
//! | `pyscaler_sample_failures_total` | counter | cluster, trigger | readings of its counter that failed |
//! | `pyscaler_decisions_total` | counter | cluster, trigger, direction, kind | decisions: `scale`, a [`Skip`](crate::Skip) (`cooldown`, `paused`, `at_maximum`, `at_minimum`, `run_in_progress`, `not_agreed`, `no_eligible_node`), `no_data`, `failed` |
//! | `pyscaler_last_evaluation_timestamp_seconds` | gauge | cluster, trigger | when the trigger last finished an evaluation (Unix time): the heartbeat |
//! | `pyscaler_evaluation_stalled` | gauge | cluster, trigger | 1 while it has not finished one within its bound |
//! | `pyscaler_lease_held` | gauge | cluster | 1 while this controller holds the cluster's lease ([`ScalerBuilder::lease`](crate::ScalerBuilder::lease)), 0 once it lost or released it |
//! | `pyscaler_journal_write_seconds` | histogram | entry | one durable journal write |
//! | `pyscaler_journal_write_errors_total` | counter | entry | journal writes that failed |
//! | `pyscaler_provider_calls_total` | counter | provider, operation, error_kind | provider calls (`error_kind="none"`: it succeeded): AWS by API operation, `SSH` `Session`, `SMTP` `Send`, `Prometheus` `Query` |
//! | `pyscaler_provider_retries_total` | counter | provider, operation | attempts the provider's client made again |
//!
//! `direction` is `out` or `in`; `error_kind` an [`ErrorKind`](crate::ErrorKind)
//! in snake case (`throttled`, `transient`, …); `entry` a
//! [`JournalEntry`](crate::JournalEntry) kind (`run_started`, …).
//!
//! The durations are histograms: an exporter that renders histograms as
//! summaries by default needs buckets for the `_seconds` names (the
//! example sets them).

use std::fmt;

pub mod names;
mod provider;
mod record;

pub use provider::{record_provider_call, ProviderCall};
pub(crate) use record::{
    cluster_size, evaluation, heartbeat, journal_write, lease_held, record, stalled, step_retry,
    Scope,
};

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricType {
    /// Only goes up; `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations (durations, in seconds).
    Histogram,
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        })
    }
}

/// One metric pyscaler records: its name, type, labels and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricInfo {
    /// Its name (`pyscaler_runs_started_total`).
    pub name: &'static str,
    /// Its type.
    pub kind: MetricType,
    /// The names of its labels, every one bounded in cardinality.
    pub labels: &'static [&'static str],
    /// What it counts, in words (its Prometheus `HELP`).
    pub help: &'static str,
}

const fn info(
    name: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        labels,
        help,
    }
}

use MetricType::{Counter, Gauge, Histogram};

const RUN: &[&str] = &["cluster", "pipeline"];
const RUN_STATUS: &[&str] = &["cluster", "pipeline", "status"];
const STEP: &[&str] = &["cluster", "pipeline", "step", "status"];
const TRIGGER: &[&str] = &["cluster", "trigger"];

/// Every metric pyscaler records (the table of the crate's `observe` docs).
pub const METRICS: &[MetricInfo] = &[
    info(names::RUNS_STARTED, Counter, RUN, "Runs started."),
    info(
        names::RUNS_FINISHED,
        Counter,
        RUN_STATUS,
        "Runs finished, by status.",
    ),
    info(
        names::RUN_DURATION,
        Histogram,
        RUN_STATUS,
        "How long runs took, finally steps included.",
    ),
    info(names::RUNS_IN_PROGRESS, Gauge, RUN, "Runs going on now."),
    info(names::STEPS, Counter, STEP, "Steps ended, by status."),
    info(
        names::STEP_DURATION,
        Histogram,
        STEP,
        "How long steps took, retries included.",
    ),
    info(
        names::STEP_RETRIES,
        Counter,
        &["cluster", "pipeline", "step", "error_kind"],
        "Step attempts retried after a retryable error.",
    ),
    info(
        names::UNDOS,
        Counter,
        STEP,
        "Steps undone after a failure, by status.",
    ),
    info(
        names::WITHDRAWALS,
        Counter,
        STEP,
        "Steps whose nodes were taken out of service before the undo.",
    ),
    info(
        names::NODES_ADDED,
        Counter,
        RUN,
        "Nodes that joined the cluster.",
    ),
    info(
        names::NODES_REMOVED,
        Counter,
        RUN,
        "Nodes that left the cluster.",
    ),
    info(
        names::CLUSTER_NODES,
        Gauge,
        &["cluster"],
        "Nodes in the cluster.",
    ),
    info(
        names::LEASE_HELD,
        Gauge,
        &["cluster"],
        "1 while this controller holds the cluster's lease, 0 once lost or released.",
    ),
    info(
        names::TRIGGER_EVALUATIONS,
        Counter,
        &["cluster", "trigger", "result"],
        "Trigger evaluations: breaching, not_breaching or no_data.",
    ),
    info(
        names::TRIGGER_VALUE,
        Gauge,
        TRIGGER,
        "The trigger's value at its last evaluation.",
    ),
    info(
        names::TRIGGER_THRESHOLD,
        Gauge,
        TRIGGER,
        "The threshold (or target) the trigger compares with.",
    ),
    info(
        names::SAMPLE_FAILURES,
        Counter,
        TRIGGER,
        "Readings of the trigger's counter that failed.",
    ),
    info(
        names::DECISIONS,
        Counter,
        &["cluster", "trigger", "direction", "kind"],
        "Decisions, taken (scale) or skipped (and why), or held for lack of data.",
    ),
    info(
        names::LAST_EVALUATION,
        Gauge,
        TRIGGER,
        "When the trigger last finished an evaluation (Unix time).",
    ),
    info(
        names::EVALUATION_STALLED,
        Gauge,
        TRIGGER,
        "1 while the trigger has not finished an evaluation within its bound.",
    ),
    info(
        names::JOURNAL_WRITE,
        Histogram,
        &["entry"],
        "How long one durable journal write took.",
    ),
    info(
        names::JOURNAL_WRITE_ERRORS,
        Counter,
        &["entry"],
        "Journal writes that failed.",
    ),
    info(
        names::PROVIDER_CALLS,
        Counter,
        &["provider", "operation", "error_kind"],
        "Provider API calls, by the kind of error (none: it succeeded).",
    ),
    info(
        names::PROVIDER_RETRIES,
        Counter,
        &["provider", "operation"],
        "Attempts the provider's client made again for a call.",
    ),
];

/// Describes every metric of [`METRICS`] to the installed recorder (their
/// type, unit and help text: an exporter's `# HELP` and `# TYPE` lines).
/// Call it once after installing the recorder; without one it does nothing.
pub fn describe_metrics() {
    for m in METRICS {
        let unit = m
            .name
            .ends_with("_seconds")
            .then_some(metrics::Unit::Seconds);
        match (m.kind, unit) {
            (Counter, _) => metrics::describe_counter!(m.name, m.help),
            (Gauge, Some(unit)) => metrics::describe_gauge!(m.name, unit, m.help),
            (Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (Histogram, Some(unit)) => metrics::describe_histogram!(m.name, unit, m.help),
            (Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests;
