//! The `LoadBalancer` provider role and `ClassicElb`, its implementation on the
//! classic Elastic Load Balancer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::attempts::{call, CountAttempts};
use crate::error::Subjects;
use crate::{AwsError, ClientConfig};

/// Whether a load balancer sends traffic to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HealthState {
    /// Passing its health checks: gets traffic.
    InService,
    /// Failing its health checks (or still starting).
    OutOfService,
    /// The load balancer cannot tell.
    Unknown,
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InService => "InService",
            Self::OutOfService => "OutOfService",
            Self::Unknown => "Unknown",
        })
    }
}

/// The health of one registered instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceHealth {
    /// The instance.
    pub instance_id: String,
    /// Its state.
    pub state: HealthState,
    /// Why, when the load balancer says (`Instance has failed at least the
    /// UnhealthyThreshold number of health checks consecutively.`).
    pub reason: Option<String>,
}

/// The load balancer role: register, deregister, health, and whether one exists.
///
/// [`ClassicElb`] implements it; `MockLoadBalancer` (feature `mocks`) stands in for it in tests.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LoadBalancer: Send + Sync {
    /// Registers the instances with `load_balancer`, in one call.
    ///
    /// # Errors
    /// `LoadBalancerNotFound` (bad input) and the API's other refusals, classified.
    async fn register(&self, load_balancer: &str, instance_ids: &[String]) -> Result<(), AwsError>;

    /// Deregisters the instances from `load_balancer`, in one call. Deregistering an
    /// instance that is not registered is no error.
    ///
    /// # Errors
    /// The API's refusals, classified.
    async fn deregister(
        &self,
        load_balancer: &str,
        instance_ids: &[String],
    ) -> Result<(), AwsError>;

    /// The health of these instances (of every registered instance when empty).
    ///
    /// # Errors
    /// The API's refusals, classified.
    async fn health(
        &self,
        load_balancer: &str,
        instance_ids: &[String],
    ) -> Result<Vec<InstanceHealth>, AwsError>;

    /// Whether a load balancer of this name exists. The default asks for its
    /// instances' health; [`ClassicElb`] asks `DescribeLoadBalancers`.
    ///
    /// # Errors
    /// The API's refusals other than `LoadBalancerNotFound`, classified.
    async fn exists(&self, load_balancer: &str) -> Result<bool, AwsError> {
        match self.health(load_balancer, &[]).await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("LoadBalancerNotFound") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How long the load balancer keeps serving a deregistered instance's
    /// open connections, when it says (a target group's
    /// `deregistration_delay.timeout_seconds`); `None` (the default, and the
    /// classic ELB's answer) when it cannot be asked.
    ///
    /// # Errors
    /// The API's refusals, classified.
    async fn draining_timeout(&self, load_balancer: &str) -> Result<Option<Duration>, AwsError> {
        let _ = load_balancer;
        Ok(None)
    }

    /// Of `instance_ids`, deregistered, those the load balancer is still
    /// draining. The default says none.
    ///
    /// # Errors
    /// The API's refusals, classified.
    async fn draining(
        &self,
        load_balancer: &str,
        instance_ids: &[String],
    ) -> Result<Vec<String>, AwsError> {
        let _ = (load_balancer, instance_ids);
        Ok(Vec::new())
    }
}

/// [`LoadBalancer`] on the classic Elastic Load Balancer, with aws-sdk-elasticloadbalancing.
#[derive(Debug, Clone)]
pub struct ClassicElb {
    client: aws_sdk_elasticloadbalancing::Client,
}

impl ClassicElb {
    /// A client configured by `config` (region, endpoint, credentials, SDK retries).
    pub async fn connect(config: &ClientConfig) -> Self {
        let conf = aws_sdk_elasticloadbalancing::config::Builder::from(&config.sdk_config().await)
            // Counts the SDK's own retries for the step's report.
            .interceptor(CountAttempts)
            .build();
        Self::from_client(aws_sdk_elasticloadbalancing::Client::from_conf(conf))
    }

    pub(crate) fn from_client(client: aws_sdk_elasticloadbalancing::Client) -> Self {
        Self { client }
    }
}

/// A load balancer provider and the name of the load balancer it is used for.
pub(crate) type Paired = (Arc<dyn LoadBalancer>, String);

/// The load balancer provider and the name of the load balancer a profile
/// names: the one place the two are checked to come together ([`crate::Aws::new`]).
///
/// # Errors
/// [`AwsError::InvalidSetting`] when the profile names a load balancer and no
/// provider is given, or the reverse.
pub(crate) fn pair(
    elb: Option<Arc<dyn LoadBalancer>>,
    load_balancer: Option<&str>,
) -> Result<Option<Paired>, AwsError> {
    match (elb, load_balancer) {
        (Some(elb), Some(lb)) => Ok(Some((elb, lb.to_owned()))),
        (None, None) => Ok(None),
        (None, lb) => Err(unpaired(lb)),
        (Some(_), None) => Err(unpaired(None)),
    }
}

/// The error for a load balancer without a provider (`Some(name)`), or a provider without one.
fn unpaired(load_balancer: Option<&str>) -> AwsError {
    match load_balancer {
        Some(lb) => AwsError::invalid(
            "load balancer",
            format!("the profile names `{lb}` but no LoadBalancer provider was given"),
        ),
        None => AwsError::invalid(
            "load balancer",
            "a LoadBalancer provider was given but the profile names no load balancer",
        ),
    }
}

fn sdk_instances(ids: &[String]) -> Vec<aws_sdk_elasticloadbalancing::types::Instance> {
    ids.iter()
        .map(|id| {
            aws_sdk_elasticloadbalancing::types::Instance::builder()
                .instance_id(id)
                .build()
        })
        .collect()
}

fn subjects(load_balancer: &str, ids: &[String]) -> Subjects {
    Subjects {
        load_balancer: Some(load_balancer.to_owned()),
        instance_ids: ids.to_vec(),
        ..Subjects::default()
    }
}

#[async_trait]
impl LoadBalancer for ClassicElb {
    async fn register(&self, load_balancer: &str, instance_ids: &[String]) -> Result<(), AwsError> {
        let request = self
            .client
            .register_instances_with_load_balancer()
            .load_balancer_name(load_balancer)
            .set_instances(Some(sdk_instances(instance_ids)));
        call(
            "ELB",
            "RegisterInstancesWithLoadBalancer",
            &subjects(load_balancer, instance_ids),
            request.send(),
        )
        .await
        .map(|_| ())
    }

    async fn deregister(
        &self,
        load_balancer: &str,
        instance_ids: &[String],
    ) -> Result<(), AwsError> {
        let request = self
            .client
            .deregister_instances_from_load_balancer()
            .load_balancer_name(load_balancer)
            .set_instances(Some(sdk_instances(instance_ids)));
        call(
            "ELB",
            "DeregisterInstancesFromLoadBalancer",
            &subjects(load_balancer, instance_ids),
            request.send(),
        )
        .await
        .map(|_| ())
    }

    async fn health(
        &self,
        load_balancer: &str,
        instance_ids: &[String],
    ) -> Result<Vec<InstanceHealth>, AwsError> {
        let out = self
            .client
            .describe_instance_health()
            .load_balancer_name(load_balancer)
            .set_instances((!instance_ids.is_empty()).then(|| sdk_instances(instance_ids)))
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "ELB",
                    "DescribeInstanceHealth",
                    e,
                    &subjects(load_balancer, instance_ids),
                )
            })?;
        Ok(out
            .instance_states()
            .iter()
            .map(|s| InstanceHealth {
                instance_id: s.instance_id().unwrap_or_default().to_owned(),
                state: match s.state() {
                    Some("InService") => HealthState::InService,
                    Some("OutOfService") => HealthState::OutOfService,
                    _ => HealthState::Unknown,
                },
                reason: s
                    .description()
                    .or(s.reason_code())
                    .filter(|d| !d.is_empty() && *d != "N/A")
                    .map(str::to_owned),
            })
            .collect())
    }

    async fn exists(&self, load_balancer: &str) -> Result<bool, AwsError> {
        let asked = self
            .client
            .describe_load_balancers()
            .load_balancer_names(load_balancer)
            .send()
            .await;
        match asked {
            Ok(out) => Ok(!out.load_balancer_descriptions().is_empty()),
            Err(e) => {
                let e = AwsError::from_sdk(
                    "ELB",
                    "DescribeLoadBalancers",
                    e,
                    &subjects(load_balancer, &[]),
                );
                // `LoadBalancerNotFound` (the SDK's AccessPointNotFoundException): no such name.
                if e.code() == Some("LoadBalancerNotFound") {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
