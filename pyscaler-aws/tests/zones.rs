//! Launches over several Availability Zones against moto, behind the
//! harness's fault proxy (which counts the calls, and refuses capacity as
//! moto never does): the balance rule on scale-out and on scale-in, the
//! capacity fallback to another zone and another instance type, and a lost
//! answer that leaves no instance unaccounted for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pyscaler_aws::{
    discover, Aws, ClassicElb, ClientConfig, DeployEc2Node, Ec2Profile, Pick, RemoveEc2Node,
    SdkEc2, StaticCredentials, TAG_AZ,
};
use pyscaler_core::{
    ActionExt, Cluster, Context, Pipeline, RunRecord, RunReport, RunState, RunStatus, Target,
};
use pyscaler_testkit::fault_proxy::FaultProxy;
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, AMI, REGION, SECRET_ACCESS_KEY};

const LB: &str = "web-lb";
const ZONE_A: &str = "us-east-1a";
const ZONE_B: &str = "us-east-1b";

/// moto with a classic load balancer and a subnet in each of two zones, the
/// proxy in front of it, our providers through the proxy (with
/// `sdk_attempts` SDK attempts per call), and an SDK client straight to moto
/// to check what really happened.
struct Stack {
    _moto: MotoServer,
    proxy: FaultProxy,
    ec2: Arc<SdkEc2>,
    elb: Arc<ClassicElb>,
    check: aws_sdk_ec2::Client,
    subnet_a: String,
    subnet_b: String,
}

/// One instance as moto has it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    state: String,
    zone: String,
}

impl Stack {
    async fn start(sdk_attempts: u32) -> Self {
        let moto = MotoServer::start();
        moto.create_load_balancer(LB).await;
        let subnet_a = moto.create_subnet(ZONE_A, 0).await;
        let subnet_b = moto.create_subnet(ZONE_B, 1).await;
        let proxy = FaultProxy::start(&moto);
        let config = ClientConfig::new(REGION)
            .endpoint_url(proxy.endpoint_url())
            .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
            .max_attempts(sdk_attempts);
        let sdk = moto.sdk_config().await;
        Self {
            ec2: Arc::new(SdkEc2::connect(&config).await),
            elb: Arc::new(ClassicElb::connect(&config).await),
            check: aws_sdk_ec2::Client::new(&sdk),
            proxy,
            _moto: moto,
            subnet_a,
            subnet_b,
        }
    }

    /// The profile over both subnets, with these instance types in order.
    fn profile(&self, types: &[&str]) -> Ec2Profile {
        let mut b = Ec2Profile::builder(REGION, AMI, types[0])
            .endpoint_url(self.proxy.endpoint_url())
            .load_balancer(LB)
            .subnet_ids([self.subnet_a.clone(), self.subnet_b.clone()]);
        for t in &types[1..] {
            b = b.fallback_instance_type(*t);
        }
        b.build().expect("profile")
    }

    fn aws(&self, profile: Ec2Profile) -> Aws {
        Aws::new(self.ec2.clone(), Some(self.elb.clone()), profile).expect("paired providers")
    }

    fn deploy(&self, profile: Ec2Profile, count: u32) -> DeployEc2Node {
        DeployEc2Node::builder(&self.aws(profile))
            .count(count)
            .running_within(Duration::from_secs(60))
            .in_service_within(Duration::from_secs(60))
            .terminated_within(Duration::from_secs(60))
            .unanswered_launch_within(Duration::from_secs(2))
            .build()
            .expect("action")
    }

    async fn run(
        &self,
        pipeline: &str,
        step: pyscaler_core::Step,
        cluster: Cluster,
    ) -> (RunReport, Context) {
        let pipeline = Pipeline::builder(pipeline)
            .step(step)
            .build()
            .expect("pipeline");
        let mut ctx = Context::new(cluster);
        let report = pipeline.run(&mut ctx).await;
        (report, ctx)
    }

    /// Every instance moto knows.
    async fn instances(&self) -> Vec<Seen> {
        let out = self
            .check
            .describe_instances()
            .send()
            .await
            .expect("describe instances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| Seen {
                id: i.instance_id().unwrap_or_default().to_owned(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
                zone: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect()
    }

    /// The live (pending or running) instances, sorted by id.
    async fn live(&self) -> Vec<Seen> {
        let mut live: Vec<Seen> = self
            .instances()
            .await
            .into_iter()
            .filter(|i| i.state == "running" || i.state == "pending")
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        live
    }

    /// How many live instances each zone has.
    async fn per_zone(&self) -> BTreeMap<String, usize> {
        let mut zones = BTreeMap::new();
        for i in self.live().await {
            *zones.entry(i.zone).or_default() += 1;
        }
        zones
    }

    /// The cluster a controller would discover after the run of `ctx` succeeded.
    async fn cluster_after(&self, runs: &[&Context]) -> Cluster {
        let records: Vec<RunRecord> = runs
            .iter()
            .map(|ctx| RunRecord {
                run_id: ctx.run_id().clone(),
                pipeline: "scale-out".into(),
                cluster: "web".into(),
                trigger: None,
                started_at: chrono::Utc::now(),
                state: RunState::Finished(RunStatus::Succeeded),
                steps: Vec::new(),
                new_nodes: Vec::new(),
                steps_ended: None,
            })
            .collect();
        discover(&self.aws(self.profile(&["t3.small"])), "web", &records)
            .await
            .expect("discover")
    }
}

fn zones(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(z, n)| ((*z).to_owned(), *n)).collect()
}

/// The ids of the run's new nodes, sorted.
fn new_ids(ctx: &Context) -> Vec<String> {
    let mut ids: Vec<String> = ctx.new_nodes().iter().map(|n| n.id.clone()).collect();
    ids.sort();
    ids
}

fn ids(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(|i| i.id.clone()).collect()
}

#[tokio::test]
async fn six_nodes_over_two_subnets_go_three_to_each_zone_in_two_launches() {
    let stack = Stack::start(1).await;
    let (report, ctx) = stack
        .run(
            "scale-out",
            stack
                .deploy(stack.profile(&["t3.small"]), 6)
                .on(Target::None),
            Cluster::new("web"),
        )
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(stack.per_zone().await, zones(&[(ZONE_A, 3), (ZONE_B, 3)]));
    assert_eq!(stack.proxy.count("RunInstances"), 2);
    assert_eq!(stack.proxy.count("DescribeSubnets"), 1);
    assert_eq!(stack.proxy.count("RegisterInstancesWithLoadBalancer"), 1);
    // The two calls carried different tokens.
    let tokens: Vec<Option<String>> = stack
        .proxy
        .calls()
        .iter()
        .filter(|c| c.action == "RunInstances")
        .map(|c| c.client_token.clone())
        .collect();
    assert_ne!(tokens[0], tokens[1]);
    // Each new node knows its zone, and all six are the run's, each once.
    assert_eq!(new_ids(&ctx), ids(&stack.live().await));
    let mut by_zone: BTreeMap<String, usize> = BTreeMap::new();
    for n in ctx.new_nodes() {
        *by_zone
            .entry(n.tags.get(TAG_AZ).cloned().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(by_zone, zones(&[(ZONE_A, 3), (ZONE_B, 3)]));
    let names: Vec<&str> = ctx.new_nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["web-01", "web-02", "web-03", "web-04", "web-05", "web-06"]
    );
}

#[tokio::test]
async fn scaling_in_by_two_removes_one_from_each_zone() {
    let stack = Stack::start(1).await;
    let (report, out) = stack
        .run(
            "scale-out",
            stack
                .deploy(stack.profile(&["t3.small"]), 6)
                .on(Target::None),
            Cluster::new("web"),
        )
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    let cluster = stack.cluster_after(&[&out]).await;
    assert_eq!(cluster.len(), 6);
    let remove = RemoveEc2Node::builder(&stack.aws(stack.profile(&["t3.small"])))
        .pick(Pick::Newest)
        .count(2)
        .draining(Duration::ZERO)
        .terminated_within(Duration::from_secs(60))
        .build()
        .expect("action");
    let (report, _) = stack
        .run("scale-in", remove.on(Target::None), cluster)
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(report.nodes_removed.len(), 2);
    assert_eq!(stack.per_zone().await, zones(&[(ZONE_A, 2), (ZONE_B, 2)]));
}

#[tokio::test]
async fn a_second_scale_out_onto_an_unbalanced_cluster_fills_the_smaller_zone_first() {
    let stack = Stack::start(1).await;
    // Two nodes in zone a only (a profile with its one subnet).
    let only_a = Ec2Profile::builder(REGION, AMI, "t3.small")
        .endpoint_url(stack.proxy.endpoint_url())
        .load_balancer(LB)
        .subnet_id(stack.subnet_a.clone())
        .build()
        .expect("profile");
    let (report, first) = stack
        .run(
            "scale-out",
            stack.deploy(only_a, 2).on(Target::None),
            Cluster::new("web"),
        )
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(stack.per_zone().await, zones(&[(ZONE_A, 2)]));
    assert_eq!(
        stack.proxy.count("DescribeSubnets"),
        0,
        "one subnet: no look-up"
    );

    // Three more over both zones: two go to b, one to a.
    let cluster = stack.cluster_after(&[&first]).await;
    let (report, ctx) = stack
        .run(
            "scale-out",
            stack
                .deploy(stack.profile(&["t3.small"]), 3)
                .on(Target::None),
            cluster,
        )
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(stack.per_zone().await, zones(&[(ZONE_A, 3), (ZONE_B, 2)]));
    let names: Vec<&str> = ctx.new_nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["web-03", "web-04", "web-05"]);
}
