//! Helpers of this crate's unit tests (the step runner is `pyscaler_core::testing::run_step`).

use pyscaler_core::{Cluster, Context, Node, NodeAddress};

use crate::CommandOutput;

/// A context whose run created `n` nodes `web-00`.. (the targets of `Target::Cluster`).
pub(crate) fn ctx_with_nodes(n: usize) -> Context {
    let mut ctx = Context::new(Cluster::new("web"));
    ctx.add_new_nodes((0..n).map(|i| {
        Node::new(format!("i-{i}"), format!("web-{i:02}"))
            .with_address(NodeAddress::new(format!("10.0.0.{i}")))
    }));
    ctx
}

/// A command's output.
pub(crate) fn output(stdout: &str, stderr: &str, exit_code: i32) -> CommandOutput {
    CommandOutput {
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit_code: Some(exit_code),
        signal: None,
        truncated: false,
    }
}
