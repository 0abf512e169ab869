//! `Ec2Profile`: what to launch and how to reach it, validated before any API call.

use std::collections::BTreeMap;

use base64::Engine;
use pyscaler_core::NodeAddress;
use serde::{Deserialize, Serialize};

use crate::{AwsError, Instance};

/// Which address of an instance pyscaler connects to over SSH.
///
/// A node behind a bastion (jump host) is reached by its private address
/// through pyscaler-ssh's `SshConfig::proxy_command`
/// (`ssh -W %h:%p ops@bastion`): keep `PrivateIp` here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SshVia {
    /// The private IP (the controller runs in the same VPC, or reaches it
    /// through a bastion's proxy command).
    #[default]
    PrivateIp,
    /// The public IP.
    PublicIp,
    /// The public DNS name.
    PublicDns,
    /// A fixed address for every node, whatever EC2 reports: one port forward
    /// to a single node, or a test stack where one loopback sshd stands in for
    /// every VM. Every node gets the same address, so this is no jump host:
    /// for a bastion in front of many nodes use `PrivateIp` and a proxy command.
    /// The port is the profile's `ssh.port`, as for every other address.
    Fixed {
        /// Host name or IP address.
        host: String,
    },
}

/// How nodes are reached over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshAccess {
    /// Which address to use.
    #[serde(default)]
    pub via: SshVia,
    /// The SSH user (`ec2-user` by default).
    #[serde(default = "default_user")]
    pub user: String,
    /// The SSH port of every node the profile launches, whichever address
    /// `via` picks (22 by default): the one place the port is set. (An
    /// `SshConfig`'s own port is only for nodes whose address names none,
    /// such as nodes an application makes itself.)
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_user() -> String {
    "ec2-user".to_owned()
}

fn default_port() -> u16 {
    22
}

impl Default for SshAccess {
    fn default() -> Self {
        Self {
            via: SshVia::default(),
            user: default_user(),
            port: default_port(),
        }
    }
}

impl SshAccess {
    /// The address of `instance` as this says, if the instance has one.
    ///
    /// # Errors
    /// [`AwsError::NoAddress`] when the instance lacks that kind of address.
    pub fn address_of(&self, instance: &Instance) -> Result<NodeAddress, AwsError> {
        let (host, wanted) = match &self.via {
            SshVia::PrivateIp => (instance.private_ip.clone(), "private IP"),
            SshVia::PublicIp => (instance.public_ip.clone(), "public IP"),
            SshVia::PublicDns => (instance.public_dns.clone(), "public DNS name"),
            SshVia::Fixed { host } => (Some(host.clone()), "fixed address"),
        };
        host.map(|h| NodeAddress::new(h).with_port(self.port))
            .ok_or_else(|| AwsError::NoAddress {
                instance_id: instance.id.clone(),
                wanted,
            })
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint_url: Option<String>,
    image_id: String,
    instance_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    security_group_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subnet_id: Option<String>,
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
    #[serde(default)]
    ssh: SshAccess,
}

impl std::fmt::Debug for Fields {
    // User data may hold secrets (a registration token): only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Profile")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
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
            .field("load_balancer", &self.load_balancer)
            .field("target_group", &self.target_group)
            .field("target_port", &self.target_port)
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
/// | `image_id` | yes | the AMI (`ami-...`) |
/// | `instance_type` | yes | the instance type (`t3.small`) |
/// | `key_name` | no | the EC2 key pair to install |
/// | `security_group_ids` | no | security groups (`["sg-..."]`) |
/// | `subnet_id` | no | the subnet to launch into |
/// | `user_data` | no | user data, plain text (encoded for the API; never logged) |
/// | `iam_instance_profile` | no | an instance profile, by name or ARN |
/// | `tags` | no | extra tags every instance carries (`{ team = "web" }`) |
/// | `load_balancer` | no | the classic ELB the nodes join; checked to exist before a launch |
/// | `target_group` | no | instead, the ALB/NLB target group the nodes join (its ARN; feature `elbv2`); checked to exist before a launch |
/// | `target_port` | no | the port the target group sends the nodes traffic to, when not its own |
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
/// assert_eq!(profile.instance_type(), "t3.small");
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
        validate(&f)?;
        Ok(Self { f })
    }
}

impl From<Ec2Profile> for Fields {
    fn from(p: Ec2Profile) -> Self {
        p.f
    }
}

/// The largest user data EC2 accepts, once base64-encoded.
const MAX_USER_DATA_ENCODED: usize = 16 * 1024;

fn validate(f: &Fields) -> Result<(), AwsError> {
    let bad = |field: &str, message: String| AwsError::invalid(field, message);
    let is_id = |s: &str, prefix: &str| {
        s.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()))
    };
    if f.region.is_empty()
        || !f
            .region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(bad(
            "region",
            format!("`{}` is not a region name like us-east-1", f.region),
        ));
    }
    if let Some(url) = &f.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(
                "endpoint_url",
                format!("`{url}` is not an http(s) URL"),
            ));
        }
    }
    if !is_id(&f.image_id, "ami-") {
        return Err(bad(
            "image_id",
            format!("`{}` is not an AMI id like ami-0abc123", f.image_id),
        ));
    }
    let (family, size) = f.instance_type.split_once('.').unwrap_or(("", ""));
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !word(family) || !word(size) {
        return Err(bad(
            "instance_type",
            format!(
                "`{}` is not an instance type like t3.small",
                f.instance_type
            ),
        ));
    }
    if f.key_name.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(bad("key_name", "is empty".to_owned()));
    }
    if let Some(sg) = f.security_group_ids.iter().find(|g| !is_id(g, "sg-")) {
        return Err(bad(
            "security_group_ids",
            format!("`{sg}` is not a security group id like sg-0abc123"),
        ));
    }
    if let Some(subnet) = f.subnet_id.as_ref().filter(|s| !is_id(s, "subnet-")) {
        return Err(bad(
            "subnet_id",
            format!("`{subnet}` is not a subnet id like subnet-0abc123"),
        ));
    }
    if let Some(data) = &f.user_data {
        let encoded = base64::engine::general_purpose::STANDARD.encode(data).len();
        if encoded > MAX_USER_DATA_ENCODED {
            return Err(bad(
                "user_data",
                format!("is {encoded} bytes once base64-encoded; EC2 takes at most {MAX_USER_DATA_ENCODED}"),
            ));
        }
    }
    if f.iam_instance_profile
        .as_deref()
        .is_some_and(|p| p.trim().is_empty())
    {
        return Err(bad("iam_instance_profile", "is empty".to_owned()));
    }
    for (k, v) in &f.tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 {
            return Err(bad(
                "tags",
                format!("`{k}`: keys are 1-128 characters, values at most 256"),
            ));
        }
        if k.starts_with("aws:") || k == "Name" || k.starts_with("pyscaler:") {
            return Err(bad(
                "tags",
                format!(
                    "`{k}` is reserved (aws:*, Name and pyscaler:* are set by pyscaler or AWS)"
                ),
            ));
        }
    }
    // 50 tags per resource; pyscaler adds 4 (Name, pyscaler:cluster, :run, :step).
    if f.tags.len() > 46 {
        return Err(bad(
            "tags",
            format!("{} tags; at most 46 (pyscaler adds 4)", f.tags.len()),
        ));
    }
    if let Some(lb) = &f.load_balancer {
        if lb.is_empty()
            || lb.len() > 32
            || !lb.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(bad(
                "load_balancer",
                format!(
                    "`{lb}` is not a classic load balancer name (1-32 letters, digits, hyphens)"
                ),
            ));
        }
    }
    if let Some(arn) = &f.target_group {
        if !cfg!(feature = "elbv2") {
            return Err(bad(
                "target_group",
                "needs pyscaler-aws's `elbv2` feature (on by default)".to_owned(),
            ));
        }
        if !arn.starts_with("arn:") || !arn.contains(":targetgroup/") {
            return Err(bad(
                "target_group",
                format!("`{arn}` is not a target group ARN (arn:aws:elasticloadbalancing:...:targetgroup/...)"),
            ));
        }
        if let Some(lb) = &f.load_balancer {
            return Err(bad(
                "target_group",
                format!(
                    "names a target group beside the classic load balancer `{lb}`: one of the two"
                ),
            ));
        }
    }
    match (f.target_port, &f.target_group) {
        (Some(0), _) => return Err(bad("target_port", "is 0".to_owned())),
        (Some(_), None) => {
            return Err(bad(
                "target_port",
                "is set without a `target_group`".to_owned(),
            ))
        }
        _ => {}
    }
    if f.ssh.user.is_empty() || f.ssh.user.chars().any(char::is_whitespace) {
        return Err(bad(
            "ssh.user",
            format!("`{}` is not a user name", f.ssh.user),
        ));
    }
    if f.ssh.port == 0 {
        return Err(bad("ssh.port", "is 0".to_owned()));
    }
    if let SshVia::Fixed { host } = &f.ssh.via {
        if host.trim().is_empty() {
            return Err(bad("ssh.via.fixed.host", "is empty".to_owned()));
        }
    }
    Ok(())
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
                image_id: image_id.into(),
                instance_type: instance_type.into(),
                key_name: None,
                security_group_ids: Vec::new(),
                subnet_id: None,
                user_data: None,
                iam_instance_profile: None,
                tags: BTreeMap::new(),
                load_balancer: None,
                target_group: None,
                target_port: None,
                ssh: SshAccess::default(),
            },
        }
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
    /// The image.
    pub fn image_id(&self) -> &str {
        &self.f.image_id
    }
    /// The instance type.
    pub fn instance_type(&self) -> &str {
        &self.f.instance_type
    }
    /// The key pair.
    pub fn key_name(&self) -> Option<&str> {
        self.f.key_name.as_deref()
    }
    /// The security groups.
    pub fn security_group_ids(&self) -> &[String] {
        &self.f.security_group_ids
    }
    /// The subnet.
    pub fn subnet_id(&self) -> Option<&str> {
        self.f.subnet_id.as_deref()
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
    /// How nodes are reached over SSH.
    pub fn ssh(&self) -> &SshAccess {
        &self.f.ssh
    }
}

/// Builds an [`Ec2Profile`]; setters cannot fail, [`Ec2ProfileBuilder::build`] reports the first problem.
#[derive(Debug, Clone)]
pub struct Ec2ProfileBuilder {
    f: Fields,
}

impl Ec2ProfileBuilder {
    /// Another endpoint for the AWS API (LocalStack, moto).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.f.endpoint_url = Some(url.into());
        self
    }
    /// The key pair to install.
    pub fn key_name(mut self, name: impl Into<String>) -> Self {
        self.f.key_name = Some(name.into());
        self
    }
    /// Adds a security group.
    pub fn security_group(mut self, id: impl Into<String>) -> Self {
        self.f.security_group_ids.push(id.into());
        self
    }
    /// The subnet.
    pub fn subnet_id(mut self, id: impl Into<String>) -> Self {
        self.f.subnet_id = Some(id.into());
        self
    }
    /// User data in plain text (encoded when sent).
    pub fn user_data(mut self, text: impl Into<String>) -> Self {
        self.f.user_data = Some(text.into());
        self
    }
    /// An IAM instance profile, by name or ARN.
    pub fn iam_instance_profile(mut self, name_or_arn: impl Into<String>) -> Self {
        self.f.iam_instance_profile = Some(name_or_arn.into());
        self
    }
    /// Adds a tag for every instance.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.f.tags.insert(key.into(), value.into());
        self
    }
    /// The classic load balancer new nodes join.
    pub fn load_balancer(mut self, name: impl Into<String>) -> Self {
        self.f.load_balancer = Some(name.into());
        self
    }
    /// The ALB/NLB target group new nodes join, by ARN (instead of a classic
    /// load balancer).
    pub fn target_group(mut self, arn: impl Into<String>) -> Self {
        self.f.target_group = Some(arn.into());
        self
    }
    /// The port the target group sends new nodes traffic to, instead of its own.
    pub fn target_port(mut self, port: u16) -> Self {
        self.f.target_port = Some(port);
        self
    }
    /// Which address to reach nodes at.
    pub fn ssh_via(mut self, via: SshVia) -> Self {
        self.f.ssh.via = via;
        self
    }
    /// The SSH user.
    pub fn ssh_user(mut self, user: impl Into<String>) -> Self {
        self.f.ssh.user = user.into();
        self
    }
    /// The SSH port.
    pub fn ssh_port(mut self, port: u16) -> Self {
        self.f.ssh.port = port;
        self
    }

    /// Validates and builds the profile.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] naming the first bad field and its value.
    pub fn build(self) -> Result<Ec2Profile, AwsError> {
        Ec2Profile::try_from(self.f)
    }
}

#[cfg(test)]
mod tests;
