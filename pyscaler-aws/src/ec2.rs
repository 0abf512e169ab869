//! The `Ec2` provider role, its own types, and `SdkEc2`, its implementation with aws-sdk-ec2.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, InstanceInterruptionBehavior, InstanceLifecycleType,
    InstanceMarketOptionsRequest, InstanceStateName, InstanceType, LaunchTemplateSpecification,
    MarketType, ResourceType, SpotInstanceType, SpotMarketOptions, Tag, TagSpecification,
};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::attempts::{call, counted, CountAttempts};
use crate::error::Subjects;
use crate::{AwsError, ClientConfig, LaunchTemplate, Market, TemplateInfo, TemplateRef};

/// The life-cycle state of an EC2 instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum InstanceState {
    /// Launched, booting.
    Pending,
    /// Running.
    Running,
    /// Being terminated.
    ShuttingDown,
    /// Gone.
    Terminated,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// A state this crate does not know.
    #[default]
    Unknown,
}

impl InstanceState {
    /// Every state of an instance that is not on its way out: what a step
    /// still has to deregister and terminate.
    pub(crate) const LIVE: [Self; 4] =
        [Self::Pending, Self::Running, Self::Stopping, Self::Stopped];

    /// EC2's name of the state (`shutting-down`), as used in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the instance is on its way out or gone (`shutting-down`, `terminated`).
    pub fn is_gone(self) -> bool {
        matches!(self, Self::ShuttingDown | Self::Terminated)
    }

    fn from_sdk(name: Option<&InstanceStateName>) -> Self {
        match name {
            Some(InstanceStateName::Pending) => Self::Pending,
            Some(InstanceStateName::Running) => Self::Running,
            Some(InstanceStateName::ShuttingDown) => Self::ShuttingDown,
            Some(InstanceStateName::Terminated) => Self::Terminated,
            Some(InstanceStateName::Stopping) => Self::Stopping,
            Some(InstanceStateName::Stopped) => Self::Stopped,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One EC2 instance, as far as pyscaler cares.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Instance {
    /// The instance id (`i-0abc...`).
    pub id: String,
    /// Its state.
    pub state: InstanceState,
    /// Why it is in that state, when EC2 says (`Client.UserInitiatedShutdown`).
    pub state_reason: Option<String>,
    /// Its index in the launch that created it (0 for the first).
    pub launch_index: u32,
    /// Its private IP address.
    pub private_ip: Option<String>,
    /// Its public IP address.
    pub public_ip: Option<String>,
    /// Its public DNS name.
    pub public_dns: Option<String>,
    /// When it was launched.
    pub launched_at: Option<DateTime<Utc>>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Its Availability Zone (`us-east-1a`, from `Placement.AvailabilityZone`).
    pub availability_zone: Option<String>,
    /// The subnet it was launched into.
    pub subnet_id: Option<String>,
    /// Its instance type (`t3.small`).
    pub instance_type: Option<String>,
    /// How it was bought (`InstanceLifecycle`: Spot, else On-Demand).
    #[serde(default)]
    pub market: Market,
}

/// A VPC subnet, as far as placing instances goes: which Availability Zone it is in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Subnet {
    /// The subnet id (`subnet-0abc...`).
    pub id: String,
    /// Its Availability Zone (`us-east-1a`).
    pub availability_zone: String,
}

/// What to launch, in one RunInstances call.
#[derive(Clone, PartialEq)]
pub struct LaunchSpec {
    /// The launch template to start from: what this spec sets overrides it.
    pub launch_template: Option<LaunchTemplate>,
    /// The image (`ami-...`; none: the launch template's).
    pub image_id: Option<String>,
    /// The instance type (`t3.small`; none: the launch template's).
    pub instance_type: Option<String>,
    /// The key pair to install.
    pub key_name: Option<String>,
    /// Security groups.
    pub security_group_ids: Vec<String>,
    /// The subnet.
    pub subnet_id: Option<String>,
    /// User data, in plain text: the provider encodes it.
    pub user_data: Option<String>,
    /// An IAM instance profile, by name or ARN (`arn:...`).
    pub iam_instance_profile: Option<String>,
    /// Tags every instance carries from the moment it exists (TagSpecifications).
    pub tags: BTreeMap<String, String>,
    /// The fewest instances EC2 may start (the launch fails if it cannot start as many).
    pub min_count: u32,
    /// The most instances to start.
    pub max_count: u32,
    /// The idempotency token: the same token never starts a second set of instances.
    pub client_token: String,
    /// On-Demand, or one-time Spot Instances.
    pub market: Market,
}

impl fmt::Debug for LaunchSpec {
    // User data may hold secrets: only its size is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaunchSpec")
            .field("launch_template", &self.launch_template)
            .field("image_id", &self.image_id)
            .field("instance_type", &self.instance_type)
            .field("key_name", &self.key_name)
            .field("security_group_ids", &self.security_group_ids)
            .field("subnet_id", &self.subnet_id)
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|u| format!("<{} bytes>", u.len())),
            )
            .field("iam_instance_profile", &self.iam_instance_profile)
            .field("tags", &self.tags)
            .field("min_count", &self.min_count)
            .field("max_count", &self.max_count)
            .field("client_token", &self.client_token)
            .field("market", &self.market)
            .finish()
    }
}

/// The EC2 role: launch, describe, find by tags, terminate, and the two
/// look-ups a launch makes first (the subnets' zones, the launch template).
///
/// [`SdkEc2`] implements it against the EC2 API; `MockEc2` (feature `mocks`)
/// stands in for it in tests.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Ec2: Send + Sync {
    /// Starts instances as `spec` says, in one call, tagged from the start.
    ///
    /// # Errors
    /// The API's refusal, classified ([`crate::kind_of_code`]); a bad image or
    /// instance type names the value.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Vec<Instance>, AwsError>;

    /// The instances with these ids.
    ///
    /// # Errors
    /// `InvalidInstanceID.NotFound` (kind `NotFound`) when one is not visible,
    /// which happens right after a launch.
    async fn describe(&self, instance_ids: &[String]) -> Result<Vec<Instance>, AwsError>;

    /// The instances carrying all these tags, in any of these states (any state when empty).
    ///
    /// # Errors
    /// The API's refusal, classified.
    async fn find_by_tags(
        &self,
        tags: &[(String, String)],
        states: &[InstanceState],
    ) -> Result<Vec<Instance>, AwsError>;

    /// Terminates the instances. Terminating a terminated instance is no error.
    ///
    /// # Errors
    /// The API's refusal, classified.
    async fn terminate(&self, instance_ids: &[String]) -> Result<(), AwsError>;

    /// The subnets with these ids, each with its Availability Zone
    /// (DescribeSubnets): where a launch over several subnets places its nodes.
    ///
    /// # Errors
    /// `InvalidSubnetID.NotFound` (kind `InvalidInput`, naming the subnet)
    /// when one does not exist; the API's refusal, classified.
    async fn describe_subnets(&self, subnet_ids: &[String]) -> Result<Vec<Subnet>, AwsError>;

    /// The launch template `template` names, when it exists
    /// (DescribeLaunchTemplates): a launch from it is checked first.
    ///
    /// # Errors
    /// The API's refusal, classified; a template that does not exist is
    /// `Ok(None)`, not an error.
    async fn describe_launch_template(
        &self,
        template: &LaunchTemplate,
    ) -> Result<Option<TemplateInfo>, AwsError>;

    /// The instance's console output as text (GetConsoleOutput, decoded),
    /// or `None` while EC2 has none for it yet: where cloud-init prints the
    /// host key fingerprints ([`crate::host_key_fingerprints`]).
    ///
    /// # Errors
    /// The API's refusal, classified; an output that is not base64.
    async fn console_output(&self, instance_id: &str) -> Result<Option<String>, AwsError>;
}

/// [`Ec2`] on the EC2 API, with aws-sdk-ec2.
#[derive(Debug, Clone)]
pub struct SdkEc2 {
    client: aws_sdk_ec2::Client,
}

impl SdkEc2 {
    /// A client configured by `config` (region, endpoint, credentials, SDK retries).
    pub async fn connect(config: &ClientConfig) -> Self {
        let conf = aws_sdk_ec2::config::Builder::from(&config.sdk_config().await)
            // Counts the SDK's own retries for the step's report.
            .interceptor(CountAttempts)
            .build();
        Self::from_client(aws_sdk_ec2::Client::from_conf(conf))
    }

    pub(crate) fn from_client(client: aws_sdk_ec2::Client) -> Self {
        Self { client }
    }
}

fn instance_from_sdk(i: &aws_sdk_ec2::types::Instance) -> Instance {
    let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
    Instance {
        id: i.instance_id().unwrap_or_default().to_owned(),
        state: InstanceState::from_sdk(i.state().and_then(|s| s.name())),
        state_reason: i
            .state_reason()
            .and_then(|r| r.message().or(r.code()))
            .map(str::to_owned),
        launch_index: i
            .ami_launch_index()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        private_ip: non_empty(i.private_ip_address()),
        public_ip: non_empty(i.public_ip_address()),
        public_dns: non_empty(i.public_dns_name()),
        launched_at: i
            .launch_time()
            .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
            .collect(),
        availability_zone: non_empty(i.placement().and_then(|p| p.availability_zone())),
        subnet_id: non_empty(i.subnet_id()),
        instance_type: non_empty(i.instance_type().map(InstanceType::as_str)),
        market: match i.instance_lifecycle() {
            Some(InstanceLifecycleType::Spot) => Market::Spot,
            _ => Market::OnDemand,
        },
    }
}

#[async_trait]
impl Ec2 for SdkEc2 {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Vec<Instance>, AwsError> {
        let tags: Vec<Tag> = spec
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let profile = spec.iam_instance_profile.as_ref().map(|p| {
            let b = IamInstanceProfileSpecification::builder();
            if p.starts_with("arn:") {
                b.arn(p).build()
            } else {
                b.name(p).build()
            }
        });
        let template = spec.launch_template.as_ref().map(|t| {
            let b = LaunchTemplateSpecification::builder().version(t.version.as_api());
            match &t.template {
                TemplateRef::Id(id) => b.launch_template_id(id).build(),
                TemplateRef::Name(name) => b.launch_template_name(name).build(),
            }
        });
        let market = (spec.market == Market::Spot).then(|| {
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .spot_options(
                    SpotMarketOptions::builder()
                        .spot_instance_type(SpotInstanceType::OneTime)
                        .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                        .build(),
                )
                .build()
        });
        let request = self
            .client
            .run_instances()
            .set_instance_market_options(market)
            .set_launch_template(template)
            .set_image_id(spec.image_id.clone())
            .set_instance_type(spec.instance_type.as_deref().map(InstanceType::from))
            .min_count(i32::try_from(spec.min_count).unwrap_or(i32::MAX))
            .max_count(i32::try_from(spec.max_count).unwrap_or(i32::MAX))
            .client_token(&spec.client_token)
            .set_key_name(spec.key_name.clone())
            .set_security_group_ids(
                (!spec.security_group_ids.is_empty()).then(|| spec.security_group_ids.clone()),
            )
            .set_subnet_id(spec.subnet_id.clone())
            .set_user_data(
                spec.user_data
                    .as_ref()
                    .map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
            )
            .set_iam_instance_profile(profile)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags))
                    .build(),
            );
        let subjects = Subjects {
            image_id: spec.image_id.clone(),
            instance_type: spec.instance_type.clone(),
            launch_template: spec.launch_template.as_ref().map(ToString::to_string),
            key_name: spec.key_name.clone(),
            security_groups: spec.security_group_ids.clone(),
            subnet_id: spec.subnet_id.clone(),
            ..Subjects::default()
        };
        let out = call("EC2", "RunInstances", &subjects, request.send()).await?;
        let mut instances: Vec<Instance> = out.instances().iter().map(instance_from_sdk).collect();
        instances.sort_by_key(|i| i.launch_index);
        Ok(instances)
    }

    async fn describe(&self, instance_ids: &[String]) -> Result<Vec<Instance>, AwsError> {
        if instance_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sent = self
            .client
            .describe_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "EC2",
                    "DescribeInstances",
                    e,
                    &Subjects {
                        instance_ids: instance_ids.to_vec(),
                        ..Subjects::default()
                    },
                )
            });
        let out = counted("EC2", "DescribeInstances", sent)?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(instance_from_sdk)
            .collect())
    }

    async fn find_by_tags(
        &self,
        tags: &[(String, String)],
        states: &[InstanceState],
    ) -> Result<Vec<Instance>, AwsError> {
        let mut filters: Vec<Filter> = tags
            .iter()
            .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
            .collect();
        if !states.is_empty() {
            filters.push(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(states.iter().map(|s| s.as_str().to_owned()).collect()))
                    .build(),
            );
        }
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = counted(
                "EC2",
                "DescribeInstances",
                page.map_err(|e| {
                    AwsError::from_sdk("EC2", "DescribeInstances", e, &Subjects::default())
                }),
            )?;
            found.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(instance_from_sdk),
            );
        }
        Ok(found)
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<(), AwsError> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        let sent = self
            .client
            .terminate_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "EC2",
                    "TerminateInstances",
                    e,
                    &Subjects {
                        instance_ids: instance_ids.to_vec(),
                        ..Subjects::default()
                    },
                )
            });
        counted("EC2", "TerminateInstances", sent).map(|_| ())
    }

    async fn describe_subnets(&self, subnet_ids: &[String]) -> Result<Vec<Subnet>, AwsError> {
        if subnet_ids.is_empty() {
            return Ok(Vec::new());
        }
        let subjects = Subjects {
            subnet_id: Some(subnet_ids.join(", ")),
            ..Subjects::default()
        };
        let request = self
            .client
            .describe_subnets()
            .set_subnet_ids(Some(subnet_ids.to_vec()));
        let out = call("EC2", "DescribeSubnets", &subjects, request.send()).await?;
        Ok(out
            .subnets()
            .iter()
            .filter_map(|s| {
                Some(Subnet {
                    id: s.subnet_id()?.to_owned(),
                    availability_zone: s.availability_zone()?.to_owned(),
                })
            })
            .collect())
    }

    async fn describe_launch_template(
        &self,
        template: &LaunchTemplate,
    ) -> Result<Option<TemplateInfo>, AwsError> {
        let request = self.client.describe_launch_templates();
        let request = match &template.template {
            TemplateRef::Id(id) => request.launch_template_ids(id),
            TemplateRef::Name(name) => request.launch_template_names(name),
        };
        let subjects = Subjects {
            launch_template: Some(template.to_string()),
            ..Subjects::default()
        };
        let out = match call("EC2", "DescribeLaunchTemplates", &subjects, request.send()).await {
            Ok(out) => out,
            // EC2 `InvalidLaunchTemplateName.NotFoundException`,
            // `InvalidLaunchTemplateId.NotFound`: no such template.
            Err(e)
                if e.code().is_some_and(|c| {
                    c.starts_with("InvalidLaunchTemplate") && c.contains("NotFound")
                }) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let version = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        Ok(out.launch_templates().first().map(|t| TemplateInfo {
            id: t.launch_template_id().unwrap_or_default().to_owned(),
            name: t.launch_template_name().unwrap_or_default().to_owned(),
            default_version: version(t.default_version_number()),
            latest_version: version(t.latest_version_number()),
        }))
    }

    async fn console_output(&self, instance_id: &str) -> Result<Option<String>, AwsError> {
        let subjects = Subjects {
            instance_ids: vec![instance_id.to_owned()],
            ..Subjects::default()
        };
        // The live buffer (`Latest`), where cloud-init's lines appear as they
        // are printed; only instances on the Nitro system have one. Without
        // it EC2 posts the output at state transitions only, which is what
        // other instances get.
        let ask = |latest: bool| {
            self.client
                .get_console_output()
                .instance_id(instance_id)
                .set_latest(latest.then_some(true))
                .send()
        };
        let out = match call("EC2", "GetConsoleOutput", &subjects, ask(true)).await {
            Err(e) if e.has_code("UnsupportedOperation") => {
                call("EC2", "GetConsoleOutput", &subjects, ask(false)).await?
            }
            other => other?,
        };
        let Some(encoded) = out.output().map(str::trim).filter(|o| !o.is_empty()) else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| AwsError::Api {
                service: "EC2",
                operation: "GetConsoleOutput",
                code: None,
                message: format!("the console output is not base64: {e}"),
                subject: Some(format!("instance {instance_id}")),
                kind: pyscaler_core::ErrorKind::Unexpected,
                source: None,
            })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

#[cfg(test)]
mod tests;
