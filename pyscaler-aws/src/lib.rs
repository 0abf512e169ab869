//! # pyscaler-aws
//!
//! EC2 and load balancer providers for pyscaler, and the actions
//! built on them: [`DeployEc2Node`] launches instances and puts them behind the
//! load balancers (the first two steps of a scale-out), [`RemoveEc2Node`] takes
//! nodes out and terminates them, and [`discover`] rebuilds a cluster from
//! EC2's tags. [`Ec2RunCleanup`] lets the core's `Recovery` undo what a run
//! left on EC2 when its controller died.
//!
//! Providers are roles with our own types in and out: [`Ec2`] ([`SdkEc2`]) and
//! [`LoadBalancer`] (`TargetGroups` for ALB/NLB target groups, feature
//! `elbv2`, and `ClassicElb` for classic ELBs, feature `classic-elb`; both on
//! by default, each one more SDK crate to build), configured by a
//! [`ClientConfig`]. With the `cloudwatch` feature (off by default: one more
//! large SDK crate to build), `CloudWatchSource` is a metric source for
//! pyscaler's threshold triggers over CloudWatch's `GetMetricData`; with
//! `dynamodb`, `DynamoLease` and `DynamoJournal` keep the cluster's lease and
//! a fenced run journal in DynamoDB, for a standby controller. Their
//! errors are one type, [`AwsError`], classified once from the API's error
//! codes ([`kind_of_code`]). Every action, clean-up and discovery is built
//! with one [`Aws`] handle: the providers and the cluster's [`Ec2Profile`],
//! checked to pair once.

mod attempts;
mod aws;
mod cleanup;
mod client;
#[cfg(feature = "cloudwatch")]
mod cloudwatch;
mod codes;
mod console;
mod deploy;
mod discover;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
mod ec2;
#[cfg(feature = "classic-elb")]
mod elb;
#[cfg(feature = "elbv2")]
mod elbv2;
mod error;
mod load_balancer;
mod market;
mod node;
mod profile;
mod remove;
mod sweep;
mod template;
mod terminate;
#[cfg(test)]
mod test_support;
mod wait;

pub use aws::Aws;
pub use cleanup::Ec2RunCleanup;
pub use client::{ClientConfig, StaticCredentials};
#[cfg(feature = "cloudwatch")]
pub use cloudwatch::{CloudWatchMetric, CloudWatchSource, CloudWatchSourceBuilder, Statistic};
pub use codes::{is_capacity_code, kind_of_code};
pub use console::{host_key_fingerprints, FINGERPRINTS_BEGIN, FINGERPRINTS_END};
pub use deploy::{client_token, zone_client_token, DeployEc2Node, DeployEc2NodeBuilder, Launched};
pub use discover::{discover, instances_of_run};
#[cfg(feature = "dynamodb")]
pub use dynamo::{create_table, dynamodb_client, DynamoJournal, DynamoLease};
#[cfg(any(test, feature = "mocks"))]
pub use ec2::MockEc2;
pub use ec2::{Ec2, Instance, InstanceState, LaunchSpec, SdkEc2, Subnet};
#[cfg(feature = "classic-elb")]
pub use elb::ClassicElb;
#[cfg(feature = "elbv2")]
pub use elbv2::TargetGroups;
pub use error::AwsError;
#[cfg(any(test, feature = "mocks"))]
pub use load_balancer::MockLoadBalancer;
pub use load_balancer::{HealthState, InstanceHealth, LoadBalancer};
pub use market::{Market, SpotFallback};
pub use node::{TAG_AZ, TAG_CLUSTER, TAG_RUN, TAG_STEP};
pub use profile::{Balancer, Ec2Profile, Ec2ProfileBuilder, HostKeySource, SshAccess, SshVia};
pub use remove::{Pick, RemoveEc2Node, RemoveEc2NodeBuilder};
pub use sweep::{Orphan, OrphanReason, SweepOrphans, SweepOrphansBuilder, SweepOutcome};
pub use template::{LaunchTemplate, TemplateInfo, TemplateRef, TemplateVersion};
pub use wait::Backoff;
