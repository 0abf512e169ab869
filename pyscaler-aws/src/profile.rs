//! `Ec2Profile`: what to launch and how to reach it, validated before any API call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AwsError, LaunchTemplate, Market, SpotFallback};

mod builder;
mod ssh;
mod validate;

pub use builder::Ec2ProfileBuilder;
pub use ssh::{SshAccess, SshVia};
use validate::validate;

/// The profile as written. Both spellings of the instance types and of the
/// subnets load; an [`Ec2Profile`] holds only the lists (`instance_types`,
/// `subnet_ids`), and writes a list of one with the single key.

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    launch_template: Option<LaunchTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    instance_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    security_group_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subnet_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iam_instance_profile: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    load_balancer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_port: Option<u16>,
    #[serde(default, skip_serializing_if = "is_default")]
    market: Market,
    #[serde(default, skip_serializing_if = "is_default")]
    spot_fallback: SpotFallback,
    #[serde(default)]
    ssh: SshAccess,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl std::fmt::Debug for Fields {
    // User data may hold secrets (a registration token): only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Profile")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("launch_template", &self.launch_template)
            .field("image_id", &self.image_id)
            .field("instance_type", &self.instance_type)
            .field("instance_types", &self.instance_types)
            .field("key_name", &self.key_name)
            .field("security_group_ids", &self.security_group_ids)
            .field("subnet_id", &self.subnet_id)
            .field("subnet_ids", &self.subnet_ids)
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|u| format!("<{} bytes>", u.len())),
            )
            .field("iam_instance_profile", &self.iam_instance_profile)
            .field("tags", &self.tags)
            .field("load_balancer", &self.load_balancer)
            .field("target_group", &self.target_group)
            .field("target_port", &self.target_port)
            .field("market", &self.market)
            .field("spot_fallback", &self.spot_fallback)
            .field("ssh", &self.ssh)
            .finish()
    }
}

/// What to launch on EC2, where, and how to reach it: one cluster's machine profile.
///
/// Built with [`Ec2Profile::builder`] or read from TOML with
/// [`Ec2Profile::from_toml`]; either way it is validated before anything
/// reaches AWS.
///
/// # TOML keys
/// Unknown keys are refused.
///
/// | key | required | meaning |
/// |---|---|---|
/// | `region` | yes | the AWS region (`eu-west-1`) |
/// | `endpoint_url` | no | another endpoint than AWS's (moto, LocalStack) |
/// | `launch_template` | no | launch from an EC2 launch template: `{ id = "lt-..." }` or `{ name = "web" }`, with `version = "$Default"` (the default), `"$Latest"` or `"3"` ([`LaunchTemplate`]); checked to exist before a launch; every other key set here overrides the template's |
/// | `image_id` | yes, unless `launch_template` | the AMI (`ami-...`) |
/// | `instance_type` | yes (or `instance_types`), unless `launch_template` | the instance type (`t3.small`) |
/// | `instance_types` | instead of `instance_type` | instance types in order of preference (`["t3.small", "t3a.small"]`): when EC2 has no capacity for one in any of the subnets' Availability Zones (`InsufficientInstanceCapacity`, `Unsupported`, `InstanceLimitExceeded`), the next is tried |
/// | `key_name` | no | the EC2 key pair to install |
/// | `security_group_ids` | no | security groups (`["sg-..."]`) |
/// | `subnet_id` | no | the subnet to launch into (a list of one) |
/// | `subnet_ids` | no, instead of `subnet_id` | subnets in several Availability Zones (`["subnet-a", "subnet-b"]`): each new node goes to the zone with the fewest running nodes of the cluster (ties: this order), one RunInstances call per zone; a zone without capacity passes its share to the next |
/// | `user_data` | no | user data, plain text (encoded for the API; never logged) |
/// | `iam_instance_profile` | no | an instance profile, by name or ARN |
/// | `tags` | no | extra tags every instance carries (`{ team = "web" }`) |
/// | `load_balancer` | no | the classic ELB the nodes join; checked to exist before a launch |
/// | `target_group` | no | instead, the ALB/NLB target group the nodes join (its ARN; feature `elbv2`); checked to exist before a launch |
/// | `target_port` | no | the port the target group sends the nodes traffic to, when not its own |
/// | `market` | no | `"on-demand"` (default) or `"spot"`: one-time Spot Instances, terminated when EC2 takes them back ([`Market`]) |
/// | `spot_fallback` | no, with `market = "spot"` | `"on-demand"`: a zone's call EC2 refuses for Spot capacity is made again for On-Demand there; `"none"` (default): the zone counts as refused ([`SpotFallback`]) |
/// | `ssh.via` | no | which address to connect to: `"private_ip"` (default), `"public_ip"`, `"public_dns"`, or `{ fixed = { host = "127.0.0.1" } }` ([`SshVia`]) |
/// | `ssh.user` | no | the SSH user (`ec2-user`) |
/// | `ssh.port` | no | the SSH port of every node (22), whichever address `via` picks |
///
/// ```
/// # fn main() -> Result<(), pyscaler_aws::AwsError> {
/// let profile = pyscaler_aws::Ec2Profile::from_toml(r##"
///     region = "eu-west-1"
///     image_id = "ami-0abcdef1234567890"
///     instance_type = "t3.small"
///     key_name = "ops"
///     security_group_ids = ["sg-0123456789abcdef0"]
///     user_data = "#!/bin/sh\necho hello\n"
///     load_balancer = "web-lb"
///     tags = { team = "web" }
///     [ssh]
///     via = "public_ip"
///     user = "admin"
/// "##)?;
/// assert_eq!(profile.instance_type(), Some("t3.small"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Fields", into = "Fields")]
pub struct Ec2Profile {
    f: Fields,
}

impl std::fmt::Debug for Ec2Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.f.fmt(f)
    }
}

impl TryFrom<Fields> for Ec2Profile {
    type Error = AwsError;
    fn try_from(f: Fields) -> Result<Self, AwsError> {
        let f = normalize(f)?;
        validate(&f)?;
        Ok(Self { f })
    }
}

impl From<Ec2Profile> for Fields {
    /// Writes a list of one with the single key (`instance_type`, `subnet_id`),
    /// as profiles written before the lists existed read.
    fn from(p: Ec2Profile) -> Self {
        let mut f = p.f;
        if f.instance_types.len() == 1 {
            f.instance_type = f.instance_types.pop();
        }
        if f.subnet_ids.len() == 1 {
            f.subnet_id = f.subnet_ids.pop();
        }
        f
    }
}

/// One list of instance types and one of subnets, whichever spelling the
/// profile used; both spellings at once are refused, naming them.
fn normalize(mut f: Fields) -> Result<Fields, AwsError> {
    match (f.instance_type.take(), f.instance_types.is_empty()) {
        (Some(one), true) => f.instance_types.push(one),
        (Some(_), false) => {
            return Err(AwsError::invalid(
                "instance_types",
                "is set beside `instance_type`: one of the two",
            ))
        }
        // A launch template says which type.
        (None, true) if f.launch_template.is_some() => {}
        (None, true) => {
            return Err(AwsError::invalid(
                "instance_type",
                "is missing: set `instance_type`, or `instance_types` in order of preference",
            ))
        }
        (None, false) => {}
    }
    match (f.subnet_id.take(), f.subnet_ids.is_empty()) {
        (Some(one), true) => f.subnet_ids.push(one),
        (Some(_), false) => {
            return Err(AwsError::invalid(
                "subnet_ids",
                "is set beside `subnet_id`: one of the two",
            ))
        }
        (None, _) => {}
    }
    Ok(f)
}

impl Ec2Profile {
    /// Starts a profile: where, what image, what type.
    pub fn builder(
        region: impl Into<String>,
        image_id: impl Into<String>,
        instance_type: impl Into<String>,
    ) -> Ec2ProfileBuilder {
        Ec2ProfileBuilder {
            f: Fields {
                region: region.into(),
                endpoint_url: None,
                launch_template: None,
                image_id: Some(image_id.into()),
                instance_type: Some(instance_type.into()),
                instance_types: Vec::new(),
                key_name: None,
                security_group_ids: Vec::new(),
                subnet_id: None,
                subnet_ids: Vec::new(),
                user_data: None,
                iam_instance_profile: None,
                tags: BTreeMap::new(),
                load_balancer: None,
                target_group: None,
                target_port: None,
                market: Market::default(),
                spot_fallback: SpotFallback::default(),
                ssh: SshAccess::default(),
            },
        }
    }

    /// Starts a profile that launches from `template`: the image and the
    /// instance type are the template's unless set
    /// ([`Ec2ProfileBuilder::image_id`], [`Ec2ProfileBuilder::fallback_instance_type`]).
    pub fn from_template(region: impl Into<String>, template: LaunchTemplate) -> Ec2ProfileBuilder {
        let mut b = Self::builder(region, "", "");
        b.f.image_id = None;
        b.f.instance_type = None;
        b.f.launch_template = Some(template);
        b
    }

    /// Reads and validates a profile from TOML.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] naming the field and the value, for a
    /// malformed file or a value that cannot be right.
    pub fn from_toml(text: &str) -> Result<Self, AwsError> {
        toml::from_str(text).map_err(|e| AwsError::invalid("EC2 profile", e.message().to_owned()))
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.f.region
    }
    /// Another endpoint for the AWS API (LocalStack, moto).
    pub fn endpoint_url(&self) -> Option<&str> {
        self.f.endpoint_url.as_deref()
    }
    /// The launch template new instances start from, when the profile names one.
    pub fn launch_template(&self) -> Option<&LaunchTemplate> {
        self.f.launch_template.as_ref()
    }
    /// The image (none: the launch template's).
    pub fn image_id(&self) -> Option<&str> {
        self.f.image_id.as_deref()
    }
    /// The instance type new nodes get: the first of
    /// [`instance_types`](Self::instance_types) (none: the launch template's).
    pub fn instance_type(&self) -> Option<&str> {
        self.f.instance_types.first().map(String::as_str)
    }
    /// The instance types, in order of preference (at least one, unless the
    /// profile names a launch template): the next is tried when EC2 has no
    /// capacity for one in any subnet's zone.
    pub fn instance_types(&self) -> &[String] {
        &self.f.instance_types
    }
    /// The key pair.
    pub fn key_name(&self) -> Option<&str> {
        self.f.key_name.as_deref()
    }
    /// The security groups.
    pub fn security_group_ids(&self) -> &[String] {
        &self.f.security_group_ids
    }
    /// The subnets new nodes are spread over (none: EC2's default subnet).
    pub fn subnet_ids(&self) -> &[String] {
        &self.f.subnet_ids
    }
    /// The user data, in plain text.
    pub fn user_data(&self) -> Option<&str> {
        self.f.user_data.as_deref()
    }
    /// The IAM instance profile (name or ARN).
    pub fn iam_instance_profile(&self) -> Option<&str> {
        self.f.iam_instance_profile.as_deref()
    }
    /// Extra tags for every instance.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.f.tags
    }
    /// The classic load balancer new nodes join.
    pub fn load_balancer(&self) -> Option<&str> {
        self.f.load_balancer.as_deref()
    }
    /// The ALB/NLB target group new nodes join (its ARN).
    pub fn target_group(&self) -> Option<&str> {
        self.f.target_group.as_deref()
    }
    /// The port the target group sends traffic to, when not its own.
    pub fn target_port(&self) -> Option<u16> {
        self.f.target_port
    }
    /// What new nodes are registered with, whichever kind: the classic load
    /// balancer's name or the target group's ARN.
    pub fn balancer(&self) -> Option<&str> {
        self.load_balancer().or(self.target_group())
    }
    /// How new instances are bought.
    pub fn market(&self) -> Market {
        self.f.market
    }
    /// What a Spot launch does without Spot capacity.
    pub fn spot_fallback(&self) -> SpotFallback {
        self.f.spot_fallback
    }
    /// How nodes are reached over SSH.
    pub fn ssh(&self) -> &SshAccess {
        &self.f.ssh
    }
}

#[cfg(test)]
mod tests;
