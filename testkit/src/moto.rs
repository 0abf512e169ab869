//! An AWS API for the EC2 and ELB tests: `moto_server` (from `.venv`) on a free
//! loopback port, validating AMIs and instance types as EC2 does.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{free_port, service_dir, venv_bin, wait_for_port, ServiceProcess};

/// The fake credentials moto accepts; pass them to the SDK explicitly.
pub const ACCESS_KEY_ID: &str = "testing";
/// The fake secret moto accepts.
pub const SECRET_ACCESS_KEY: &str = "testing";
/// The region the tests use.
pub const REGION: &str = "us-east-1";
/// An AMI that moto ships.
pub const AMI: &str = "ami-03cf127a";

/// A running `moto_server`, stopped when dropped. Each one starts empty.
#[derive(Debug)]
pub struct MotoServer {
    process: ServiceProcess,
    port: u16,
}

impl MotoServer {
    /// Starts `moto_server -H 127.0.0.1 -p PORT` on a free port, with AMI and
    /// instance-type validation on, and waits until it listens.
    pub fn start() -> Self {
        let port = free_port();
        let dir = service_dir("moto", port);
        let mut cmd = Command::new(venv_bin("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("PYTHONUNBUFFERED", "1");
        let process = ServiceProcess::spawn("moto", &dir, cmd);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(30),
            &process.log,
        );
        Self { process, port }
    }

    /// The endpoint to give the SDK (`http://127.0.0.1:PORT`).
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The AWS SDK's configuration for this server: its region, its
    /// endpoint and the test credentials, for a test's own SDK clients.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.endpoint_url()).await
    }

    /// Imports the OpenSSH public key `public_key` as EC2 key pair `name`,
    /// as an operator would before launching with it.
    ///
    /// # Panics
    /// When moto refuses, as a harness does.
    pub async fn import_key_pair(&self, name: &str, public_key: &str) {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk_config().await);
        ec2.import_key_pair()
            .key_name(name)
            .public_key_material(aws_sdk_ec2::primitives::Blob::new(
                public_key.trim().as_bytes(),
            ))
            .send()
            .await
            .expect("import the key pair into moto");
    }

    /// Creates a classic load balancer called `name` (HTTP 80 -> 8080, in
    /// `us-east-1a`), as an operator would before pyscaler registers nodes.
    ///
    /// # Panics
    /// When moto refuses, as a harness does.
    pub async fn create_load_balancer(&self, name: &str) {
        use aws_sdk_elasticloadbalancing::types::Listener;
        let sdk = self.sdk_config().await;
        let listener = Listener::builder()
            .protocol("HTTP")
            .load_balancer_port(80)
            .instance_protocol("HTTP")
            .instance_port(8080)
            .build()
            .expect("a complete listener");
        aws_sdk_elasticloadbalancing::Client::new(&sdk)
            .create_load_balancer()
            .load_balancer_name(name)
            .listeners(listener)
            .availability_zones(format!("{REGION}a"))
            .send()
            .await
            .expect("create the classic load balancer in moto");
    }

    /// Creates an ALB target group `name` (HTTP, port 8080, instance
    /// targets) in the default VPC, as an operator would; returns its ARN.
    pub async fn create_target_group(&self, name: &str) -> String {
        let sdk = self.sdk_config().await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let vpcs = ec2.describe_vpcs().send().await.expect("list moto's VPCs");
        let vpc = vpcs
            .vpcs()
            .iter()
            .find(|v| v.is_default() == Some(true))
            .and_then(|v| v.vpc_id())
            .expect("moto's default VPC")
            .to_owned();
        let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let out = elbv2
            .create_target_group()
            .name(name)
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(8080)
            .vpc_id(vpc)
            .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance)
            .send()
            .await
            .expect("create the target group in moto");
        out.target_groups()
            .first()
            .and_then(|g| g.target_group_arn())
            .expect("the new target group's ARN")
            .to_owned()
    }

    /// Creates an Application Load Balancer `name` over `subnets` (two or
    /// more, in different zones, as AWS requires), with an HTTP listener on
    /// 80 that forwards to `target_group`, as an operator would; returns
    /// its ARN.
    ///
    /// # Panics
    /// When moto refuses, as a harness does.
    pub async fn create_application_load_balancer(
        &self,
        name: &str,
        subnets: &[String],
        target_group: &str,
    ) -> String {
        use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, ProtocolEnum};
        let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&self.sdk_config().await);
        let out = elbv2
            .create_load_balancer()
            .name(name)
            .set_subnets(Some(subnets.to_vec()))
            .send()
            .await
            .expect("create the application load balancer in moto");
        let arn = out
            .load_balancers()
            .first()
            .and_then(|lb| lb.load_balancer_arn())
            .expect("the new load balancer's ARN")
            .to_owned();
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(target_group)
            .build();
        elbv2
            .create_listener()
            .load_balancer_arn(&arn)
            .protocol(ProtocolEnum::Http)
            .port(80)
            .default_actions(forward)
            .send()
            .await
            .expect("create the listener in moto");
        arn
    }

    /// Creates a subnet of the default VPC in Availability Zone `zone`
    /// (`us-east-1b`), with the `n`th of the /24 blocks the harness keeps
    /// for its subnets (172.31.200.0/24 and on, clear of moto's default
    /// subnets), as an operator would before a launch over several zones;
    /// returns its id.
    ///
    /// # Panics
    /// When moto refuses, as a harness does.
    pub async fn create_subnet(&self, zone: &str, n: u8) -> String {
        let block = 200u8.saturating_add(n);
        self.create_subnet_with_cidr(zone, &format!("172.31.{block}.0/24"))
            .await
    }

    /// Creates a subnet `cidr` of the default VPC (within 172.31.0.0/16) in
    /// zone `zone`; returns its id. For a node slot's subnets
    /// ([`NodeHosts::subnet_cidr`](crate::nodes::NodeHosts::subnet_cidr)).
    ///
    /// # Panics
    /// When moto refuses, as a harness does.
    pub async fn create_subnet_with_cidr(&self, zone: &str, cidr: &str) -> String {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk_config().await);
        let vpcs = ec2.describe_vpcs().send().await.expect("list moto's VPCs");
        let vpc = vpcs
            .vpcs()
            .iter()
            .find(|v| v.is_default() == Some(true))
            .and_then(|v| v.vpc_id())
            .expect("moto's default VPC")
            .to_owned();
        let out = ec2
            .create_subnet()
            .vpc_id(vpc)
            .availability_zone(zone)
            .cidr_block(cidr)
            .send()
            .await
            .expect("create the subnet in moto");
        out.subnet()
            .and_then(|s| s.subnet_id())
            .expect("the new subnet's id")
            .to_owned()
    }

    /// Creates a launch template `name` with moto's AMI and `instance_type`
    /// (one version), as an operator would; returns its id.
    ///
    /// # Panics
    /// When moto refuses, as a harness does.
    pub async fn create_launch_template(&self, name: &str, instance_type: &str) -> String {
        use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk_config().await);
        let data = RequestLaunchTemplateData::builder()
            .image_id(AMI)
            .instance_type(InstanceType::from(instance_type))
            .build();
        let out = ec2
            .create_launch_template()
            .launch_template_name(name)
            .launch_template_data(data)
            .send()
            .await
            .expect("create the launch template in moto");
        out.launch_template()
            .and_then(|t| t.launch_template_id())
            .expect("the new launch template's id")
            .to_owned()
    }

    /// The server's log file (one line per request).
    pub fn log(&self) -> &Path {
        &self.process.log
    }
}

/// The AWS SDK's configuration for a moto at `endpoint`: its region and the
/// test credentials.
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "testkit",
        ))
        .load()
        .await
}
