//! `ClassicElb`: the [`LoadBalancer`] role on the classic Elastic Load
//! Balancer, feature `classic-elb`.

use async_trait::async_trait;

use crate::attempts::{call, CountAttempts};
use crate::error::Subjects;
use crate::{AwsError, ClientConfig, HealthState, InstanceHealth, LoadBalancer};

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
