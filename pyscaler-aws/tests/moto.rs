//! DeployEc2Node, RemoveEc2Node, discovery and run clean-up against a real AWS API endpoint:
//! `moto_server`, started by the shared harness on a free loopback port.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_aws::{
    discover, instances_of_run, Aws, AwsError, ClassicElb, ClientConfig, DeployEc2Node, Ec2,
    Ec2Profile, Ec2RunCleanup, HealthState, Instance, InstanceHealth, InstanceState, LaunchSpec,
    LaunchTemplate, LoadBalancer, Pick, RemoveEc2Node, SdkEc2, StaticCredentials, Subnet,
    TemplateInfo,
};
use pyscaler_core::testing::{CallLog, Probe};
use pyscaler_core::{
    Action, ActionExt, Cluster, Context, ErrorKind, NodeAddress, Pipeline, Result, RunCleanup,
    RunRecord, RunState, RunStatus, Target,
};
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, AMI, REGION, SECRET_ACCESS_KEY};

const LB: &str = "web-lb";

/// Counts the calls that reach the providers, by operation.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<BTreeMap<&'static str, usize>>>);

impl Counts {
    fn add(&self, op: &'static str) {
        *self.0.lock().expect("counts lock").entry(op).or_default() += 1;
    }
    fn get(&self, op: &str) -> usize {
        self.0
            .lock()
            .expect("counts lock")
            .get(op)
            .copied()
            .unwrap_or(0)
    }
}

struct Counting<T> {
    inner: T,
    counts: Counts,
}

#[async_trait]
impl<T: Ec2> Ec2 for Counting<T> {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Vec<Instance>, AwsError> {
        self.counts.add("RunInstances");
        self.inner.launch(spec).await
    }
    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, AwsError> {
        self.counts.add("DescribeInstances");
        self.inner.describe(ids).await
    }
    async fn find_by_tags(
        &self,
        tags: &[(String, String)],
        states: &[InstanceState],
    ) -> Result<Vec<Instance>, AwsError> {
        self.counts.add("DescribeInstances");
        self.inner.find_by_tags(tags, states).await
    }
    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        self.counts.add("TerminateInstances");
        self.inner.terminate(ids).await
    }
    async fn describe_subnets(&self, ids: &[String]) -> Result<Vec<Subnet>, AwsError> {
        self.counts.add("DescribeSubnets");
        self.inner.describe_subnets(ids).await
    }
    async fn describe_launch_template(
        &self,
        template: &LaunchTemplate,
    ) -> Result<Option<TemplateInfo>, AwsError> {
        self.counts.add("DescribeLaunchTemplates");
        self.inner.describe_launch_template(template).await
    }
    async fn console_output(&self, instance_id: &str) -> Result<Option<String>, AwsError> {
        self.counts.add("GetConsoleOutput");
        self.inner.console_output(instance_id).await
    }
}

#[async_trait]
impl<T: LoadBalancer> LoadBalancer for Counting<T> {
    async fn register(&self, lb: &str, ids: &[String]) -> Result<(), AwsError> {
        self.counts.add("RegisterInstancesWithLoadBalancer");
        self.inner.register(lb, ids).await
    }
    async fn deregister(&self, lb: &str, ids: &[String]) -> Result<(), AwsError> {
        self.counts.add("DeregisterInstancesFromLoadBalancer");
        self.inner.deregister(lb, ids).await
    }
    async fn health(&self, lb: &str, ids: &[String]) -> Result<Vec<InstanceHealth>, AwsError> {
        self.counts.add("DescribeInstanceHealth");
        self.inner.health(lb, ids).await
    }
    async fn exists(&self, lb: &str) -> Result<bool, AwsError> {
        self.counts.add("DescribeLoadBalancers");
        self.inner.exists(lb).await
    }
}

/// One moto server, our providers on it (counted), and plain SDK clients to check with.
struct Stack {
    moto: MotoServer,
    ec2: Arc<Counting<SdkEc2>>,
    elb: Arc<Counting<ClassicElb>>,
    counts: Counts,
    sdk_ec2: aws_sdk_ec2::Client,
    sdk_elb: aws_sdk_elasticloadbalancing::Client,
}

impl Stack {
    async fn start() -> Self {
        let moto = MotoServer::start();
        let config = ClientConfig::new(REGION)
            .endpoint_url(moto.endpoint_url())
            .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
            .max_attempts(1);
        let counts = Counts::default();
        let ec2 = Arc::new(Counting {
            inner: SdkEc2::connect(&config).await,
            counts: counts.clone(),
        });
        let elb = Arc::new(Counting {
            inner: ClassicElb::connect(&config).await,
            counts: counts.clone(),
        });
        let sdk = moto.sdk_config().await;
        Self {
            moto,
            ec2,
            elb,
            counts,
            sdk_ec2: aws_sdk_ec2::Client::new(&sdk),
            sdk_elb: aws_sdk_elasticloadbalancing::Client::new(&sdk),
        }
    }

    /// Creates the classic load balancer the profile names, as an operator would.
    async fn create_load_balancer(&self) {
        self.moto.create_load_balancer(LB).await;
    }

    fn profile(&self, image: &str, instance_type: &str) -> Ec2Profile {
        Ec2Profile::builder(REGION, image, instance_type)
            .endpoint_url(self.moto.endpoint_url())
            .load_balancer(LB)
            .tag("team", "web")
            .ssh_user("admin")
            .build()
            .expect("valid profile")
    }

    /// The providers for `profile`, which names the load balancer.
    fn aws(&self, profile: Ec2Profile) -> Aws {
        Aws::new(self.ec2.clone(), Some(self.elb.clone()), profile).expect("paired providers")
    }

    fn deploy(&self, profile: Ec2Profile, count: u32) -> DeployEc2Node {
        DeployEc2Node::builder(&self.aws(profile))
            .count(count)
            .running_within(Duration::from_secs(30))
            .in_service_within(Duration::from_secs(30))
            .terminated_within(Duration::from_secs(30))
            .build()
            .expect("valid action")
    }

    /// Every instance moto knows, with its state and tags (checked with DescribeInstances).
    async fn instances(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        let out = self
            .sdk_ec2
            .describe_instances()
            .send()
            .await
            .expect("describe instances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_owned(),
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_owned())
                        .unwrap_or_default(),
                    i.tags()
                        .iter()
                        .map(|t| {
                            (
                                t.key().unwrap_or_default().to_owned(),
                                t.value().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect(),
                )
            })
            .collect()
    }

    async fn running(&self) -> Vec<String> {
        self.instances()
            .await
            .into_iter()
            .filter(|(_, state, _)| state == "running" || state == "pending")
            .map(|(id, _, _)| id)
            .collect()
    }

    /// The instances registered with the load balancer.
    async fn registered(&self) -> Vec<String> {
        registered_with(&self.sdk_elb).await
    }
}

/// The journal's record of the run of `ctx`, in `state`.
fn record_of(ctx: &Context, state: RunState) -> RunRecord {
    RunRecord {
        run_id: ctx.run_id().clone(),
        pipeline: "scale-out".into(),
        cluster: "web".into(),
        trigger: None,
        started_at: chrono::Utc::now(),
        state,
        steps: vec![("deploy-ec2-node".into(), None)],
        new_nodes: Vec::new(),
        steps_ended: None,
    }
}

/// Fails, as a Puppet run on the new nodes might, to force compensation.
fn fail() -> Probe {
    Probe::new("configure", &CallLog::default())
        .failing(u32::MAX, ErrorKind::RemoteCommandFailed)
        .failing_with("puppet failed")
}

#[tokio::test]
async fn three_nodes_launch_in_one_call_tagged_registered_and_in_service() {
    let stack = Stack::start().await;
    stack.create_load_balancer().await;
    let pipeline = Pipeline::builder("scale-out")
        .step(
            stack
                .deploy(stack.profile(AMI, "t3.small"), 3)
                .on(Target::None),
        )
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(Cluster::new("web"));
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:#?}");
    assert_eq!(stack.counts.get("RunInstances"), 1);
    assert_eq!(stack.counts.get("RegisterInstancesWithLoadBalancer"), 1);

    let instances = stack.instances().await;
    assert_eq!(instances.len(), 3);
    for (id, state, tags) in &instances {
        assert_eq!(state, "running", "{id}");
        assert_eq!(tags.get("Name").map(String::as_str), Some("web-01..03"));
        assert_eq!(
            tags.get("pyscaler:cluster").map(String::as_str),
            Some("web")
        );
        assert_eq!(
            tags.get("pyscaler:run").map(String::as_str),
            Some(ctx.run_id().as_str())
        );
        assert_eq!(tags.get("team").map(String::as_str), Some("web"));
    }
    let names: Vec<&str> = ctx.new_nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["web-01", "web-02", "web-03"]);
    assert!(ctx.new_nodes().iter().all(|n| n.address.is_some()));

    let mut ids: Vec<String> = instances.into_iter().map(|(id, _, _)| id).collect();
    ids.sort();
    assert_eq!(stack.registered().await, ids);
    let health = stack.elb.health(LB, &ids).await.expect("health");
    assert_eq!(health.len(), 3);
    assert!(health.iter().all(|h| h.state == HealthState::InService));

    // A restarted controller sees the same cluster from EC2's tags and the
    // journal, which says the run succeeded.
    let aws = stack.aws(stack.profile(AMI, "t3.small"));
    let found = discover(
        &aws,
        "web",
        &[record_of(&ctx, RunState::Finished(RunStatus::Succeeded))],
    )
    .await
    .expect("discover");
    let mut found_names: Vec<String> = found.nodes().iter().map(|n| n.name.clone()).collect();
    found_names.sort();
    assert_eq!(found_names, ["web-01", "web-02", "web-03"]);
    assert_eq!(
        instances_of_run(&aws, ctx.run_id())
            .await
            .expect("instances of the run")
            .len(),
        3
    );
}

#[tokio::test]
async fn remove_ec2_node_deregisters_and_terminates_the_newest() {
    let stack = Stack::start().await;
    stack.create_load_balancer().await;
    let profile = stack.profile(AMI, "t3.micro");
    let mut ctx = Context::new(Cluster::new("web"));
    stack
        .deploy(profile.clone(), 2)
        .run(&mut ctx)
        .await
        .expect("deploy two");
    let aws = stack.aws(profile.clone());
    let cluster = discover(
        &aws,
        "web",
        &[record_of(&ctx, RunState::Finished(RunStatus::Succeeded))],
    )
    .await
    .expect("discover");
    assert_eq!(cluster.len(), 2);

    let remove = RemoveEc2Node::builder(&aws)
        .pick(Pick::Newest)
        .count(1)
        .draining(Duration::ZERO)
        .terminated_within(Duration::from_secs(30))
        .build()
        .expect("action");
    assert!(remove.describe().removes_nodes);
    let pipeline = Pipeline::builder("scale-in")
        .step(remove.on(Target::None))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(cluster);
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:#?}");
    assert_eq!(report.nodes_removed.len(), 1);
    let gone = report.nodes_removed[0]
        .instance_id
        .clone()
        .expect("instance id");
    assert_eq!(ctx.cluster().len(), 1);
    assert!(report.steps[0].nodes[0].summary.contains("terminated"));

    let running = stack.running().await;
    assert_eq!(running.len(), 1);
    assert!(!running.contains(&gone));
    assert_eq!(stack.registered().await, running);

    // The last node is kept: the cluster minimum is 1.
    let remove_again = RemoveEc2Node::builder(&aws)
        .draining(Duration::ZERO)
        .build()
        .expect("action");
    let err = remove_again
        .run(&mut ctx)
        .await
        .expect_err("below the minimum");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(stack.running().await.len(), 1);
}

#[tokio::test]
async fn a_bad_ami_and_a_bad_instance_type_are_typed_errors_and_launch_nothing() {
    let stack = Stack::start().await;
    stack.create_load_balancer().await;
    for (image, instance_type, code, named) in [
        (
            "ami-0badbad0",
            "t3.small",
            "InvalidAMIID.NotFound",
            "image ami-0badbad0",
        ),
        (
            AMI,
            "t9.huge",
            "InvalidInstanceType",
            "instance type t9.huge",
        ),
    ] {
        let pipeline = Pipeline::builder("scale-out")
            .step(
                stack
                    .deploy(stack.profile(image, instance_type), 1)
                    .on(Target::None)
                    .retry(pyscaler_core::RetryPolicy::attempts(3)),
            )
            .build()
            .expect("pipeline");
        let mut ctx = Context::new(Cluster::new("web"));
        let report = pipeline.run(&mut ctx).await;
        assert_eq!(report.status, RunStatus::Failed);
        let err = report.error.clone().expect("error");
        assert_eq!(err.kind, ErrorKind::InvalidInput, "{err:?}");
        assert!(err.message.contains(code), "{}", err.message);
        assert!(err.message.contains(named), "{}", err.message);
        assert_eq!(report.steps[0].attempts, 1, "bad input is not retried");
        assert!(report.undo_succeeded());
    }
    assert_eq!(stack.counts.get("RunInstances"), 2);
    assert!(stack.running().await.is_empty());
    assert!(stack.registered().await.is_empty());
}

/// The instances registered with the classic load balancer, sorted.
async fn registered_with(elb: &aws_sdk_elasticloadbalancing::Client) -> Vec<String> {
    let out = elb
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

/// A step whose undo writes down which instances the load balancer still
/// serves when it runs (a slow Puppet undo, say).
struct SeesTheLoadBalancer {
    elb: aws_sdk_elasticloadbalancing::Client,
    seen: Arc<Mutex<Option<Vec<String>>>>,
}

#[async_trait]
impl Action for SeesTheLoadBalancer {
    fn name(&self) -> &str {
        "puppet"
    }

    async fn run(&self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }

    async fn compensate(&self, _ctx: &mut Context) -> Result<()> {
        *self.seen.lock().expect("seen") = Some(registered_with(&self.elb).await);
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_runs_new_nodes_are_out_of_the_load_balancer_before_the_other_undos() {
    let stack = Stack::start().await;
    stack.create_load_balancer().await;
    let seen = Arc::new(Mutex::new(None));
    let sees = SeesTheLoadBalancer {
        elb: stack.sdk_elb.clone(),
        seen: seen.clone(),
    };
    let pipeline = Pipeline::builder("scale-out")
        .step(
            stack
                .deploy(stack.profile(AMI, "t3.small"), 2)
                .on(Target::None),
        )
        .step(sees.on(Target::NewNodes))
        .step(fail().on(Target::NewNodes))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(Cluster::new("web"));
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.undo_succeeded(), "{report:#?}");
    // When the later step's undo ran, the new nodes no longer served.
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen, Some(Vec::new()), "still registered during the undos");
    // One deregistration (the withdrawal), then the launch's own undo.
    assert_eq!(stack.counts.get("DeregisterInstancesFromLoadBalancer"), 1);
    assert!(stack.running().await.is_empty());
}

#[tokio::test]
async fn a_failure_after_registration_undoes_everything() {
    let stack = Stack::start().await;
    stack.create_load_balancer().await;
    let pipeline = Pipeline::builder("scale-out")
        .step(
            stack
                .deploy(stack.profile(AMI, "t3.small"), 2)
                .on(Target::None),
        )
        .step(fail().on(Target::NewNodes))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(Cluster::new("web"));
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.undo_succeeded(), "{report:#?}");
    assert_eq!(stack.counts.get("RegisterInstancesWithLoadBalancer"), 1);
    assert_eq!(stack.counts.get("DeregisterInstancesFromLoadBalancer"), 1);
    assert!(stack.running().await.is_empty());
    let instances = stack.instances().await;
    assert_eq!(instances.len(), 2);
    assert!(instances.iter().all(|(_, state, _)| state == "terminated"));
    assert!(stack.registered().await.is_empty());
    assert!(ctx.new_nodes().is_empty());
    assert!(ctx.cluster().is_empty());
}

#[tokio::test]
async fn scaling_out_by_ten_makes_one_launch_and_one_registration() {
    let stack = Stack::start().await;
    stack.create_load_balancer().await;
    let mut ctx = Context::new(Cluster::new("web"));
    stack
        .deploy(stack.profile(AMI, "t3.small"), 10)
        .run(&mut ctx)
        .await
        .expect("deploy ten");
    assert_eq!(stack.counts.get("RunInstances"), 1);
    assert_eq!(stack.counts.get("RegisterInstancesWithLoadBalancer"), 1);
    // Waiting polls all ten at once, and stops as soon as they are ready.
    assert!(stack.counts.get("DescribeInstances") <= 3);
    assert!(stack.counts.get("DescribeInstanceHealth") <= 3);
    assert_eq!(stack.running().await.len(), 10);
    assert_eq!(stack.registered().await.len(), 10);
    assert_eq!(ctx.new_nodes().len(), 10);
    assert_eq!(
        ctx.new_nodes().last().map(|n| n.name.as_str()),
        Some("web-10")
    );
}

#[tokio::test]
async fn the_local_stack_reaches_every_node_at_one_fixed_address() {
    let stack = Stack::start().await;
    stack.create_load_balancer().await;
    // Stands for the loopback sshd of the local test stack.
    let sshd = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = sshd.local_addr().expect("address").port();
    let profile = Ec2Profile::builder(REGION, AMI, "t3.small")
        .endpoint_url(stack.moto.endpoint_url())
        .load_balancer(LB)
        .ssh_via(pyscaler_aws::SshVia::Fixed {
            host: "127.0.0.1".into(),
        })
        .ssh_port(port)
        .ssh_user("pyscaler")
        .build()
        .expect("profile");
    let deploy = DeployEc2Node::builder(&stack.aws(profile))
        .count(2)
        .wait_for_ssh(Duration::from_secs(10))
        .build()
        .expect("action");
    let mut ctx = Context::new(Cluster::new("web"));
    deploy.run(&mut ctx).await.expect("deployed");
    for node in ctx.new_nodes() {
        assert_eq!(
            node.address,
            Some(NodeAddress::new("127.0.0.1").with_port(port))
        );
        assert_eq!(node.ssh_user.as_deref(), Some("pyscaler"));
    }
}

#[tokio::test]
async fn recovery_undoes_what_a_dead_controllers_run_left_behind() {
    let stack = Stack::start().await;
    stack.create_load_balancer().await;
    let mut ctx = Context::new(Cluster::new("web"));
    stack
        .deploy(stack.profile(AMI, "t3.small"), 2)
        .run(&mut ctx)
        .await
        .expect("deployed");
    // Another run's instance must survive the clean-up.
    let mut other = Context::new(Cluster::new("web"));
    stack
        .deploy(stack.profile(AMI, "t3.small"), 1)
        .run(&mut other)
        .await
        .expect("deployed");
    assert_eq!(stack.registered().await.len(), 3);

    // The controller died during the run: the journal says it never finished.
    let record = record_of(&ctx, RunState::Unfinished);
    let aws = stack.aws(stack.profile(AMI, "t3.small"));
    let cleanup = Ec2RunCleanup::new(&aws).terminated_within(Duration::from_secs(30));
    let undone = cleanup.cleanup(&record).await.expect("cleaned up");
    assert_eq!(undone.len(), 2, "{undone:?}");

    let survivor = other.new_nodes()[0].id.clone();
    assert_eq!(stack.running().await, std::slice::from_ref(&survivor));
    assert_eq!(stack.registered().await, [survivor]);
    assert!(instances_of_run(&aws, ctx.run_id())
        .await
        .expect("listed")
        .is_empty());
}

#[tokio::test]
async fn an_unknown_load_balancer_is_refused_before_anything_launches() {
    // No load balancer is created: the profile's `web-lb` does not exist.
    let stack = Stack::start().await;
    let pipeline = Pipeline::builder("scale-out")
        .step(
            stack
                .deploy(stack.profile(AMI, "t3.small"), 2)
                .on(Target::None)
                .retry(pyscaler_core::RetryPolicy::attempts(3)),
        )
        .build()
        .expect("pipeline");
    let report = pipeline.run(&mut Context::new(Cluster::new("web"))).await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.clone().expect("error");
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err:?}");
    assert!(
        err.message.contains("load balancer web-lb does not exist"),
        "{}",
        err.message
    );
    assert_eq!(report.steps[0].attempts, 1);
    assert_eq!(stack.counts.get("DescribeLoadBalancers"), 1);
    assert_eq!(stack.counts.get("RunInstances"), 0);
    assert!(stack.instances().await.is_empty());
}

#[tokio::test]
async fn a_dead_runs_instance_is_no_member_and_the_next_node_is_not_numbered_after_it() {
    let stack = Stack::start().await;
    stack.create_load_balancer().await;
    let profile = stack.profile(AMI, "t3.small");
    // The controller died right after launching web-01: its run never finished.
    let mut dead = Context::new(Cluster::new("web"));
    stack
        .deploy(profile.clone(), 1)
        .run(&mut dead)
        .await
        .expect("deployed");
    let runs = [record_of(&dead, RunState::Unfinished)];
    let aws = stack.aws(profile.clone());
    let cluster = discover(&aws, "web", &runs).await.expect("discover");
    assert!(cluster.is_empty(), "{:?}", cluster.nodes());
    // The next node is web-01 again, not web-02: the dead one is no member.
    let mut ctx = Context::new(cluster);
    stack
        .deploy(profile.clone(), 1)
        .run(&mut ctx)
        .await
        .expect("deployed");
    assert_eq!(ctx.new_nodes()[0].name, "web-01");
    // Once that run succeeded, only its node is a member.
    let runs = [
        record_of(&dead, RunState::Unfinished),
        record_of(&ctx, RunState::Finished(RunStatus::Succeeded)),
    ];
    let cluster = discover(&aws, "web", &runs).await.expect("discover");
    let ids: Vec<&str> = cluster.nodes().iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, [ctx.new_nodes()[0].id.as_str()]);
}
