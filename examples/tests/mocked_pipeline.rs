//! How an application unit-tests its own pipeline with pyscaler's mocked
//! providers: the Tomcat pipeline, built by the same `tomcat_pipeline` the
//! program uses, with EC2, the load balancer, SSH and mail mocked.
//!
//! When Puppet fails on the new node, the instance must be deregistered from
//! the load balancer and then terminated — never left running — and the
//! failure mail must go out.

// The mocks' closures return the provider traits' own error types by value.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mockall::{predicate::eq, Sequence};
use pyscaler_aws::{
    Aws, HealthState, Instance, InstanceHealth, InstanceState, MockEc2, MockLoadBalancer,
};
use pyscaler_core::{Cluster, Context, RunStatus, StepStatus};
use pyscaler_examples::{tomcat_pipeline, Providers, TomcatClusterConfig};
use pyscaler_notify::{MockMailer, Receipt};
use pyscaler_ssh::{CommandOutput, MockRemoteShell};

const INSTANCE: &str = "i-0123456789abcdef0";

fn config(ssh_port: u16) -> TomcatClusterConfig {
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/tomcat");
    let text = format!(
        r#"
cluster = "web"
assets = "{assets}"
[ec2]
region = "eu-west-1"
image_id = "ami-0abcdef1234567890"
instance_type = "t3.small"
load_balancer = "web-lb"
[ec2.ssh]
via = {{ fixed = {{ host = "127.0.0.1" }} }}
port = {ssh_port}
user = "admin"
[ssh]
user = "admin"
host_keys = "insecure-accept-any"
[smtp]
host = "127.0.0.1"
from = "pyscaler@example.com"
to = ["ops@example.com"]
[tomcat]
manager_password_env = "MOCKED_PIPELINE_MANAGER_PASSWORD"
[deploy]
ssh_within = "5s"
"#
    );
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("web.toml");
    std::fs::write(&path, text).expect("write the config");
    TomcatClusterConfig::load(&path).expect("a valid config")
}

fn instance(state: InstanceState) -> Instance {
    Instance {
        id: INSTANCE.into(),
        state,
        state_reason: None,
        launch_index: 0,
        private_ip: Some("10.0.0.5".into()),
        public_ip: None,
        public_dns: None,
        launched_at: None,
        tags: BTreeMap::from([("Name".to_string(), "web-01".to_string())]),
        availability_zone: Some("us-east-1a".into()),
        subnet_id: None,
        instance_type: Some("t3.small".into()),
        market: pyscaler_aws::Market::OnDemand,
    }
}

fn output(exit_code: i32, stdout: &str) -> CommandOutput {
    CommandOutput {
        stdout: stdout.into(),
        exit_code: Some(exit_code),
        ..CommandOutput::default()
    }
}

#[tokio::test]
async fn a_failing_puppet_run_deregisters_and_terminates_the_new_instance() {
    std::env::set_var("MOCKED_PIPELINE_MANAGER_PASSWORD", "s3cret-for-the-test");
    // The "new VM"'s SSH port, so the deploy step's port check succeeds on loopback.
    let ssh_port = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = config(ssh_port.local_addr().unwrap().port());

    let terminated = Arc::new(AtomicBool::new(false));
    let mut undo = Sequence::new();
    let mut ec2 = MockEc2::new();
    let mut elb = MockLoadBalancer::new();
    ec2.expect_find_by_tags().returning(|_, _| Ok(vec![]));
    ec2.expect_launch()
        .times(1)
        .returning(|_| Ok(vec![instance(InstanceState::Pending)]));
    let seen = terminated.clone();
    ec2.expect_describe().returning(move |_| {
        let state = if seen.load(Ordering::SeqCst) {
            InstanceState::Terminated
        } else {
            InstanceState::Running
        };
        Ok(vec![instance(state)])
    });
    // The deploy checks that the load balancer exists before it launches.
    elb.expect_exists()
        .with(eq("web-lb"))
        .returning(|_| Ok(true));
    elb.expect_register()
        .with(eq("web-lb"), eq(vec![INSTANCE.to_string()]))
        .times(1)
        .returning(|_, _| Ok(()));
    elb.expect_health().returning(|_, _| {
        Ok(vec![InstanceHealth {
            instance_id: INSTANCE.into(),
            state: HealthState::InService,
            reason: None,
        }])
    });
    // A classic ELB cannot say how long it drains: nothing to wait for.
    elb.expect_draining_timeout().returning(|_| Ok(None));
    // The undo: out of the load balancer first, then terminated.
    elb.expect_deregister()
        .with(eq("web-lb"), eq(vec![INSTANCE.to_string()]))
        .times(1)
        .in_sequence(&mut undo)
        .returning(|_, _| Ok(()));
    let flag = terminated.clone();
    ec2.expect_terminate()
        .with(eq(vec![INSTANCE.to_string()]))
        .times(1)
        .in_sequence(&mut undo)
        .returning(move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });

    let mut shell = MockRemoteShell::new();
    shell.expect_exec().returning(|_, command| {
        Ok(if command.line().contains("puppet apply") {
            output(
                4,
                "Error: Could not find package tomcat10\nError: Failed to apply catalog",
            )
        } else {
            output(0, "")
        })
    });
    shell.expect_upload().returning(|_, _, _, _| Ok(()));
    shell.expect_disconnect().returning(|_| ());

    let mut mailer = MockMailer::new();
    mailer.expect_destination().return_const("mock".to_string());
    mailer
        .expect_send()
        .times(1)
        .withf(|mail| mail.subject().contains("FAILED at step os-configuration"))
        .returning(|_| Ok(Receipt::new("250 queued")));

    let providers = Providers {
        aws: Aws::new(Arc::new(ec2), Some(Arc::new(elb)), config.ec2.clone())
            .expect("paired providers"),
        shell: Arc::new(shell),
        mailer: Arc::new(mailer),
    };
    let pipeline = tomcat_pipeline(&config, &providers, None).unwrap();
    let mut ctx = Context::new(Cluster::new("web"));
    let report = pipeline.run(&mut ctx).await;

    assert_eq!(report.status, RunStatus::Failed, "{report}");
    let error = report.error.as_ref().unwrap();
    assert!(
        error.message.contains("step `os-configuration` failed"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("Could not find package tomcat10"),
        "{}",
        error.message
    );
    assert_eq!(
        report.step("deploy-ec2-node").unwrap().status,
        StepStatus::Compensated
    );
    assert_eq!(
        report.step("app-deploy").unwrap().status,
        StepStatus::Skipped
    );
    assert!(report.undo_succeeded());
    assert_eq!(report.step("email").unwrap().status, StepStatus::Succeeded);
    assert!(terminated.load(Ordering::SeqCst));
    assert!(
        ctx.cluster().is_empty(),
        "the node left the cluster: {:?}",
        ctx.cluster()
    );
    // The manager's password reached no line of the report.
    assert!(!serde_json::to_string(&report)
        .unwrap()
        .contains("s3cret-for-the-test"));
}
