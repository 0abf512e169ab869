//! A node's outcome, or its failure, from what a command did there.

use pyscaler_core::{Error, Node, NodeFailure, NodeOutcome};

use crate::CommandOutput;

/// A success on `node`: the command's status line (`exit 0`) and its output.
pub(crate) fn outcome(node: &Node, out: &CommandOutput) -> NodeOutcome {
    NodeOutcome::ok(&node.name, out.status_line()).with_output(out.combined(), out.truncated)
}

/// A failure with `error`, carrying what the command printed.
pub(crate) fn failure(error: impl Into<Error>, out: &CommandOutput) -> NodeFailure {
    NodeFailure::new(error).with_output(out.combined(), out.truncated)
}
