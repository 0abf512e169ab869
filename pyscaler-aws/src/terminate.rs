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
/// balancer or registration that is already gone is no error: when the
/// refusal names no error code, the load balancer's existence is checked.
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
            // An answer without an error code (an HTTP 500 page: moto's answer
            // for an unknown load balancer, where AWS says LoadBalancerNotFound)
            // does not say why: ask whether the load balancer exists at all.
            Err(e) if e.code().is_none() && !exists(elb, lb).await => {
                tracing::info!(load_balancer = %lb, instances = ?ids, error = %e,
                    "The load balancer does not exist: nothing to deregister.");
            }
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

/// Whether `lb` exists; when that cannot be told either, it is assumed to
/// (so a failed deregistration is still reported).
async fn exists(elb: &dyn crate::LoadBalancer, lb: &str) -> bool {
    match elb.exists(lb).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(load_balancer = %lb, error = %e, "Could not tell whether the load balancer exists.");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use pyscaler_core::ErrorKind;

    use super::*;
    use crate::test_support::{deregister_refusal, ec2_terminating};
    use crate::wait::default_poll;
    use crate::MockLoadBalancer;

    /// A refusal without an error code, as moto's HTTP 500 page gives.
    fn uncoded() -> AwsError {
        AwsError::Api {
            service: "ELB",
            operation: "DeregisterInstancesFromLoadBalancer",
            code: None,
            message: "HTTP status 500".into(),
            subject: None,
            kind: ErrorKind::Transient,
            source: None,
        }
    }

    async fn undo(elb: MockLoadBalancer, calls: &Arc<Mutex<Vec<String>>>) -> Option<AwsError> {
        // Terminated once; its instances are then gone.
        deregister_and_terminate(
            &ec2_terminating(calls, 1),
            Some((&elb, "web-lb")),
            &default_poll(),
            Duration::from_secs(60),
            &["i-1".to_owned()],
        )
        .await
        .expect("terminated")
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncoded_refusal_from_a_load_balancer_that_does_not_exist_is_nothing_to_undo() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut elb = MockLoadBalancer::new();
        elb.expect_deregister()
            .times(1)
            .returning(|_, _| Err(uncoded()));
        let c = calls.clone();
        elb.expect_exists().times(1).returning(move |lb| {
            c.lock().expect("lock").push(format!("exists {lb}"));
            Ok(false)
        });
        let error = undo(elb, &calls).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            *calls.lock().expect("lock"),
            ["exists web-lb", "terminate i-1"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncoded_refusal_from_a_load_balancer_that_exists_is_reported() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut elb = MockLoadBalancer::new();
        elb.expect_deregister().returning(|_, _| Err(uncoded()));
        elb.expect_exists().times(1).returning(|_| Ok(true));
        let error = undo(elb, &calls).await.expect("the deregistration's error");
        assert!(error.to_string().contains("HTTP status 500"), "{error}");
        assert_eq!(*calls.lock().expect("lock"), ["terminate i-1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_existence_cannot_be_told_the_refusal_is_reported() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut elb = MockLoadBalancer::new();
        elb.expect_deregister().returning(|_, _| Err(uncoded()));
        elb.expect_exists().times(1).returning(|_| Err(uncoded()));
        assert!(undo(elb, &calls).await.is_some());
        assert_eq!(*calls.lock().expect("lock"), ["terminate i-1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_coded_refusal_says_why_and_is_reported_without_asking() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut elb = MockLoadBalancer::new();
        elb.expect_deregister()
            .returning(|_, _| Err(deregister_refusal("Throttling", "slow down")));
        elb.expect_exists().never();
        let error = undo(elb, &calls).await.expect("the deregistration's error");
        assert!(error.has_code("Throttling"), "{error}");
    }
}
