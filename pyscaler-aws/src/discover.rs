//! Cluster discovery: rebuilding a cluster's view from EC2's tags, not from memory.

use pyscaler_core::{Cluster, RunId};

use crate::node::{node_of, TAG_CLUSTER, TAG_RUN};
use crate::{AwsError, Ec2, Ec2Profile, Instance, InstanceState};

/// The cluster `name` as EC2 knows it: its pending and running instances
/// tagged `pyscaler:cluster = name`, as nodes reached as `profile` says,
/// oldest first. A restarted controller rebuilds its view with this.
///
/// # Errors
/// The API's refusal, classified.
pub async fn discover(
    ec2: &dyn Ec2,
    name: &str,
    profile: &Ec2Profile,
) -> Result<Cluster, AwsError> {
    let mut instances = ec2
        .find_by_tags(
            &[(TAG_CLUSTER.to_owned(), name.to_owned())],
            &[InstanceState::Pending, InstanceState::Running],
        )
        .await?;
    instances.sort_by(|a, b| {
        a.launched_at
            .cmp(&b.launched_at)
            .then(a.launch_index.cmp(&b.launch_index))
            .then(a.id.cmp(&b.id))
    });
    Ok(Cluster::new(name).with_nodes(instances.iter().map(|i| node_of(i, profile))))
}

/// The instances a run launched (tagged `pyscaler:run = run_id`) that are not
/// terminated: what recovery after a crashed run has to look at.
///
/// # Errors
/// The API's refusal, classified.
pub async fn instances_of_run(ec2: &dyn Ec2, run_id: &RunId) -> Result<Vec<Instance>, AwsError> {
    ec2.find_by_tags(
        &[(TAG_RUN.to_owned(), run_id.to_string())],
        &[
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::Stopping,
            InstanceState::Stopped,
            InstanceState::ShuttingDown,
        ],
    )
    .await
}
