//! Terminating instances and waiting until they are gone.

use std::time::Duration;

use pyscaler_core::{CancellationToken, Classify, Result};

use crate::wait::{Backoff, Poller};

/// Added to a target group's own deregistration delay when waiting for it.
pub(crate) const DRAINING_MARGIN: Duration = Duration::from_secs(10);
/// The longest draining wait (a target group's delay is at most 3,600 s).
pub(crate) const MAX_DRAINING: Duration = Duration::from_secs(3_600 + 60);

/// Polls `lb` until none of `ids` is draining, within `within`; returns
/// those still draining at the bound. A passing fault is polled again; any
/// other refusal ends the wait (logged): draining is never a reason to keep
/// an instance.
///
/// # Errors
/// [`pyscaler_core::Error::Cancelled`] when `cancel` is cancelled.
pub(crate) async fn until_drained(
    elb: &dyn crate::LoadBalancer,
    lb: &str,
    ids: &[String],
    poll: &Backoff,
    within: Duration,
    cancel: &CancellationToken,
) -> Result<Vec<String>> {
    let mut poller = Poller::new(poll, within);
    let mut left = ids.to_vec();
    loop {
        match elb.draining(lb, ids).await {
            Ok(now) => left = now,
            Err(e) if e.is_retryable() => {}
            Err(e) => {
                tracing::warn!(load_balancer = %lb, error = %e, "Cannot follow draining; going on.");
                return Ok(Vec::new());
            }
        }
        if left.is_empty() || !poller.tick(cancel).await? {
            return Ok(left);
        }
    }
}

/// Waits, within the load balancer's own draining timeout plus a margin,
/// until `ids` are no longer draining there; nothing for a load balancer
/// that cannot say (a classic ELB). Never fails: the instances are
/// terminated next whatever it found.
async fn drained(elb: &dyn crate::LoadBalancer, lb: &str, ids: &[String], poll: &Backoff) {
    let delay = match elb.draining_timeout(lb).await {
        Ok(Some(delay)) => delay,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(load_balancer = %lb, error = %e, "Cannot read the draining timeout; not waiting.");
            return;
        }
    };
    let within = delay.saturating_add(DRAINING_MARGIN).min(MAX_DRAINING);
    // Undoing runs to the end, even in a cancelled run.
    match until_drained(elb, lb, ids, poll, within, &CancellationToken::new()).await {
        Ok(left) if !left.is_empty() => {
            tracing::warn!(load_balancer = %lb, instances = ?left, "Still draining at the bound; terminating anyway.");
        }
        _ => {}
    }
}
use crate::{AwsError, Ec2, Instance, InstanceState};

/// Terminates `ids` and waits until they are gone; unknown ids count as gone.
pub(crate) async fn terminate_and_wait(
    ec2: &dyn Ec2,
    poll: &Backoff,
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

/// Deregisters `ids` from `lb`. One id that is not registered (or not an
/// instance any more) makes the load balancer refuse the whole call, with
/// nothing deregistered: then each id is deregistered alone. A load
/// balancer that is gone has nothing registered.
///
/// # Errors
/// The first refusal other than "not registered" (the ids before it are out).
pub(crate) async fn deregister_all(
    elb: &dyn crate::LoadBalancer,
    lb: &str,
    ids: &[String],
) -> std::result::Result<(), AwsError> {
    match elb.deregister(lb, ids).await {
        Ok(()) => Ok(()),
        Err(e) if e.has_code("LoadBalancerNotFound") || e.has_code("TargetGroupNotFound") => Ok(()),
        Err(e) if e.nothing_registered() && ids.len() > 1 => {
            for id in ids {
                match elb.deregister(lb, std::slice::from_ref(id)).await {
                    Ok(()) => {}
                    Err(e) if e.nothing_registered() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        Err(e) if e.nothing_registered() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes instances out of `load_balancers` (each of them), then terminates
/// them and waits until they are gone. A failed deregistration never keeps a VM
/// running: the instances are terminated all the same, and the first
/// deregistration's error comes back as `Ok(Some(error))` (they are gone, but
/// that load balancer may still point at them until it notices). A load
/// balancer or registration that is already gone is no error: when the
/// refusal names no error code, the load balancer's existence is checked.
/// With `deregister` false the instances are out already (a withdrawal took
/// them out). Either way, when `drain`, a load balancer that says how long
/// it drains (a target group) is waited for, bounded, before terminating.
///
/// # Errors
/// When terminating, or waiting for it, failed.
pub(crate) async fn deregister_and_terminate(
    ec2: &dyn Ec2,
    load_balancers: &[(&dyn crate::LoadBalancer, &str)],
    (deregister, drain): (bool, bool),
    poll: &Backoff,
    within: Duration,
    ids: &[String],
) -> Result<Option<AwsError>> {
    let mut deregister_error = None;
    // Drained only where the instances were taken out (not from a load
    // balancer that is gone, nor after a refusal). Every deregistration goes
    // out before the first wait, so the load balancers drain side by side.
    let mut draining = Vec::new();
    for &(elb, lb) in load_balancers {
        let mut drain = drain;
        if deregister {
            match deregister_all(elb, lb, ids).await {
                Ok(()) => tracing::info!(load_balancer = %lb, instances = ?ids, "Deregistered."),
                // An answer without an error code (an HTTP 500 page: moto's answer
                // for an unknown load balancer, where AWS says LoadBalancerNotFound)
                // does not say why: ask whether the load balancer exists at all.
                Err(e) if e.code().is_none() && !exists(elb, lb).await => {
                    tracing::info!(load_balancer = %lb, instances = ?ids, error = %e,
                        "The load balancer does not exist: nothing to deregister.");
                    drain = false;
                }
                Err(e) => {
                    tracing::warn!(load_balancer = %lb, error = %e, "Could not deregister; terminating anyway.");
                    deregister_error.get_or_insert(e);
                    drain = false;
                }
            }
        }
        if drain {
            draining.push((elb, lb));
        }
    }
    for (elb, lb) in draining {
        drained(elb, lb, ids, poll).await;
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
            &[(&elb, "web-lb")],
            (true, true),
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

    #[tokio::test]
    async fn one_unregistered_id_does_not_leave_the_others_registered() {
        // The whole call is refused for i-2 with nothing deregistered: each
        // id is then taken out alone, and i-1 really leaves.
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let c = calls.clone();
        let mut elb = MockLoadBalancer::new();
        elb.expect_deregister().returning(move |lb, ids| {
            c.lock()
                .expect("calls")
                .push(format!("deregister {lb} {}", ids.join(",")));
            if ids.iter().any(|i| i == "i-2") {
                Err(deregister_refusal(
                    "InvalidInstance",
                    "i-2 is not registered",
                ))
            } else {
                Ok(())
            }
        });
        deregister_all(&elb, "web-lb", &["i-1".to_owned(), "i-2".to_owned()])
            .await
            .expect("out");
        assert_eq!(
            *calls.lock().expect("calls"),
            [
                "deregister web-lb i-1,i-2",
                "deregister web-lb i-1",
                "deregister web-lb i-2"
            ]
        );
    }
}
