//! Ending what a dead controller left running: the step's commands of a run
//! that [`Recovery`](pyscaler_core::Recovery) is taking over, ended on the
//! step's nodes before the step is undone (at the start of an SSH action's
//! `compensate`, after every step's withdrawal took the nodes out of service).

use pyscaler_core::{Context, FanOut, NodeOutcome, OnNodeFailure, Result};

use crate::RemoteShell;

/// Ends, on each of the step's target nodes, the process groups that run
/// `ctx.run_id()` recorded there for this step ([`RemoteShell::end_run`]),
/// when the run is being recovered ([`Context::is_recovering`]): its
/// controller died, so nothing ended the commands it had started, and the
/// step's undo must not race them. `fan_out` bounds how many nodes at once.
///
/// In a run whose controller is alive this does nothing: a failed,
/// timed-out or cancelled step's commands were already ended when their
/// calls were cancelled, and a hung node must not add one more
/// unreachable bound to the undo.
///
/// A node that does not answer has nothing that can be ended now; it is
/// logged and counts as done, so recovery goes on.
///
/// # Errors
/// The first node where ending failed otherwise (login refused, say); the
/// caller reports it with the step's undo, which still runs.
pub(crate) async fn end_leftovers(
    shell: &dyn RemoteShell,
    fan_out: FanOut,
    ctx: &mut Context,
) -> Result<()> {
    if !ctx.is_recovering() {
        return Ok(());
    }
    fan_out
        .on_failure(OnNodeFailure::Continue)
        .run(ctx, |node, step| async move {
            match shell
                .end_run(&node, step.run_id().as_str(), Some(step.step()))
                .await
            {
                Ok(0) => Ok(NodeOutcome::ok(&node.name, "nothing left running")),
                Ok(ended) => {
                    tracing::warn!(node = %node.name, step = step.step(), ended,
                        "Ended commands a dead controller had left running.");
                    Ok(NodeOutcome::ok(
                        &node.name,
                        format!("ended {ended} command(s) left running"),
                    ))
                }
                Err(e) if e.is_unreachable() => {
                    tracing::warn!(node = %node.name, step = step.step(), error = %e,
                        "Unreachable: nothing of the run can be ended there now.");
                    Ok(NodeOutcome::ok(&node.name, "unreachable, nothing to end"))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
}
