//! The one error type of the core, and the classification every provider crate maps onto.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A boxed error from a provider crate, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A `Result` whose error is the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in words a retry policy and a person can act on.
///
/// Provider crates decide the kind once, from their provider's error codes
/// (see [`Classify`]); the core never matches on error strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input was wrong: a bad AMI, a malformed profile, a bad address. Not retried.
    InvalidInput,
    /// Something named does not exist (yet).
    NotFound,
    /// Credentials were refused or lack a permission. Not retried.
    PermissionDenied,
    /// The provider asked us to slow down. Retryable.
    Throttled,
    /// A passing fault: capacity, a refused connection, a 5xx. Retryable.
    Transient,
    /// A bound on time ran out. Retryable when the action is safe to repeat.
    Timeout,
    /// The request clashes with the provider's state (an idempotency token reused with other parameters).
    Conflict,
    /// A command on a node ran and failed (non-zero exit, killed by a signal, Puppet failure).
    RemoteCommandFailed,
    /// The run was cancelled.
    Cancelled,
    /// Anything else.
    Unexpected,
}

impl ErrorKind {
    /// Whether errors of this kind are retried when the error itself does not say otherwise.
    pub fn is_retryable_by_default(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient | Self::Timeout)
    }

    /// A short lower-case name, as used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid input",
            Self::NotFound => "not found",
            Self::PermissionDenied => "permission denied",
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::Timeout => "timeout",
            Self::Conflict => "conflict",
            Self::RemoteCommandFailed => "remote command failed",
            Self::Cancelled => "cancelled",
            Self::Unexpected => "unexpected",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by each provider crate's error type: the one place where a
/// provider's error codes become an [`ErrorKind`] and a retry decision.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;

    /// Whether repeating the same request may succeed. Defaults to the kind's default.
    fn is_retryable(&self) -> bool {
        self.kind().is_retryable_by_default()
    }

    /// The node this error happened on, when the provider knows it.
    fn node(&self) -> Option<&str> {
        None
    }
}

/// The error of a provider crate, carried by [`Error::Provider`] with its classification.
///
/// Its `Display` and `source` are those of the provider's error, so an error
/// chain reads as the provider wrote it.
#[derive(Debug)]
pub struct ProviderError {
    kind: ErrorKind,
    retryable: bool,
    node: Option<String>,
    inner: BoxError,
}

impl ProviderError {
    /// The provider's own error.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.inner.as_ref()
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for ProviderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// The error of the core: of a step, a pipeline, a trigger or the scaler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pipeline was built with a mistake in it; nothing ran.
    #[error("invalid pipeline `{pipeline}`: {message}")]
    InvalidPipeline {
        /// The pipeline's name.
        pipeline: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is wrong; nothing ran.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A run that never finished cannot be resumed (a step it has left is not
    /// safe to repeat, its undo had begun, or the journal names another
    /// pipeline); recover it instead. Nothing ran.
    #[error("run {run_id} cannot be resumed: {reason}")]
    NotResumable {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
    /// One attempt of a step ran past its timeout and was stopped (its
    /// cancellation token cancelled, so the work it started ends).
    #[error("step `{step}` timed out after {}{}", humantime::format_duration(*after),
        if nodes.is_empty() { String::new() } else { format!(" on {}", nodes.join(", ")) })]
    StepTimedOut {
        /// The step (action) that timed out.
        step: String,
        /// The timeout.
        after: Duration,
        /// The nodes the step was running on, by name (none for a step without nodes).
        nodes: Vec<String>,
    },
    /// A run was refused: the journal holds an unfinished run of the same
    /// cluster, which a dead controller left. Nothing ran. Recover it first:
    /// [`Recovery::run`](crate::Recovery::run), or build the pipeline with
    /// [`PipelineBuilder::recover_first`](crate::PipelineBuilder::recover_first).
    #[error(
        "cluster `{cluster}` has an unfinished run {run_id} of pipeline `{pipeline}`: \
             recover it first (Recovery::new(journal).pipeline(..).run(&cluster), \
             or PipelineBuilder::recover_first)"
    )]
    UnfinishedRun {
        /// The unfinished run.
        run_id: String,
        /// Its pipeline.
        pipeline: String,
        /// The cluster.
        cluster: String,
    },
    /// A [`Recovery`](crate::Recovery) met a run of a pipeline it was not
    /// given; nothing was undone.
    #[error(
        "run {run_id} is of pipeline `{pipeline}`, which the recovery was not given \
             (add it with Recovery::pipeline)"
    )]
    UnknownPipeline {
        /// The run.
        run_id: String,
        /// Its pipeline.
        pipeline: String,
    },
    /// The run was cancelled before the step could finish.
    #[error("cancelled")]
    Cancelled,
    /// This controller no longer holds the cluster's lease (a renewal was
    /// refused or came too late, or the journal refused a write as fenced):
    /// it must issue no further side effect; the new holder recovers the run.
    #[error("lease lost: {message}")]
    LeaseLost {
        /// What showed it.
        message: String,
    },
    /// An error from a provider crate, classified there.
    #[error(transparent)]
    Provider(ProviderError),
    /// An error that happened on one node.
    #[error("on node {node}: {source}")]
    Node {
        /// The node's name.
        node: String,
        /// What went wrong there.
        #[source]
        source: Box<Error>,
    },
    /// A step of a run failed; the run stopped.
    #[error("step `{step}` failed{}{}: {source}",
        node.as_ref().map(|n| format!(" on node {n}")).unwrap_or_default(),
        undo_summary(undone))]
    StepFailed {
        /// The step that failed.
        step: String,
        /// The node it failed on, when it was one node.
        node: Option<String>,
        /// What was undone afterwards: each step's name and whether undoing it succeeded.
        undone: Vec<(String, bool)>,
        /// Why the step failed.
        #[source]
        source: Box<Error>,
    },
    /// Anything else, with a message.
    #[error("{message}")]
    Other {
        /// The kind to report.
        kind: ErrorKind,
        /// What happened.
        message: String,
    },
}

fn undo_summary(undone: &[(String, bool)]) -> String {
    if undone.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = undone
        .iter()
        .map(|(s, ok)| format!("{s} ({})", if *ok { "undone" } else { "undo failed" }))
        .collect();
    format!(" [undone: {}]", parts.join(", "))
}

impl Error {
    /// Wraps a provider crate's classified error.
    pub fn provider<E: Classify>(error: E) -> Self {
        Self::Provider(ProviderError {
            kind: error.kind(),
            retryable: error.is_retryable(),
            node: error.node().map(str::to_owned),
            inner: Box::new(error),
        })
    }

    /// An error of the given kind with a message.
    pub fn other(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Other {
            kind,
            message: message.into(),
        }
    }

    /// The refusal of a run over `run`, an unfinished run of the same cluster.
    pub(crate) fn unfinished(run: &crate::RunRecord) -> Self {
        Self::UnfinishedRun {
            run_id: run.run_id.to_string(),
            pipeline: run.pipeline.clone(),
            cluster: run.cluster.clone(),
        }
    }

    /// Marks this error as having happened on `node`.
    pub fn on_node(self, node: impl Into<String>) -> Self {
        Self::Node {
            node: node.into(),
            source: Box::new(self),
        }
    }

    /// The kind of this error (for a wrapped error, the kind of its cause).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidPipeline { .. }
            | Self::InvalidConfig(_)
            | Self::NotResumable { .. }
            | Self::UnknownPipeline { .. } => ErrorKind::InvalidInput,
            Self::UnfinishedRun { .. } | Self::LeaseLost { .. } => ErrorKind::Conflict,
            Self::StepTimedOut { .. } => ErrorKind::Timeout,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::Provider(p) => p.kind,
            Self::Node { source, .. } | Self::StepFailed { source, .. } => source.kind(),
            Self::Other { kind, .. } => *kind,
        }
    }

    /// Whether repeating the step may succeed. A failed run is never retried as a whole.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::StepTimedOut { .. } => true,
            Self::Provider(p) => p.retryable,
            Self::Node { source, .. } => source.is_retryable(),
            Self::Other { kind, .. } => kind.is_retryable_by_default(),
            Self::InvalidPipeline { .. }
            | Self::InvalidConfig(_)
            | Self::NotResumable { .. }
            | Self::UnfinishedRun { .. }
            | Self::LeaseLost { .. }
            | Self::UnknownPipeline { .. }
            | Self::Cancelled
            | Self::StepFailed { .. } => false,
        }
    }

    /// The node this error happened on, if it names one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Self::Node { node, .. } => Some(node),
            Self::StepFailed { node, source, .. } => node.as_deref().or_else(|| source.node()),
            Self::Provider(p) => p.node.as_deref(),
            Self::StepTimedOut { nodes, .. } if nodes.len() == 1 => Some(&nodes[0]),
            _ => None,
        }
    }

    /// The messages of this error and each of its causes, outermost first.
    pub fn chain(&self) -> Vec<String> {
        let mut out = vec![self.to_string()];
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            let msg = e.to_string();
            if out.last() != Some(&msg) {
                out.push(msg);
            }
            next = e.source();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("throttled by the API")]
    struct Throttle;
    impl Classify for Throttle {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Throttled
        }
    }

    #[test]
    fn provider_errors_keep_their_classification_through_wrapping() {
        let e = Error::provider(Throttle).on_node("web-01");
        assert_eq!(e.kind(), ErrorKind::Throttled);
        assert!(e.is_retryable());
        assert_eq!(e.node(), Some("web-01"));
        assert_eq!(e.to_string(), "on node web-01: throttled by the API");
    }

    #[test]
    fn step_failed_names_step_node_and_what_was_undone() {
        let e = Error::StepFailed {
            step: "puppet".into(),
            node: None,
            undone: vec![("deploy".into(), true)],
            source: Box::new(
                Error::other(ErrorKind::RemoteCommandFailed, "exit 4").on_node("web-02"),
            ),
        };
        assert_eq!(
            e.to_string(),
            "step `puppet` failed [undone: deploy (undone)]: on node web-02: exit 4"
        );
        assert_eq!(e.node(), Some("web-02"));
        assert!(!e.is_retryable());
        assert_eq!(e.chain().len(), 3);
    }

    #[test]
    fn a_step_timeout_names_the_nodes_it_was_running_on() {
        let e = Error::StepTimedOut {
            step: "script".into(),
            after: Duration::from_secs(10),
            nodes: vec!["web-02".into()],
        };
        assert_eq!(e.to_string(), "step `script` timed out after 10s on web-02");
        assert_eq!(e.node(), Some("web-02"));
        let two = Error::StepTimedOut {
            step: "script".into(),
            after: Duration::from_secs(10),
            nodes: vec!["web-01".into(), "web-02".into()],
        };
        assert_eq!(
            two.to_string(),
            "step `script` timed out after 10s on web-01, web-02"
        );
    }
}
