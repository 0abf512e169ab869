//! The `LoadBalancer` provider role: what pyscaler asks of a load balancer,
//! whichever kind ([`ClassicElb`](crate::ClassicElb), feature `classic-elb`;
//! `TargetGroups`, feature `elbv2`).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::AwsError;

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
/// `ClassicElb` (feature `classic-elb`) and `TargetGroups` (feature `elbv2`)
/// implement it; `MockLoadBalancer` (feature `mocks`) stands in for it in tests.
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
    /// instances' health; `ClassicElb` asks `DescribeLoadBalancers`.
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
