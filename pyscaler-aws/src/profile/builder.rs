//! `Ec2ProfileBuilder`: a profile set up in code, checked by `build()`.

use super::{Balancer, Ec2Profile, Fields, SshVia};
use crate::AwsError;

/// Builds an [`Ec2Profile`]; setters cannot fail, [`Ec2ProfileBuilder::build`] reports the first problem.
#[derive(Debug, Clone)]
pub struct Ec2ProfileBuilder {
    pub(super) f: Fields,
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
    /// The subnet (a list of one; see [`subnet_ids`](Self::subnet_ids)).
    pub fn subnet_id(mut self, id: impl Into<String>) -> Self {
        self.f.subnet_id = Some(id.into());
        self
    }
    /// Subnets in several Availability Zones, in order: new nodes go to the
    /// zone with the fewest running nodes of the cluster, ties to the first.
    /// Instead of [`subnet_id`](Self::subnet_id).
    pub fn subnet_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.f.subnet_ids = ids.into_iter().map(Into::into).collect();
        self
    }
    /// Launches from this launch template: what the profile sets overrides
    /// the template's.
    pub fn launch_template(mut self, template: crate::LaunchTemplate) -> Self {
        self.f.launch_template = Some(template);
        self
    }
    /// The image, instead of the launch template's.
    pub fn image_id(mut self, id: impl Into<String>) -> Self {
        self.f.image_id = Some(id.into());
        self
    }
    /// Adds an instance type to fall back on, after the ones before it: it is
    /// tried when EC2 has no capacity for those in any subnet's zone. (On a
    /// profile [from a template](Ec2Profile::from_template) with no type
    /// yet, the first is the type that overrides the template's.)
    pub fn fallback_instance_type(mut self, instance_type: impl Into<String>) -> Self {
        if let Some(first) = self.f.instance_type.take() {
            self.f.instance_types.push(first);
        }
        self.f.instance_types.push(instance_type.into());
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
    /// Adds a load balancer new nodes join (every one added, in order).
    pub fn balancer(mut self, balancer: Balancer) -> Self {
        self.f.load_balancers.push(balancer);
        self
    }
    /// Adds a classic load balancer new nodes join.
    pub fn load_balancer(self, name: impl Into<String>) -> Self {
        self.balancer(Balancer::classic(name))
    }
    /// Adds an ALB/NLB target group new nodes join, by ARN.
    pub fn target_group(self, arn: impl Into<String>) -> Self {
        self.balancer(Balancer::target_group(arn))
    }
    /// The port the target group added last sends new nodes traffic to,
    /// instead of its own ([`build`](Self::build) refuses it without one).
    pub fn target_port(mut self, port: u16) -> Self {
        match self.f.load_balancers.last_mut() {
            Some(Balancer::TargetGroup { port: p, .. }) => *p = Some(port),
            _ => self.f.target_port = Some(port),
        }
        self
    }
    /// How new instances are bought (On-Demand by default).
    pub fn market(mut self, market: crate::Market) -> Self {
        self.f.market = market;
        self
    }
    /// What a Spot launch does without Spot capacity (only with
    /// [`Market::Spot`](crate::Market::Spot)).
    pub fn spot_fallback(mut self, fallback: crate::SpotFallback) -> Self {
        self.f.spot_fallback = fallback;
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
    /// Where new instances' host keys are learned
    /// ([`HostKeySource::ConsoleOutput`](crate::HostKeySource::ConsoleOutput)).
    pub fn ssh_host_keys(mut self, source: crate::HostKeySource) -> Self {
        self.f.ssh.host_keys = source;
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
