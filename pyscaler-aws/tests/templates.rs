//! Launches from an EC2 launch template against moto (which implements
//! them), behind the harness's fault proxy to count the calls: the template
//! decides what the profile leaves out, the profile overrides the rest, and
//! a template that does not exist is refused before anything launches.

use std::sync::Arc;
use std::time::Duration;

use pyscaler_aws::{
    Aws, ClientConfig, DeployEc2Node, Ec2Profile, LaunchTemplate, SdkEc2, StaticCredentials,
    TemplateVersion,
};
use pyscaler_core::{
    ActionExt, Cluster, Context, ErrorKind, Pipeline, RunReport, RunStatus, Target,
};
use pyscaler_testkit::fault_proxy::FaultProxy;
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, AMI, REGION, SECRET_ACCESS_KEY};

struct Stack {
    _moto: MotoServer,
    proxy: FaultProxy,
    ec2: Arc<SdkEc2>,
    check: aws_sdk_ec2::Client,
    template_id: String,
}

impl Stack {
    /// moto with template `web` (moto's AMI, t3.micro).
    async fn start() -> Self {
        let moto = MotoServer::start();
        let template_id = moto.create_launch_template("web", "t3.micro").await;
        let proxy = FaultProxy::start(&moto);
        let config = ClientConfig::new(REGION)
            .endpoint_url(proxy.endpoint_url())
            .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
            .max_attempts(1);
        Self {
            ec2: Arc::new(SdkEc2::connect(&config).await),
            check: aws_sdk_ec2::Client::new(&moto.sdk_config().await),
            proxy,
            _moto: moto,
            template_id,
        }
    }

    async fn run(&self, profile: Ec2Profile, count: u32) -> (RunReport, Context) {
        let aws = Aws::new(self.ec2.clone(), None, profile).expect("aws");
        let deploy = DeployEc2Node::builder(&aws)
            .count(count)
            .running_within(Duration::from_secs(30))
            .terminated_within(Duration::from_secs(30))
            .build()
            .expect("action");
        let pipeline = Pipeline::builder("scale-out")
            .step(
                deploy
                    .on(Target::None)
                    .retry(pyscaler_core::RetryPolicy::attempts(3)),
            )
            .build()
            .expect("pipeline");
        let mut ctx = Context::new(Cluster::new("web"));
        let report = pipeline.run(&mut ctx).await;
        (report, ctx)
    }

    /// (instance type, image) of every instance moto runs.
    async fn launched(&self) -> Vec<(String, String)> {
        let out = self
            .check
            .describe_instances()
            .send()
            .await
            .expect("describe instances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_type()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                    i.image_id().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn the_template_decides_what_the_profile_leaves_out_and_the_profile_the_rest() {
    let stack = Stack::start().await;
    // By name, at its latest version: its image and type.
    let profile = Ec2Profile::from_template(
        REGION,
        LaunchTemplate::by_name("web").version(TemplateVersion::Latest),
    )
    .build()
    .expect("profile");
    let (report, ctx) = stack.run(profile, 2).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(ctx.new_nodes().len(), 2);
    let t3_micro = ("t3.micro".to_owned(), AMI.to_owned());
    assert_eq!(stack.launched().await, [t3_micro.clone(), t3_micro.clone()]);
    assert_eq!(stack.proxy.count("DescribeLaunchTemplates"), 1);
    assert_eq!(stack.proxy.count("RunInstances"), 1);

    // By id, the profile's instance type overriding the template's.
    let profile =
        Ec2Profile::from_template(REGION, LaunchTemplate::by_id(stack.template_id.clone()))
            .fallback_instance_type("t3.small")
            .build()
            .expect("profile");
    let (report, _) = stack.run(profile, 1).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    let launched = stack.launched().await;
    assert_eq!(launched.len(), 3);
    assert!(
        launched.contains(&("t3.small".to_owned(), AMI.to_owned())),
        "{launched:?}"
    );
}

#[tokio::test]
async fn a_template_that_does_not_exist_is_refused_before_anything_launches() {
    let stack = Stack::start().await;
    for (template, wanted) in [
        (
            LaunchTemplate::by_name("no-such-template"),
            "launch template `no-such-template` version $Default does not exist",
        ),
        (
            LaunchTemplate::by_id("lt-0123456789abcdef0"),
            "launch template lt-0123456789abcdef0 version $Default does not exist",
        ),
        (
            LaunchTemplate::by_name("web").version(TemplateVersion::Number(7)),
            "launch template `web` version 7 does not exist (its latest version is 1)",
        ),
    ] {
        let profile = Ec2Profile::from_template(REGION, template)
            .build()
            .expect("profile");
        let (report, _) = stack.run(profile, 2).await;
        assert_eq!(report.status, RunStatus::Failed);
        let err = report.error.clone().expect("error");
        assert_eq!(err.kind, ErrorKind::InvalidInput, "{err:?}");
        assert!(err.message.contains(wanted), "{}", err.message);
        assert_eq!(report.steps[0].attempts, 1);
    }
    assert_eq!(stack.proxy.count("RunInstances"), 0);
    assert!(stack.launched().await.is_empty());
}
