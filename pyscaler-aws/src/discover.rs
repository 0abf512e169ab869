//! Cluster discovery: rebuilding a cluster's view from EC2's tags and the
//! journal, not from memory.

use pyscaler_core::{Cluster, RunId, RunRecord};
use tracing::info;

use crate::node::{node_name, node_of, TAG_CLUSTER, TAG_RUN};
use crate::{Aws, AwsError, Instance, InstanceState};

/// The cluster `name` as EC2 and the journal know it: its pending and running
/// instances tagged `pyscaler:cluster = name` whose run succeeded, as nodes
/// reached as `aws`'s profile says, oldest first. A restarted controller rebuilds
/// its view with this, from the journal's runs (`journal.runs().await?`).
///
/// The journal is authoritative: an instance whose `pyscaler:run` is a run
/// that did not succeed (unfinished, failed, cancelled, recovered), or that the
/// journal does not know, is never a member, whatever its other tags (it is
/// the orphan sweep's, and recovery's). Tags alone cannot say it: a launch is
/// tagged from its first moment, long before its run knows whether it will
/// succeed. An instance with the cluster tag and no run tag was not launched
/// by pyscaler (an operator's), and is a member.
///
/// # Errors
/// The API's refusal, classified.
pub async fn discover(aws: &Aws, name: &str, runs: &[RunRecord]) -> Result<Cluster, AwsError> {
    let mut instances = aws
        .ec2()
        .find_by_tags(
            &[(TAG_CLUSTER.to_owned(), name.to_owned())],
            &[InstanceState::Pending, InstanceState::Running],
        )
        .await?;
    instances.retain(|i| {
        let run = i.tags.get(TAG_RUN).filter(|r| !r.is_empty());
        let member = run.is_none_or(|run| {
            runs.iter()
                .any(|r| r.run_id.as_str() == run && r.succeeded())
        });
        if !member {
            info!(cluster = name, instance = %i.id, node = %node_name(i), run = ?run,
                "Not a member: its run did not succeed (or the journal does not know it).");
        }
        member
    });
    instances.sort_by(|a, b| {
        a.launched_at
            .cmp(&b.launched_at)
            .then(a.launch_index.cmp(&b.launch_index))
            .then(a.id.cmp(&b.id))
    });
    Ok(Cluster::new(name).with_nodes(instances.iter().map(|i| node_of(i, aws.profile()))))
}

/// The instances a run launched (tagged `pyscaler:run = run_id`) that are not
/// terminated: what recovery after a crashed run has to look at.
///
/// # Errors
/// The API's refusal, classified.
pub async fn instances_of_run(aws: &Aws, run_id: &RunId) -> Result<Vec<Instance>, AwsError> {
    aws.ec2()
        .find_by_tags(
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
    use pyscaler_core::{RunState, RunStatus};

    use super::*;

    fn run(id: &str, state: RunState) -> RunRecord {
        RunRecord {
            run_id: RunId::new(id),
            pipeline: "scale-out".into(),
            cluster: "web".into(),
            trigger: None,
            started_at: Utc::now(),
            state,
            steps: Vec::new(),
            new_nodes: Vec::new(),
            steps_ended: None,
        }
    }
    use crate::{Ec2Profile, MockEc2};

    fn profile() -> Ec2Profile {
        Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
            .build()
            .expect("profile")
    }

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
                        tags: [
                            ("Name".to_owned(), "web-02..03".to_owned()),
                            (TAG_RUN.to_owned(), "run-ok".to_owned()),
                        ]
                        .into(),
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
        let runs = [run("run-ok", RunState::Finished(RunStatus::Succeeded))];
        let aws = Aws::new(std::sync::Arc::new(ec2), None, profile).expect("aws");
        let cluster = discover(&aws, "web", &runs).await.expect("discover");
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
    async fn only_instances_of_runs_that_succeeded_are_members() {
        let mut ec2 = MockEc2::new();
        ec2.expect_find_by_tags().returning(|_, _| {
            let of = |id: &str, name: &str, run: Option<&str>| {
                let mut tags =
                    std::collections::BTreeMap::from([("Name".to_owned(), name.to_owned())]);
                if let Some(run) = run {
                    tags.insert(TAG_RUN.to_owned(), run.to_owned());
                }
                Instance {
                    id: id.into(),
                    state: InstanceState::Running,
                    tags,
                    ..Instance::default()
                }
            };
            Ok(vec![
                of("i-ok", "web-01", Some("run-ok")),
                of("i-dead", "web-02", Some("run-dead")),
                of("i-failed", "web-03", Some("run-failed")),
                of("i-recovered", "web-04", Some("run-recovered")),
                of("i-unknown", "web-05", Some("run-unknown")),
                of("i-hand-made", "web-hand", None),
            ])
        });
        let runs = [
            run("run-ok", RunState::Finished(RunStatus::Succeeded)),
            run("run-dead", RunState::Unfinished),
            run("run-failed", RunState::Finished(RunStatus::Failed)),
            run("run-recovered", RunState::Recovered { succeeded: true }),
        ];
        let profile = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
            .build()
            .expect("profile");
        let aws = Aws::new(std::sync::Arc::new(ec2), None, profile).expect("aws");
        let cluster = discover(&aws, "web", &runs).await.expect("discover");
        let names: Vec<&str> = cluster.nodes().iter().map(|n| n.name.as_str()).collect();
        // Oldest first; with no launch times, by instance id.
        assert_eq!(names, ["web-hand", "web-01"]);
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
        let aws = Aws::new(std::sync::Arc::new(ec2), None, profile()).expect("aws");
        let found = instances_of_run(&aws, &RunId::new("run-7"))
            .await
            .expect("found");
        assert_eq!(found.len(), 1);
    }
}
