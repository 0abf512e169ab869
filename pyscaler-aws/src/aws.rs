//! `Aws`: the one handle every AWS action, clean-up and discovery is built with.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::elb::{pair, Paired};
use crate::terminate::deregister_and_terminate;
use crate::wait::Backoff;
use crate::{AwsError, ClassicElb, ClientConfig, Ec2, Ec2Profile, LoadBalancer, SdkEc2};

/// The AWS provider family of one cluster: EC2, the load balancer its
/// profile names (a classic ELB, or an ALB/NLB target group), when it names
/// one, and the profile itself.
///
/// Validated once, when made: a profile that names a load balancer comes with
/// a [`LoadBalancer`] provider, and a provider only with a profile that names
/// one. Cheap to clone (like reqwest's `Client`): every action takes `&Aws` and
/// keeps a clone ([`DeployEc2Node::builder`](crate::DeployEc2Node::builder),
/// [`RemoveEc2Node::builder`](crate::RemoveEc2Node::builder),
/// [`Ec2RunCleanup::new`](crate::Ec2RunCleanup::new),
/// [`SweepOrphans::builder`](crate::SweepOrphans::builder),
/// [`discover`](crate::discover)).
///
/// ```no_run
/// # async fn example() -> Result<(), pyscaler_aws::AwsError> {
/// use pyscaler_aws::{Aws, ClientConfig, Ec2Profile};
///
/// let profile = Ec2Profile::builder("eu-west-1", "ami-0abcdef1234567890", "t3.small")
///     .load_balancer("web-lb")
///     .build()?;
/// // The SDK clients: EC2, and the classic ELB because the profile names one.
/// let aws = Aws::connect(&ClientConfig::for_profile(&profile), profile).await;
/// # let _ = aws;
/// # Ok(())
/// # }
/// ```
///
/// With other providers (mocks in a test, say), [`Aws::new`] checks the pair.
#[derive(Clone)]
pub struct Aws {
    pub(crate) ec2: Arc<dyn Ec2>,
    pub(crate) elb: Option<Paired>,
    pub(crate) profile: Arc<Ec2Profile>,
}

impl fmt::Debug for Aws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aws")
            .field("profile", &self.profile)
            .field("load_balancer", &self.load_balancer_name())
            .finish_non_exhaustive()
    }
}

impl Aws {
    /// The handle for these providers and `profile`. The provider is used as
    /// given: for a target group on another port than its own, give a
    /// `TargetGroups::with_port(profile.target_port())`, as
    /// [`connect`](Self::connect) does.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] when the profile names a load balancer and
    /// no provider is given, or a provider is given and the profile names none.
    pub fn new(
        ec2: Arc<dyn Ec2>,
        elb: Option<Arc<dyn LoadBalancer>>,
        profile: Ec2Profile,
    ) -> Result<Self, AwsError> {
        let elb = pair(elb, profile.balancer())?;
        Ok(Self {
            ec2,
            elb,
            profile: Arc::new(profile),
        })
    }

    /// The SDK providers for `profile`, configured by `config`: [`SdkEc2`],
    /// and [`ClassicElb`] when the profile names a classic load balancer, or
    /// `TargetGroups` (feature `elbv2`) when it names a target group (so the
    /// pair is right by construction).
    pub async fn connect(config: &ClientConfig, profile: Ec2Profile) -> Self {
        let elb = match (profile.load_balancer(), profile.target_group()) {
            (Some(lb), _) => Some((
                Arc::new(ClassicElb::connect(config).await) as Arc<dyn LoadBalancer>,
                lb.to_owned(),
            )),
            (None, Some(arn)) => target_groups(config, &profile)
                .await
                .map(|groups| (groups, arn.to_owned())),
            (None, None) => None,
        };
        Self {
            ec2: Arc::new(SdkEc2::connect(config).await),
            elb,
            profile: Arc::new(profile),
        }
    }

    /// The EC2 provider.
    pub fn ec2(&self) -> &dyn Ec2 {
        self.ec2.as_ref()
    }

    /// The load balancer provider and the name of the load balancer the
    /// profile names, when it names one.
    pub fn load_balancer(&self) -> Option<(&dyn LoadBalancer, &str)> {
        self.elb
            .as_ref()
            .map(|(elb, lb)| (elb.as_ref(), lb.as_str()))
    }

    /// The name of the load balancer the profile names, if any.
    pub fn load_balancer_name(&self) -> Option<&str> {
        self.elb.as_ref().map(|(_, lb)| lb.as_str())
    }

    /// The cluster's machine profile.
    pub fn profile(&self) -> &Ec2Profile {
        &self.profile
    }

    /// Takes `ids` out of the profile's load balancer (when `registered`, and
    /// the profile names one), waits while it drains them (when they were in
    /// it: `registered`, or `withdrawn` earlier), terminates them and waits
    /// until they are gone ([`deregister_and_terminate`]): a failed
    /// deregistration comes back as `Ok(Some(error))`, after the termination.
    pub(crate) async fn retire(
        &self,
        (registered, withdrawn): (bool, bool),
        poll: &Backoff,
        within: Duration,
        ids: &[String],
    ) -> pyscaler_core::Result<Option<AwsError>> {
        let drain = registered || withdrawn;
        let elb = self.load_balancer().filter(|_| drain);
        deregister_and_terminate(self.ec2(), elb, (registered, drain), poll, within, ids).await
    }
}

/// The target group provider for `profile`.
#[cfg(feature = "elbv2")]
async fn target_groups(
    config: &ClientConfig,
    profile: &Ec2Profile,
) -> Option<Arc<dyn LoadBalancer>> {
    Some(Arc::new(
        crate::TargetGroups::connect(config)
            .await
            .with_port(profile.target_port()),
    ))
}

/// Without the `elbv2` feature there is none: a profile naming a target
/// group was refused when it was made ([`Ec2Profile`]'s validation).
#[cfg(not(feature = "elbv2"))]
async fn target_groups(
    _config: &ClientConfig,
    _profile: &Ec2Profile,
) -> Option<Arc<dyn LoadBalancer>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MockEc2, MockLoadBalancer};

    fn profile(lb: bool) -> Ec2Profile {
        let b = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small");
        let b = if lb { b.load_balancer("web-lb") } else { b };
        b.build().expect("profile")
    }

    fn aws(elb: bool, lb: bool) -> Result<Aws, String> {
        Aws::new(
            Arc::new(MockEc2::new()),
            elb.then(|| Arc::new(MockLoadBalancer::new()) as Arc<dyn LoadBalancer>),
            profile(lb),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_load_balancer_provider_comes_with_a_profile_that_names_one() {
        let both = aws(true, true).expect("paired");
        assert_eq!(both.load_balancer_name(), Some("web-lb"));
        assert!(aws(false, false)
            .expect("neither")
            .load_balancer()
            .is_none());
        assert!(aws(false, true)
            .expect_err("lb without provider")
            .contains("`web-lb`"));
        assert!(aws(true, false)
            .expect_err("provider without lb")
            .contains("names no load balancer"));
    }

    #[test]
    fn a_clone_shares_the_providers() {
        let a = aws(true, true).expect("paired");
        let b = a.clone();
        assert!(Arc::ptr_eq(&a.ec2, &b.ec2));
        assert!(Arc::ptr_eq(&a.profile, &b.profile));
    }
}
