//! The names of the metrics pyscaler records, one constant each, so an
//! application (an alert rule, a dashboard test) refers to them by name.
//!
//! Every one is listed, with its type, labels and meaning, in
//! [`METRICS`](crate::METRICS).

/// Runs started (counter; `cluster`, `pipeline`).
pub const RUNS_STARTED: &str = "pyscaler_runs_started_total";
/// Runs finished (counter; `cluster`, `pipeline`, `status`).
pub const RUNS_FINISHED: &str = "pyscaler_runs_finished_total";
/// How long runs took, start to end, `finally` steps included
/// (histogram, seconds; `cluster`, `pipeline`, `status`).
pub const RUN_DURATION: &str = "pyscaler_run_duration_seconds";
/// Runs going on now (gauge; `cluster`, `pipeline`).
pub const RUNS_IN_PROGRESS: &str = "pyscaler_runs_in_progress";
/// Steps ended (counter; `cluster`, `pipeline`, `step`, `status`).
pub const STEPS: &str = "pyscaler_steps_total";
/// How long steps took, retries included (histogram, seconds; `cluster`,
/// `pipeline`, `step`, `status`).
pub const STEP_DURATION: &str = "pyscaler_step_duration_seconds";
/// Attempts of a step that failed with a retryable error and were tried
/// again (counter; `cluster`, `pipeline`, `step`, `error_kind`).
pub const STEP_RETRIES: &str = "pyscaler_step_retries_total";
/// Steps undone after a failure (counter; `cluster`, `pipeline`, `step`, `status`).
pub const UNDOS: &str = "pyscaler_undos_total";
/// Steps whose nodes a failed run took out of service before undoing
/// (counter; `cluster`, `pipeline`, `step`, `status`).
pub const WITHDRAWALS: &str = "pyscaler_withdrawals_total";
/// Nodes that joined the cluster (counter; `cluster`, `pipeline`).
pub const NODES_ADDED: &str = "pyscaler_nodes_added_total";
/// Nodes that left the cluster (counter; `cluster`, `pipeline`).
pub const NODES_REMOVED: &str = "pyscaler_nodes_removed_total";
/// Nodes in the cluster, as the scaler or the last run saw it (gauge; `cluster`).
pub const CLUSTER_NODES: &str = "pyscaler_cluster_nodes";
/// Evaluations of a trigger (counter; `cluster`, `trigger`, `result`).
pub const TRIGGER_EVALUATIONS: &str = "pyscaler_trigger_evaluations_total";
/// A trigger's value at its last evaluation (gauge; `cluster`, `trigger`).
pub const TRIGGER_VALUE: &str = "pyscaler_trigger_value";
/// The threshold (or target) a trigger compares its value with (gauge;
/// `cluster`, `trigger`).
pub const TRIGGER_THRESHOLD: &str = "pyscaler_trigger_threshold";
/// Readings of a trigger's counter that failed (counter; `cluster`, `trigger`).
pub const SAMPLE_FAILURES: &str = "pyscaler_sample_failures_total";
/// Decisions, taken or skipped (counter; `cluster`, `trigger`, `direction`, `kind`).
pub const DECISIONS: &str = "pyscaler_decisions_total";
/// When a trigger last finished an evaluation, in seconds since the Unix
/// epoch (gauge; `cluster`, `trigger`).
pub const LAST_EVALUATION: &str = "pyscaler_last_evaluation_timestamp_seconds";
/// 1 while a trigger has not finished an evaluation within its bound,
/// else 0 (gauge; `cluster`, `trigger`).
pub const EVALUATION_STALLED: &str = "pyscaler_evaluation_stalled";
/// Gauge: 1 while this controller holds the cluster's lease, 0 once it lost
/// or released it (absent without a lease).
pub const LEASE_HELD: &str = "pyscaler_lease_held";
/// How long one journal write took, durable on return (histogram, seconds; `entry`).
pub const JOURNAL_WRITE: &str = "pyscaler_journal_write_seconds";
/// Journal writes that failed (counter; `entry`).
pub const JOURNAL_WRITE_ERRORS: &str = "pyscaler_journal_write_errors_total";
/// Calls to a provider's API (counter; `provider`, `operation`, `error_kind`,
/// which is `none` for a call that succeeded).
pub const PROVIDER_CALLS: &str = "pyscaler_provider_calls_total";
/// Attempts a provider's client made again for a call, beyond the first
/// (counter; `provider`, `operation`).
pub const PROVIDER_RETRIES: &str = "pyscaler_provider_retries_total";
