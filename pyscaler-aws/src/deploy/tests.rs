//! DeployEc2Node against mocked providers: every path, in virtual time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pyscaler_core::{
    ActionExt, Cluster, Error, ErrorKind, MockAction, Pipeline, RetryPolicy, RunId, RunStatus,
    StepStatus, Target, TriggerInfo,
};

use super::*;
use crate::test_support::{
    api_err, calls_of, expect_deregister_noted, expect_register_noted, expect_terminate_noted,
    expect_terminate_raising, instance, instances_in, note, pipeline_of, Calls, Terminated,
};
use crate::wait::{default_poll, Backoff};
use crate::{
    AwsError, Ec2, Ec2Profile, HealthState, Instance, InstanceHealth, LaunchSpec, LoadBalancer,
    MockEc2, MockLoadBalancer, SshVia, TAG_CLUSTER, TAG_RUN, TAG_STEP,
};
use pyscaler_core::NodeAddress;

fn profile(lb: bool) -> Ec2Profile {
    let b = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .tag("team", "web")
        .ssh_user("admin");
    let b = if lb { b.load_balancer("web-lb") } else { b };
    b.build().expect("valid profile")
}

fn ids(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("i-{i}")).collect()
}

/// A cluster of two nodes, so new ones are numbered from 3.
fn context() -> Context {
    Context::new(Cluster::new("web").with_nodes([
        pyscaler_core::Node::new("i-a", "web-01"),
        pyscaler_core::Node::new("i-b", "web-02"),
    ]))
    .with_run_id(RunId::new("run-20261127T000000Z-0000beef"))
}

/// An EC2 that launches `n` instances, says the first describe "not found yet",
/// then pending, then running; terminates; then says terminated.
fn ec2_happy(n: u32, calls: &Calls) -> MockEc2 {
    let mut ec2 = MockEc2::new();
    let c = calls.clone();
    ec2.expect_launch().returning(move |spec| {
        note(&c, format!("launch {}", spec.client_token));
        Ok((0..spec.max_count)
            .map(|i| instance(i, InstanceState::Pending))
            .collect())
    });
    let polls = Arc::new(AtomicUsize::new(0));
    let terminated = Terminated::default();
    let (c, t) = (calls.clone(), terminated.clone());
    ec2.expect_describe().returning(move |wanted| {
        note(&c, "describe");
        if t.is_raised() {
            return Ok(instances_in(wanted, InstanceState::Terminated));
        }
        match polls.fetch_add(1, Ordering::SeqCst) {
            0 => Err(api_err("InvalidInstanceID.NotFound")),
            1 => Ok((0..n)
                .map(|i| instance(i, InstanceState::Pending))
                .collect()),
            _ => Ok((0..n)
                .map(|i| instance(i, InstanceState::Running))
                .collect()),
        }
    });
    // Compensation also looks for the run's instances by their tags: the
    // launched ones until they are terminated (a read, not noted as a call).
    let t = terminated.clone();
    ec2.expect_find_by_tags().returning(move |_, _| {
        Ok(if t.is_raised() {
            Vec::new()
        } else {
            (0..n)
                .map(|i| instance(i, InstanceState::Running))
                .collect()
        })
    });
    expect_terminate_raising(&mut ec2, calls, &terminated, ..);
    ec2
}

/// An EC2 whose searches by tag find nothing; the test sets up the rest.
fn ec2_finding_nothing() -> MockEc2 {
    let mut ec2 = MockEc2::new();
    ec2.expect_find_by_tags().returning(|_, _| Ok(vec![]));
    ec2
}

/// A load balancer provider that says `web-lb` exists.
fn elb_existing() -> MockLoadBalancer {
    let mut elb = MockLoadBalancer::new();
    elb.expect_exists()
        .withf(|lb| lb == "web-lb")
        .returning(|_| Ok(true));
    // A classic ELB: it cannot say how long it drains.
    elb.expect_draining_timeout().returning(|_| Ok(None));
    elb
}

fn elb_happy(calls: &Calls) -> MockLoadBalancer {
    let mut elb = elb_existing();
    expect_register_noted(&mut elb, calls);
    let polls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    elb.expect_health().returning(move |_, ids| {
        note(&c, "health");
        let state = if polls.fetch_add(1, Ordering::SeqCst) == 0 {
            HealthState::OutOfService
        } else {
            HealthState::InService
        };
        Ok(ids
            .iter()
            .map(|id| InstanceHealth {
                instance_id: id.clone(),
                state,
                reason: None,
            })
            .collect())
    });
    expect_deregister_noted(&mut elb, calls);
    elb
}

fn deploy(ec2: MockEc2, elb: Option<MockLoadBalancer>, count: u32) -> DeployEc2Node {
    DeployEc2Node::builder(
        &Aws::new(
            Arc::new(ec2),
            elb.map(|e| Arc::new(e) as Arc<dyn LoadBalancer>),
            profile(true),
        )
        .expect("paired providers"),
    )
    .count(count)
    .build()
    .expect("valid action")
}

fn failing_step() -> MockAction {
    let mut a = MockAction::new();
    a.expect_name().return_const("configure".to_owned());
    a.expect_describe().returning(Effects::none);
    a.expect_run().returning(|_| {
        Err(Error::other(
            ErrorKind::RemoteCommandFailed,
            "puppet failed",
        ))
    });
    a.expect_withdraw().returning(|_| Ok(()));
    a.expect_compensate().returning(|_| Ok(()));
    a
}

#[tokio::test(start_paused = true)]
async fn launches_in_one_call_tagged_and_registers_in_one_call() {
    let calls = Calls::default();
    let mut ec2 = ec2_finding_nothing();
    let seen = Arc::new(Mutex::new(None::<LaunchSpec>));
    let (c, s) = (calls.clone(), seen.clone());
    ec2.expect_launch().times(1).returning(move |spec| {
        note(&c, "launch");
        *s.lock().expect("lock") = Some(spec.clone());
        Ok(vec![
            instance(0, InstanceState::Pending),
            instance(1, InstanceState::Pending),
        ])
    });
    let polls = Arc::new(AtomicUsize::new(0));
    ec2.expect_describe()
        .returning(move |_| match polls.fetch_add(1, Ordering::SeqCst) {
            0 => Err(api_err("InvalidInstanceID.NotFound")),
            1 => Ok(vec![
                instance(0, InstanceState::Running),
                instance(1, InstanceState::Pending),
            ]),
            _ => Ok(vec![
                instance(0, InstanceState::Running),
                instance(1, InstanceState::Running),
            ]),
        });
    let action = deploy(ec2, Some(elb_happy(&calls)), 2);
    let pipeline = Pipeline::builder("scale-out")
        .step(action.on(Target::None))
        .build()
        .expect("pipeline");
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;

    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    let spec = seen.lock().expect("lock").clone().expect("launched");
    assert_eq!((spec.min_count, spec.max_count), (2, 2));
    assert_eq!(
        spec.client_token,
        client_token(ctx.run_id(), "deploy-ec2-node")
    );
    assert_eq!(
        spec.tags.get("Name").map(String::as_str),
        Some("web-03..04")
    );
    assert_eq!(spec.tags.get(TAG_CLUSTER).map(String::as_str), Some("web"));
    assert_eq!(
        spec.tags.get(TAG_RUN).map(String::as_str),
        Some("run-20261127T000000Z-0000beef")
    );
    assert_eq!(spec.tags.get("team").map(String::as_str), Some("web"));
    assert_eq!(
        calls_of(&calls),
        ["launch", "register web-lb i-0,i-1", "health", "health"]
    );
    let names: Vec<&str> = ctx.new_nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["web-03", "web-04"]);
    let n = &ctx.new_nodes()[0];
    assert_eq!(n.address, Some(NodeAddress::new("10.0.0.10")));
    assert_eq!(n.ssh_user.as_deref(), Some("admin"));
    assert_eq!(n.instance_id.as_deref(), Some("i-0"));
    assert_eq!(ctx.cluster().len(), 4);
    let outcomes = &report.steps[0].nodes;
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes[0].summary.contains("InService in web-lb"),
        "{outcomes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_launch_is_typed_and_leaves_nothing_to_undo() {
    let mut ec2 = MockEc2::new();
    ec2.expect_launch()
        .times(1)
        .returning(|_| Err(api_err("InvalidAMIID.NotFound")));
    // The undo finds nothing by the run's tags either.
    ec2.expect_find_by_tags().returning(|_, _| Ok(vec![]));
    // No describe, terminate or deregister: mockall fails on any unexpected call.
    let action = deploy(ec2, Some(elb_existing()), 1);
    let pipeline = pipeline_of(action.on(Target::None).retry(RetryPolicy::attempts(3)));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.clone().expect("error");
    assert_eq!(err.kind, ErrorKind::InvalidInput);
    assert_eq!(report.steps[0].attempts, 1, "bad input is not retried");
    assert!(report.undo_succeeded());
    assert!(ctx.new_nodes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_instance_lost_while_waiting_is_terminated() {
    let calls = Calls::default();
    let mut ec2 = ec2_finding_nothing();
    let c = calls.clone();
    ec2.expect_launch().returning(move |_| {
        note(&c, "launch");
        Ok(vec![instance(0, InstanceState::Pending)])
    });
    let terminated = Terminated::default();
    let t = terminated.clone();
    ec2.expect_describe().returning(move |_| {
        let state = t.or(InstanceState::ShuttingDown);
        Ok(vec![Instance {
            state_reason: Some("Server.InternalError".into()),
            ..instance(0, state)
        }])
    });
    expect_terminate_raising(&mut ec2, &calls, &terminated, ..);
    let action = deploy(ec2, Some(elb_existing()), 1);
    let pipeline = pipeline_of(action.on(Target::None));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    let err = report.error.clone().expect("failed");
    assert!(
        err.message
            .contains("i-0 is shutting-down instead of running: Server.InternalError"),
        "{}",
        err.message
    );
    assert_eq!(calls_of(&calls), ["launch", "terminate i-0"]);
    assert!(report.undo_succeeded());
    assert!(ctx.new_nodes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn waiting_for_running_is_bounded() {
    let calls = Calls::default();
    let mut ec2 = ec2_finding_nothing();
    ec2.expect_launch()
        .returning(|_| Ok(vec![instance(0, InstanceState::Pending)]));
    let terminated = Terminated::default();
    let t = terminated.clone();
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    ec2.expect_describe().returning(move |_| {
        let state = if t.is_raised() {
            InstanceState::Terminated
        } else {
            p.fetch_add(1, Ordering::SeqCst);
            InstanceState::Pending
        };
        Ok(vec![instance(0, state)])
    });
    expect_terminate_raising(&mut ec2, &calls, &terminated, ..);
    // Without jitter, so the number of polls is the same every time.
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .running_within(Duration::from_secs(60))
    .poll(crate::wait::default_poll().jitter(false))
    .build()
    .expect("action");
    let mut ctx = context();
    let started = tokio::time::Instant::now();
    let err = action.run(&mut ctx).await.expect_err("never runs");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.to_string()
            .contains("i-0 to run (last seen: i-0 pending)"),
        "{err}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    // Backoff capped at 5 s: about 60 / 5 polls, never a busy loop.
    let n = polls.load(Ordering::SeqCst);
    assert!((12..=20).contains(&n), "{n} polls");
    action.compensate(&mut ctx).await.expect("undone");
}

#[tokio::test(start_paused = true)]
async fn a_failed_registration_is_deregistered_then_terminated() {
    let calls = Calls::default();
    let ec2 = ec2_happy(1, &calls);
    let mut elb = elb_existing();
    let c = calls.clone();
    elb.expect_register().returning(move |lb, _| {
        note(&c, format!("register {lb}"));
        Err(AwsError::Api {
            service: "ELB",
            operation: "RegisterInstancesWithLoadBalancer",
            code: Some("LoadBalancerNotFound".into()),
            message: "There is no ACTIVE Load Balancer named 'web-lb'".into(),
            subject: Some("load balancer web-lb".into()),
            kind: ErrorKind::InvalidInput,
            source: None,
        })
    });
    let c = calls.clone();
    elb.expect_deregister().returning(move |lb, _| {
        note(&c, format!("deregister {lb}"));
        Err(api_err("LoadBalancerNotFound"))
    });
    let action = deploy(ec2, Some(elb), 1);
    let pipeline = pipeline_of(action.on(Target::None));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    let err = report.error.clone().expect("failed");
    assert_eq!(err.kind, ErrorKind::InvalidInput);
    assert!(
        err.message.contains("for load balancer web-lb"),
        "{}",
        err.message
    );
    let token = client_token(ctx.run_id(), "deploy-ec2-node");
    assert_eq!(
        calls_of(&calls),
        [
            format!("launch {token}"),
            "describe".into(),
            "describe".into(),
            "describe".into(),
            "register web-lb".into(),
            "deregister web-lb".into(),
            "terminate i-0".into(),
            "describe".into(),
        ]
    );
    assert!(report.undo_succeeded());
}

#[tokio::test(start_paused = true)]
async fn a_later_failure_undoes_in_order_and_undoing_twice_is_safe() {
    let calls = Calls::default();
    let action = Arc::new(deploy(ec2_happy(2, &calls), Some(elb_happy(&calls)), 2));
    let pipeline = Pipeline::builder("p")
        .step(action.clone().on(Target::None))
        .step(failing_step().on(Target::NewNodes))
        .build()
        .expect("pipeline");
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.steps[0].status, StepStatus::Compensated);
    let after_run = calls_of(&calls);
    let undo: Vec<&str> = after_run
        .iter()
        .skip_while(|c| !c.starts_with("deregister"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        undo,
        ["deregister web-lb i-0,i-1", "terminate i-0,i-1", "describe"]
    );
    assert!(ctx.new_nodes().is_empty());
    assert_eq!(ctx.cluster().len(), 2);
    let launched = ctx
        .step_output::<Launched>("deploy-ec2-node")
        .cloned()
        .expect("recorded");
    assert!(launched.undone);
    assert_eq!(launched.instance_ids, ids(2));

    // The engine, or a person, may undo again: nothing more reaches AWS.
    let before = calls_of(&calls).len();
    action.compensate(&mut ctx).await.expect("second undo");
    assert_eq!(calls_of(&calls).len(), before);
}

#[tokio::test(start_paused = true)]
async fn a_retried_launch_sends_the_same_client_token() {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut ec2 = MockEc2::new();
    let t = tokens.clone();
    ec2.expect_launch().times(2).returning(move |spec| {
        let mut t = t.lock().expect("lock");
        t.push(spec.client_token.clone());
        if t.len() == 1 {
            Err(api_err("RequestLimitExceeded"))
        } else {
            Ok(vec![instance(0, InstanceState::Running)])
        }
    });
    ec2.expect_describe()
        .returning(|_| Ok(vec![instance(0, InstanceState::Running)]));
    // The second attempt looks for what the first may have started (nothing)
    // before launching, and reconciles after.
    ec2.expect_find_by_tags().returning(|_, _| Ok(Vec::new()));
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .build()
    .expect("action");
    let pipeline = pipeline_of(action.on(Target::None).retry(RetryPolicy::attempts(3)));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(report.steps[0].attempts, 2);
    let tokens = tokens.lock().expect("lock").clone();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0], tokens[1]);
    assert!(tokens[0].len() <= 64 && tokens[0].is_ascii());
    // Another run, or another step, never shares it.
    assert_ne!(
        tokens[0],
        client_token(&RunId::new("run-other"), "deploy-ec2-node")
    );
    assert_ne!(tokens[0], client_token(ctx.run_id(), "deploy-more"));
}

/// Delegates to a mock, but its launch never answers (a call cut off by the step timeout).
struct SilentLaunch(MockEc2);

#[async_trait]
impl Ec2 for SilentLaunch {
    async fn launch(&self, _spec: &LaunchSpec) -> Result<Vec<Instance>, AwsError> {
        std::future::pending().await
    }
    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, AwsError> {
        self.0.describe(ids).await
    }
    async fn find_by_tags(
        &self,
        tags: &[(String, String)],
        states: &[InstanceState],
    ) -> Result<Vec<Instance>, AwsError> {
        self.0.find_by_tags(tags, states).await
    }
    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        self.0.terminate(ids).await
    }
    async fn describe_subnets(&self, ids: &[String]) -> Result<Vec<crate::Subnet>, AwsError> {
        self.0.describe_subnets(ids).await
    }
    async fn describe_launch_template(
        &self,
        template: &crate::LaunchTemplate,
    ) -> Result<Option<crate::TemplateInfo>, AwsError> {
        self.0.describe_launch_template(template).await
    }
    async fn console_output(&self, id: &str) -> Result<Option<String>, AwsError> {
        self.0.console_output(id).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_launch_cut_off_by_the_step_timeout_is_found_by_its_tags_and_undone() {
    let mut ec2 = MockEc2::new();
    let searched = Arc::new(Mutex::new(Vec::new()));
    let s = searched.clone();
    ec2.expect_find_by_tags()
        .times(1)
        .returning(move |tags, _| {
            s.lock().expect("lock").extend(tags.iter().cloned());
            Ok(vec![instance(0, InstanceState::Pending)])
        });
    ec2.expect_terminate()
        .withf(|ids| ids == ["i-0".to_owned()])
        .times(1)
        .returning(|_| Ok(()));
    ec2.expect_describe()
        .returning(|_| Ok(vec![instance(0, InstanceState::Terminated)]));
    let mut elb = elb_existing();
    elb.expect_deregister()
        .withf(|lb, ids| lb == "web-lb" && ids == ["i-0".to_owned()])
        .times(1)
        .returning(|_, _| Ok(()));
    let action = DeployEc2Node::builder(
        &Aws::new(
            Arc::new(SilentLaunch(ec2)),
            Some(Arc::new(elb)),
            profile(true),
        )
        .expect("paired providers"),
    )
    .build()
    .expect("action");
    let pipeline = pipeline_of(action.on(Target::None).timeout(Duration::from_secs(30)));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(
        report.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Timeout)
    );
    assert!(report.undo_succeeded(), "{report:?}");
    let searched = searched.lock().expect("lock").clone();
    assert!(searched.contains(&(TAG_RUN.to_owned(), ctx.run_id().to_string())));
    assert!(searched.contains(&(TAG_STEP.to_owned(), "deploy-ec2-node".to_owned())));
}

#[tokio::test(start_paused = true)]
async fn a_node_without_the_wanted_address_fails_and_is_undone() {
    let calls = Calls::default();
    let ec2 = ec2_happy(1, &calls);
    let p = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .ssh_via(SshVia::PublicIp)
        .build()
        .expect("profile");
    let action =
        DeployEc2Node::builder(&Aws::new(Arc::new(ec2), None, p).expect("paired providers"))
            .build()
            .expect("action");
    let pipeline = pipeline_of(action.on(Target::None));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    let err = report.error.clone().expect("failed");
    assert!(
        err.message.contains("i-0 has no public IP"),
        "{}",
        err.message
    );
    assert!(calls_of(&calls).contains(&"terminate i-0".to_owned()));
}

#[test]
fn mistakes_are_caught_when_building() {
    let build = |elb: bool, lb: bool, count: u32, min: Option<u32>| {
        // The pairing of provider and profile is checked once, by the handle.
        let aws = Aws::new(
            Arc::new(MockEc2::new()),
            elb.then(|| Arc::new(MockLoadBalancer::new()) as Arc<dyn LoadBalancer>),
            profile(lb),
        )
        .map_err(|e| e.to_string())?;
        let b = DeployEc2Node::builder(&aws).count(count);
        let b = match min {
            Some(m) => b.allow_partial(m),
            None => b,
        };
        b.build().map(|_| ()).map_err(|e| e.to_string())
    };
    assert!(build(true, true, 2, None).is_ok());
    assert!(build(false, false, 1, None).is_ok());
    assert!(build(false, true, 1, None)
        .expect_err("lb without provider")
        .contains("`web-lb`"));
    assert!(build(true, false, 1, None).is_err());
    assert!(build(false, false, 0, None).is_err());
    assert!(build(false, false, 2, Some(3)).is_err());
    assert!(build(false, false, 3, Some(1)).is_ok());
}

#[test]
fn describe_says_it_creates_nodes() {
    let a = deploy(MockEc2::new(), Some(MockLoadBalancer::new()), 3);
    let e = a.describe();
    assert!(e.creates_nodes);
    // The scaler keeps a scale-out under its maximum with this count.
    assert_eq!(e.nodes_added, 3);
    assert_eq!(
        e.summary[0],
        "launch 3 t3.small from ami-03cf127a in us-east-1"
    );
    assert!(e.summary[1].contains("web-lb"));
}

#[tokio::test(start_paused = true)]
async fn a_partial_launch_is_accepted_when_allowed() {
    let mut ec2 = ec2_finding_nothing();
    let seen = Arc::new(Mutex::new((0, 0)));
    let s = seen.clone();
    ec2.expect_launch().times(1).returning(move |spec| {
        *s.lock().expect("lock") = (spec.min_count, spec.max_count);
        // EC2 had capacity for two of the three.
        Ok(vec![
            instance(0, InstanceState::Pending),
            instance(1, InstanceState::Pending),
        ])
    });
    ec2.expect_describe().returning(|_| {
        Ok(vec![
            instance(0, InstanceState::Running),
            instance(1, InstanceState::Running),
        ])
    });
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .count(3)
    .allow_partial(1)
    .build()
    .expect("action");
    let mut ctx = context();
    action.run(&mut ctx).await.expect("deployed");
    assert_eq!(*seen.lock().expect("lock"), (1, 3));
    assert_eq!(ctx.new_nodes().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_in_service_is_bounded_and_says_why() {
    let calls = Calls::default();
    let mut elb = elb_existing();
    elb.expect_register().returning(|_, _| Ok(()));
    elb.expect_health().returning(|_, ids| {
        Ok(ids
            .iter()
            .map(|id| InstanceHealth {
                instance_id: id.clone(),
                state: HealthState::OutOfService,
                reason: Some("Instance has failed at least the UnhealthyThreshold number of health checks consecutively.".into()),
            })
            .collect())
    });
    expect_deregister_noted(&mut elb, &calls);
    let action = DeployEc2Node::builder(
        &Aws::new(
            Arc::new(ec2_happy(1, &calls)),
            Some(Arc::new(elb)),
            profile(true),
        )
        .expect("paired providers"),
    )
    .in_service_within(Duration::from_secs(120))
    .build()
    .expect("action");
    let pipeline = pipeline_of(action.on(Target::None));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    let err = report.error.clone().expect("failed");
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(
        err.message
            .contains("gave up after 2m waiting for i-0 to be InService in web-lb (last seen: i-0 OutOfService: Instance has failed"),
        "{}",
        err.message
    );
    let outcome = &report.steps[0].nodes;
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0].node, "web-03");
    assert!(!outcome[0].succeeded);
    assert!(
        outcome[0].summary.starts_with("i-0: gave up after 2m"),
        "{}",
        outcome[0].summary
    );
    let tail: Vec<String> = calls_of(&calls).into_iter().rev().take(3).rev().collect();
    assert_eq!(tail, ["deregister web-lb i-0", "terminate i-0", "describe"]);
}

#[tokio::test]
async fn the_ssh_wait_passes_when_the_port_answers_and_is_bounded_when_not() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let open = listener.local_addr().expect("address").port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address").port()
    };
    for (port, ok) in [(open, true), (closed, false)] {
        let calls = Calls::default();
        let p = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
            .ssh_via(SshVia::Fixed {
                host: "127.0.0.1".into(),
            })
            .ssh_port(port)
            .build()
            .expect("profile");
        let action = DeployEc2Node::builder(
            &Aws::new(Arc::new(ec2_happy(1, &calls)), None, p).expect("paired providers"),
        )
        .poll(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
        .wait_for_ssh(Duration::from_millis(500))
        .build()
        .expect("action");
        let mut ctx = context();
        let result = action.run(&mut ctx).await;
        if ok {
            result.expect("SSH answered");
            assert_eq!(
                ctx.new_nodes()[0].address,
                Some(NodeAddress::new("127.0.0.1").with_port(open))
            );
        } else {
            let err = result.expect_err("nothing listens");
            assert_eq!(err.kind(), ErrorKind::Timeout);
            assert!(
                err.to_string()
                    .contains(&format!("SSH to accept connections at 127.0.0.1:{closed}")),
                "{err}"
            );
            assert!(ctx.new_nodes().is_empty());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_passing_fault_at_launch_compensation_still_looks_for_instances() {
    let mut ec2 = MockEc2::new();
    ec2.expect_launch()
        .times(1)
        .returning(|_| Err(api_err("InsufficientInstanceCapacity")));
    // An earlier SDK attempt may have launched: the tags are searched, and nothing is found.
    ec2.expect_find_by_tags()
        .times(1)
        .returning(|_, _| Ok(Vec::new()));
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .build()
    .expect("action");
    let pipeline = pipeline_of(action.on(Target::None));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(
        report.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Transient)
    );
    assert!(report.undo_succeeded());
}

/// An EC2 error with no code: the launch's answer never came.
fn no_answer() -> AwsError {
    AwsError::Api {
        service: "EC2",
        operation: "RunInstances",
        code: None,
        message: "operation attempt timed out".to_owned(),
        subject: None,
        kind: ErrorKind::Timeout,
        source: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_launch_never_answered_is_searched_for_until_its_instances_show_up() {
    let calls = Calls::default();
    let mut ec2 = MockEc2::new();
    ec2.expect_launch().times(1).returning(|_| Err(no_answer()));
    // EC2 acted on the lost call, but the search sees the instances only on its third try.
    let searches = Arc::new(AtomicUsize::new(0));
    let s = searches.clone();
    ec2.expect_find_by_tags().returning(move |tags, _| {
        assert!(tags.iter().any(|(k, _)| k == TAG_RUN), "{tags:?}");
        Ok(if s.fetch_add(1, Ordering::SeqCst) < 2 {
            Vec::new()
        } else {
            vec![
                instance(0, InstanceState::Pending),
                instance(1, InstanceState::Pending),
            ]
        })
    });
    let terminated = Terminated::default();
    let t = terminated.clone();
    ec2.expect_describe()
        .returning(move |wanted| Ok(instances_in(wanted, t.or(InstanceState::Pending))));
    expect_terminate_raising(&mut ec2, &calls, &terminated, 1);
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .count(2)
    .build()
    .expect("action");
    let pipeline = pipeline_of(action.on(Target::None));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.undo_succeeded(), "{report}");
    assert_eq!(searches.load(Ordering::SeqCst), 3);
    assert_eq!(*calls.lock().expect("calls"), vec!["terminate i-0,i-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_launch_never_answered_is_searched_for_within_a_bound() {
    let mut ec2 = MockEc2::new();
    ec2.expect_launch().times(1).returning(|_| Err(no_answer()));
    let searches = Arc::new(AtomicUsize::new(0));
    let s = searches.clone();
    ec2.expect_find_by_tags().returning(move |_, _| {
        s.fetch_add(1, Ordering::SeqCst);
        Ok(Vec::new())
    });
    ec2.expect_terminate().never();
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .poll(default_poll().jitter(false))
    .unanswered_launch_within(Duration::from_secs(20))
    .build()
    .expect("action");
    let pipeline = pipeline_of(action.on(Target::None));
    let started = tokio::time::Instant::now();
    let report = pipeline.run(&mut context()).await;
    assert!(report.undo_succeeded(), "{report}");
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    // The first search, then one at 0.5, 1.5, 3.5, 7.5, 12.5, 17.5 and 20 s.
    assert_eq!(searches.load(Ordering::SeqCst), 8);
}

#[tokio::test(start_paused = true)]
async fn a_run_cancelled_while_waiting_still_undoes_to_the_end() {
    let calls = Calls::default();
    let mut ec2 = ec2_finding_nothing();
    ec2.expect_launch()
        .returning(|_| Ok(vec![instance(0, InstanceState::Pending)]));
    let terminated = Terminated::default();
    let t = terminated.clone();
    ec2.expect_describe().returning(move |_| {
        let state = t.or(InstanceState::Pending);
        Ok(vec![instance(0, state)])
    });
    expect_terminate_raising(&mut ec2, &calls, &terminated, ..);
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .build()
    .expect("action");
    let pipeline = pipeline_of(action.on(Target::None));
    let cancel = pyscaler_core::CancellationToken::new();
    let mut ctx = context().with_cancellation(cancel.clone());
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        cancel.cancel();
    });
    let report = pipeline.run(&mut ctx).await;
    stopper.await.expect("stopper");
    assert_eq!(report.status, RunStatus::Cancelled, "{report:?}");
    assert!(report.undo_succeeded(), "{report:?}");
    assert_eq!(calls_of(&calls), ["terminate i-0"]);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_load_balancer_does_not_keep_the_instances_alive() {
    // Registration fails with a 5xx (retried, then given up), and so does
    // deregistering in the undo: the instances are terminated all the same,
    // also those an earlier attempt launched (found by the run's tags), and
    // the undo is reported as failed because the load balancer may still
    // point at them.
    let calls = Calls::default();
    let mut ec2 = MockEc2::new();
    let c = calls.clone();
    ec2.expect_launch().returning(move |_| {
        note(&c, "launch");
        Ok(vec![instance(0, InstanceState::Pending)])
    });
    let terminated = Terminated::default();
    let t = terminated.clone();
    ec2.expect_describe().returning(move |wanted| {
        let state = t.or(InstanceState::Running);
        Ok(wanted
            .iter()
            .map(|id| Instance {
                id: id.clone(),
                ..instance(0, state)
            })
            .collect())
    });
    let t = terminated.clone();
    ec2.expect_find_by_tags().returning(move |_, _| {
        Ok(if t.is_raised() {
            Vec::new()
        } else {
            // i-9: a stray instance of this run and step the answer did not name.
            vec![
                instance(0, InstanceState::Running),
                Instance {
                    id: "i-9".into(),
                    ..instance(9, InstanceState::Running)
                },
            ]
        })
    });
    expect_terminate_raising(&mut ec2, &calls, &terminated, ..);
    let mut elb = elb_existing();
    elb.expect_register()
        .returning(|_, _| Err(api_err("ServiceUnavailable")));
    let c = calls.clone();
    elb.expect_deregister().returning(move |lb, ids| {
        note(&c, format!("deregister {lb} {}", ids.join(",")));
        Err(api_err("ServiceUnavailable"))
    });
    let action = deploy(ec2, Some(elb), 1);
    let pipeline = pipeline_of(action.on(Target::None));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    // The withdrawal deregisters what the step registered (refused), then
    // compensation deregisters again, with the stray, and terminates.
    assert_eq!(
        calls_of(&calls),
        [
            "launch",
            "deregister web-lb i-0",
            "deregister web-lb i-0,i-9",
            "terminate i-0,i-9"
        ]
    );
    assert!(!report.undo_succeeded(), "{report}");
    assert!(ctx.new_nodes().is_empty());
}

/// The journal's record of a run whose controller died in the deploy step.
/// Resumes, as a restarted controller does, a run of `pipeline` whose
/// controller died in its deploy step.
async fn resume_died_in_deploy(pipeline: Pipeline) -> pyscaler_core::RunReport {
    use pyscaler_core::{JournalEntry, MemoryJournal, Recovery, TriggerInfo};
    let (run_id, at) = (
        RunId::new("run-20261127T000000Z-0000dead"),
        chrono::Utc::now(),
    );
    let journal = Arc::new(MemoryJournal::with_entries([
        JournalEntry::RunStarted {
            run_id: run_id.clone(),
            pipeline: pipeline.name().to_owned(),
            cluster: "web".into(),
            trigger: TriggerInfo::default(),
            at,
        },
        JournalEntry::StepStarted {
            run_id,
            step: "deploy-ec2-node".into(),
            intent: Vec::new(),
            at,
        },
    ]));
    let recovery = Recovery::new(journal)
        .pipeline(Arc::new(pipeline))
        .resume(true)
        .run(context().cluster())
        .await
        .expect("recovery");
    let run = recovery.runs.into_iter().next().expect("the dead run");
    *run.resumed
        .unwrap_or_else(|| panic!("not resumed: {:?}", run.not_resumed))
}

#[tokio::test(start_paused = true)]
async fn a_resumed_launch_seeing_part_of_its_earlier_set_fails_rather_than_launch_beside_it() {
    let mut ec2 = MockEc2::new();
    // Two of the three launched show up, and no more within the bound.
    let searches = Arc::new(AtomicUsize::new(0));
    let s = searches.clone();
    ec2.expect_find_by_tags().returning(move |_, _| {
        s.fetch_add(1, Ordering::SeqCst);
        Ok(vec![
            instance(0, InstanceState::Running),
            instance(1, InstanceState::Running),
        ])
    });
    ec2.expect_launch().never();
    let calls = Calls::default();
    expect_terminate_noted(&mut ec2, &calls, 1..);
    ec2.expect_describe()
        .returning(|ids| Ok(instances_in(ids, InstanceState::Terminated)));
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .count(3)
    .unanswered_launch_within(Duration::from_secs(20))
    .build()
    .expect("action");
    let report = resume_died_in_deploy(pipeline_of(action.on(Target::None))).await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.as_ref().expect("error");
    assert!(error.message.contains("found 2 of at least 3"), "{error:?}");
    assert!(report.undo_succeeded(), "{report}");
    assert!(
        searches.load(Ordering::SeqCst) > 2,
        "it waited for the rest"
    );
    assert_eq!(calls_of(&calls), ["terminate i-0,i-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_resumed_launch_takes_over_the_instances_its_earlier_life_started() {
    let mut ec2 = MockEc2::new();
    // The controller died after RunInstances: the instance runs, tagged with the run.
    ec2.expect_find_by_tags()
        .times(1)
        .withf(|tags, _| {
            tags.iter()
                .any(|(k, v)| k == TAG_RUN && v == "run-20261127T000000Z-0000dead")
        })
        .returning(|_, _| Ok(vec![instance(0, InstanceState::Running)]));
    ec2.expect_launch().never();
    ec2.expect_describe()
        .returning(|_| Ok(vec![instance(0, InstanceState::Running)]));
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .build()
    .expect("action");
    assert!(action.repeatable());
    let report = resume_died_in_deploy(pipeline_of(action.on(Target::None))).await;
    assert!(report.is_success(), "{report}");
    assert_eq!(report.resumed_from.as_deref(), Some("deploy-ec2-node"));
    assert_eq!(report.nodes_added.len(), 1);
    assert_eq!(report.nodes_added[0].id, "i-0");
}

#[tokio::test(start_paused = true)]
async fn the_journal_intent_names_the_client_token_and_the_run() {
    let calls = Calls::default();
    let ec2 = ec2_happy(2, &calls);
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .count(2)
    .build()
    .expect("action");
    let entries = Arc::new(Mutex::new(Vec::new()));
    let mut journal = pyscaler_core::MockJournal::new();
    // Nothing left unfinished by a dead controller: the run may start.
    journal
        .expect_unfinished_runs()
        .returning(|| Ok(Vec::new()));
    journal.expect_is_fenced().return_const(false);
    let seen = entries.clone();
    journal.expect_append().returning(move |e| {
        seen.lock().expect("entries").push(e);
        Ok(())
    });
    let pipeline = Pipeline::builder("p")
        .journal(Arc::new(journal))
        .step(action.on(Target::None))
        .build()
        .expect("pipeline");
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert!(report.is_success(), "{report}");
    let token = client_token(ctx.run_id(), "deploy-ec2-node");
    let intent = entries
        .lock()
        .expect("entries")
        .iter()
        .find_map(|e| match e {
            pyscaler_core::JournalEntry::StepStarted { intent, .. } => Some(intent.clone()),
            _ => None,
        })
        .expect("a StepStarted entry");
    assert_eq!(
        intent[0],
        format!(
            "launch 2 t3.small from ami-03cf127a in us-east-1 with client token {token} for run {}",
            ctx.run_id()
        )
    );
}

/// Instance `id`, the `index`th of a launch named `web-03..04`, launched at minute `at`.
fn of_set(id: &str, index: u32, at: u32) -> Instance {
    Instance {
        id: id.into(),
        launched_at: chrono::DateTime::from_timestamp(i64::from(at) * 60, 0),
        ..instance(index, InstanceState::Running)
    }
}

#[test]
fn a_repeated_launch_keeps_the_answered_set_and_one_instance_per_name() {
    // Two sets of one launch: the answered one (i-b*) and an earlier one (i-a*).
    let answered = vec![of_set("i-b0", 0, 2), of_set("i-b1", 1, 2)];
    let found = vec![
        of_set("i-a0", 0, 1),
        of_set("i-a1", 1, 1),
        of_set("i-b0", 0, 2),
        of_set("i-b1", 1, 2),
    ];
    let (kept, surplus) = adopt::pick(answered, found, 2);
    let ids = |v: &[Instance]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&kept), ["i-b0", "i-b1"]);
    assert_eq!(ids(&surplus), ["i-a0", "i-a1"]);
    // A partial answer is completed from the other set, never with a name twice.
    let (kept, surplus) = adopt::pick(
        vec![of_set("i-b0", 0, 2)],
        vec![of_set("i-a0", 0, 1), of_set("i-a1", 1, 1)],
        2,
    );
    assert_eq!(ids(&kept), ["i-b0", "i-a1"]);
    assert_eq!(ids(&surplus), ["i-a0"]);
    let names: Vec<String> = kept.iter().map(node_name).collect();
    assert_eq!(names, ["web-03", "web-04"]);
}

#[tokio::test(start_paused = true)]
async fn a_step_retry_after_a_lost_launch_takes_over_its_instances_instead_of_launching() {
    // The first launch ran, but its answer was lost behind a coded 503.
    let launches = Arc::new(AtomicUsize::new(0));
    let mut ec2 = MockEc2::new();
    let l = launches.clone();
    ec2.expect_launch().returning(move |_| {
        l.fetch_add(1, Ordering::SeqCst);
        Err(api_err("ServiceUnavailable"))
    });
    let l = launches.clone();
    ec2.expect_find_by_tags().returning(move |_, _| {
        Ok(if l.load(Ordering::SeqCst) > 0 {
            vec![
                instance(0, InstanceState::Running),
                instance(1, InstanceState::Running),
            ]
        } else {
            Vec::new()
        })
    });
    ec2.expect_describe().returning(|_| {
        Ok(vec![
            instance(0, InstanceState::Running),
            instance(1, InstanceState::Running),
        ])
    });
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .count(2)
    .build()
    .expect("action");
    let pipeline = pipeline_of(action.on(Target::None).retry(RetryPolicy::attempts(3)));
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(report.steps[0].attempts, 2);
    assert_eq!(launches.load(Ordering::SeqCst), 1, "launched once");
    let ids: Vec<&str> = ctx.new_nodes().iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["i-0", "i-1"]);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_load_balancer_is_refused_before_anything_launches() {
    let mut ec2 = ec2_finding_nothing();
    ec2.expect_launch().never();
    let mut elb = MockLoadBalancer::new();
    elb.expect_exists().times(1).returning(|_| Ok(false));
    elb.expect_register().never();
    let action = deploy(ec2, Some(elb), 2);
    let pipeline = pipeline_of(action.on(Target::None).retry(RetryPolicy::attempts(3)));
    let report = pipeline.run(&mut context()).await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.as_ref().expect("error");
    assert_eq!(err.kind, ErrorKind::InvalidInput);
    assert!(
        err.message.contains("load balancer web-lb does not exist"),
        "{}",
        err.message
    );
    assert_eq!(report.steps[0].attempts, 1, "bad input is not retried");
}

#[tokio::test(start_paused = true)]
async fn a_refused_registration_is_retried_as_a_registration_not_a_launch() {
    let calls = Calls::default();
    let ec2 = ec2_happy(1, &calls);
    let mut elb = elb_existing();
    let tries = Arc::new(AtomicUsize::new(0));
    let (c, t) = (calls.clone(), tries.clone());
    elb.expect_register().returning(move |lb, ids| {
        note(&c, format!("register {lb} {}", ids.join(",")));
        if t.fetch_add(1, Ordering::SeqCst) < 2 {
            Err(api_err("Throttling"))
        } else {
            Ok(())
        }
    });
    elb.expect_health().returning(|_, ids| {
        Ok(ids
            .iter()
            .map(|id| InstanceHealth {
                instance_id: id.clone(),
                state: HealthState::InService,
                reason: None,
            })
            .collect())
    });
    let action = deploy(ec2, Some(elb), 1);
    let pipeline = pipeline_of(action.on(Target::None).retry(RetryPolicy::attempts(3)));
    let report = pipeline.run(&mut context()).await;
    assert!(report.is_success(), "{report}");
    assert_eq!(report.steps[0].attempts, 1);
    let launches = calls_of(&calls)
        .iter()
        .filter(|c| c.starts_with("launch"))
        .count();
    let registrations = calls_of(&calls)
        .iter()
        .filter(|c| c.starts_with("register"))
        .count();
    assert_eq!((launches, registrations), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn a_bare_500_from_a_vanished_load_balancer_fails_once_naming_it() {
    // moto's answer to a registration with an unknown classic ELB: HTTP 500, no code.
    let calls = Calls::default();
    let ec2 = ec2_happy(1, &calls);
    let mut elb = MockLoadBalancer::new();
    let checks = Arc::new(AtomicUsize::new(0));
    let k = checks.clone();
    // It existed when checked before the launch, and is gone at registration.
    elb.expect_exists()
        .returning(move |_| Ok(k.fetch_add(1, Ordering::SeqCst) == 0));
    let c = calls.clone();
    elb.expect_register().returning(move |lb, _| {
        note(&c, format!("register {lb}"));
        Err(AwsError::Api {
            service: "ELB",
            operation: "RegisterInstancesWithLoadBalancer",
            code: None,
            message: "HTTP status 500".into(),
            subject: Some(format!("load balancer {lb}")),
            kind: ErrorKind::Transient,
            source: None,
        })
    });
    expect_deregister_noted(&mut elb, &calls);
    let action = deploy(ec2, Some(elb), 1);
    let pipeline = pipeline_of(action.on(Target::None).retry(RetryPolicy::attempts(3)));
    let report = pipeline.run(&mut context()).await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.as_ref().expect("error");
    assert!(
        err.message.contains("load balancer web-lb"),
        "{}",
        err.message
    );
    assert_eq!(
        report.steps[0].attempts, 1,
        "the launch step is not retried"
    );
    let seen = calls_of(&calls);
    assert_eq!(seen.iter().filter(|c| c.starts_with("launch")).count(), 1);
    assert_eq!(
        seen.iter().filter(|c| c.starts_with("register")).count(),
        adopt_register_attempts()
    );
    assert!(seen.contains(&"terminate i-0".to_owned()), "{seen:?}");
}

fn adopt_register_attempts() -> usize {
    ready::REGISTER_ATTEMPTS as usize
}

/// A step after the deploy whose undo is noted (a slow Puppet undo, say).
fn noted_undo_step(calls: &Calls) -> MockAction {
    let mut a = MockAction::new();
    a.expect_name().return_const("puppet".to_owned());
    a.expect_describe().returning(Effects::none);
    a.expect_run().returning(|_| Ok(()));
    a.expect_withdraw().returning(|_| Ok(()));
    let c = calls.clone();
    a.expect_compensate().returning(move |_| {
        note(&c, "undo puppet");
        Ok(())
    });
    a
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_takes_its_new_nodes_out_of_the_load_balancer_before_other_undos() {
    let calls = Calls::default();
    let action = deploy(ec2_happy(2, &calls), Some(elb_happy(&calls)), 2);
    let pipeline = Pipeline::builder("p")
        .step(action.on(Target::None))
        .step(noted_undo_step(&calls).on(Target::NewNodes))
        .step(failing_step().on(Target::NewNodes))
        .build()
        .expect("pipeline");
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.undo_succeeded(), "{report}");
    let undo: Vec<String> = calls_of(&calls)
        .into_iter()
        .skip_while(|c| !c.starts_with("deregister"))
        .collect();
    // Out of service first, then the later step's undo, then the launch's
    // own undo, which does not deregister again.
    assert_eq!(
        undo,
        [
            "deregister web-lb i-0,i-1",
            "undo puppet",
            "terminate i-0,i-1",
            "describe"
        ]
    );
    let launched = ctx
        .step_output::<Launched>("deploy-ec2-node")
        .cloned()
        .expect("recorded");
    assert_eq!(launched.withdrawn, ids(2));
    assert!(launched.undone);
}

#[tokio::test(start_paused = true)]
async fn a_withdrawal_that_fails_leaves_the_deregistration_to_compensation() {
    let calls = Calls::default();
    let mut elb = elb_existing();
    expect_register_noted(&mut elb, &calls);
    elb.expect_health().returning(|_, ids| {
        Ok(ids
            .iter()
            .map(|id| InstanceHealth {
                instance_id: id.clone(),
                state: HealthState::InService,
                reason: None,
            })
            .collect())
    });
    // The first deregistration (the withdrawal) is refused; the second
    // (compensation's) goes through.
    let refused = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    elb.expect_deregister().returning(move |lb, ids| {
        note(&c, format!("deregister {lb} {}", ids.join(",")));
        if refused.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(api_err("ServiceUnavailable"))
        } else {
            Ok(())
        }
    });
    let action = deploy(ec2_happy(1, &calls), Some(elb), 1);
    let pipeline = Pipeline::builder("p")
        .step(action.on(Target::None))
        .step(failing_step().on(Target::NewNodes))
        .build()
        .expect("pipeline");
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    let undo: Vec<String> = calls_of(&calls)
        .into_iter()
        .skip_while(|c| !c.starts_with("deregister"))
        .collect();
    assert_eq!(
        undo,
        [
            "deregister web-lb i-0",
            "deregister web-lb i-0",
            "terminate i-0",
            "describe"
        ]
    );
    // The instance is gone all the same; the withdrawal's error is reported.
    let launched = ctx
        .step_output::<Launched>("deploy-ec2-node")
        .cloned()
        .expect("recorded");
    assert!(launched.undone);
    assert!(launched.withdrawn.is_empty());
    let undo = report.steps[0].undo.as_ref().expect("undone");
    assert!(undo.succeeded, "{undo:?}");
    let withdraw = undo
        .withdraw_error
        .as_ref()
        .expect("the withdrawal's error");
    assert!(
        withdraw.message.contains("ServiceUnavailable"),
        "{withdraw:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_withdrawn_launch_is_drained_from_a_target_group_before_it_is_terminated() {
    let calls = Calls::default();
    // A target group: it says how long it drains, and drains for one poll.
    let mut elb = MockLoadBalancer::new();
    elb.expect_exists().returning(|_| Ok(true));
    expect_register_noted(&mut elb, &calls);
    elb.expect_health().returning(|_, ids| {
        Ok(ids
            .iter()
            .map(|id| InstanceHealth {
                instance_id: id.clone(),
                state: HealthState::InService,
                reason: None,
            })
            .collect())
    });
    let c = calls.clone();
    elb.expect_deregister().returning(move |lb, ids| {
        note(&c, format!("deregister {lb} {}", ids.join(",")));
        Ok(())
    });
    elb.expect_draining_timeout()
        .returning(|_| Ok(Some(Duration::from_secs(30))));
    let c = calls.clone();
    let polls = Arc::new(AtomicUsize::new(0));
    elb.expect_draining().returning(move |_, ids| {
        note(&c, "draining?");
        Ok(if polls.fetch_add(1, Ordering::SeqCst) == 0 {
            ids.to_vec()
        } else {
            Vec::new()
        })
    });
    let action = deploy(ec2_happy(2, &calls), Some(elb), 2);
    let pipeline = Pipeline::builder("p")
        .step(action.on(Target::None))
        .step(noted_undo_step(&calls).on(Target::NewNodes))
        .step(failing_step().on(Target::NewNodes))
        .build()
        .expect("pipeline");
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert!(report.undo_succeeded(), "{report}");
    let undo: Vec<String> = calls_of(&calls)
        .into_iter()
        .skip_while(|c| !c.starts_with("deregister"))
        .collect();
    // Out at once (the withdrawal), the other undos, then drained, then gone.
    assert_eq!(
        undo,
        [
            "deregister web-lb i-0,i-1",
            "undo puppet",
            "draining?",
            "draining?",
            "terminate i-0,i-1",
            "describe"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_decision_that_says_how_many_launches_that_many() {
    let mut ec2 = ec2_finding_nothing();
    let seen = Arc::new(Mutex::new((0, 0, String::new())));
    let s = seen.clone();
    ec2.expect_launch().times(1).returning(move |spec| {
        let name = spec.tags.get("Name").cloned().unwrap_or_default();
        *s.lock().expect("lock") = (spec.min_count, spec.max_count, name);
        Ok((0..spec.max_count)
            .map(|i| instance(i, InstanceState::Pending))
            .collect())
    });
    ec2.expect_describe().returning(|_| {
        Ok((0..3)
            .map(|i| instance(i, InstanceState::Running))
            .collect())
    });
    let action = DeployEc2Node::builder(
        &Aws::new(Arc::new(ec2), None, profile(false)).expect("paired providers"),
    )
    .count(1)
    .build()
    .expect("action");
    // A proportional step asked the scaler for 3 (capped by its bounds).
    let mut ctx = context().with_trigger(TriggerInfo::new("load-high", "busy").with_nodes(3));
    action.run(&mut ctx).await.expect("deployed");
    let (min, max, name) = seen.lock().expect("lock").clone();
    assert_eq!((min, max), (3, 3));
    assert_eq!(name, "web-03..05");
    assert_eq!(ctx.new_nodes().len(), 3);
}

/// The profile reading host keys from the console output, without a load balancer.
fn deploy_reading_host_keys(ec2: MockEc2) -> DeployEc2Node {
    let profile = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .ssh_user("admin")
        .ssh_host_keys(crate::HostKeySource::ConsoleOutput)
        .build()
        .expect("profile");
    DeployEc2Node::builder(&Aws::new(Arc::new(ec2), None, profile).expect("providers"))
        .host_keys_within(Duration::from_secs(60))
        .build()
        .expect("valid action")
}

const FP_ED: &str = "SHA256:Jm1bW5jvXz7dKcE1yQ0q2Lx9QxUj0bD0s3V3u6bq2dE";
const FP_EC: &str = "SHA256:3mR0mM6Ab1x7dVh9tB3Yk9NuT0a0Uq3cL0kM3xw4y2Q";

fn console_with(lines: &str) -> String {
    format!(
        "ec2: {}\n{lines}ec2: {}\n",
        crate::FINGERPRINTS_BEGIN,
        crate::FINGERPRINTS_END
    )
}

#[tokio::test(start_paused = true)]
async fn the_console_outputs_fingerprints_go_to_the_new_node_once_cloud_init_printed_them() {
    let calls = Calls::default();
    let mut ec2 = ec2_happy(1, &calls);
    // Nothing yet, then boot messages, then the block.
    let asked = Arc::new(AtomicUsize::new(0));
    let a = asked.clone();
    ec2.expect_console_output()
        .withf(|id| id == "i-0")
        .returning(move |_| {
            Ok(match a.fetch_add(1, Ordering::SeqCst) {
                0 => None,
                1 => Some("[ 1.0] Linux version 6.1\n".to_owned()),
                _ => Some(console_with(&format!(
                    "ec2: 256 {FP_EC} root@ip-10-0-0-5 (ECDSA)\nec2: 256 {FP_ED} root@ip-10-0-0-5 (ED25519)\n"
                ))),
            })
        });
    let action = deploy_reading_host_keys(ec2);
    assert!(
        action
            .describe()
            .summary
            .iter()
            .any(|s| s.contains("host key fingerprints from its console output")),
        "{:?}",
        action.describe().summary
    );
    let mut ctx = context();
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert_eq!(
        ctx.new_nodes()[0].host_key_fingerprints,
        [FP_EC.to_owned(), FP_ED.to_owned()]
    );
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_publishes_no_fingerprints_in_time_fails_the_step_and_is_terminated() {
    let calls = Calls::default();
    let mut ec2 = ec2_happy(1, &calls);
    ec2.expect_console_output()
        .returning(|_| Ok(Some("booting forever\n".to_owned())));
    let mut ctx = context();
    let report = pipeline_of(deploy_reading_host_keys(ec2).on(Target::None))
        .run(&mut ctx)
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.clone().expect("failed");
    assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}");
    assert!(
        err.message.contains(
            "host key fingerprints in the console output (last seen: i-0: console output without the fingerprints yet)"
        ),
        "{}",
        err.message
    );
    assert!(report.undo_succeeded(), "{report}");
    assert!(calls_of(&calls).contains(&"terminate i-0".to_owned()));
    assert!(ctx.new_nodes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_block_of_md5_fingerprints_only_is_refused_at_once() {
    let calls = Calls::default();
    let mut ec2 = ec2_happy(1, &calls);
    ec2.expect_console_output().times(1).returning(|_| {
        Ok(Some(console_with(
            "ec2: 2048 aa:bb:cc:dd /etc/ssh/ssh_host_rsa_key.pub (RSA)\n",
        )))
    });
    let mut ctx = context();
    let report = pipeline_of(deploy_reading_host_keys(ec2).on(Target::None))
        .run(&mut ctx)
        .await;
    let err = report.error.clone().expect("failed");
    assert!(
        err.message
            .contains("the console output of i-0 lists its host keys without SHA256 fingerprints"),
        "{}",
        err.message
    );
    assert!(report.undo_succeeded(), "{report}");
    assert!(calls_of(&calls).contains(&"terminate i-0".to_owned()));
}
