//! RemoveEc2Node against mocked providers, in virtual time.

use chrono::{TimeZone, Utc};
use pyscaler_core::{
    ActionExt, CancellationToken, Cluster, Pipeline, RunStatus, StepStatus, Target,
};

use std::sync::Arc;

use super::*;
use crate::test_support::{
    calls_of, elb_deregistering, expect_register_noted, expect_terminate_noted, instances_in, note,
    pipeline_of, Calls,
};
use crate::{Ec2Profile, InstanceState, MockEc2, MockLoadBalancer};

fn profile() -> Ec2Profile {
    Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .load_balancer("web-lb")
        .build()
        .expect("profile")
}

/// web-01 (oldest) .. web-03 (newest), and a hand-made node without an instance.
fn cluster(with_manual: bool) -> Cluster {
    let node = |n: u32| {
        Node::new(format!("i-{n}"), format!("web-0{n}"))
            .with_instance_id(format!("i-{n}"))
            .with_launched_at(
                Utc.with_ymd_and_hms(2026, 1, n, 0, 0, 0)
                    .single()
                    .expect("date"),
            )
    };
    let c = Cluster::new("web").with_nodes([node(2), node(1), node(3)]);
    if with_manual {
        c.with_nodes([Node::new("db", "db-01")])
    } else {
        c
    }
}

/// An EC2 whose terminate and describe are noted; the instances are then terminated.
fn ec2(calls: &Calls) -> MockEc2 {
    let mut ec2 = MockEc2::new();
    expect_terminate_noted(&mut ec2, calls, ..);
    let c = calls.clone();
    ec2.expect_describe().returning(move |ids| {
        note(&c, "describe");
        Ok(instances_in(ids, InstanceState::Terminated))
    });
    ec2
}

/// A load balancer whose deregister and register are noted.
fn elb(calls: &Calls) -> MockLoadBalancer {
    let mut elb = elb_deregistering(calls);
    expect_register_noted(&mut elb, calls);
    elb
}

fn remove(calls: &Calls) -> RemoveEc2NodeBuilder {
    RemoveEc2Node::builder(
        &Aws::new(Arc::new(ec2(calls)), Some(Arc::new(elb(calls))), profile())
            .expect("paired providers"),
    )
}

#[tokio::test(start_paused = true)]
async fn the_newest_node_is_drained_terminated_and_removed() {
    let calls = Calls::default();
    let action = remove(&calls)
        .draining(Duration::from_secs(20))
        .build()
        .expect("action");
    assert!(action.describe().removes_nodes);
    let pipeline = Pipeline::builder("scale-in")
        .step(action.on(Target::None))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(cluster(false));
    let started = tokio::time::Instant::now();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "drained first"
    );
    assert_eq!(
        calls_of(&calls),
        ["deregister web-lb i-3", "terminate i-3", "describe"]
    );
    let left: Vec<&str> = ctx
        .cluster()
        .nodes()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(left, ["web-02", "web-01"]);
    assert_eq!(report.nodes_removed.len(), 1);
    assert_eq!(report.nodes_removed[0].name, "web-03");
    assert_eq!(
        report.steps[0].nodes[0].summary,
        "deregistered from web-lb, terminated i-3"
    );
}

#[tokio::test(start_paused = true)]
async fn the_oldest_two_can_be_picked() {
    let calls = Calls::default();
    let action = remove(&calls)
        .pick(Pick::Oldest)
        .count(2)
        .draining(Duration::ZERO)
        .build()
        .expect("action");
    let mut ctx = Context::new(cluster(false));
    action.run(&mut ctx).await.expect("removed");
    assert_eq!(calls_of(&calls)[0], "deregister web-lb i-1,i-2");
    assert_eq!(ctx.cluster().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_cluster_minimum_is_kept_before_any_call() {
    let calls = Calls::default();
    let action = remove(&calls)
        .count(2)
        .min_nodes(2)
        .build()
        .expect("action");
    let mut ctx = Context::new(cluster(false));
    let err = action.run(&mut ctx).await.expect_err("below minimum");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "removing 2 node(s) from cluster web of 3 would go below its minimum of 2"
    );
    assert!(calls_of(&calls).is_empty());
    assert_eq!(ctx.cluster().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn target_nodes_must_be_ec2_instances() {
    let calls = Calls::default();
    let action = remove(&calls)
        .pick(Pick::Target)
        .min_nodes(0)
        .build()
        .expect("action");
    let pipeline = pipeline_of(action.on(Target::Cluster));
    let mut ctx = Context::new(cluster(true));
    let report = pipeline.run(&mut ctx).await;
    let err = report.error.clone().expect("failed");
    assert!(
        err.message.contains("db-01 is not an EC2 instance"),
        "{}",
        err.message
    );
    assert!(calls_of(&calls).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_run_cancelled_while_draining_registers_the_nodes_again() {
    let calls = Calls::default();
    let action = remove(&calls)
        .draining(Duration::from_secs(300))
        .build()
        .expect("action");
    let pipeline = pipeline_of(action.on(Target::None));
    let cancel = CancellationToken::new();
    let mut ctx = Context::new(cluster(false)).with_cancellation(cancel.clone());
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        cancel.cancel();
    });
    let report = pipeline.run(&mut ctx).await;
    stopper.await.expect("stopper");
    assert_eq!(report.status, RunStatus::Cancelled, "{report:?}");
    assert_eq!(report.steps[0].status, StepStatus::Failed);
    assert_eq!(
        calls_of(&calls),
        ["deregister web-lb i-3", "register web-lb i-3"]
    );
    assert_eq!(ctx.cluster().len(), 3, "nothing was terminated");
}

#[test]
fn mistakes_are_caught_when_building() {
    let calls = Calls::default();
    assert!(remove(&calls).count(0).build().is_err());
    // A profile naming a load balancer without its provider: refused once, by the handle.
    assert!(Aws::new(Arc::new(MockEc2::new()), None, profile()).is_err());
}

/// A target group that drains for `polls` answers, then lets go (or never,
/// with `None`), noting each poll.
fn target_group(calls: &Calls, polls: Option<usize>) -> MockLoadBalancer {
    let mut elb = MockLoadBalancer::new();
    let c = calls.clone();
    elb.expect_deregister().returning(move |lb, ids| {
        note(&c, format!("deregister {lb} {}", ids.join(",")));
        Ok(())
    });
    elb.expect_draining_timeout()
        .returning(|_| Ok(Some(Duration::from_secs(60))));
    let c = calls.clone();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    elb.expect_draining().returning(move |_, ids| {
        note(&c, "draining?");
        let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(match polls {
            Some(p) if n >= p => Vec::new(),
            _ => ids.to_vec(),
        })
    });
    elb
}

fn remove_from(calls: &Calls, elb: MockLoadBalancer) -> RemoveEc2Node {
    RemoveEc2Node::builder(
        &Aws::new(Arc::new(ec2(calls)), Some(Arc::new(elb)), profile()).expect("paired providers"),
    )
    .build()
    .expect("action")
}

#[tokio::test(start_paused = true)]
async fn a_target_group_is_asked_until_its_targets_leave_draining_then_they_are_terminated() {
    let calls = Calls::default();
    let action = remove_from(&calls, target_group(&calls, Some(2)));
    let mut ctx = Context::new(cluster(false));
    action.run(&mut ctx).await.expect("removed");
    assert_eq!(
        calls_of(&calls),
        [
            "deregister web-lb i-3",
            "draining?",
            "draining?",
            "draining?",
            "terminate i-3",
            "describe"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn draining_that_never_ends_is_bounded_by_the_groups_delay_and_a_margin() {
    let calls = Calls::default();
    let action = remove_from(&calls, target_group(&calls, None));
    let mut ctx = Context::new(cluster(false));
    let started = tokio::time::Instant::now();
    action.run(&mut ctx).await.expect("removed all the same");
    // In virtual time: the group's 60 s, plus the 10 s margin.
    assert_eq!(started.elapsed().as_secs(), 70);
    let calls = calls_of(&calls);
    assert_eq!(
        calls.first().map(String::as_str),
        Some("deregister web-lb i-3")
    );
    assert!(
        calls.iter().filter(|c| *c == "draining?").count() > 2,
        "{calls:?}"
    );
    assert_eq!(&calls[calls.len() - 2..], ["terminate i-3", "describe"]);
}

#[tokio::test(start_paused = true)]
async fn protected_nodes_are_skipped_and_the_decision_says_how_many() {
    let calls = Calls::default();
    let action = remove(&calls)
        .draining(Duration::from_secs(1))
        .build()
        .expect("action");
    let pipeline = Pipeline::builder("scale-in")
        .step(action.on(Target::None))
        .build()
        .expect("pipeline");
    let mut nodes = cluster(false);
    // The newest is protected (an EC2 tag or ScalerControls::protect).
    nodes.node_mut("i-3").expect("web-03").set_protected(true);
    // The scaler's decision asks for 2, where the step's count is 1.
    let mut ctx = Context::new(nodes)
        .with_trigger(pyscaler_core::TriggerInfo::new("load-low", "idle").with_nodes(2));
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
    assert_eq!(
        calls_of(&calls),
        ["deregister web-lb i-2,i-1", "terminate i-2,i-1", "describe"]
    );
    let left: Vec<&str> = ctx
        .cluster()
        .nodes()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(left, ["web-03"]);
}

#[tokio::test(start_paused = true)]
async fn a_protected_target_is_refused_before_anything_is_drained() {
    let calls = Calls::default();
    let action = remove(&calls)
        .pick(Pick::Target)
        .min_nodes(0)
        .build()
        .expect("action");
    let pipeline = pipeline_of(action.on(Target::Cluster));
    let mut nodes = cluster(false);
    nodes.node_mut("i-3").expect("web-03").set_protected(true);
    let mut ctx = Context::new(nodes);
    let report = pipeline.run(&mut ctx).await;
    let err = report.error.clone().expect("failed");
    assert!(
        err.message
            .contains("node web-03 is protected from scale-in"),
        "{}",
        err.message
    );
    assert!(calls_of(&calls).is_empty(), "{:?}", calls_of(&calls));
}
