//! DeployEc2Node and RemoveEc2Node with an ALB target group (elbv2) against
//! `moto_server`: registration in one call, the instances healthy before
//! the step ends, deregistration before termination, and a target group
//! that does not exist refused before anything launches.
//!
//! moto fakes target health (a registered target is `healthy` at once);
//! `initial` -> `healthy` and `unhealthy` with AWS's reason are proven on
//! the wire in `src/elbv2/tests.rs`.
#![cfg(feature = "elbv2")]

use std::time::Duration;

use pyscaler_aws::{
    Aws, ClientConfig, DeployEc2Node, Ec2Profile, InstanceState, Pick, RemoveEc2Node,
    StaticCredentials, TAG_RUN,
};
use pyscaler_core::testing::{CallLog, Probe};
use pyscaler_core::{Action, ActionExt, Cluster, Context, ErrorKind, Pipeline, RunStatus, Target};
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, AMI, REGION, SECRET_ACCESS_KEY};

struct Stack {
    moto: MotoServer,
    config: ClientConfig,
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
}

impl Stack {
    async fn start() -> Self {
        let moto = MotoServer::start();
        let config = ClientConfig::new(REGION)
            .endpoint_url(moto.endpoint_url())
            .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
            .max_attempts(1);
        let sdk = moto.sdk_config().await;
        Self {
            moto,
            config,
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
        }
    }

    async fn aws(&self, target_group: &str) -> Aws {
        let profile = Ec2Profile::builder(REGION, AMI, "t3.small")
            .endpoint_url(self.moto.endpoint_url())
            .target_group(target_group)
            .target_port(8080)
            .build()
            .expect("profile");
        Aws::connect(&self.config, profile).await
    }

    /// The targets registered with `arn` and their states, sorted.
    async fn targets(&self, arn: &str) -> Vec<(String, String)> {
        let out = self
            .elbv2
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .expect("describe target health");
        let mut t: Vec<(String, String)> = out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                (
                    d.target()
                        .and_then(|t| t.id())
                        .unwrap_or_default()
                        .to_owned(),
                    d.target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                )
            })
            .collect();
        t.sort();
        t
    }
}

fn deploy(aws: &Aws, count: u32) -> DeployEc2Node {
    DeployEc2Node::builder(aws)
        .count(count)
        .running_within(Duration::from_secs(30))
        .in_service_within(Duration::from_secs(30))
        .terminated_within(Duration::from_secs(30))
        .build()
        .expect("action")
}

#[tokio::test]
async fn nodes_join_the_target_group_healthy_and_leave_it_before_they_are_terminated() {
    let stack = Stack::start().await;
    let arn = stack.moto.create_target_group("web").await;
    let aws = stack.aws(&arn).await;
    let mut ctx = Context::new(Cluster::new("web"));
    deploy(&aws, 3).run(&mut ctx).await.expect("deployed");
    let mut ids: Vec<String> = ctx.new_nodes().iter().map(|n| n.id.clone()).collect();
    ids.sort();
    let healthy: Vec<(String, String)> = ids
        .iter()
        .map(|i| (i.clone(), "healthy".to_owned()))
        .collect();
    assert_eq!(stack.targets(&arn).await, healthy);

    // Scale-in: the newest node leaves the target group, then is terminated.
    // Draining is asked of the group (its deregistration delay read from its
    // attributes); moto drops a deregistered target at once, so no wait.
    let remove = RemoveEc2Node::builder(&aws)
        .pick(Pick::Newest)
        .terminated_within(Duration::from_secs(30))
        .build()
        .expect("remove");
    remove.run(&mut ctx).await.expect("removed");
    let left = stack.targets(&arn).await;
    assert_eq!(left.len(), 2, "{left:?}");
    let gone: Vec<&String> = ids
        .iter()
        .filter(|i| !left.iter().any(|(t, _)| t == *i))
        .collect();
    assert_eq!(gone.len(), 1);
    let described = aws
        .ec2()
        .describe(&[gone[0].clone()])
        .await
        .expect("describe");
    assert_eq!(described[0].state, InstanceState::Terminated);
}

#[tokio::test]
async fn a_failed_run_leaves_nothing_in_the_target_group_nor_running() {
    let stack = Stack::start().await;
    let arn = stack.moto.create_target_group("web").await;
    let aws = stack.aws(&arn).await;
    let fail = Probe::new("configure", &CallLog::default())
        .failing(u32::MAX, ErrorKind::RemoteCommandFailed)
        .failing_with("puppet failed");
    let pipeline = Pipeline::builder("scale-out")
        .step(deploy(&aws, 2).on(Target::None))
        .step(fail.on(Target::NewNodes))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(Cluster::new("web"));
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.undo_succeeded(), "{report}");
    assert!(stack.targets(&arn).await.is_empty());
    let left = aws
        .ec2()
        .find_by_tags(
            &[(TAG_RUN.to_owned(), ctx.run_id().to_string())],
            &[InstanceState::Pending, InstanceState::Running],
        )
        .await
        .expect("listed");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_target_group_that_does_not_exist_is_refused_before_anything_launches() {
    let stack = Stack::start().await;
    let real = stack.moto.create_target_group("web").await;
    let missing = real.replace("targetgroup/web/", "targetgroup/nope/");
    let aws = stack.aws(&missing).await;
    let mut ctx = Context::new(Cluster::new("web"));
    let err = deploy(&aws, 1)
        .run(&mut ctx)
        .await
        .expect_err("no such target group");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains(&missing), "{err}");
    let launched = aws
        .ec2()
        .find_by_tags(
            &[(TAG_RUN.to_owned(), ctx.run_id().to_string())],
            &[InstanceState::Pending, InstanceState::Running],
        )
        .await
        .expect("listed");
    assert!(launched.is_empty(), "launched {launched:?}");
}
