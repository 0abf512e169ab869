//! How an EC2 instance becomes a pyscaler node: its tags, its name, its address.

use pyscaler_core::{Cluster, Node, NodeState};

use crate::{Ec2Profile, Instance, InstanceState};

/// The tag naming the cluster an instance belongs to.
pub const TAG_CLUSTER: &str = "pyscaler:cluster";
/// The tag naming the run that launched an instance.
pub const TAG_RUN: &str = "pyscaler:run";
/// The tag naming the pipeline step that launched an instance.
pub const TAG_STEP: &str = "pyscaler:step";
/// The node tag holding the node's Availability Zone (`us-east-1a`).
///
/// Not an EC2 tag: every node made from an instance ([`DeployEc2Node`](crate::DeployEc2Node),
/// [`discover`](crate::discover)) gets it from EC2's `Placement.AvailabilityZone`,
/// beside the copies of the instance's EC2 tags. A launch over several
/// subnets counts the cluster's nodes per zone by it, and `RemoveEc2Node`
/// keeps the zones balanced by it. A node without it (made by hand) counts
/// as a zone of its own.
pub const TAG_AZ: &str = "pyscaler:az";

/// The Availability Zone of `node` ([`TAG_AZ`]), when known.
pub(crate) fn zone_of(node: &Node) -> Option<&str> {
    node.tags.get(TAG_AZ).map(String::as_str)
}

/// The next free number of `<cluster>-NN` node names (1 for an empty cluster).
pub(crate) fn next_free_number(cluster: &Cluster) -> u32 {
    let prefix = format!("{}-", cluster.name());
    cluster
        .nodes()
        .iter()
        .filter_map(|n| n.name.strip_prefix(&prefix)?.parse::<u32>().ok())
        .max()
        .map_or(1, |n| n.saturating_add(1))
}

/// The `Name` tag of a launch of `count` instances numbered from `first`:
/// `web-03` for one, `web-03..05` for three. EC2 gives every instance of one
/// RunInstances call the same tags; each node's own name comes from the range
/// and its launch index ([`node_name`]).
pub(crate) fn name_tag(cluster: &str, first: u32, count: u32) -> String {
    if count <= 1 {
        format!("{cluster}-{first:02}")
    } else {
        let last = first.saturating_add(count - 1);
        format!("{cluster}-{first:02}..{last:02}")
    }
}

/// The node name of an instance: from its `Name` tag and launch index
/// (`web-03..05` and index 1 give `web-04`), else its instance id.
pub(crate) fn node_name(instance: &Instance) -> String {
    let Some(tag) = instance.tags.get("Name") else {
        return instance.id.clone();
    };
    let Some((prefix, numbers)) = tag.rsplit_once('-') else {
        return tag.clone();
    };
    let first = numbers.split_once("..").map_or(numbers, |(a, _)| a);
    match first.parse::<u32>() {
        Ok(n) if numbers.contains("..") => {
            let width = first.len();
            format!(
                "{prefix}-{:0width$}",
                n.saturating_add(instance.launch_index)
            )
        }
        _ => tag.clone(),
    }
}

/// The node for `instance`, reached as `profile` says. An instance without the
/// address the profile asks for (still pending) gets no address.
pub(crate) fn node_of(instance: &Instance, profile: &Ec2Profile) -> Node {
    let mut node = Node::new(instance.id.clone(), node_name(instance))
        .with_instance_id(instance.id.clone())
        .with_ssh_user(profile.ssh().user.clone())
        .with_state(match instance.state {
            InstanceState::Pending => NodeState::Pending,
            InstanceState::Running => NodeState::Running,
            InstanceState::ShuttingDown | InstanceState::Stopping => NodeState::Stopping,
            InstanceState::Stopped => NodeState::Stopped,
            InstanceState::Terminated => NodeState::Terminated,
            _ => NodeState::Unknown,
        });
    if let Ok(address) = profile.ssh().address_of(instance) {
        node = node.with_address(address);
    }
    if let Some(at) = instance.launched_at {
        node = node.with_launched_at(at);
    }
    for (k, v) in &instance.tags {
        node = node.with_tag(k.clone(), v.clone());
    }
    if let Some(zone) = &instance.availability_zone {
        node = node.with_tag(TAG_AZ, zone.clone());
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(name: &str, index: u32) -> Instance {
        Instance {
            id: format!("i-{index}"),
            launch_index: index,
            tags: [("Name".to_owned(), name.to_owned())].into(),
            ..Instance::default()
        }
    }

    #[test]
    fn names_count_on_from_the_highest_number() {
        let c = Cluster::new("web");
        assert_eq!(next_free_number(&c), 1);
        let c = c.with_nodes([
            Node::new("a", "web-01"),
            Node::new("b", "web-07"),
            Node::new("c", "db-09"),
            Node::new("d", "web-x"),
        ]);
        assert_eq!(next_free_number(&c), 8);
        assert_eq!(name_tag("web", 8, 1), "web-08");
        assert_eq!(name_tag("web", 8, 3), "web-08..10");
    }

    #[test]
    fn each_instance_of_a_batch_gets_its_own_name() {
        assert_eq!(node_name(&tagged("web-08..10", 0)), "web-08");
        assert_eq!(node_name(&tagged("web-08..10", 2)), "web-10");
        assert_eq!(node_name(&tagged("web-08", 0)), "web-08");
        assert_eq!(node_name(&tagged("hand-made", 0)), "hand-made");
        assert_eq!(
            node_name(&Instance {
                id: "i-9".into(),
                ..Instance::default()
            }),
            "i-9"
        );
    }
}
