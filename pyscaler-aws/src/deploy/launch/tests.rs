//! Launches over several Availability Zones, against a mocked EC2: the
//! shares per zone, one call per zone with its own token, the capacity
//! fallback, and what the report says.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use pyscaler_core::{
    Action, ActionExt, Cluster, Context, Node, NodeState, RunId, RunStatus, Target,
};

use crate::test_support::{api_err, pipeline_of};
use crate::{
    zone_client_token, Aws, DeployEc2Node, Ec2Profile, Instance, InstanceState, LaunchSpec,
    LaunchTemplate, Market, MockEc2, SpotFallback, Subnet, TemplateInfo, TemplateRef,
    TemplateVersion, TAG_AZ,
};

const RUN: &str = "run-20261127T000000Z-0000beef";

/// The zone of each of the tests' subnets.
fn zone_of_subnet(subnet: &str) -> &'static str {
    match subnet {
        "subnet-a" => "us-east-1a",
        "subnet-b" => "us-east-1b",
        "subnet-c" => "us-east-1a",
        _ => "us-east-1z",
    }
}

/// What the mock saw launched: each call's spec.
type Launches = Arc<Mutex<Vec<LaunchSpec>>>;

/// A refusal for a launch, by the spec it was for.
type Refuse = Box<dyn Fn(&LaunchSpec) -> Option<&'static str> + Send + Sync>;

/// An EC2 with subnets a and c in us-east-1a and b in us-east-1b, whose
/// launches start pending instances in the subnet's zone (unless `refuse`
/// names a code for that spec), whose instances run at once, and whose
/// terminations (noted in `terminated`) take effect at once.
fn ec2_in_zones(launches: &Launches, refuse: Refuse) -> MockEc2 {
    ec2_terminating_in_zones(launches, refuse, &Terminations::default())
}

/// The instances terminated, in order.
type Terminations = Arc<Mutex<Vec<String>>>;

fn ec2_terminating_in_zones(
    launches: &Launches,
    refuse: Refuse,
    terminated: &Terminations,
) -> MockEc2 {
    let mut ec2 = MockEc2::new();
    ec2.expect_describe_subnets().times(1).returning(|ids| {
        Ok(ids
            .iter()
            .map(|id| Subnet {
                id: id.clone(),
                availability_zone: zone_of_subnet(id).to_owned(),
            })
            .collect())
    });
    let known: Arc<Mutex<BTreeMap<String, Instance>>> = Arc::default();
    let (seen, k) = (launches.clone(), known.clone());
    ec2.expect_launch().returning(move |spec| {
        seen.lock().expect("launches").push(spec.clone());
        if let Some(code) = refuse(spec) {
            return Err(api_err(code));
        }
        let call = seen.lock().expect("launches").len();
        let subnet = spec.subnet_id.clone().unwrap_or_default();
        let instances: Vec<Instance> = (0..spec.max_count)
            .map(|i| Instance {
                id: format!("i-{call}{i}"),
                state: InstanceState::Pending,
                launch_index: i,
                private_ip: Some(format!("10.0.{call}.{i}")),
                tags: spec.tags.clone(),
                availability_zone: Some(zone_of_subnet(&subnet).to_owned()),
                subnet_id: Some(subnet.clone()),
                instance_type: spec.instance_type.clone(),
                market: spec.market,
                ..Instance::default()
            })
            .collect();
        let mut k = k.lock().expect("known");
        for i in &instances {
            k.insert(i.id.clone(), i.clone());
        }
        Ok(instances)
    });
    let (k, gone) = (known.clone(), terminated.clone());
    let state_of = move |i: Instance| {
        let state = if gone.lock().expect("terminated").contains(&i.id) {
            InstanceState::Terminated
        } else {
            InstanceState::Running
        };
        Instance { state, ..i }
    };
    let state = state_of.clone();
    ec2.expect_describe().returning(move |ids| {
        let k = k.lock().expect("known");
        Ok(ids
            .iter()
            .filter_map(|id| k.get(id).cloned())
            .map(&state)
            .collect())
    });
    ec2.expect_find_by_tags().returning(move |_, _| {
        Ok(known
            .lock()
            .expect("known")
            .values()
            .cloned()
            .map(&state_of)
            .filter(|i| !i.state.is_gone())
            .collect())
    });
    let gone = terminated.clone();
    ec2.expect_terminate().returning(move |ids| {
        gone.lock().expect("terminated").extend(ids.iter().cloned());
        Ok(())
    });
    ec2
}

fn profile() -> Ec2Profile {
    Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .subnet_ids(["subnet-a", "subnet-b"])
        .build()
        .expect("profile")
}

fn deploy(ec2: MockEc2, profile: Ec2Profile, count: u32) -> DeployEc2Node {
    DeployEc2Node::builder(&Aws::new(Arc::new(ec2), None, profile).expect("aws"))
        .count(count)
        .build()
        .expect("action")
}

/// A cluster with `a` running nodes in us-east-1a and `b` in us-east-1b.
fn cluster(a: usize, b: usize) -> Cluster {
    let nodes = (0..a + b).map(|i| {
        let zone = if i < a { "us-east-1a" } else { "us-east-1b" };
        Node::new(format!("i-old{i}"), format!("web-{:02}", i + 1))
            .with_instance_id(format!("i-old{i}"))
            .with_state(NodeState::Running)
            .with_tag(TAG_AZ, zone)
    });
    Cluster::new("web").with_nodes(nodes)
}

/// Per launch call: (subnet, MaxCount).
fn shares(launches: &Launches) -> Vec<(String, u32)> {
    launches
        .lock()
        .expect("launches")
        .iter()
        .map(|s| (s.subnet_id.clone().unwrap_or_default(), s.max_count))
        .collect()
}

fn never_refuse() -> Refuse {
    Box::new(|_| None)
}

#[tokio::test(start_paused = true)]
async fn six_nodes_over_two_zones_make_one_call_per_zone_each_with_its_token() {
    let launches = Launches::default();
    let action = deploy(ec2_in_zones(&launches, never_refuse()), profile(), 6);
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(
        shares(&launches),
        [("subnet-a".to_owned(), 3), ("subnet-b".to_owned(), 3)]
    );
    let specs = launches.lock().expect("launches").clone();
    let run = RunId::new(RUN);
    assert_eq!(
        specs[0].client_token,
        zone_client_token(&run, "deploy-ec2-node", Some("us-east-1a"), 0)
    );
    assert_eq!(
        specs[1].client_token,
        zone_client_token(&run, "deploy-ec2-node", Some("us-east-1b"), 0)
    );
    assert_ne!(specs[0].client_token, specs[1].client_token);
    assert!(specs.iter().all(|s| s.client_token.len() <= 64));
    // Each call names its own range, so every node has its own name.
    assert_eq!(
        specs[0].tags.get("Name").map(String::as_str),
        Some("web-01..03")
    );
    assert_eq!(
        specs[1].tags.get("Name").map(String::as_str),
        Some("web-04..06")
    );
    let names: Vec<&str> = ctx.new_nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["web-01", "web-02", "web-03", "web-04", "web-05", "web-06"]
    );
    // Every node knows its zone, and the report says where each went.
    let zones: Vec<&str> = ctx
        .new_nodes()
        .iter()
        .filter_map(|n| n.tags.get(TAG_AZ).map(String::as_str))
        .collect();
    assert_eq!(
        zones,
        [
            "us-east-1a",
            "us-east-1a",
            "us-east-1a",
            "us-east-1b",
            "us-east-1b",
            "us-east-1b"
        ]
    );
    let outcomes = &report.steps[0].nodes;
    assert!(
        outcomes[5]
            .summary
            .contains("running (t3.small in us-east-1b)"),
        "{}",
        outcomes[5].summary
    );
}

#[tokio::test(start_paused = true)]
async fn an_unbalanced_cluster_gets_its_smaller_zone_filled_first() {
    let launches = Launches::default();
    let action = deploy(ec2_in_zones(&launches, never_refuse()), profile(), 4);
    // Three in a, one in b: b takes three of the four, a one.
    let mut ctx = Context::new(cluster(3, 1)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(
        shares(&launches),
        [("subnet-a".to_owned(), 1), ("subnet-b".to_owned(), 3)]
    );
    // Named after the cluster's four.
    let specs = launches.lock().expect("launches").clone();
    assert_eq!(
        specs[0].tags.get("Name").map(String::as_str),
        Some("web-05")
    );
    assert_eq!(
        specs[1].tags.get("Name").map(String::as_str),
        Some("web-06..08")
    );

    // When the smaller zone can take all of them, only it is called.
    let launches = Launches::default();
    let action = deploy(ec2_in_zones(&launches, never_refuse()), profile(), 2);
    let mut ctx = Context::new(cluster(3, 1)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(shares(&launches), [("subnet-b".to_owned(), 2)]);
}

#[tokio::test(start_paused = true)]
async fn two_subnets_of_one_zone_are_one_zone_and_the_first_is_used() {
    let launches = Launches::default();
    let profile = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .subnet_ids(["subnet-a", "subnet-c", "subnet-b"])
        .build()
        .expect("profile");
    let action = deploy(ec2_in_zones(&launches, never_refuse()), profile, 4);
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(
        shares(&launches),
        [("subnet-a".to_owned(), 2), ("subnet-b".to_owned(), 2)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_subnet_ec2_does_not_know_is_refused_before_anything_launches() {
    let mut ec2 = MockEc2::new();
    ec2.expect_describe_subnets().times(1).returning(|_| {
        Ok(vec![Subnet {
            id: "subnet-a".into(),
            availability_zone: "us-east-1a".into(),
        }])
    });
    ec2.expect_launch().never();
    // The step's undo looks for instances of the run: there are none.
    ec2.expect_find_by_tags().returning(|_, _| Ok(Vec::new()));
    let action = deploy(ec2, profile(), 2);
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.clone().expect("error");
    assert!(err.message.contains("subnet_ids"), "{}", err.message);
    assert!(err.message.contains("`subnet-b`"), "{}", err.message);
}

#[tokio::test(start_paused = true)]
async fn a_zone_without_capacity_passes_its_share_to_the_other_zone() {
    let launches = Launches::default();
    let refuse: Refuse = Box::new(|spec| {
        (spec.subnet_id.as_deref() == Some("subnet-a")).then_some("InsufficientInstanceCapacity")
    });
    let action = deploy(ec2_in_zones(&launches, refuse), profile(), 6);
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(
        shares(&launches),
        [("subnet-a".to_owned(), 3), ("subnet-b".to_owned(), 6)]
    );
    assert_eq!(ctx.new_nodes().len(), 6);
    // The report says what was refused and where the share went.
    for outcome in &report.steps[0].nodes {
        assert!(
            outcome.summary.contains(
                "t3.small in us-east-1a (subnet-a) refused (InsufficientInstanceCapacity): \
                 its share goes to the other zones"
            ),
            "{}",
            outcome.summary
        );
        assert!(
            outcome.summary.contains("running (t3.small in us-east-1b)"),
            "{}",
            outcome.summary
        );
    }
}

#[tokio::test(start_paused = true)]
async fn every_zone_refusing_the_first_type_moves_to_the_next_type() {
    let launches = Launches::default();
    let refuse: Refuse =
        Box::new(
            |spec| match (spec.instance_type.as_deref(), spec.subnet_id.as_deref()) {
                (Some("t3.small"), Some("subnet-a")) => Some("Unsupported"),
                (Some("t3.small"), _) => Some("InstanceLimitExceeded"),
                _ => None,
            },
        );
    let profile = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .fallback_instance_type("t3a.small")
        .subnet_ids(["subnet-a", "subnet-b"])
        .build()
        .expect("profile");
    let action = deploy(ec2_in_zones(&launches, refuse), profile, 4);
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    let specs = launches.lock().expect("launches").clone();
    let calls: Vec<(&str, &str, u32)> = specs
        .iter()
        .map(|s| {
            (
                s.instance_type.as_deref().unwrap_or(""),
                s.subnet_id.as_deref().unwrap_or(""),
                s.max_count,
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("t3.small", "subnet-a", 2),
            ("t3.small", "subnet-b", 4),
            ("t3a.small", "subnet-a", 2),
            ("t3a.small", "subnet-b", 2),
        ]
    );
    // Every call had a token of its own: a zone called again gets the next.
    let run = RunId::new(RUN);
    assert_eq!(
        specs[2].client_token,
        zone_client_token(&run, "deploy-ec2-node", Some("us-east-1a"), 1)
    );
    let mut tokens: Vec<&str> = specs.iter().map(|s| s.client_token.as_str()).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 4);
    let summary = &report.steps[0].nodes[0].summary;
    assert!(
        summary.contains("running (t3a.small in us-east-1a)"),
        "{summary}"
    );
    assert!(
        summary.contains("t3.small in us-east-1a (subnet-a) refused (Unsupported)"),
        "{summary}"
    );
    assert!(
        summary.contains("t3.small in us-east-1b (subnet-b) refused (InstanceLimitExceeded): no zone left for t3.small; trying t3a.small"),
        "{summary}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_capacity_anywhere_fails_naming_every_attempt_and_undoes_what_launched() {
    let launches = Launches::default();
    // Zone a takes its share, then nothing more anywhere.
    let in_a = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refuse: Refuse = Box::new(move |spec| {
        let first_in_a = spec.subnet_id.as_deref() == Some("subnet-a")
            && in_a.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        (!first_in_a).then_some("InsufficientInstanceCapacity")
    });
    let terminated = Terminations::default();
    let ec2 = ec2_terminating_in_zones(&launches, refuse, &terminated);
    let action = DeployEc2Node::builder(&Aws::new(Arc::new(ec2), None, profile()).expect("aws"))
        .count(4)
        .terminated_within(std::time::Duration::from_secs(5))
        .build()
        .expect("action");
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.clone().expect("error");
    assert_eq!(err.kind, pyscaler_core::ErrorKind::Transient, "{err:?}");
    assert!(
        err.message
            .contains("EC2 had no capacity for 2 of 4 instance(s)"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("t3.small in us-east-1b (subnet-b) refused"),
        "{}",
        err.message
    );
    // Zone a's two were launched, then zone b refused, then zone a again.
    assert_eq!(
        shares(&launches),
        [
            ("subnet-a".to_owned(), 2),
            ("subnet-b".to_owned(), 2),
            ("subnet-a".to_owned(), 2)
        ]
    );
    // The undo terminated the two zone a started.
    assert!(report.undo_succeeded(), "{report}");
    let mut gone = terminated.lock().expect("terminated").clone();
    gone.sort();
    assert_eq!(gone, ["i-10", "i-11"]);
    assert!(ctx.new_nodes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn bad_input_fails_at_once_without_trying_another_zone_or_type() {
    let launches = Launches::default();
    let refuse: Refuse = Box::new(|_| Some("InvalidAMIID.NotFound"));
    let ec2 = ec2_in_zones(&launches, refuse);
    let profile = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .fallback_instance_type("t3a.small")
        .subnet_ids(["subnet-a", "subnet-b"])
        .build()
        .expect("profile");
    let action = deploy(ec2, profile, 4);
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.error.clone().expect("error");
    assert_eq!(err.kind, pyscaler_core::ErrorKind::InvalidInput, "{err:?}");
    assert_eq!(launches.lock().expect("launches").len(), 1);
}

/// A profile launching from template `web` (latest version 3) with only a
/// region, and an EC2 that says so.
fn template_ec2(launches: &Launches) -> MockEc2 {
    let mut ec2 = MockEc2::new();
    let seen = launches.clone();
    ec2.expect_launch().returning(move |spec| {
        seen.lock().expect("launches").push(spec.clone());
        Ok(vec![Instance {
            id: "i-t0".into(),
            state: InstanceState::Running,
            private_ip: Some("10.0.9.9".into()),
            tags: spec.tags.clone(),
            instance_type: Some("t3.micro".into()),
            ..Instance::default()
        }])
    });
    ec2.expect_describe().returning(|ids| {
        Ok(ids
            .iter()
            .map(|id| Instance {
                id: id.clone(),
                state: InstanceState::Running,
                private_ip: Some("10.0.9.9".into()),
                instance_type: Some("t3.micro".into()),
                ..Instance::default()
            })
            .collect())
    });
    // The step's undo looks for instances of the run: there are none.
    ec2.expect_find_by_tags().returning(|_, _| Ok(Vec::new()));
    ec2.expect_describe_launch_template()
        .times(1)
        .returning(|t| {
            Ok(
                matches!(&t.template, TemplateRef::Name(n) if n == "web").then(|| TemplateInfo {
                    id: "lt-0abc".into(),
                    name: "web".into(),
                    default_version: 1,
                    latest_version: 3,
                }),
            )
        });
    ec2
}

#[tokio::test(start_paused = true)]
async fn a_launch_template_is_checked_first_and_named_in_the_launch() {
    let launches = Launches::default();
    let template = LaunchTemplate::by_name("web").version(TemplateVersion::Latest);
    let profile = Ec2Profile::from_template("us-east-1", template.clone())
        .build()
        .expect("profile");
    assert_eq!(profile.image_id(), None);
    assert_eq!(profile.instance_type(), None);
    let action = deploy(template_ec2(&launches), profile, 1);
    assert!(
        action.describe().summary[0]
            .starts_with("launch 1 from launch template `web` version $Latest in us-east-1"),
        "{:?}",
        action.describe().summary
    );
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    let specs = launches.lock().expect("launches").clone();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].launch_template, Some(template));
    // The template decides the image and the type.
    assert_eq!(specs[0].image_id, None);
    assert_eq!(specs[0].instance_type, None);
    assert!(
        report.steps[0].nodes[0]
            .summary
            .contains("running (t3.micro)"),
        "{}",
        report.steps[0].nodes[0].summary
    );
}

#[tokio::test(start_paused = true)]
async fn profile_fields_override_the_template() {
    let launches = Launches::default();
    let profile = Ec2Profile::from_template("us-east-1", LaunchTemplate::by_name("web"))
        .image_id("ami-03cf127a")
        .fallback_instance_type("t3.small")
        .key_name("ops")
        .build()
        .expect("profile");
    let action = deploy(template_ec2(&launches), profile, 1);
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    let spec = launches.lock().expect("launches")[0].clone();
    assert_eq!(spec.image_id.as_deref(), Some("ami-03cf127a"));
    assert_eq!(spec.instance_type.as_deref(), Some("t3.small"));
    assert_eq!(spec.key_name.as_deref(), Some("ops"));
}

#[tokio::test(start_paused = true)]
async fn a_missing_template_or_version_launches_nothing() {
    for (template, wanted) in [
        (
            LaunchTemplate::by_name("nope"),
            "launch template `nope` version $Default does not exist",
        ),
        (
            LaunchTemplate::by_name("web").version(TemplateVersion::Number(9)),
            "launch template `web` version 9 does not exist (its latest version is 3)",
        ),
    ] {
        let launches = Launches::default();
        let profile = Ec2Profile::from_template("us-east-1", template)
            .build()
            .expect("profile");
        let action = deploy(template_ec2(&launches), profile, 2);
        let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
        let report = pipeline_of(
            action
                .on(Target::None)
                .retry(pyscaler_core::RetryPolicy::attempts(3)),
        )
        .run(&mut ctx)
        .await;
        assert_eq!(report.status, RunStatus::Failed);
        let err = report.error.clone().expect("error");
        assert_eq!(err.kind, pyscaler_core::ErrorKind::InvalidInput, "{err:?}");
        assert!(err.message.contains(wanted), "{}", err.message);
        assert_eq!(report.steps[0].attempts, 1, "bad input is not retried");
        assert!(launches.lock().expect("launches").is_empty());
    }
}

fn spot_profile(fallback: SpotFallback) -> Ec2Profile {
    Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .subnet_ids(["subnet-a", "subnet-b"])
        .market(Market::Spot)
        .spot_fallback(fallback)
        .build()
        .expect("profile")
}

/// Per launch call: (subnet, market, MaxCount).
fn markets(launches: &Launches) -> Vec<(String, Market, u32)> {
    launches
        .lock()
        .expect("launches")
        .iter()
        .map(|s| {
            (
                s.subnet_id.clone().unwrap_or_default(),
                s.market,
                s.max_count,
            )
        })
        .collect()
}

/// No Spot capacity in subnet a.
fn no_spot_in_a() -> Refuse {
    Box::new(|spec| {
        (spec.market == Market::Spot && spec.subnet_id.as_deref() == Some("subnet-a"))
            .then_some("InsufficientInstanceCapacity")
    })
}

#[tokio::test(start_paused = true)]
async fn spot_without_capacity_goes_on_demand_in_the_same_zone_when_allowed() {
    let launches = Launches::default();
    let action = deploy(
        ec2_in_zones(&launches, no_spot_in_a()),
        spot_profile(SpotFallback::OnDemand),
        2,
    );
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(
        markets(&launches),
        [
            ("subnet-a".to_owned(), Market::Spot, 1),
            ("subnet-a".to_owned(), Market::OnDemand, 1),
            ("subnet-b".to_owned(), Market::Spot, 1),
        ]
    );
    let specs = launches.lock().expect("launches").clone();
    assert_ne!(specs[0].client_token, specs[1].client_token);
    // Each node outcome says which it got.
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
        summaries[1].contains("running (t3.small in us-east-1b, spot)"),
        "{}",
        summaries[1]
    );
    assert!(
        summaries[0].contains(
            "spot t3.small in us-east-1a (subnet-a) refused (InsufficientInstanceCapacity): \
             on-demand there instead"
        ),
        "{}",
        summaries[0]
    );
}

#[tokio::test(start_paused = true)]
async fn spot_without_capacity_and_no_fallback_goes_to_the_other_zone() {
    let launches = Launches::default();
    let action = deploy(
        ec2_in_zones(&launches, no_spot_in_a()),
        spot_profile(SpotFallback::None),
        2,
    );
    let mut ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let report = pipeline_of(action.on(Target::None)).run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(
        markets(&launches),
        [
            ("subnet-a".to_owned(), Market::Spot, 1),
            ("subnet-b".to_owned(), Market::Spot, 2),
        ]
    );
    let summary = &report.steps[0].nodes[0].summary;
    assert!(
        summary.contains("running (t3.small in us-east-1b, spot)"),
        "{summary}"
    );
    assert!(
        summary.contains("spot t3.small in us-east-1a (subnet-a) refused (InsufficientInstanceCapacity): its share goes to the other zones"),
        "{summary}"
    );
}

#[test]
fn the_plan_and_the_journal_intent_say_how_a_launch_over_zones_goes() {
    let profile = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .subnet_ids(["subnet-a", "subnet-b"])
        .fallback_instance_type("t3a.small")
        .market(Market::Spot)
        .build()
        .expect("profile");
    let action = deploy(MockEc2::new(), profile, 4);
    let summary = action.describe().summary;
    assert_eq!(
        summary,
        [
            "launch 4 t3.small from ami-03cf127a in us-east-1",
            "spread them over the Availability Zones of subnet-a, subnet-b, the zone with the fewest nodes first",
            "without capacity in any zone, fall back on t3a.small",
            "as one-time Spot Instances",
        ]
    );
    let ctx = Context::new(cluster(0, 0)).with_run_id(RunId::new(RUN));
    let intent = action.intent(&ctx);
    assert!(
        intent[0].contains("with a client token per Availability Zone"),
        "{intent:?}"
    );
    assert!(intent[0].ends_with(&format!("for run {RUN}")), "{intent:?}");
}
