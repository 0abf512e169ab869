//! Terminating instances and waiting until they are gone.

use std::time::Duration;

use pyscaler_core::{CancellationToken, Classify, Result, RetryPolicy};

use crate::wait::Poller;
use crate::{AwsError, Ec2, Instance, InstanceState};

/// Terminates `ids` and waits until they are gone; unknown ids count as gone.
pub(crate) async fn terminate_and_wait(
    ec2: &dyn Ec2,
    poll: &RetryPolicy,
    within: Duration,
    cancel: &CancellationToken,
    ids: &[String],
) -> Result<()> {
    match ec2.terminate(ids).await {
        Ok(()) => {}
        Err(e) if e.has_code("InvalidInstanceID.NotFound") => {
            // One unknown id fails the whole call: terminate the others one by one.
            for id in ids {
                match ec2.terminate(std::slice::from_ref(id)).await {
                    Ok(()) => {}
                    Err(e) if e.has_code("InvalidInstanceID.NotFound") => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e) => return Err(e.into()),
    }
    let mut poller = Poller::new(poll, within);
    let mut last = String::new();
    while poller.tick(cancel).await? {
        match ec2.describe(ids).await {
            Ok(instances) => {
                let left: Vec<&Instance> = instances
                    .iter()
                    .filter(|i| i.state != InstanceState::Terminated)
                    .collect();
                if left.is_empty() {
                    return Ok(());
                }
                last = left
                    .iter()
                    .map(|i| format!("{} {}", i.id, i.state))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            Err(e) if e.has_code("InvalidInstanceID.NotFound") => return Ok(()),
            Err(e) if e.is_retryable() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AwsError::WaitTimedOut {
        what: format!("{} to terminate (last seen: {last})", ids.join(", ")),
        after: poller.within(),
    }
    .into())
}

/// Takes instances out of `load_balancer` (when given), then terminates them
/// and waits until they are gone. A failed deregistration never keeps a VM
/// running: the instances are terminated all the same, and the
/// deregistration's error comes back as `Ok(Some(error))` (they are gone, but
/// the load balancer may still point at them until it notices). A load
/// balancer or registration that is already gone is no error.
///
/// # Errors
/// When terminating, or waiting for it, failed.
pub(crate) async fn deregister_and_terminate(
    ec2: &dyn Ec2,
    load_balancer: Option<(&dyn crate::LoadBalancer, &str)>,
    poll: &RetryPolicy,
    within: Duration,
    ids: &[String],
) -> Result<Option<AwsError>> {
    let mut deregister_error = None;
    if let Some((elb, lb)) = load_balancer {
        match elb.deregister(lb, ids).await {
            Ok(()) => tracing::info!(load_balancer = %lb, instances = ?ids, "Deregistered."),
            // Nothing to take out: the load balancer or the registration is gone.
            Err(e) if e.has_code("LoadBalancerNotFound") || e.has_code("InvalidInstance") => {}
            Err(e) => {
                tracing::warn!(load_balancer = %lb, error = %e, "Could not deregister; terminating anyway.");
                deregister_error = Some(e);
            }
        }
    }
    // Undoing runs to the end, even in a cancelled run.
    terminate_and_wait(ec2, poll, within, &CancellationToken::new(), ids).await?;
    tracing::info!(instances = ?ids, "Terminated.");
    Ok(deregister_error)
}
