//! `Ec2RunCleanup`: undoing what a run left on EC2 when its controller died.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{Result, RetryPolicy, RunCleanup, RunRecord};
use tracing::info;

use crate::terminate::deregister_and_terminate;
use crate::wait::default_poll;
use crate::{instances_of_run, AwsError, Ec2, Ec2Profile, LoadBalancer};

/// The core's [`RunCleanup`] for EC2: finds the live instances tagged
/// `pyscaler:run` with the unfinished run's id (so also a launch whose answer
/// never reached the journal), deregisters them from the profile's load
/// balancer, terminates them and waits until they are gone.
///
/// Only instances a run launched carry its tag: nodes a scale-in run had
/// deregistered but not yet terminated are not put back.
pub struct Ec2RunCleanup {
    ec2: Arc<dyn Ec2>,
    elb: Option<Arc<dyn LoadBalancer>>,
    load_balancer: Option<String>,
    poll: RetryPolicy,
    terminated_within: Duration,
}

impl fmt::Debug for Ec2RunCleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2RunCleanup")
            .field("load_balancer", &self.load_balancer)
            .field("terminated_within", &self.terminated_within)
            .finish_non_exhaustive()
    }
}

impl Ec2RunCleanup {
    /// A clean-up for the cluster of `profile`, with its providers.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] when a load balancer provider is given
    /// without the profile naming a load balancer, or the reverse.
    pub fn new(
        ec2: Arc<dyn Ec2>,
        elb: Option<Arc<dyn LoadBalancer>>,
        profile: &Ec2Profile,
    ) -> Result<Self, AwsError> {
        let load_balancer = profile.load_balancer().map(str::to_owned);
        if load_balancer.is_some() != elb.is_some() {
            return Err(AwsError::invalid(
                "load balancer",
                "give a LoadBalancer provider exactly when the profile names a load balancer",
            ));
        }
        Ok(Self {
            ec2,
            elb,
            load_balancer,
            poll: default_poll(),
            terminated_within: Duration::from_secs(300),
        })
    }

    /// Bounds the wait until the instances are terminated (5 min by default).
    pub fn terminated_within(mut self, d: Duration) -> Self {
        self.terminated_within = d;
        self
    }
}

#[async_trait]
impl RunCleanup for Ec2RunCleanup {
    async fn cleanup(&self, run: &RunRecord) -> Result<Vec<String>> {
        let instances = instances_of_run(self.ec2.as_ref(), &run.run_id).await?;
        let ids: Vec<String> = instances.into_iter().map(|i| i.id).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let elb = match (&self.elb, &self.load_balancer) {
            (Some(elb), Some(lb)) => Some((elb.as_ref(), lb.as_str())),
            _ => None,
        };
        let deregister_error = deregister_and_terminate(
            self.ec2.as_ref(),
            elb,
            &self.poll,
            self.terminated_within,
            &ids,
        )
        .await?;
        info!(run_id = %run.run_id, instances = ?ids, "Terminated the instances of an unfinished run.");
        // Terminated, but the load balancer may still point at them: the run
        // stays unfinished and the next recovery deregisters again.
        if let Some(e) = deregister_error {
            return Err(e.into());
        }
        let mut undone = Vec::new();
        if let Some(lb) = &self.load_balancer {
            undone.push(format!("deregistered {} from {lb}", ids.join(", ")));
        }
        undone.push(format!("terminated {}", ids.join(", ")));
        Ok(undone)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use pyscaler_core::{RunId, RunState};

    use super::*;
    use crate::test_support::{
        deregister_refusal, elb_deregistering, expect_describe_terminated, expect_terminate_noted,
        expect_terminate_raising, Calls, Terminated,
    };
    use crate::{Instance, InstanceState, MockEc2, MockLoadBalancer, TAG_RUN};

    fn record() -> RunRecord {
        RunRecord {
            run_id: RunId::new("run-dead"),
            pipeline: "scale-out".into(),
            cluster: "web".into(),
            trigger: None,
            started_at: Utc::now(),
            state: RunState::Unfinished,
            steps: vec![("deploy-ec2-node".into(), None)],
            new_nodes: Vec::new(),
            steps_ended: None,
        }
    }

    /// A profile, behind load balancer `web-lb` when `lb`.
    fn profile(lb: bool) -> Ec2Profile {
        let b = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small");
        let b = if lb { b.load_balancer("web-lb") } else { b };
        b.build().expect("profile")
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_runs_instances_are_deregistered_and_terminated() {
        let calls = Calls::default();
        let mut ec2 = MockEc2::new();
        ec2.expect_find_by_tags()
            .withf(|tags, _| tags == [(TAG_RUN.to_owned(), "run-dead".to_owned())])
            .returning(|_, _| {
                Ok(vec![Instance {
                    id: "i-1".into(),
                    state: InstanceState::Running,
                    ..Instance::default()
                }])
            });
        expect_terminate_noted(&mut ec2, &calls, ..);
        expect_describe_terminated(&mut ec2);
        let elb = elb_deregistering(&calls);
        let cleanup = Ec2RunCleanup::new(Arc::new(ec2), Some(Arc::new(elb)), &profile(true))
            .expect("cleanup");
        let undone = cleanup.cleanup(&record()).await.expect("cleaned up");
        assert_eq!(undone, ["deregistered i-1 from web-lb", "terminated i-1"]);
        assert_eq!(
            *calls.lock().expect("lock"),
            ["deregister web-lb i-1", "terminate i-1"]
        );
    }

    #[tokio::test]
    async fn a_run_that_launched_nothing_needs_nothing() {
        let mut ec2 = MockEc2::new();
        ec2.expect_find_by_tags().returning(|_, _| Ok(Vec::new()));
        let cleanup = Ec2RunCleanup::new(Arc::new(ec2), None, &profile(false)).expect("cleanup");
        assert!(cleanup
            .cleanup(&record())
            .await
            .expect("nothing")
            .is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_load_balancer_still_gets_the_instances_terminated() {
        let terminated = Terminated::default();
        let mut ec2 = MockEc2::new();
        ec2.expect_find_by_tags().returning(|_, _| {
            Ok(vec![Instance {
                id: "i-1".into(),
                state: InstanceState::Running,
                ..Instance::default()
            }])
        });
        expect_terminate_raising(&mut ec2, &Calls::default(), &terminated, 1);
        expect_describe_terminated(&mut ec2);
        let mut elb = MockLoadBalancer::new();
        elb.expect_deregister()
            .returning(|_, _| Err(deregister_refusal("ServiceUnavailable", "try later")));
        let cleanup = Ec2RunCleanup::new(Arc::new(ec2), Some(Arc::new(elb)), &profile(true))
            .expect("cleanup");
        let err = cleanup
            .cleanup(&record())
            .await
            .expect_err("deregistration failed");
        assert!(err.to_string().contains("ServiceUnavailable"), "{err}");
        // Terminated all the same; the run stays unfinished for the next recovery.
        assert!(terminated.is_raised());
    }
}
