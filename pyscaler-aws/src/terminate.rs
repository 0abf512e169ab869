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
