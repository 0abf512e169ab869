//! `Ec2Profile`: what to launch and how to reach it, validated before any API call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AwsError, LaunchTemplate, Market, SpotFallback};

mod balancer;
mod builder;
mod ssh;
mod validate;

pub use balancer::Balancer;
pub use builder::Ec2ProfileBuilder;
pub use ssh::{HostKeySource, SshAccess, SshVia};
use validate::validate;

/// The profile as written. Both spellings of the instance types, the
/// subnets and the load balancers load; an [`Ec2Profile`] holds only the
/// lists (`instance_types`, `subnet_ids`, `load_balancers`), and writes a
/// list of one with the single key (a single classic load balancer as
/// `load_balancer`).

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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    load_balancers: Vec<Balancer>,
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
            .field("load_balancers", &self.load_balancers)
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
/// | `load_balancers` | no | the load balancers every node joins, one or more ([`Balancer`]): `[{ target_group = "arn:...", port = 8080 }, { classic = "web-lb" }]`; a target group by ARN (feature `elbv2`), with `port` when the nodes get traffic on another port than the group's own; a classic ELB by name (feature `classic-elb`); each is checked to exist before a launch, a node is registered with each (one call per load balancer for all the new nodes) and must be healthy in each |
/// | `load_balancer` | no, instead of `load_balancers` | one classic ELB (`load_balancer = "web-lb"`, as profiles written before the list read) |
/// | `target_group`, `target_port` | no, instead of `load_balancers` | one target group by ARN, and its port |
/// | `market` | no | `"on-demand"` (default) or `"spot"`: one-time Spot Instances, terminated when EC2 takes them back ([`Market`]) |
/// | `spot_fallback` | no, with `market = "spot"` | `"on-demand"`: a zone's call EC2 refuses for Spot capacity is made again for On-Demand there; `"none"` (default): the zone counts as refused ([`SpotFallback`]) |
/// | `ssh.via` | no | which address to connect to: `"private_ip"` (default), `"public_ip"`, `"public_dns"`, or `{ fixed = { host = "127.0.0.1" } }` ([`SshVia`]) |
/// | `ssh.user` | no | the SSH user (`ec2-user`) |
/// | `ssh.port` | no | the SSH port of every node (22), whichever address `via` picks |
/// | `ssh.host_keys` | no | `"console-output"`: read each new instance's host key fingerprints from its console output before anyone connects, for pyscaler-ssh's `host_keys = "published"` ([`HostKeySource`]); `"none"` (default) |
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
        if let [Balancer::Classic { name }] = f.load_balancers.as_slice() {
            f.load_balancer = Some(name.clone());
            f.load_balancers.clear();
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
    let old = [f.load_balancer.is_some(), f.target_group.is_some()];
    if old.contains(&true) && !f.load_balancers.is_empty() {
        let key = if old[0] {
            "load_balancer"
        } else {
            "target_group"
        };
        return Err(AwsError::invalid(
            "load_balancers",
            format!("is set beside `{key}`: name every load balancer in `load_balancers`"),
        ));
    }
    if let Some(name) = f.load_balancer.take() {
        f.load_balancers.push(Balancer::classic(name));
    }
    match (f.target_group.take(), f.target_port.take()) {
        (Some(arn), port) => f.load_balancers.push(Balancer::TargetGroup { arn, port }),
        (None, Some(_)) => {
            return Err(AwsError::invalid(
                "target_port",
                "is set without a `target_group`",
            ))
        }
        (None, None) => {}
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
                load_balancers: Vec::new(),
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
        toml::from_str(text).map_err(|e| {
            AwsError::invalid(
                "EC2 profile",
                pyscaler_core::config_error_at(text, e.span(), e.message()),
            )
        })
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
    /// The load balancers new nodes join, in the profile's order: each
    /// node is registered with every one.
    pub fn load_balancers(&self) -> &[Balancer] {
        &self.f.load_balancers
    }
    /// The first classic load balancer of [`load_balancers`](Self::load_balancers).
    pub fn load_balancer(&self) -> Option<&str> {
        self.f
            .load_balancers
            .iter()
            .find(|b| b.is_classic())
            .map(Balancer::name)
    }
    /// The first ALB/NLB target group of [`load_balancers`](Self::load_balancers) (its ARN).
    pub fn target_group(&self) -> Option<&str> {
        self.first_target_group().map(Balancer::name)
    }
    /// The port the first target group sends traffic to, when not its own.
    pub fn target_port(&self) -> Option<u16> {
        self.first_target_group().and_then(Balancer::port)
    }
    fn first_target_group(&self) -> Option<&Balancer> {
        self.f.load_balancers.iter().find(|b| !b.is_classic())
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
mod fuzz_tests;
#[cfg(test)]
mod tests;
