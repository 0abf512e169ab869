//! The `LoadBalancer` provider role and `ClassicElb`, its implementation on the
//! classic Elastic Load Balancer.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
}

/// [`LoadBalancer`] on the classic Elastic Load Balancer, with aws-sdk-elasticloadbalancing.
#[derive(Debug, Clone)]
pub struct ClassicElb {
    client: aws_sdk_elasticloadbalancing::Client,
}

impl ClassicElb {
    /// A client configured by `config` (region, endpoint, credentials, SDK retries).
    pub async fn connect(config: &ClientConfig) -> Self {
        Self::from_client(aws_sdk_elasticloadbalancing::Client::new(
            &config.sdk_config().await,
        ))
    }

    pub(crate) fn from_client(client: aws_sdk_elasticloadbalancing::Client) -> Self {
        Self { client }
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
        self.client
            .register_instances_with_load_balancer()
            .load_balancer_name(load_balancer)
            .set_instances(Some(sdk_instances(instance_ids)))
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "ELB",
                    "RegisterInstancesWithLoadBalancer",
                    e,
                    &subjects(load_balancer, instance_ids),
                )
            })?;
        Ok(())
    }

    async fn deregister(
        &self,
        load_balancer: &str,
        instance_ids: &[String],
    ) -> Result<(), AwsError> {
        self.client
            .deregister_instances_from_load_balancer()
            .load_balancer_name(load_balancer)
            .set_instances(Some(sdk_instances(instance_ids)))
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "ELB",
                    "DeregisterInstancesFromLoadBalancer",
                    e,
                    &subjects(load_balancer, instance_ids),
                )
            })?;
        Ok(())
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
