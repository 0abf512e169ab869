//! Launches over several Availability Zones against moto, behind the
//! harness's fault proxy (which counts the calls, and refuses capacity as
//! moto never does): the balance rule on scale-out and on scale-in, the
//! capacity fallback to another zone and another instance type, and a lost
//! answer that leaves no instance unaccounted for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pyscaler_aws::{
    discover, Aws, ClassicElb, ClientConfig, DeployEc2Node, Ec2Profile, Market, Pick,
    RemoveEc2Node, SdkEc2, SpotFallback, StaticCredentials, TAG_AZ,
};
use pyscaler_core::{
    ActionExt, Cluster, Context, Pipeline, RetryPolicy, RunRecord, RunReport, RunState, RunStatus,
    Target,
};
use pyscaler_testkit::fault_proxy::{Fault, FaultProxy};
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
    instance_type: String,
    spot: bool,
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
                instance_type: i
                    .instance_type()
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
                spot: i.instance_lifecycle()
                    == Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot),
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

#[tokio::test]
async fn a_zone_without_capacity_passes_its_share_to_the_other_and_nothing_leaks() {
    let stack = Stack::start(1).await;
    stack.proxy.inject(
        Fault::error("RunInstances", "InsufficientInstanceCapacity")
            .matching("SubnetId", stack.subnet_a.clone())
            .always(),
    );
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
    // Zone a was refused; zone b took all six, in one instance set.
    assert_eq!(stack.proxy.count("RunInstances"), 2);
    assert_eq!(stack.proxy.executed("RunInstances"), 1);
    assert_eq!(stack.per_zone().await, zones(&[(ZONE_B, 6)]));
    // Nothing of the run runs but what the step accounts for.
    assert_eq!(stack.instances().await.len(), 6);
    assert_eq!(new_ids(&ctx), ids(&stack.live().await));
    for o in &report.steps[0].nodes {
        assert!(
            o.summary.contains(&format!(
                "t3.small in {ZONE_A} ({}) refused (InsufficientInstanceCapacity)",
                stack.subnet_a
            )),
            "{}",
            o.summary
        );
    }
}

#[tokio::test]
async fn no_capacity_for_the_first_type_anywhere_moves_to_the_second_type() {
    let stack = Stack::start(1).await;
    stack.proxy.inject(
        Fault::error("RunInstances", "InsufficientInstanceCapacity")
            .matching("InstanceType", "t3.small")
            .always(),
    );
    let (report, ctx) = stack
        .run(
            "scale-out",
            stack
                .deploy(stack.profile(&["t3.small", "t3a.small"]), 4)
                .on(Target::None),
            Cluster::new("web"),
        )
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    let launches: Vec<(u16, bool)> = stack
        .proxy
        .calls()
        .iter()
        .filter(|c| c.action == "RunInstances")
        .map(|c| (c.status, c.executed))
        .collect();
    // t3.small refused in a, then (a's share moved) in b; t3a.small in both.
    assert_eq!(
        launches,
        [(500, false), (500, false), (200, true), (200, true)]
    );
    let live = stack.live().await;
    assert_eq!(live.len(), 4);
    assert!(
        live.iter().all(|i| i.instance_type == "t3a.small"),
        "{live:?}"
    );
    assert_eq!(stack.per_zone().await, zones(&[(ZONE_A, 2), (ZONE_B, 2)]));
    assert_eq!(new_ids(&ctx), ids(&live));
    let summary = &report.steps[0].nodes[0].summary;
    assert!(
        summary.contains("running (t3a.small in us-east-1a)"),
        "{summary}"
    );
    assert!(
        summary.contains("no zone left for t3.small; trying t3a.small"),
        "{summary}"
    );
}

#[tokio::test]
async fn a_lost_answer_in_one_zone_resent_by_the_sdk_leaves_no_unaccounted_instance() {
    // EC2 would replay the token; moto does not, and neither does the proxy here.
    let stack = Stack::start(3).await;
    stack.proxy.replay_client_tokens(false);
    stack.proxy.inject(
        Fault::error("RunInstances", "ServiceUnavailable")
            .matching("SubnetId", stack.subnet_a.clone())
            .after_execution(),
    );
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
    // Zone a's call ran twice (two sets of three), zone b's once.
    assert_eq!(stack.proxy.executed("RunInstances"), 3);
    let live = stack.live().await;
    assert_eq!(new_ids(&ctx), ids(&live));
    assert_eq!(stack.per_zone().await, zones(&[(ZONE_A, 3), (ZONE_B, 3)]));
    let terminated = stack
        .instances()
        .await
        .into_iter()
        .filter(|i| i.state == "terminated")
        .count();
    assert_eq!(terminated, 3);
    let names: Vec<&str> = ctx.new_nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["web-01", "web-02", "web-03", "web-04", "web-05", "web-06"]
    );
}

#[tokio::test]
async fn a_lost_answer_in_one_zone_that_fails_the_step_is_undone_whole() {
    // No SDK retry: the step fails on the lost answer and is retried; it sees
    // only zone a's set, will not launch beside it, and the undo takes it all.
    let stack = Stack::start(1).await;
    stack.proxy.replay_client_tokens(false);
    stack.proxy.inject(
        Fault::error("RunInstances", "ServiceUnavailable")
            .matching("SubnetId", stack.subnet_a.clone())
            .after_execution(),
    );
    let retry = RetryPolicy::attempts(2)
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(200));
    let (report, ctx) = stack
        .run(
            "scale-out",
            stack
                .deploy(stack.profile(&["t3.small"]), 6)
                .on(Target::None)
                .retry(retry),
            Cluster::new("web"),
        )
        .await;
    assert_eq!(report.status, RunStatus::Failed, "{report}");
    assert!(report.undo_succeeded(), "{report}");
    assert!(stack.live().await.is_empty(), "{:?}", stack.live().await);
    assert!(ctx.new_nodes().is_empty());
}

#[tokio::test]
async fn calls_per_scale_out_over_two_subnets() {
    let stack = Stack::start(1).await;
    let actions = [
        "RunInstances",
        "DescribeInstances",
        "DescribeSubnets",
        "DescribeLoadBalancers",
        "RegisterInstancesWithLoadBalancer",
        "DescribeInstanceHealth",
    ];
    println!("calls per scale-out over 2 subnets (classic ELB), from the fault proxy's log:");
    println!("N    {}", actions.join("  "));
    for n in [1usize, 6, 20] {
        let from = stack.proxy.calls().len();
        let (report, ctx) = stack
            .run(
                "scale-out",
                stack
                    .deploy(stack.profile(&["t3.small"]), u32::try_from(n).expect("n"))
                    .on(Target::None),
                Cluster::new("web"),
            )
            .await;
        assert_eq!(report.status, RunStatus::Succeeded, "{report}");
        assert_eq!(ctx.new_nodes().len(), n);
        let calls = stack.proxy.calls();
        let count = |action: &str| calls[from..].iter().filter(|c| c.action == action).count();
        let counts: Vec<String> = actions.iter().map(|a| count(a).to_string()).collect();
        println!("{n:<4} {}", counts.join("  "));
        assert_eq!(count("RunInstances"), n.min(2));
        assert_eq!(count("DescribeSubnets"), 1);
        assert_eq!(count("RegisterInstancesWithLoadBalancer"), 1);
    }
}

#[tokio::test]
async fn spot_nodes_are_spot_and_a_zone_without_spot_capacity_goes_on_demand() {
    let stack = Stack::start(1).await;
    stack.proxy.inject(
        Fault::error("RunInstances", "InsufficientInstanceCapacity")
            .matching("InstanceMarketOptions.MarketType", "spot")
            .matching("SubnetId", stack.subnet_a.clone())
            .always(),
    );
    let profile = Ec2Profile::builder(REGION, AMI, "t3.small")
        .endpoint_url(stack.proxy.endpoint_url())
        .load_balancer(LB)
        .subnet_ids([stack.subnet_a.clone(), stack.subnet_b.clone()])
        .market(Market::Spot)
        .spot_fallback(SpotFallback::OnDemand)
        .build()
        .expect("profile");
    let (report, ctx) = stack
        .run(
            "scale-out",
            stack.deploy(profile, 4).on(Target::None),
            Cluster::new("web"),
        )
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    // Zone b's are Spot; zone a's, refused Spot, On-Demand.
    let live = stack.live().await;
    assert_eq!(new_ids(&ctx), ids(&live));
    let by_zone: Vec<(String, bool)> = {
        let mut v: Vec<(String, bool)> = live.iter().map(|i| (i.zone.clone(), i.spot)).collect();
        v.sort();
        v
    };
    assert_eq!(
        by_zone,
        [
            (ZONE_A.to_owned(), false),
            (ZONE_A.to_owned(), false),
            (ZONE_B.to_owned(), true),
            (ZONE_B.to_owned(), true)
        ]
    );
    assert_eq!(stack.proxy.count("RunInstances"), 3);
    let summaries: Vec<&str> = report.steps[0]
        .nodes
        .iter()
        .map(|o| o.summary.as_str())
        .collect();
    assert!(
        summaries[0].contains("running (t3.small in us-east-1a, on-demand)"),
        "{}",
        summaries[0]
    );
    assert!(
        summaries[3].contains("running (t3.small in us-east-1b, spot)"),
        "{}",
        summaries[3]
    );
}

#[tokio::test]
async fn a_step_retried_after_its_last_zones_answer_was_lost_takes_over_both_zones_sets() {
    // Zone a answered; zone b's call ran but its answer was lost, and the
    // step fails. Its retry finds all six by the run's tags and takes them
    // over instead of launching again.
    let stack = Stack::start(1).await;
    stack.proxy.replay_client_tokens(false);
    stack.proxy.inject(
        Fault::error("RunInstances", "ServiceUnavailable")
            .matching("SubnetId", stack.subnet_b.clone())
            .after_execution(),
    );
    let retry = RetryPolicy::attempts(2)
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(200));
    let (report, ctx) = stack
        .run(
            "scale-out",
            stack
                .deploy(stack.profile(&["t3.small"]), 6)
                .on(Target::None)
                .retry(retry),
            Cluster::new("web"),
        )
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(report.steps[0].attempts, 2);
    assert_eq!(
        stack.proxy.count("RunInstances"),
        2,
        "no launch on the retry"
    );
    let live = stack.live().await;
    assert_eq!(live.len(), 6);
    assert_eq!(new_ids(&ctx), ids(&live));
    assert_eq!(stack.per_zone().await, zones(&[(ZONE_A, 3), (ZONE_B, 3)]));
    assert_eq!(stack.proxy.count("RegisterInstancesWithLoadBalancer"), 1);
    let names: Vec<&str> = ctx.new_nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["web-01", "web-02", "web-03", "web-04", "web-05", "web-06"]
    );
}
