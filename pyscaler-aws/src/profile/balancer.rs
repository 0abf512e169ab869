//! `Balancer`: one load balancer a profile's nodes join, a classic ELB or an
//! ALB/NLB target group.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::AwsError;

/// One load balancer new nodes join: the profile's `load_balancers` list
/// holds one or more, and a node is registered with each.
///
/// In TOML, `{ classic = "web-lb" }` or `{ target_group = "arn:...", port = 8080 }`:
///
/// ```
/// # fn main() -> Result<(), pyscaler_aws::AwsError> {
/// use pyscaler_aws::{Balancer, Ec2Profile};
///
/// let profile = Ec2Profile::from_toml(r#"
///     region = "eu-west-1"
///     image_id = "ami-0abcdef1234567890"
///     instance_type = "t3.small"
///     load_balancers = [
///         { target_group = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef", port = 8080 },
///         { classic = "web-lb" },
///     ]
/// "#)?;
/// assert_eq!(profile.load_balancers()[1], Balancer::classic("web-lb"));
/// assert_eq!(profile.load_balancers()[0].port(), Some(8080));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Entry", into = "Entry")]
#[non_exhaustive]
pub enum Balancer {
    /// A classic Elastic Load Balancer, by name (feature `classic-elb`).
    Classic {
        /// Its name (`web-lb`).
        name: String,
    },
    /// An Application or Network Load Balancer's target group, by ARN
    /// (feature `elbv2`).
    TargetGroup {
        /// Its ARN (`arn:aws:elasticloadbalancing:...:targetgroup/...`).
        arn: String,
        /// The port the target group sends the nodes traffic to, when not its own.
        port: Option<u16>,
    },
}

impl Balancer {
    /// A classic load balancer.
    pub fn classic(name: impl Into<String>) -> Self {
        Self::Classic { name: name.into() }
    }

    /// A target group on its own port.
    pub fn target_group(arn: impl Into<String>) -> Self {
        Self::TargetGroup {
            arn: arn.into(),
            port: None,
        }
    }

    /// A target group on `port` instead of its own.
    pub fn target_group_on_port(arn: impl Into<String>, port: u16) -> Self {
        Self::TargetGroup {
            arn: arn.into(),
            port: Some(port),
        }
    }

    /// What the API calls take: the classic load balancer's name or the
    /// target group's ARN.
    pub fn name(&self) -> &str {
        match self {
            Self::Classic { name } => name,
            Self::TargetGroup { arn, .. } => arn,
        }
    }

    /// The port a target group sends traffic to, when set (a classic load
    /// balancer: none).
    pub fn port(&self) -> Option<u16> {
        match self {
            Self::Classic { .. } => None,
            Self::TargetGroup { port, .. } => *port,
        }
    }

    /// Whether this is a classic load balancer.
    pub fn is_classic(&self) -> bool {
        matches!(self, Self::Classic { .. })
    }

    /// Checks the name (or ARN) and the port, and that this build of
    /// pyscaler-aws has the provider for its kind.
    pub(super) fn validate(&self) -> Result<(), AwsError> {
        match self {
            Self::Classic { name } => {
                if !cfg!(feature = "classic-elb") {
                    return Err(AwsError::invalid(
                        "load_balancers",
                        format!(
                            "the classic load balancer `{name}` needs pyscaler-aws's \
                             `classic-elb` feature (on by default)"
                        ),
                    ));
                }
                if name.is_empty()
                    || name.len() > 32
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    return Err(AwsError::invalid(
                        "load_balancer",
                        format!(
                            "`{name}` is not a classic load balancer name (1-32 letters, digits, hyphens)"
                        ),
                    ));
                }
            }
            Self::TargetGroup { arn, port } => {
                if !cfg!(feature = "elbv2") {
                    return Err(AwsError::invalid(
                        "target_group",
                        "needs pyscaler-aws's `elbv2` feature (on by default)",
                    ));
                }
                if !arn.starts_with("arn:") || !arn.contains(":targetgroup/") {
                    return Err(AwsError::invalid(
                        "target_group",
                        format!("`{arn}` is not a target group ARN (arn:aws:elasticloadbalancing:...:targetgroup/...)"),
                    ));
                }
                if *port == Some(0) {
                    return Err(AwsError::invalid("target_port", "is 0"));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Balancer {
    /// `classic load balancer web-lb`, `target group arn:...` (`:8080`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Classic { name } => write!(f, "classic load balancer {name}"),
            Self::TargetGroup { arn, port: None } => write!(f, "target group {arn}"),
            Self::TargetGroup {
                arn,
                port: Some(port),
            } => write!(f, "target group {arn} (port {port})"),
        }
    }
}

/// One entry as written: one of `classic` and `target_group`, and `port`
/// only beside a target group.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

impl TryFrom<Entry> for Balancer {
    type Error = AwsError;
    fn try_from(e: Entry) -> Result<Self, AwsError> {
        match (e.classic, e.target_group, e.port) {
            (Some(name), None, None) => Ok(Self::Classic { name }),
            (None, Some(arn), port) => Ok(Self::TargetGroup { arn, port }),
            (Some(name), None, Some(_)) => Err(AwsError::invalid(
                "load_balancers",
                format!("`port` is set beside the classic load balancer `{name}`: a port is for a target group"),
            )),
            (Some(_), Some(_), _) => Err(AwsError::invalid(
                "load_balancers",
                "an entry names `classic` and `target_group`: one each entry",
            )),
            (None, None, _) => Err(AwsError::invalid(
                "load_balancers",
                "an entry names neither `classic = \"name\"` nor `target_group = \"arn:...\"`",
            )),
        }
    }
}

impl From<Balancer> for Entry {
    fn from(b: Balancer) -> Self {
        match b {
            Balancer::Classic { name } => Self {
                classic: Some(name),
                target_group: None,
                port: None,
            },
            Balancer::TargetGroup { arn, port } => Self {
                classic: None,
                target_group: Some(arn),
                port,
            },
        }
    }
}
