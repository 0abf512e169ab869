//! `NodeFailure`: why the per-node operation of a fan-out failed, with what the node printed.

use crate::Error;

/// Why a fan-out's operation failed on a node, with what the node printed.
///
/// Any error that converts into the core [`Error`] converts into a
/// `NodeFailure` (`SshError`, `AwsError`, `NotifyError`: each provider crate
/// has `From<ItsError> for pyscaler_core::Error`), so `?` works in the
/// per-node closure of [`FanOut::run`](crate::FanOut::run).
#[derive(Debug)]
pub struct NodeFailure {
    /// The error.
    pub error: Error,
    /// What the node printed, when something ran.
    pub output: Option<String>,
    /// Whether the output was already cut.
    pub truncated: bool,
}

impl NodeFailure {
    /// A failure with `error` and no output.
    pub fn new(error: impl Into<Error>) -> Self {
        Self {
            error: error.into(),
            output: None,
            truncated: false,
        }
    }

    /// Adds the node's output.
    pub fn with_output(mut self, output: impl Into<String>, truncated: bool) -> Self {
        self.output = Some(output.into());
        self.truncated = truncated;
        self
    }
}

impl<E: Into<Error>> From<E> for NodeFailure {
    fn from(error: E) -> Self {
        Self::new(error)
    }
}
