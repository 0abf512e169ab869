//! The AWS providers and DeployEc2Node against moto behind the harness's
//! fault proxy, which injects what moto never does: lost answers, throttling,
//! bare 5xx pages, and (as EC2 does, and moto does not) ClientToken replay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pyscaler_aws::{
    discover, Aws, ClassicElb, ClientConfig, DeployEc2Node, Ec2, Ec2Profile, LoadBalancer, SdkEc2,
    StaticCredentials,
};
use pyscaler_core::{
    ActionExt, Classify, Cluster, Context, ErrorKind, Pipeline, RetryPolicy, RunReport, RunState,
    RunStatus, Target,
};
use pyscaler_testkit::fault_proxy::{Fault, FaultProxy};
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, AMI, REGION, SECRET_ACCESS_KEY};

const LB: &str = "web-lb";

/// moto, the proxy in front of it, our providers through the proxy (with
/// `sdk_attempts` SDK attempts per call), and an SDK client straight to moto
/// to check what really happened.
struct Stack {
    /// Kept running for as long as the stack lives.
    _moto: MotoServer,
    proxy: FaultProxy,
    ec2: Arc<SdkEc2>,
    elb: Arc<ClassicElb>,
    check: aws_sdk_ec2::Client,
}

impl Stack {
    async fn start(sdk_attempts: u32) -> Self {
        let moto = MotoServer::start();
        moto.create_load_balancer(LB).await;
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
        }
    }

    fn profile(&self, load_balancer: &str) -> Ec2Profile {
        Ec2Profile::builder(REGION, AMI, "t3.small")
            .endpoint_url(self.proxy.endpoint_url())
            .load_balancer(load_balancer)
            .build()
            .expect("profile")
    }

    fn deploy(&self, load_balancer: &str, count: u32) -> DeployEc2Node {
        let aws = Aws::new(
            self.ec2.clone(),
            Some(self.elb.clone()),
            self.profile(load_balancer),
        )
        .expect("paired providers");
        DeployEc2Node::builder(&aws)
            .count(count)
            .running_within(Duration::from_secs(30))
            .in_service_within(Duration::from_secs(30))
            .terminated_within(Duration::from_secs(30))
            .unanswered_launch_within(Duration::from_secs(2))
            .build()
            .expect("action")
    }

    async fn run(&self, step: pyscaler_core::Step) -> (RunReport, Context) {
        let pipeline = Pipeline::builder("scale-out")
            .step(step)
            .build()
            .expect("pipeline");
        let mut ctx = Context::new(Cluster::new("web"));
        let report = pipeline.run(&mut ctx).await;
        (report, ctx)
    }

    /// Every instance moto knows, by state.
    async fn by_state(&self) -> BTreeMap<String, Vec<String>> {
        let out = self
            .check
            .describe_instances()
            .send()
            .await
            .expect("describe instances");
        let mut states: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default();
            states
                .entry(state)
                .or_default()
                .push(i.instance_id().unwrap_or_default().to_owned());
        }
        states
    }

    async fn live(&self) -> Vec<String> {
        let s = self.by_state().await;
        let mut ids: Vec<String> = ["pending", "running"]
            .iter()
            .flat_map(|k| s.get(*k).cloned().unwrap_or_default())
            .collect();
        ids.sort();
        ids
    }

    async fn registered(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .elb
            .health(LB, &[])
            .await
            .expect("health")
            .into_iter()
            .map(|h| h.instance_id)
            .collect();
        ids.sort();
        ids
    }

    /// The cluster a restarted controller would discover, with the run of `ctx` succeeded.
    async fn names_after(&self, ctx: &Context) -> Vec<String> {
        let run = pyscaler_core::RunRecord {
            run_id: ctx.run_id().clone(),
            pipeline: "scale-out".into(),
            cluster: "web".into(),
            trigger: None,
            started_at: chrono::Utc::now(),
            state: RunState::Finished(RunStatus::Succeeded),
            steps: Vec::new(),
            new_nodes: Vec::new(),
            steps_ended: None,
        };
        let aws = Aws::new(self.ec2.clone(), Some(self.elb.clone()), self.profile(LB))
            .expect("paired providers");
        let cluster = discover(&aws, "web", &[run]).await.expect("discover");
        let mut names: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
        names.sort();
        names
    }
}

fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::attempts(attempts)
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(200))
}

#[tokio::test]
async fn the_proxy_answers_each_apis_error_shape_and_counts_the_calls() {
    let stack = Stack::start(1).await;
    stack
        .proxy
        .inject(Fault::error("DescribeInstances", "RequestLimitExceeded"));
    stack.proxy.inject(Fault::error(
        "DescribeInstanceHealth",
        "LoadBalancerNotFound",
    ));
    stack
        .proxy
        .inject(Fault::status("DescribeInstanceHealth", 500));

    let err = stack
        .ec2
        .describe(&["i-0".to_owned()])
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Some("RequestLimitExceeded"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Throttled);
    let err = stack.elb.health(LB, &[]).await.expect_err("not found");
    assert_eq!(err.code(), Some("LoadBalancerNotFound"), "{err}");
    assert!(err.to_string().contains("load balancer web-lb"), "{err}");
    let err = stack.elb.health(LB, &[]).await.expect_err("bare 500");
    assert_eq!(err.code(), None, "{err}");
    assert!(err.to_string().contains("HTTP status 500"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Transient);
    // The faults are spent: the next call reaches moto.
    assert!(stack.elb.health(LB, &[]).await.is_ok());

    let calls = stack.proxy.calls();
    let seen: Vec<(&str, u16, bool)> = calls
        .iter()
        .map(|c| (c.action.as_str(), c.status, c.injected))
        .collect();
    assert_eq!(
        seen,
        [
            ("DescribeInstances", 503, true),
            ("DescribeInstanceHealth", 400, true),
            ("DescribeInstanceHealth", 500, true),
            ("DescribeInstanceHealth", 200, false),
        ]
    );
    assert_eq!(calls[0].service, "ec2");
    assert_eq!(calls[1].service, "elasticloadbalancing");
}

#[tokio::test]
async fn a_lost_launch_answer_resent_by_the_sdk_leaves_exactly_the_instances_reported() {
    // EC2 would replay the token; moto does not, and neither does the proxy here.
    let stack = Stack::start(3).await;
    stack.proxy.replay_client_tokens(false);
    stack
        .proxy
        .inject(Fault::error("RunInstances", "ServiceUnavailable").after_execution());
    let (report, ctx) = stack.run(stack.deploy(LB, 2).on(Target::None)).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    // The SDK sent it twice, and moto ran both: four instances were started.
    assert_eq!(stack.proxy.executed("RunInstances"), 2);
    let live = stack.live().await;
    assert_eq!(live.len(), 2, "{:?}", stack.by_state().await);
    let mut reported: Vec<String> = ctx.new_nodes().iter().map(|n| n.id.clone()).collect();
    reported.sort();
    assert_eq!(reported, live);
    let states = stack.by_state().await;
    assert_eq!(
        states.get("terminated").map(Vec::len),
        Some(2),
        "{states:?}"
    );
    assert_eq!(stack.registered().await, live);
    assert_eq!(stack.names_after(&ctx).await, ["web-01", "web-02"]);
    // The report names the surplus and says the SDK retried.
    let outcomes = &report.steps[0].nodes;
    let surplus: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.summary.contains("surplus of a repeated launch"))
        .map(|o| o.node.as_str())
        .collect();
    let mut terminated = states.get("terminated").cloned().unwrap_or_default();
    terminated.sort();
    let mut surplus: Vec<String> = surplus.into_iter().map(str::to_owned).collect();
    surplus.sort();
    assert_eq!(surplus, terminated);
    for o in outcomes.iter().filter(|o| o.node.starts_with("web-")) {
        assert!(
            o.summary
                .contains("the AWS SDK retried: RunInstances 2 attempts for 1 call"),
            "{}",
            o.summary
        );
    }
}

#[tokio::test]
async fn a_lost_launch_answer_retried_by_the_step_takes_over_instead_of_launching() {
    let stack = Stack::start(1).await;
    stack.proxy.replay_client_tokens(false);
    stack
        .proxy
        .inject(Fault::error("RunInstances", "ServiceUnavailable").after_execution());
    let (report, ctx) = stack
        .run(stack.deploy(LB, 2).on(Target::None).retry(quick_retries(3)))
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(report.steps[0].attempts, 2);
    // The retry looked for the first attempt's instances and took them over.
    assert_eq!(stack.proxy.count("RunInstances"), 1);
    let live = stack.live().await;
    assert_eq!(live.len(), 2);
    assert!(!stack.by_state().await.contains_key("terminated"));
    assert_eq!(stack.registered().await, live);
    assert_eq!(stack.names_after(&ctx).await, ["web-01", "web-02"]);
}

#[tokio::test]
async fn with_ec2s_token_replay_a_resent_launch_starts_one_set() {
    let stack = Stack::start(3).await;
    stack
        .proxy
        .inject(Fault::error("RunInstances", "ServiceUnavailable").after_execution());
    let (report, ctx) = stack.run(stack.deploy(LB, 2).on(Target::None)).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    let launches: Vec<(bool, bool)> = stack
        .proxy
        .calls()
        .iter()
        .filter(|c| c.action == "RunInstances")
        .map(|c| (c.executed, c.replayed))
        .collect();
    assert_eq!(launches, [(true, false), (false, true)]);
    assert_eq!(stack.live().await.len(), 2);
    assert!(!stack.by_state().await.contains_key("terminated"));
    assert_eq!(ctx.new_nodes().len(), 2);
}

#[tokio::test]
async fn an_unknown_load_balancer_launches_nothing() {
    let stack = Stack::start(3).await;
    let (report, _) = stack
        .run(
            stack
                .deploy("no-such-lb", 1)
                .on(Target::None)
                .retry(quick_retries(3)),
        )
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.clone().expect("error");
    assert_eq!(err.kind, ErrorKind::InvalidInput);
    assert!(
        err.message
            .contains("load balancer no-such-lb does not exist"),
        "{}",
        err.message
    );
    assert_eq!(report.steps[0].attempts, 1);
    assert_eq!(stack.proxy.count("DescribeLoadBalancers"), 1);
    assert_eq!(stack.proxy.count("RunInstances"), 0);
    assert!(stack.by_state().await.is_empty());
}

#[tokio::test]
async fn a_failing_registration_is_retried_as_a_registration_and_names_the_load_balancer() {
    // Every registration gets a bare 500 (as moto answers for an unknown
    // load balancer), though the load balancer exists.
    let stack = Stack::start(1).await;
    stack
        .proxy
        .inject(Fault::status("RegisterInstancesWithLoadBalancer", 500).always());
    let (report, ctx) = stack
        .run(stack.deploy(LB, 1).on(Target::None).retry(quick_retries(3)))
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.clone().expect("error");
    assert!(
        err.message.contains("load balancer web-lb"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("after 3 attempt(s)"),
        "{}",
        err.message
    );
    assert_eq!(
        report.steps[0].attempts, 1,
        "the launch step is not retried"
    );
    assert_eq!(stack.proxy.count("RunInstances"), 1);
    assert_eq!(stack.proxy.count("RegisterInstancesWithLoadBalancer"), 3);
    assert!(report.undo_succeeded(), "{report}");
    assert!(stack.live().await.is_empty());
    assert!(ctx.new_nodes().is_empty());
}
