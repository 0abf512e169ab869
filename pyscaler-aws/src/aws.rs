//! `Aws`: the one handle every AWS action, clean-up and discovery is built with.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::terminate::deregister_and_terminate;
use crate::wait::Backoff;
use crate::{AwsError, Balancer, ClientConfig, Ec2, Ec2Profile, LoadBalancer, SdkEc2};

/// The AWS provider family of one cluster: EC2, the load balancers its
/// profile names (classic ELBs and ALB/NLB target groups, any number; a node
/// joins each), and the profile itself.
///
/// Validated once, when made: every load balancer the profile names comes
/// with a [`LoadBalancer`] provider, and a provider only with a profile that
/// names one. Cheap to clone (like reqwest's `Client`): every action takes `&Aws` and
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
/// With other providers (mocks in a test, say), [`Aws::new`] or
/// [`Aws::with_load_balancers`] checks them against the profile.
#[derive(Clone)]
pub struct Aws {
    pub(crate) ec2: Arc<dyn Ec2>,
    /// One provider for each load balancer of the profile, in its order.
    pub(crate) elbs: Vec<Paired>,
    pub(crate) profile: Arc<Ec2Profile>,
}

/// A load balancer provider and the name (or ARN) of the load balancer it is used for.
pub(crate) type Paired = (Arc<dyn LoadBalancer>, String);

impl fmt::Debug for Aws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aws")
            .field("profile", &self.profile)
            .field("load_balancers", &self.load_balancer_names())
            .finish_non_exhaustive()
    }
}

impl Aws {
    /// The handle for these providers and `profile`: `elb`, when given,
    /// serves every load balancer the profile names (one provider that
    /// answers for each, as a mock in a test does). The provider is used as
    /// given: for a target group on another port than its own, give a
    /// `TargetGroups::with_port`, as [`connect`](Self::connect) does.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] when the profile names a load balancer and
    /// no provider is given, or a provider is given and the profile names none.
    pub fn new(
        ec2: Arc<dyn Ec2>,
        elb: Option<Arc<dyn LoadBalancer>>,
        profile: Ec2Profile,
    ) -> Result<Self, AwsError> {
        let names = profile.load_balancers().len();
        let elbs = match elb {
            Some(elb) => vec![elb; names.max(1)],
            None => Vec::new(),
        };
        Self::with_load_balancers(ec2, elbs, profile)
    }

    /// The handle with one provider for each load balancer the profile
    /// names, in the profile's order.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] when there are not as many providers as
    /// load balancers, naming the first without one (or saying the profile
    /// names fewer).
    pub fn with_load_balancers(
        ec2: Arc<dyn Ec2>,
        elbs: Vec<Arc<dyn LoadBalancer>>,
        profile: Ec2Profile,
    ) -> Result<Self, AwsError> {
        let elbs = pair(elbs, profile.load_balancers())?;
        Ok(Self {
            ec2,
            elbs,
            profile: Arc::new(profile),
        })
    }

    /// The SDK providers for `profile`, configured by `config`: [`SdkEc2`],
    /// one `ClassicElb` client (feature `classic-elb`) for the classic load
    /// balancers the profile names, and one `TargetGroups` client (feature
    /// `elbv2`) for its target groups, on each one's port (so the pairs are
    /// right by construction).
    pub async fn connect(config: &ClientConfig, profile: Ec2Profile) -> Self {
        let mut elbs = Vec::new();
        let mut classic = None;
        let mut groups = None;
        for balancer in profile.load_balancers() {
            let provider = match balancer {
                Balancer::Classic { name } => {
                    if classic.is_none() {
                        classic = classic_elb(config).await;
                    }
                    classic.clone().map(|c| (c, name.clone()))
                }
                Balancer::TargetGroup { arn, port } => {
                    if groups.is_none() {
                        groups = Some(target_groups(config).await);
                    }
                    groups
                        .as_ref()
                        .and_then(|connect| connect(*port))
                        .map(|g| (g, arn.clone()))
                }
            };
            // Without the feature for its kind, the profile was refused
            // when it was made ([`Ec2Profile`]'s validation).
            elbs.extend(provider);
        }
        Self {
            ec2: Arc::new(SdkEc2::connect(config).await),
            elbs,
            profile: Arc::new(profile),
        }
    }

    /// The EC2 provider.
    pub fn ec2(&self) -> &dyn Ec2 {
        self.ec2.as_ref()
    }

    /// The load balancers the profile names, each with its provider, in the
    /// profile's order.
    pub fn load_balancers(&self) -> impl Iterator<Item = (&dyn LoadBalancer, &str)> + '_ {
        self.elbs
            .iter()
            .map(|(elb, lb)| (elb.as_ref(), lb.as_str()))
    }

    /// The names (or ARNs) of the load balancers the profile names.
    pub fn load_balancer_names(&self) -> Vec<&str> {
        self.elbs.iter().map(|(_, lb)| lb.as_str()).collect()
    }

    /// The load balancers named for a person: `web-lb` or `web-lb and
    /// arn:...`; `None` without any.
    pub(crate) fn load_balancers_text(&self) -> Option<String> {
        match self.load_balancer_names().as_slice() {
            [] => None,
            [one] => Some((*one).to_owned()),
            [init @ .., last] => Some(format!("{} and {last}", init.join(", "))),
        }
    }

    /// The cluster's machine profile.
    pub fn profile(&self) -> &Ec2Profile {
        &self.profile
    }

    /// Takes `ids` out of the profile's load balancers (when `registered`),
    /// waits while they drain them (when they were in them: `registered`, or
    /// `withdrawn` earlier), terminates them and waits until they are gone
    /// ([`deregister_and_terminate`]): a failed deregistration comes back as
    /// `Ok(Some(error))`, after the termination.
    pub(crate) async fn retire(
        &self,
        (registered, withdrawn): (bool, bool),
        poll: &Backoff,
        within: Duration,
        ids: &[String],
    ) -> pyscaler_core::Result<Option<AwsError>> {
        let drain = registered || withdrawn;
        let elbs: Vec<_> = if drain {
            self.load_balancers().collect()
        } else {
            Vec::new()
        };
        deregister_and_terminate(self.ec2(), &elbs, (registered, drain), poll, within, ids).await
    }
}

/// Pairs providers with the profile's load balancers: the one place the two
/// are checked to come together.
///
/// # Errors
/// [`AwsError::InvalidSetting`] when the counts differ, naming the first
/// load balancer without a provider.
fn pair(elbs: Vec<Arc<dyn LoadBalancer>>, balancers: &[Balancer]) -> Result<Vec<Paired>, AwsError> {
    if let Some(missing) = balancers.get(elbs.len()) {
        return Err(AwsError::invalid(
            "load balancer",
            format!(
                "the profile names `{}` but no LoadBalancer provider was given for it",
                missing.name()
            ),
        ));
    }
    if elbs.len() > balancers.len() {
        let message = if balancers.is_empty() {
            "a LoadBalancer provider was given but the profile names no load balancer".to_owned()
        } else {
            format!(
                "{} LoadBalancer providers were given for the profile's {} load balancers",
                elbs.len(),
                balancers.len()
            )
        };
        return Err(AwsError::invalid("load balancer", message));
    }
    Ok(elbs
        .into_iter()
        .zip(balancers)
        .map(|(elb, b)| (elb, b.name().to_owned()))
        .collect())
}

/// The classic ELB provider (feature `classic-elb`).
#[cfg(feature = "classic-elb")]
async fn classic_elb(config: &ClientConfig) -> Option<Arc<dyn LoadBalancer>> {
    Some(Arc::new(crate::ClassicElb::connect(config).await))
}

/// Without the `classic-elb` feature there is none: a profile naming a
/// classic load balancer was refused when it was made.
#[cfg(not(feature = "classic-elb"))]
async fn classic_elb(_config: &ClientConfig) -> Option<Arc<dyn LoadBalancer>> {
    None
}

/// Makes a target group provider on a port.
type OnPort = Box<dyn Fn(Option<u16>) -> Option<Arc<dyn LoadBalancer>> + Send + Sync>;

/// One target group client, and a provider on each port from it.
#[cfg(feature = "elbv2")]
async fn target_groups(config: &ClientConfig) -> OnPort {
    let groups = crate::TargetGroups::connect(config).await;
    Box::new(move |port| Some(Arc::new(groups.clone().with_port(port)) as Arc<dyn LoadBalancer>))
}

/// Without the `elbv2` feature there is none: a profile naming a target
/// group was refused when it was made.
#[cfg(not(feature = "elbv2"))]
async fn target_groups(_config: &ClientConfig) -> OnPort {
    Box::new(|_| None)
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
        assert_eq!(both.load_balancer_names(), ["web-lb"]);
        assert!(aws(false, false)
            .expect("neither")
            .load_balancers()
            .next()
            .is_none());
        assert!(aws(false, true)
            .expect_err("lb without provider")
            .contains("`web-lb`"));
        assert!(aws(true, false)
            .expect_err("provider without lb")
            .contains("names no load balancer"));
    }

    #[test]
    fn each_load_balancer_of_the_profile_has_its_own_provider_or_one_serves_all() {
        let arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123";
        let two = || {
            Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
                .target_group(arn)
                .load_balancer("web-lb")
                .build()
                .expect("profile")
        };
        let lb = || Arc::new(MockLoadBalancer::new()) as Arc<dyn LoadBalancer>;
        let ec2 = || Arc::new(MockEc2::new()) as Arc<dyn Ec2>;
        // One provider given to `new` serves both.
        let shared = Aws::new(ec2(), Some(lb()), two()).expect("one for all");
        assert_eq!(shared.load_balancer_names(), [arn, "web-lb"]);
        assert_eq!(
            shared.load_balancers_text().as_deref(),
            Some(format!("{arn} and web-lb").as_str())
        );
        // One each, in the profile's order; one short names the one without.
        Aws::with_load_balancers(ec2(), vec![lb(), lb()], two()).expect("one each");
        let short = Aws::with_load_balancers(ec2(), vec![lb()], two()).expect_err("one short");
        assert!(short.to_string().contains("`web-lb`"), "{short}");
        let more = Aws::with_load_balancers(ec2(), vec![lb(), lb(), lb()], two())
            .expect_err("one too many");
        assert!(
            more.to_string().contains("3 LoadBalancer providers"),
            "{more}"
        );
    }

    #[test]
    fn a_clone_shares_the_providers() {
        let a = aws(true, true).expect("paired");
        let b = a.clone();
        assert!(Arc::ptr_eq(&a.ec2, &b.ec2));
        assert!(Arc::ptr_eq(&a.profile, &b.profile));
    }
}
