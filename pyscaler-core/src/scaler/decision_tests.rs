//! Both-way decisions in virtual time: steps capped per direction and by
//! the bounds, several triggers on one cluster, pause and resume,
//! protection, and a decision event for each, with its values.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::test_support::{Log, Probe};
use crate::{
    ActionExt, Comparison, Decision, ManualTrigger, MetricSource, MockMetricSource, Node, Sample,
    Target, ThresholdTrigger,
};

fn cluster(n: usize) -> Cluster {
    Cluster::new("web")
        .with_nodes((1..=n).map(|i| Node::new(format!("i-{i}"), format!("web-0{i}"))))
}

fn pipeline(name: &str, log: &Log, creating: usize) -> Arc<Pipeline> {
    let probe = Probe::new(name, log);
    let probe = if creating > 0 {
        probe.creating(creating)
    } else {
        probe
    };
    Arc::new(
        Pipeline::builder(name)
            .step(probe.on(Target::None))
            .build()
            .unwrap(),
    )
}

/// A source whose one value is always `value`.
fn constant(value: f64) -> Arc<dyn MetricSource> {
    let mut m = MockMetricSource::new();
    m.expect_name().return_const("load".to_string());
    m.expect_sample()
        .returning(move |_| Ok(vec![Sample::new("web", value)]));
    Arc::new(m)
}

fn threshold(name: &str, value: f64, comparison: Comparison, t: f64) -> ThresholdTrigger {
    ThresholdTrigger::builder(name, constant(value))
        .when(comparison, t)
        .interval(Duration::from_secs(10))
        .window(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Runs `scaler` for `for_` of virtual time, calling `script` at its times.
async fn drive(
    mut scaler: Scaler,
    script: Vec<(Duration, Box<dyn FnOnce() + Send>)>,
    for_: Duration,
) -> (Scaler, Vec<ScalerOutcome>, Vec<Decision>) {
    let mut events = scaler.subscribe();
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    let acting = async move {
        let start = Instant::now();
        for (at, act) in script {
            tokio::time::sleep_until(start + at).await;
            act();
        }
        tokio::time::sleep_until(start + for_).await;
        stopper.cancel();
    };
    let (outcomes, ()) = tokio::join!(scaler.run(stop), acting);
    let mut decided = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Decided(d) = event {
            decided.push(*d);
        }
    }
    (scaler, outcomes, decided)
}

fn at(secs: u64, act: impl FnOnce() + Send + 'static) -> (Duration, Box<dyn FnOnce() + Send>) {
    (Duration::from_secs(secs), Box::new(act))
}

fn skips(outcomes: &[ScalerOutcome]) -> Vec<(Skip, String)> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            ScalerOutcome::Skipped { skip, reason, .. } => Some((*skip, reason.clone())),
            ScalerOutcome::Ran(_) => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_step_is_capped_per_decision_and_by_the_maximum() {
    let log = Log::default();
    let by_hand = ManualTrigger::new("by-hand");
    let scaler = Scaler::builder(cluster(2))
        .max_nodes(6)
        .max_step(Direction::Out, 3)
        .cooldown(Direction::Out, Duration::ZERO)
        .bind(by_hand.clone(), Direction::Out, pipeline("deploy", &log, 1))
        .build()
        .unwrap();
    let (a, b) = (by_hand.clone(), by_hand);
    let (scaler, _, decided) = drive(
        scaler,
        vec![
            at(0, move || a.fire_nodes(5, "busy")),
            at(10, move || b.fire_nodes(5, "still busy")),
        ],
        Duration::from_secs(20),
    )
    .await;
    // 5 asked, 3 allowed per decision: 2 -> 5; then 5 asked, 1 fits under 6.
    assert_eq!(
        log.entries(),
        ["run deploy (3 asked)", "run deploy (1 asked)"]
    );
    assert_eq!(scaler.cluster().len(), 6);
    let changes: Vec<(Verdict, usize, usize)> = decided
        .iter()
        .map(|d| (d.verdict.clone(), d.nodes, d.change))
        .collect();
    assert_eq!(changes, [(Verdict::Scale, 2, 3), (Verdict::Scale, 5, 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_step_at_the_minimum_is_skipped_and_one_above_it_is_capped() {
    let log = Log::default();
    let drain = ManualTrigger::new("drain");
    let scaler = Scaler::builder(cluster(3))
        .min_nodes(2)
        .cooldown(Direction::In, Duration::ZERO)
        .bind(drain.clone(), Direction::In, pipeline("remove", &log, 0))
        .build()
        .unwrap();
    let d = drain.clone();
    let (_, outcomes, _) = drive(
        scaler,
        vec![at(0, move || d.fire_nodes(2, "quiet"))],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(log.entries(), ["run remove (1 asked)"]);
    assert!(skips(&outcomes).is_empty());

    let log = Log::default();
    let scaler = Scaler::builder(cluster(2))
        .min_nodes(2)
        .bind(drain.clone(), Direction::In, pipeline("remove", &log, 0))
        .build()
        .unwrap();
    let (_, outcomes, decided) = drive(
        scaler,
        vec![at(0, move || drain.fire_nodes(2, "quiet"))],
        Duration::from_secs(5),
    )
    .await;
    assert!(log.entries().is_empty());
    assert_eq!(
        skips(&outcomes),
        [(
            Skip::AtMinimum,
            "the cluster is at its minimum of 2 nodes".to_owned()
        )]
    );
    assert_eq!(decided[0].verdict, Verdict::Skipped(Skip::AtMinimum));
}

#[tokio::test(start_paused = true)]
async fn a_scale_in_is_skipped_while_a_scale_out_trigger_breaches() {
    let log = Log::default();
    let drain = ManualTrigger::new("drain");
    // Breaching at once, but its window (60 s) is never over within the test.
    let busy = ThresholdTrigger::builder("load-high", constant(3.0))
        .when(Comparison::Greater, 2.0)
        .interval(Duration::from_secs(10))
        .window(Duration::from_secs(3600))
        .build()
        .unwrap();
    let scaler = Scaler::builder(cluster(3))
        .bind(busy, Direction::Out, pipeline("deploy", &log, 1))
        .bind(drain.clone(), Direction::In, pipeline("remove", &log, 0))
        .build()
        .unwrap();
    let (_, outcomes, decided) = drive(
        scaler,
        vec![at(30, move || drain.fire("quiet"))],
        Duration::from_secs(40),
    )
    .await;
    assert!(log.entries().is_empty(), "{:?}", log.entries());
    assert_eq!(
        skips(&outcomes),
        [(
            Skip::NotAgreed,
            "trigger load-high asks for a scale-out".to_owned()
        )]
    );
    assert_eq!(decided[0].direction, Direction::In);
}

#[tokio::test(start_paused = true)]
async fn a_scale_in_needs_every_scale_in_trigger_to_agree() {
    for (queue, expected) in [
        (50.0, Some("trigger queue-low does not agree to a scale-in")),
        (5.0, None),
    ] {
        let log = Log::default();
        let scaler = Scaler::builder(cluster(3))
            .bind(
                threshold("cpu-low", 0.5, Comparison::Less, 1.0),
                Direction::In,
                pipeline("remove", &log, 0),
            )
            .bind(
                // Its own window is long: it agrees, but does not fire itself.
                ThresholdTrigger::builder("queue-low", constant(queue))
                    .when(Comparison::Less, 10.0)
                    .interval(Duration::from_secs(10))
                    .window(Duration::from_secs(3600))
                    .build()
                    .unwrap(),
                Direction::In,
                pipeline("remove-too", &log, 0),
            )
            .build()
            .unwrap();
        let (_, outcomes, decided) = drive(scaler, Vec::new(), Duration::from_secs(65)).await;
        match expected {
            Some(reason) => {
                assert_eq!(skips(&outcomes), [(Skip::NotAgreed, reason.to_owned())]);
                assert!(log.entries().is_empty());
            }
            None => {
                assert!(skips(&outcomes).is_empty());
                assert_eq!(log.entries(), ["run remove"]);
                let taken = decided
                    .iter()
                    .find(|d| d.verdict == Verdict::Scale)
                    .unwrap();
                assert_eq!(taken.triggers, ["cpu-low", "queue-low"]);
                assert_eq!((taken.value, taken.threshold), (Some(0.5), Some(1.0)));
                let ScalerOutcome::Ran(report) = &outcomes[0] else {
                    panic!("no run: {:?}", skips(&outcomes));
                };
                let reason = &report.trigger.reason;
                assert!(reason.ends_with("(agreed: cpu-low, queue-low)"), "{reason}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_scale_in_trigger_without_data_does_not_agree() {
    let log = Log::default();
    let mut down = MockMetricSource::new();
    down.expect_name().return_const("queue".to_string());
    down.expect_sample().returning(|_| Ok(Vec::new()));
    let scaler = Scaler::builder(cluster(3))
        .bind(
            threshold("cpu-low", 0.5, Comparison::Less, 1.0),
            Direction::In,
            pipeline("remove", &log, 0),
        )
        .bind(
            ThresholdTrigger::builder("queue-low", Arc::new(down))
                .when(Comparison::Less, 10.0)
                .interval(Duration::from_secs(10))
                .build()
                .unwrap(),
            Direction::In,
            pipeline("remove-too", &log, 0),
        )
        .build()
        .unwrap();
    let (_, outcomes, _) = drive(scaler, Vec::new(), Duration::from_secs(65)).await;
    assert_eq!(
        skips(&outcomes),
        [(
            Skip::NotAgreed,
            "trigger queue-low has no data, so it does not agree to a scale-in".to_owned()
        )]
    );
    assert!(log.entries().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_paused_direction_is_skipped_until_resumed() {
    let log = Log::default();
    let drain = ManualTrigger::new("drain");
    let scaler = Scaler::builder(cluster(3))
        .cooldown(Direction::In, Duration::ZERO)
        .bind(drain.clone(), Direction::In, pipeline("remove", &log, 0))
        .build()
        .unwrap();
    let controls = scaler.controls();
    controls.pause(Direction::In);
    assert!(controls.is_paused(Direction::In) && !controls.is_paused(Direction::Out));
    let (d1, d2, c) = (drain.clone(), drain, controls.clone());
    let (_, outcomes, decided) = drive(
        scaler,
        vec![
            at(0, move || d1.fire("release going on")),
            at(10, move || c.resume(Direction::In)),
            at(20, move || d2.fire("quiet")),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        skips(&outcomes),
        [(Skip::Paused, "scale-in is paused".to_owned())]
    );
    assert_eq!(log.entries(), ["run remove"]);
    let verdicts: Vec<Verdict> = decided.into_iter().map(|d| d.verdict).collect();
    assert_eq!(verdicts, [Verdict::Skipped(Skip::Paused), Verdict::Scale]);
}

#[tokio::test(start_paused = true)]
async fn protected_nodes_are_never_picked_and_a_scale_in_without_others_is_skipped() {
    let log = Log::default();
    let drain = ManualTrigger::new("drain");
    let mut nodes = cluster(2);
    nodes.node_mut("i-1").unwrap().set_protected(true);
    let scaler = Scaler::builder(nodes)
        .min_nodes(1)
        .bind(drain.clone(), Direction::In, pipeline("remove", &log, 0))
        .build()
        .unwrap();
    let controls = scaler.controls();
    let (d, c) = (drain, controls);
    let (scaler, outcomes, decided) = drive(
        scaler,
        vec![
            at(0, move || c.protect("i-2")),
            at(1, move || d.fire("quiet")),
        ],
        Duration::from_secs(5),
    )
    .await;
    assert!(log.entries().is_empty());
    assert_eq!(
        skips(&outcomes),
        [(
            Skip::NoEligibleNode,
            "every node of the 2 that a scale-in could pick is protected".to_owned()
        )]
    );
    assert_eq!(decided[0].verdict, Verdict::Skipped(Skip::NoEligibleNode));
    assert!(scaler.cluster().nodes().iter().all(Node::is_protected));
}

#[tokio::test(start_paused = true)]
async fn every_skipped_decision_carries_the_values_that_led_to_it() {
    let log = Log::default();
    let scaler = Scaler::builder(cluster(1))
        .cooldown(Direction::Out, Duration::from_secs(3600))
        .bind(
            ThresholdTrigger::builder("load-high", constant(3.0))
                .when(Comparison::Greater, 2.0)
                .interval(Duration::from_secs(10))
                .window(Duration::from_secs(20))
                .cooldown(Duration::ZERO)
                .build()
                .unwrap(),
            Direction::Out,
            pipeline("deploy", &log, 1),
        )
        .build()
        .unwrap();
    let (_, outcomes, decided) = drive(scaler, Vec::new(), Duration::from_secs(45)).await;
    assert_eq!(log.entries(), ["run deploy"]);
    let skipped = skips(&outcomes);
    assert_eq!(skipped[0].0, Skip::Cooldown, "{skipped:?}");
    let d = decided
        .iter()
        .find(|d| d.verdict == Verdict::Skipped(Skip::Cooldown))
        .unwrap();
    assert_eq!(
        (d.trigger.as_str(), d.direction),
        ("load-high", Direction::Out)
    );
    assert_eq!((d.value, d.threshold, d.nodes), (Some(3.0), Some(2.0), 2));
    assert!(
        d.reason.starts_with("scale-out is cooling down"),
        "{}",
        d.reason
    );
}

#[test]
fn two_triggers_of_one_name_and_a_zero_step_cap_are_refused() {
    let log = Log::default();
    let err = Scaler::builder(cluster(1))
        .bind(
            ManualTrigger::new("m"),
            Direction::Out,
            pipeline("a", &log, 1),
        )
        .bind(
            ManualTrigger::new("m"),
            Direction::In,
            pipeline("b", &log, 0),
        )
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("two triggers are called `m`"),
        "{err}"
    );
    let err = Scaler::builder(cluster(1))
        .max_step(Direction::In, 0)
        .bind(
            ManualTrigger::new("m"),
            Direction::Out,
            pipeline("a", &log, 1),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("step cap of 0"), "{err}");
}
