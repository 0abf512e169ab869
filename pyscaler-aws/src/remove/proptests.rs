//! For random clusters (zones, launch times, protected nodes, nodes that
//! are not EC2 instances) and random asks, the nodes a scale-in removes are
//! never a protected node, never more than asked, and never leave the
//! cluster below its minimum; the dry run's plan says the same.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use pyscaler_core::{ActionExt, Cluster, Pipeline, Target, TriggerInfo};

use super::*;
use crate::{Ec2Profile, MockEc2, TAG_AZ};

/// One node: launched at minute, zone (if known), protected, an EC2 instance.
type Spec = (u8, Option<u8>, bool, bool);

fn cluster(specs: &[Spec]) -> Cluster {
    Cluster::new("web").with_nodes(specs.iter().enumerate().map(
        |(i, &(minute, zone, protected, ec2))| {
            let at = DateTime::<Utc>::from_timestamp(1_700_000_000 + i64::from(minute) * 60, 0)
                .unwrap_or_default();
            let mut node = Node::new(format!("n-{i}"), format!("web-{i:02}")).with_launched_at(at);
            if ec2 {
                node = node.with_instance_id(format!("i-{i}"));
            }
            if let Some(z) = zone {
                node = node.with_tag(TAG_AZ, format!("us-east-1{}", char::from(b'a' + z)));
            }
            node.set_protected(protected);
            node
        },
    ))
}

fn action(pick: Pick, count: usize, min_nodes: usize) -> RemoveEc2Node {
    let profile = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .build()
        .expect("profile");
    let aws = Aws::new(Arc::new(MockEc2::new()), None, profile).expect("providers");
    RemoveEc2Node::builder(&aws)
        .pick(pick)
        .count(count)
        .min_nodes(min_nodes)
        .build()
        .expect("action")
}

fn specs() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(
        (
            0u8..20,
            prop::option::of(0u8..3),
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.9),
        ),
        0..12,
    )
}

fn min_nodes() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..6, 1 => Just(usize::MAX)]
}

fn assert_safe(chosen: &[Node], cluster: &Cluster, asked: usize, min: usize) {
    assert!(
        chosen.len() <= asked,
        "{} chosen, {asked} asked",
        chosen.len()
    );
    // Removing none keeps any cluster as it is, even one already below its minimum.
    assert!(
        chosen.is_empty() || cluster.len() - chosen.len() >= min,
        "{} of {} removed, minimum {min}",
        chosen.len(),
        cluster.len()
    );
    let ids: BTreeSet<&str> = chosen.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids.len(), chosen.len(), "a node chosen twice");
    for n in chosen {
        assert!(!n.is_protected(), "protected {} chosen", n.name);
        assert!(n.instance_id.is_some(), "{} is not an instance", n.name);
        assert!(
            cluster.nodes().iter().any(|c| c.id == n.id),
            "{} not in the cluster",
            n.name
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_scale_in_keeps_protected_nodes_the_minimum_and_the_ask(
        specs in specs(),
        newest in any::<bool>(),
        count in 1usize..5,
        asked in prop::option::of(0usize..8),
        min in min_nodes(),
    ) {
        let pick = if newest { Pick::Newest } else { Pick::Oldest };
        let action = action(pick, count, min);
        let cluster = cluster(&specs);
        let mut ctx = Context::new(cluster.clone());
        if let Some(n) = asked {
            ctx = ctx.with_trigger(TriggerInfo::new("load-low", "idle").with_nodes(n));
        }
        let asked = asked.unwrap_or(count);
        let eligible = cluster
            .nodes()
            .iter()
            .filter(|n| n.instance_id.is_some() && !n.is_protected())
            .count();
        let want = asked.min(eligible);
        match action.checked(&ctx) {
            Ok(chosen) => {
                assert_safe(&chosen, &cluster, asked, min);
                prop_assert_eq!(chosen.len(), want);
            }
            // Refused only when there is nothing to remove or the minimum forbids it.
            Err(e) => prop_assert!(
                want == 0 || cluster.len() - want < min,
                "refused {} of {} (minimum {}): {}", want, cluster.len(), min, e
            ),
        }
        // The dry run removes what the run would: the plan's next step
        // sees the cluster that would be left.
        let removed = action.nodes_to_remove(&ctx);
        assert_safe(&removed, &cluster, asked, min);
        let plan = Pipeline::builder("scale-in")
            .step(action.on(Target::None))
            .step(self::action(Pick::Target, 1, 0).on(Target::Cluster).named("after"))
            .build()
            .expect("pipeline")
            .plan(&ctx);
        prop_assert_eq!(plan.steps[1].nodes.len(), cluster.len() - removed.len());
    }

    #[test]
    fn victims_are_as_many_as_asked_or_there_are_each_zones_newest(
        specs in specs(),
        n in 0usize..14,
        newest in any::<bool>(),
    ) {
        let order = if newest { Order::Newest } else { Order::Oldest };
        let candidates = cluster(&specs).nodes().to_vec();
        let chosen = victims(candidates.clone(), n, order);
        prop_assert_eq!(chosen.len(), n.min(candidates.len()));
        let ids: BTreeSet<&str> = chosen.iter().map(|c| c.id.as_str()).collect();
        prop_assert_eq!(ids.len(), chosen.len());
        // Within a zone, no node left behind comes before a chosen one in the order.
        for kept in candidates.iter().filter(|c| !ids.contains(c.id.as_str())) {
            for gone in chosen.iter().filter(|c| c.tags.get(TAG_AZ) == kept.tags.get(TAG_AZ)) {
                let before = match order {
                    Order::Newest => (&kept.launched_at, &kept.name) > (&gone.launched_at, &gone.name),
                    Order::Oldest => (&kept.launched_at, &kept.name) < (&gone.launched_at, &gone.name),
                };
                prop_assert!(!before, "{} kept before {} in its zone", kept.name, gone.name);
            }
        }
    }
}
