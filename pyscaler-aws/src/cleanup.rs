//! `Ec2RunCleanup`: undoing what a run left on EC2 when its controller died.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{Classify, Error, Result, RunCleanup, RunId, RunRecord};
use tracing::info;

use crate::node::node_name;
use crate::wait::{default_poll, Backoff};
use crate::{instances_of_run, Aws};

/// The core's [`RunCleanup`] for EC2: finds the live instances tagged
/// `pyscaler:run` with the unfinished run's id (so also a launch whose answer
/// never reached the journal), deregisters them from the profile's load
/// balancer, terminates them and waits until they are gone.
///
/// Only instances a run launched carry its tag: nodes a scale-in run had
/// deregistered but not yet terminated are not put back.
pub struct Ec2RunCleanup {
    aws: Aws,
    poll: Backoff,
    terminated_within: Duration,
}

impl fmt::Debug for Ec2RunCleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2RunCleanup")
            .field("load_balancers", &self.aws.load_balancer_names())
            .field("terminated_within", &self.terminated_within)
            .finish_non_exhaustive()
    }
}

impl Ec2RunCleanup {
    /// A clean-up for the cluster of `aws`'s profile, with its providers.
    pub fn new(aws: &Aws) -> Self {
        Self {
            aws: aws.clone(),
            poll: default_poll(),
            terminated_within: Duration::from_secs(300),
        }
    }

    /// Bounds the wait until the instances are terminated (5 min by default).
    pub fn terminated_within(mut self, d: Duration) -> Self {
        self.terminated_within = d;
        self
    }
}

impl Ec2RunCleanup {
    /// Deregisters and terminates what the run `run_id` left on EC2; returns
    /// what was undone, naming each instance (`web-01 (i-0abc)`).
    ///
    /// # Errors
    /// When EC2 refuses or the wait runs out; when the deregistration failed
    /// (the instances are terminated all the same, and the error names them).
    pub async fn undo_run(&self, run_id: &RunId) -> Result<Vec<String>> {
        let instances = instances_of_run(&self.aws, run_id).await?;
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        let named = instances
            .iter()
            .map(|i| match node_name(i) {
                name if name == i.id => name,
                name => format!("{name} ({})", i.id),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let deregister_error = self
            .aws
            .retire((true, false), &self.poll, self.terminated_within, &ids)
            .await?;
        info!(run_id = %run_id, instances = %named, "Terminated the instances of an unfinished run.");
        // Terminated, but the load balancer may still point at them: the run
        // stays unfinished and the next recovery deregisters again.
        if let Some(e) = deregister_error {
            return Err(Error::other(
                e.kind(),
                format!(
                    "terminated {named}, but deregistering them from {} failed: {e}",
                    self.aws
                        .load_balancers_text()
                        .unwrap_or_else(|| "the load balancer".to_owned())
                ),
            ));
        }
        let mut undone = Vec::new();
        if let Some(lb) = self.aws.load_balancers_text() {
            undone.push(format!("deregistered {named} from {lb}"));
        }
        undone.push(format!("terminated {named}"));
        Ok(undone)
    }
}

#[async_trait]
impl RunCleanup for Ec2RunCleanup {
    async fn cleanup(&self, run: &RunRecord) -> Result<Vec<String>> {
        self.undo_run(&run.run_id).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use pyscaler_core::RunState;

    use std::sync::Arc;

    use super::*;
    use crate::test_support::{
        deregister_refusal, elb_deregistering, expect_describe_terminated, expect_terminate_noted,
        expect_terminate_raising, Calls, Terminated,
    };
    use crate::{
        Ec2Profile, Instance, InstanceState, LoadBalancer, MockEc2, MockLoadBalancer, TAG_RUN,
    };

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

    /// The providers, behind load balancer `web-lb` when `lb`.
    fn aws(ec2: MockEc2, elb: Option<MockLoadBalancer>, lb: bool) -> Aws {
        let elb = elb.map(|e| Arc::new(e) as Arc<dyn LoadBalancer>);
        Aws::new(Arc::new(ec2), elb, profile(lb)).expect("paired")
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
        let cleanup = Ec2RunCleanup::new(&aws(ec2, Some(elb), true));
        let undone = cleanup.cleanup(&record()).await.expect("cleaned up");
        assert_eq!(undone, ["deregistered i-1 from web-lb", "terminated i-1"]);
        assert_eq!(
            *calls.lock().expect("lock"),
            ["deregister web-lb i-1", "terminate i-1"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_report_names_each_instance_by_its_node_name() {
        let mut ec2 = MockEc2::new();
        ec2.expect_find_by_tags().returning(|_, _| {
            Ok((0..2)
                .map(|n| Instance {
                    id: format!("i-{n}"),
                    state: InstanceState::Running,
                    launch_index: n,
                    tags: [("Name".to_owned(), "web-01..02".to_owned())].into(),
                    ..Instance::default()
                })
                .collect())
        });
        expect_terminate_noted(&mut ec2, &Calls::default(), ..);
        expect_describe_terminated(&mut ec2);
        let cleanup =
            Ec2RunCleanup::new(&aws(ec2, Some(elb_deregistering(&Calls::default())), true));
        let undone = cleanup.cleanup(&record()).await.expect("cleaned up");
        assert_eq!(
            undone,
            [
                "deregistered web-01 (i-0), web-02 (i-1) from web-lb",
                "terminated web-01 (i-0), web-02 (i-1)"
            ]
        );
    }

    #[tokio::test]
    async fn a_run_that_launched_nothing_needs_nothing() {
        let mut ec2 = MockEc2::new();
        ec2.expect_find_by_tags().returning(|_, _| Ok(Vec::new()));
        let cleanup = Ec2RunCleanup::new(&aws(ec2, None, false));
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
        let cleanup = Ec2RunCleanup::new(&aws(ec2, Some(elb), true));
        let err = cleanup
            .cleanup(&record())
            .await
            .expect_err("deregistration failed");
        assert!(err.to_string().contains("ServiceUnavailable"), "{err}");
        assert!(
            err.to_string()
                .contains("terminated i-1, but deregistering them from web-lb failed"),
            "{err}"
        );
        // Terminated all the same; the run stays unfinished for the next recovery.
        assert!(terminated.is_raised());
    }
}
