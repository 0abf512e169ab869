//! Which nodes a scale-in removes: the Availability Zones kept balanced
//! first (as AWS Auto Scaling's default termination policy does), then the
//! newest or the oldest within a zone.

use std::collections::VecDeque;

use pyscaler_core::Node;

use crate::node::zone_of;

/// Which end of the launch order goes first within a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// The most recently launched first.
    Newest,
    /// The longest-running first.
    Oldest,
}

/// A zone (none: not known) and its candidates, each with its rank in the order.
type Zone = (Option<String>, VecDeque<(usize, Node)>);

/// `n` nodes to remove from `candidates` (or all of them, when fewer):
/// repeatedly the zone with the most candidates left loses one, its newest
/// (or oldest) node. Between zones with as many left, the one whose next
/// node comes first in that order loses it. Nodes without a known zone
/// ([`TAG_AZ`](crate::TAG_AZ)) count as one zone of their own; when no node
/// has a zone this is plain newest / oldest first.
pub(super) fn victims(candidates: Vec<Node>, n: usize, order: Order) -> Vec<Node> {
    let mut sorted = candidates;
    // Oldest first; nodes with no launch time count as oldest.
    sorted.sort_by(|a, b| a.launched_at.cmp(&b.launched_at).then(a.name.cmp(&b.name)));
    if order == Order::Newest {
        sorted.reverse();
    }
    // Each zone's nodes, in that order, with their rank in it.
    let mut zones: Vec<Zone> = Vec::new();
    for (rank, node) in sorted.into_iter().enumerate() {
        let zone = zone_of(&node).map(str::to_owned);
        match zones.iter_mut().find(|(z, _)| *z == zone) {
            Some((_, nodes)) => nodes.push_back((rank, node)),
            None => zones.push((zone, VecDeque::from([(rank, node)]))),
        }
    }
    let mut chosen = Vec::with_capacity(n);
    while chosen.len() < n {
        let next = zones
            .iter_mut()
            .filter_map(|(_, nodes)| Some((nodes.len(), nodes.front()?.0, nodes)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let Some((_, _, nodes)) = next else {
            break;
        };
        if let Some((_, node)) = nodes.pop_front() {
            chosen.push(node);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::TAG_AZ;

    /// Node `name`, launched at minute `at`, in `zone`.
    fn node(name: &str, at: i64, zone: Option<&str>) -> Node {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000 + at * 60, 0).expect("a time");
        let node = Node::new(name, name).with_launched_at(at);
        match zone {
            Some(z) => node.with_tag(TAG_AZ, z),
            None => node,
        }
    }

    fn names(nodes: &[Node]) -> Vec<&str> {
        nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// Three in zone a (a1 oldest), three in b.
    fn even() -> Vec<Node> {
        vec![
            node("a1", 1, Some("us-east-1a")),
            node("b1", 2, Some("us-east-1b")),
            node("a2", 3, Some("us-east-1a")),
            node("b2", 4, Some("us-east-1b")),
            node("a3", 5, Some("us-east-1a")),
            node("b3", 6, Some("us-east-1b")),
        ]
    }

    #[test]
    fn balanced_zones_each_lose_one_newest_first() {
        assert_eq!(names(&victims(even(), 2, Order::Newest)), ["b3", "a3"]);
        assert_eq!(names(&victims(even(), 2, Order::Oldest)), ["a1", "b1"]);
        assert_eq!(
            names(&victims(even(), 4, Order::Newest)),
            ["b3", "a3", "b2", "a2"]
        );
    }

    #[test]
    fn the_zone_with_the_most_nodes_loses_first_even_its_older_ones() {
        // Zone a has four, b two: a's newest goes before b's newer nodes.
        let mut nodes = even();
        nodes.push(node("a4", 0, Some("us-east-1a")));
        nodes.retain(|n| n.name != "b1");
        let picked = victims(nodes, 3, Order::Newest);
        assert_eq!(names(&picked), ["a3", "a2", "b3"]);
    }

    #[test]
    fn nodes_without_a_zone_are_a_zone_of_their_own() {
        let nodes = vec![
            node("x1", 1, None),
            node("x2", 2, None),
            node("x3", 3, None),
            node("a1", 9, Some("us-east-1a")),
        ];
        assert_eq!(
            names(&victims(nodes.clone(), 2, Order::Newest)),
            ["x3", "x2"]
        );
        // Once even, the older of the two zones' next nodes goes first.
        assert_eq!(
            names(&victims(nodes, 4, Order::Oldest)),
            ["x1", "x2", "x3", "a1"]
        );
    }

    #[test]
    fn without_zones_it_is_plain_newest_or_oldest_and_never_more_than_there_are() {
        let nodes = vec![
            node("n1", 1, None),
            node("n2", 2, None),
            node("n3", 3, None),
        ];
        assert_eq!(
            names(&victims(nodes.clone(), 2, Order::Newest)),
            ["n3", "n2"]
        );
        assert_eq!(names(&victims(nodes.clone(), 1, Order::Oldest)), ["n1"]);
        assert_eq!(victims(nodes, 9, Order::Newest).len(), 3);
        assert!(victims(Vec::new(), 2, Order::Newest).is_empty());
    }
}
