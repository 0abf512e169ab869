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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::MockEc2;

    #[tokio::test]
    async fn discovery_lists_the_clusters_live_instances_oldest_first() {
        let mut ec2 = MockEc2::new();
        ec2.expect_find_by_tags()
            .withf(|tags, states| {
                tags == [(TAG_CLUSTER.to_owned(), "web".to_owned())]
                    && states == [InstanceState::Pending, InstanceState::Running]
            })
            .times(1)
            .returning(|_, _| {
                let at = |d| Utc.with_ymd_and_hms(2026, 1, d, 0, 0, 0).single();
                Ok(vec![
                    Instance {
                        id: "i-new".into(),
                        state: InstanceState::Pending,
                        launched_at: at(2),
                        tags: [("Name".to_owned(), "web-02..03".to_owned())].into(),
                        launch_index: 1,
                        ..Instance::default()
                    },
                    Instance {
                        id: "i-old".into(),
                        state: InstanceState::Running,
                        launched_at: at(1),
                        private_ip: Some("10.0.0.1".into()),
                        tags: [("Name".to_owned(), "web-01".to_owned())].into(),
                        ..Instance::default()
                    },
                ])
            });
        let profile = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
            .ssh_user("admin")
            .build()
            .expect("profile");
        let cluster = discover(&ec2, "web", &profile).await.expect("discover");
        assert_eq!(cluster.name(), "web");
        let names: Vec<&str> = cluster.nodes().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["web-01", "web-03"]);
        let old = &cluster.nodes()[0];
        assert_eq!(
            old.address.as_ref().map(|a| a.host.as_str()),
            Some("10.0.0.1")
        );
        assert_eq!(old.ssh_user.as_deref(), Some("admin"));
        assert_eq!(old.state, pyscaler_core::NodeState::Running);
        assert!(cluster.nodes()[1].address.is_none(), "pending: no IP yet");
    }

    #[tokio::test]
    async fn a_runs_instances_are_found_by_its_tag() {
        let mut ec2 = MockEc2::new();
        ec2.expect_find_by_tags()
            .withf(|tags, states| {
                tags == [(TAG_RUN.to_owned(), "run-7".to_owned())]
                    && !states.contains(&InstanceState::Terminated)
            })
            .times(1)
            .returning(|_, _| Ok(vec![Instance::default()]));
        let found = instances_of_run(&ec2, &RunId::new("run-7"))
            .await
            .expect("found");
        assert_eq!(found.len(), 1);
    }
}
