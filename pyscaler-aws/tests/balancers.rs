//! A node behind several load balancers at once, against moto behind the
//! harness's fault proxy (which counts the calls): two ALB target groups on
//! their own ports and a classic ELB, over two Availability Zones. One
//! registration call per load balancer for all the new nodes, every node
//! healthy in each before the step ends, out of each before it is
//! terminated, and nothing left in any after a failed run.
//!
//! moto fakes elbv2 health (a registered target is `healthy` at once, and a
//! deregistered one is gone at once, where AWS says `initial` and
//! `draining`); those states are proven on the wire in `src/elbv2/tests.rs`.
#![cfg(all(feature = "elbv2", feature = "classic-elb"))]

use std::time::Duration;

use pyscaler_aws::{
    Aws, Balancer, ClientConfig, DeployEc2Node, Ec2Profile, InstanceState, Pick, RemoveEc2Node,
    StaticCredentials, TAG_RUN,
};
use pyscaler_core::testing::{CallLog, Probe};
use pyscaler_core::{Action, ActionExt, Cluster, Context, ErrorKind, Pipeline, RunStatus, Target};
use pyscaler_testkit::fault_proxy::{Fault, FaultProxy};
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, AMI, REGION, SECRET_ACCESS_KEY};

const LB: &str = "web-lb";

struct Stack {
    _moto: MotoServer,
    proxy: FaultProxy,
    aws: Aws,
    groups: [String; 2],
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
    elb: aws_sdk_elasticloadbalancing::Client,
}

impl Stack {
    /// moto with two target groups, a classic ELB and a subnet in each of
    /// two zones; the providers through the proxy: the first group gets its
    /// traffic on 8081 instead of its own 8080.
    async fn start() -> Self {
        let moto = MotoServer::start();
        moto.create_load_balancer(LB).await;
        let groups = [
            moto.create_target_group("web").await,
            moto.create_target_group("api").await,
        ];
        let subnets = [
            moto.create_subnet("us-east-1a", 0).await,
            moto.create_subnet("us-east-1b", 1).await,
        ];
        let proxy = FaultProxy::start(&moto);
        let config = ClientConfig::new(REGION)
            .endpoint_url(proxy.endpoint_url())
            .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
            .max_attempts(1);
        let profile = Ec2Profile::builder(REGION, AMI, "t3.small")
            .endpoint_url(proxy.endpoint_url())
            .subnet_ids(subnets)
            .balancer(Balancer::target_group_on_port(&groups[0], 8081))
            .balancer(Balancer::target_group(&groups[1]))
            .balancer(Balancer::classic(LB))
            .build()
            .expect("profile");
        let sdk = moto.sdk_config().await;
        Self {
            aws: Aws::connect(&config, profile).await,
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            elb: aws_sdk_elasticloadbalancing::Client::new(&sdk),
            proxy,
            groups,
            _moto: moto,
        }
    }

    /// The targets of a group as moto has them: (id, port, state), sorted.
    async fn targets(&self, arn: &str) -> Vec<(String, i32, String)> {
        let out = self
            .elbv2
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .expect("describe target health");
        let mut t: Vec<(String, i32, String)> = out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                (
                    d.target()
                        .and_then(|t| t.id())
                        .unwrap_or_default()
                        .to_owned(),
                    d.target().and_then(|t| t.port()).unwrap_or_default(),
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

    /// The instances the classic ELB holds, sorted.
    async fn in_classic(&self) -> Vec<String> {
        let out = self
            .elb
            .describe_load_balancers()
            .load_balancer_names(LB)
            .send()
            .await
            .expect("describe load balancers");
        let mut ids: Vec<String> = out
            .load_balancer_descriptions()
            .iter()
            .flat_map(|d| d.instances())
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    fn deploy(&self, count: u32) -> DeployEc2Node {
        DeployEc2Node::builder(&self.aws)
            .count(count)
            .running_within(Duration::from_secs(60))
            .in_service_within(Duration::from_secs(60))
            .terminated_within(Duration::from_secs(60))
            .build()
            .expect("action")
    }
}

fn healthy(ids: &[String], port: i32) -> Vec<(String, i32, String)> {
    ids.iter()
        .map(|i| (i.clone(), port, "healthy".to_owned()))
        .collect()
}

#[tokio::test]
async fn six_nodes_join_two_target_groups_and_a_classic_elb_with_one_call_each() {
    let stack = Stack::start().await;
    let pipeline = Pipeline::builder("scale-out")
        .step(stack.deploy(6).on(Target::None))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(Cluster::new("web"));
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    let mut ids: Vec<String> = ctx.new_nodes().iter().map(|n| n.id.clone()).collect();
    ids.sort();
    assert_eq!(ids.len(), 6);

    // Each group holds every node, on its port; the classic ELB too.
    assert_eq!(stack.targets(&stack.groups[0]).await, healthy(&ids, 8081));
    assert_eq!(stack.targets(&stack.groups[1]).await, healthy(&ids, 8080));
    assert_eq!(stack.in_classic().await, ids);
    // One launch per zone, one registration per load balancer, each checked
    // to exist once before the launch.
    assert_eq!(stack.proxy.count("RunInstances"), 2);
    assert_eq!(stack.proxy.count("RegisterTargets"), 2);
    assert_eq!(stack.proxy.count("RegisterInstancesWithLoadBalancer"), 1);
    assert_eq!(stack.proxy.count("DescribeTargetGroups"), 2);
    assert_eq!(stack.proxy.count("DescribeLoadBalancers"), 1);
    // Every node's outcome names the three.
    let outcome = &report.steps[0].nodes[0].summary;
    for lb in [&stack.groups[0], &stack.groups[1], &LB.to_owned()] {
        assert!(outcome.contains(lb.as_str()), "{outcome}");
    }

    // Scale-in of two: out of all three load balancers before the
    // termination, one from each zone.
    let calls_before = stack.proxy.calls().len();
    let remove = RemoveEc2Node::builder(&stack.aws)
        .pick(Pick::Newest)
        .count(2)
        .terminated_within(Duration::from_secs(60))
        .build()
        .expect("remove");
    remove.run(&mut ctx).await.expect("removed");
    let order: Vec<String> = stack.proxy.calls()[calls_before..]
        .iter()
        .map(|c| c.action.clone())
        .filter(|a| a.starts_with("Deregister") || a == "TerminateInstances")
        .collect();
    assert_eq!(
        order,
        [
            "DeregisterTargets",
            "DeregisterTargets",
            "DeregisterInstancesFromLoadBalancer",
            "TerminateInstances"
        ],
        "{order:?}"
    );
    let left = stack.in_classic().await;
    assert_eq!(left.len(), 4, "{left:?}");
    // One from each zone: two are left in each.
    let mut zones: Vec<String> = stack
        .aws
        .ec2()
        .describe(&left)
        .await
        .expect("describe")
        .into_iter()
        .filter_map(|i| i.availability_zone)
        .collect();
    zones.sort();
    assert_eq!(
        zones,
        ["us-east-1a", "us-east-1a", "us-east-1b", "us-east-1b"]
    );
    assert_eq!(stack.targets(&stack.groups[0]).await, healthy(&left, 8081));
    assert_eq!(stack.targets(&stack.groups[1]).await, healthy(&left, 8080));
}

#[tokio::test]
async fn a_failed_run_leaves_nothing_in_any_load_balancer_nor_running() {
    let stack = Stack::start().await;
    let fail = Probe::new("configure", &CallLog::default())
        .failing(u32::MAX, ErrorKind::RemoteCommandFailed)
        .failing_with("puppet failed");
    let pipeline = Pipeline::builder("scale-out")
        .step(stack.deploy(2).on(Target::None))
        .step(fail.on(Target::NewNodes))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(Cluster::new("web"));
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.undo_succeeded(), "{report}");
    assert!(stack.targets(&stack.groups[0]).await.is_empty());
    assert!(stack.targets(&stack.groups[1]).await.is_empty());
    assert!(stack.in_classic().await.is_empty());
    let left = stack
        .aws
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
async fn one_missing_load_balancer_of_three_is_refused_before_anything_launches() {
    let stack = Stack::start().await;
    let missing = stack.groups[1].replace("targetgroup/api/", "targetgroup/nope/");
    let profile = Ec2Profile::builder(REGION, AMI, "t3.small")
        .endpoint_url(stack.proxy.endpoint_url())
        .target_group(&stack.groups[0])
        .load_balancer(LB)
        .target_group(&missing)
        .build()
        .expect("profile");
    let config = ClientConfig::new(REGION)
        .endpoint_url(stack.proxy.endpoint_url())
        .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
        .max_attempts(1);
    let aws = Aws::connect(&config, profile).await;
    let mut ctx = Context::new(Cluster::new("web"));
    let err = DeployEc2Node::builder(&aws)
        .count(1)
        .build()
        .expect("action")
        .run(&mut ctx)
        .await
        .expect_err("no such target group");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains(&missing), "{err}");
    assert_eq!(stack.proxy.count("RunInstances"), 0);
}

#[tokio::test]
async fn a_throttled_registertargets_is_retried_as_a_registration_not_a_launch() {
    let stack = Stack::start().await;
    stack.proxy.inject(
        Fault::error("RegisterTargets", "Throttling").matching("TargetGroupArn", &stack.groups[1]),
    );
    let pipeline = Pipeline::builder("scale-out")
        .step(stack.deploy(2).on(Target::None))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(Cluster::new("web"));
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    // One launch per zone, as without the fault; the throttled group's
    // registration went out twice, the other's once.
    assert_eq!(stack.proxy.count("RunInstances"), 2);
    assert_eq!(stack.proxy.count("RegisterTargets"), 3);
    let mut ids: Vec<String> = ctx.new_nodes().iter().map(|n| n.id.clone()).collect();
    ids.sort();
    assert_eq!(stack.targets(&stack.groups[1]).await, healthy(&ids, 8080));
}
