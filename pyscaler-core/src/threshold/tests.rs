//! No data is never a number, windows per direction, and steps: each
//! asserted by what the trigger decides and the events it sends, in
//! virtual time.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast;

use super::*;
use crate::{MockMetricSource, Node, NodeStep};

/// A source that answers `samples` every time.
fn constant(samples: Vec<Sample>) -> Arc<dyn MetricSource> {
    let mut m = MockMetricSource::new();
    m.expect_name().return_const("load".to_string());
    m.expect_sample().returning(move |_| Ok(samples.clone()));
    Arc::new(m)
}

fn cluster(n: usize) -> Cluster {
    Cluster::new("web")
        .with_nodes((1..=n).map(|i| Node::new(format!("i-{i}"), format!("web-0{i}"))))
}

fn view(n: usize) -> (ClusterView, broadcast::Receiver<Event>) {
    let (events, rx) = broadcast::channel(256);
    (ClusterView::new(cluster(n)).1.with_events(events), rx)
}

fn decisions(rx: &mut broadcast::Receiver<Event>) -> Vec<Decision> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let Event::Decided(d) = event {
            out.push(*d);
        }
    }
    out
}

fn high(source: Arc<dyn MetricSource>) -> ThresholdTriggerBuilder {
    ThresholdTrigger::builder("load-high", source)
        .when(Comparison::Greater, 2.0)
        .interval(Duration::from_secs(10))
        .window(Duration::from_secs(60))
}

/// Runs `t` for `for_` of virtual time; `Some` when it fired.
async fn within(t: &mut ThresholdTrigger, v: &ClusterView, for_: Duration) -> Option<Fire> {
    tokio::time::timeout(for_, t.next(v)).await.ok().flatten()
}

#[tokio::test(start_paused = true)]
async fn a_stale_sample_is_no_data_and_never_fires() {
    let old = Utc::now() - chrono::Duration::minutes(10);
    let mut t = high(constant(vec![Sample::new("web-01", 9.0).at(old)]))
        .build()
        .unwrap();
    let (v, mut rx) = view(1);
    assert_eq!(within(&mut t, &v, Duration::from_secs(600)).await, None);
    let d = decisions(&mut rx);
    assert!(!d.is_empty());
    assert!(d.iter().all(|d| d.verdict == Verdict::NoData), "{d:?}");
    assert!(
        d[0].reason
            .contains("no data (every sample is older than 20s): holding"),
        "{}",
        d[0].reason
    );
    assert_eq!(v.opinion("load-high").unwrap().breaching, None);
}

#[tokio::test(start_paused = true)]
async fn a_fresh_sample_with_a_timestamp_counts() {
    let now = Utc::now();
    let mut t = high(constant(vec![Sample::new("web-01", 9.0).at(now)]))
        .staleness(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (v, _rx) = view(1);
    assert!(within(&mut t, &v, Duration::from_secs(120)).await.is_some());
}

#[tokio::test(start_paused = true)]
async fn nan_and_an_empty_answer_are_no_data_not_zero() {
    // A scale-in trigger "below 1": were no data zero, it would fire.
    for samples in [vec![Sample::new("web-01", f64::NAN)], Vec::new()] {
        let mut t = ThresholdTrigger::builder("load-low", constant(samples))
            .when(Comparison::Less, 1.0)
            .interval(Duration::from_secs(10))
            .window(Duration::from_secs(30))
            .build()
            .unwrap();
        t.bind(Direction::In);
        let (v, mut rx) = view(3);
        assert_eq!(within(&mut t, &v, Duration::from_secs(600)).await, None);
        let d = decisions(&mut rx);
        assert!(d.iter().all(|d| d.verdict == Verdict::NoData
            && d.direction == Direction::In
            && d.value.is_none()
            && d.threshold == Some(1.0)));
    }
}

#[tokio::test(start_paused = true)]
async fn missing_data_taken_as_a_value_is_judged_as_that_value() {
    let mut t = ThresholdTrigger::builder("load-low", constant(Vec::new()))
        .when(Comparison::Less, 1.0)
        .interval(Duration::from_secs(10))
        .window(Duration::from_secs(30))
        .on_missing_data(MissingData::Value(0.0))
        .build()
        .unwrap();
    let (v, mut rx) = view(3);
    let start = Instant::now();
    let fire = within(&mut t, &v, Duration::from_secs(600)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert!(fire.reason.contains("0.00 < 1"), "{}", fire.reason);
    let d = decisions(&mut rx);
    assert!(d[0].reason.contains("taken as 0"), "{}", d[0].reason);
    assert_eq!(v.opinion("load-low").unwrap().breaching, Some(true));
}

#[tokio::test(start_paused = true)]
async fn failing_on_missing_data_is_a_failed_decision() {
    let mut m = MockMetricSource::new();
    m.expect_name().return_const("load".to_string());
    m.expect_sample()
        .returning(|_| Err(crate::Error::other(crate::ErrorKind::Transient, "refused")));
    let mut t = high(Arc::new(m))
        .on_missing_data(MissingData::Fail)
        .build()
        .unwrap();
    let (v, mut rx) = view(2);
    assert_eq!(within(&mut t, &v, Duration::from_secs(60)).await, None);
    let d = decisions(&mut rx);
    assert!(!d.is_empty());
    assert!(d.iter().all(|d| d.verdict == Verdict::Failed), "{d:?}");
    assert_eq!(d[0].reason, "no data (refused)");
}

#[tokio::test(start_paused = true)]
async fn a_scale_in_waits_five_minutes_by_default_and_a_scale_out_one() {
    for (direction, waited) in [(Direction::Out, 60), (Direction::In, 300)] {
        let mut t = ThresholdTrigger::builder("t", constant(vec![Sample::new("web-01", 5.0)]))
            .when(Comparison::Greater, 2.0)
            .interval(Duration::from_secs(10))
            .build()
            .unwrap();
        t.bind(direction);
        let (v, _rx) = view(1);
        let start = Instant::now();
        within(&mut t, &v, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(waited), "{direction}");
    }
}

#[test]
fn a_proportional_step_asks_for_what_brings_the_value_to_the_target() {
    let step = |direction, nodes: usize, value: f64| {
        let mut t = ThresholdTrigger::builder("t", constant(Vec::new()))
            .step(NodeStep::toward(1.0))
            .window(Duration::ZERO)
            .cooldown(Duration::ZERO)
            .build()
            .unwrap();
        t.bind(direction);
        let e = t.evaluate(
            Instant::now(),
            &cluster(nodes),
            &[Sample::new("web", value)],
        );
        e.fire.map(|f| f.nodes)
    };
    // desired = ceil(4 * 2.0 / 1.0) = 8: add 4.
    assert_eq!(step(Direction::Out, 4, 2.0), Some(Some(4)));
    // desired = ceil(4 * 1.3) = 6: add 2.
    assert_eq!(step(Direction::Out, 4, 1.3), Some(Some(2)));
    // Within the 10 % band: nothing, either way.
    assert_eq!(step(Direction::Out, 4, 1.05), None);
    assert_eq!(step(Direction::In, 4, 0.95), None);
    // desired = ceil(4 * 0.5) = 2: remove 2.
    assert_eq!(step(Direction::In, 4, 0.5), Some(Some(2)));
    // desired = ceil(3 * 0.8) = 3: nothing to remove, so nothing fires.
    assert_eq!(step(Direction::In, 3, 0.8), None);
    // A high value never asks a scale-in trigger for anything, and the other way round.
    assert_eq!(step(Direction::In, 4, 3.0), None);
    assert_eq!(step(Direction::Out, 4, 0.2), None);
}

#[test]
fn a_fixed_step_is_in_every_firing() {
    let mut t = ThresholdTrigger::builder("t", constant(Vec::new()))
        .when(Comparison::Greater, 2.0)
        .step(NodeStep::Fixed(3))
        .window(Duration::ZERO)
        .build()
        .unwrap();
    let e = t.evaluate(Instant::now(), &cluster(2), &[Sample::new("web", 5.0)]);
    assert_eq!(e.fire.unwrap().nodes, Some(3));
}

#[test]
fn settings_that_make_no_sense_are_refused_when_built() {
    let refused = |b: ThresholdTriggerBuilder| b.build().unwrap_err().to_string();
    let source = || constant(Vec::new());
    let e = refused(
        ThresholdTrigger::builder("t", source())
            .when(Comparison::Greater, 1.0)
            .step(NodeStep::toward(1.0)),
    );
    assert!(e.contains("remove .when"), "{e}");
    let e = refused(ThresholdTrigger::builder("t", source()).step(NodeStep::toward(0.0)));
    assert!(e.contains("must be above zero"), "{e}");
    let e = refused(
        ThresholdTrigger::builder("t", source()).step(NodeStep::Proportional {
            target: 1.0,
            tolerance: 1.0,
        }),
    );
    assert!(e.contains("below 1"), "{e}");
    let e = refused(
        ThresholdTrigger::builder("t", source())
            .when(Comparison::Greater, 1.0)
            .step(NodeStep::Fixed(0)),
    );
    assert!(e.contains("changes nothing"), "{e}");
    let e = refused(
        ThresholdTrigger::builder("t", source())
            .when(Comparison::Greater, 1.0)
            .staleness(Duration::ZERO),
    );
    assert!(e.contains("staleness"), "{e}");
    let e = refused(
        ThresholdTrigger::builder("t", source())
            .when(Comparison::Greater, 1.0)
            .on_missing_data(MissingData::Value(f64::INFINITY)),
    );
    assert!(e.contains("missing data"), "{e}");
}
