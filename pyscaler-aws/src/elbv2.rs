//! `TargetGroups`: the [`LoadBalancer`] role on an Application or Network
//! Load Balancer's target groups (elbv2), feature `elbv2`.
//!
//! The "load balancer" a call names is the target group's ARN. moto fakes
//! target health: a registered target is `healthy` at once, deregistering
//! goes straight to `unused`, and deregistering an unknown target fails
//! (`InvalidTarget`) where AWS succeeds. The unit tests below give the SDK
//! AWS's own answers on the wire (`initial` -> `healthy`, `unhealthy` with
//! its reason) through `aws-smithy-mocks`.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthDescription};

use crate::attempts::{call, CountAttempts};
use crate::error::Subjects;
use crate::{AwsError, ClientConfig, HealthState, InstanceHealth, LoadBalancer};

/// [`LoadBalancer`] on ALB/NLB target groups, with aws-sdk-elasticloadbalancingv2:
/// the name each call takes is a target group's ARN. Instances are
/// registered on the target group's own port, or on [`with_port`](Self::with_port).
#[derive(Debug, Clone)]
pub struct TargetGroups {
    client: aws_sdk_elasticloadbalancingv2::Client,
    port: Option<u16>,
}

impl TargetGroups {
    /// A client configured by `config` (region, endpoint, credentials, SDK retries).
    pub async fn connect(config: &ClientConfig) -> Self {
        let conf =
            aws_sdk_elasticloadbalancingv2::config::Builder::from(&config.sdk_config().await)
                // Counts the SDK's own retries for the step's report.
                .interceptor(CountAttempts)
                .build();
        Self::from_client(aws_sdk_elasticloadbalancingv2::Client::from_conf(conf))
    }

    pub(crate) fn from_client(client: aws_sdk_elasticloadbalancingv2::Client) -> Self {
        Self { client, port: None }
    }

    /// Registers instances on `port` instead of the target group's own.
    pub fn with_port(mut self, port: Option<u16>) -> Self {
        self.port = port;
        self
    }

    fn targets(&self, ids: &[String]) -> Vec<TargetDescription> {
        ids.iter()
            .map(|id| {
                TargetDescription::builder()
                    .id(id)
                    .set_port(self.port.map(i32::from))
                    .build()
            })
            .collect()
    }
}

impl TargetGroups {
    /// `DescribeTargetHealth` for `ids` (every target when empty).
    async fn describe(
        &self,
        target_group: &str,
        ids: &[String],
    ) -> Result<Vec<TargetHealthDescription>, AwsError> {
        let targets = (!ids.is_empty()).then(|| self.targets(ids));
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(target_group)
            .set_targets(targets)
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "ELBv2",
                    "DescribeTargetHealth",
                    e,
                    &subjects(target_group, ids),
                )
            })?;
        Ok(out.target_health_descriptions().to_vec())
    }
}

fn subjects(target_group: &str, ids: &[String]) -> Subjects {
    Subjects {
        load_balancer: Some(target_group.to_owned()),
        instance_ids: ids.to_vec(),
        ..Subjects::default()
    }
}

/// One target's health as pyscaler says it: `healthy` is InService, every
/// other state out of service, with the state, AWS's reason code and its
/// description (`initial: Elb.InitialHealthChecking: Initial health checks in progress`).
fn health_of(d: &TargetHealthDescription) -> InstanceHealth {
    let id = d
        .target()
        .and_then(|t| t.id())
        .unwrap_or_default()
        .to_owned();
    let health = d.target_health();
    let state = health.and_then(|h| h.state()).map(|s| s.as_str());
    let reason = health.and_then(|h| {
        let parts: Vec<&str> = [h.reason().map(|r| r.as_str()), h.description()]
            .into_iter()
            .flatten()
            .filter(|p| !p.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(": "))
    });
    let (state, reason) = match state {
        Some("healthy") => (HealthState::InService, reason),
        Some(other) => (
            HealthState::OutOfService,
            Some(match reason {
                Some(r) => format!("{other}: {r}"),
                None => other.to_owned(),
            }),
        ),
        None => (HealthState::Unknown, reason),
    };
    InstanceHealth {
        instance_id: id,
        state,
        reason,
    }
}

#[async_trait]
impl LoadBalancer for TargetGroups {
    async fn register(&self, target_group: &str, instance_ids: &[String]) -> Result<(), AwsError> {
        let request = self
            .client
            .register_targets()
            .target_group_arn(target_group)
            .set_targets(Some(self.targets(instance_ids)));
        call(
            "ELBv2",
            "RegisterTargets",
            &subjects(target_group, instance_ids),
            request.send(),
        )
        .await
        .map(|_| ())
    }

    async fn deregister(
        &self,
        target_group: &str,
        instance_ids: &[String],
    ) -> Result<(), AwsError> {
        let request = self
            .client
            .deregister_targets()
            .target_group_arn(target_group)
            .set_targets(Some(self.targets(instance_ids)));
        let result = call(
            "ELBv2",
            "DeregisterTargets",
            &subjects(target_group, instance_ids),
            request.send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            // AWS answers success for a target the group does not hold; moto
            // answers InvalidTarget. So a retried call whose first answer was
            // lost after it took effect fails against moto: the targets are
            // gone, which is what was asked. Done when the group confirms it.
            Err(e) if e.code() == Some("InvalidTarget") => {
                let held = self.describe(target_group, &[]).await?;
                let still = held.iter().any(|d| {
                    let id = d.target().and_then(|t| t.id()).unwrap_or_default();
                    let state = d
                        .target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str());
                    instance_ids.iter().any(|i| i == id) && state != Some("draining")
                });
                if still {
                    Err(e)
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn health(
        &self,
        target_group: &str,
        instance_ids: &[String],
    ) -> Result<Vec<InstanceHealth>, AwsError> {
        Ok(self
            .describe(target_group, instance_ids)
            .await?
            .iter()
            .map(health_of)
            .collect())
    }

    async fn draining_timeout(&self, target_group: &str) -> Result<Option<Duration>, AwsError> {
        let out = self
            .client
            .describe_target_group_attributes()
            .target_group_arn(target_group)
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "ELBv2",
                    "DescribeTargetGroupAttributes",
                    e,
                    &subjects(target_group, &[]),
                )
            })?;
        Ok(out
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs))
    }

    async fn draining(
        &self,
        target_group: &str,
        instance_ids: &[String],
    ) -> Result<Vec<String>, AwsError> {
        use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum as State;
        Ok(self
            .describe(target_group, instance_ids)
            .await?
            .iter()
            .filter(|d| {
                matches!(
                    d.target_health().and_then(|h| h.state()),
                    Some(State::Draining | State::UnhealthyDraining)
                )
            })
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_owned))
            .collect())
    }

    async fn exists(&self, target_group: &str) -> Result<bool, AwsError> {
        let asked = self
            .client
            .describe_target_groups()
            .target_group_arns(target_group)
            .send()
            .await;
        match asked {
            Ok(out) => Ok(!out.target_groups().is_empty()),
            Err(e) => {
                let e = AwsError::from_sdk(
                    "ELBv2",
                    "DescribeTargetGroups",
                    e,
                    &subjects(target_group, &[]),
                );
                if e.has_code("TargetGroupNotFound") {
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
