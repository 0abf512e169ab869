use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use tokio::sync::broadcast;

use crate::{
    Aggregation, Cluster, Comparison, Error, ErrorKind, Event, MetricSource, MockMetricSource,
    Node, Result, Sample, ThresholdTrigger,
};
use tokio::time::Instant;

/// A metric source that plays back a script of values, one per call, then repeats the last.
fn scripted(values: Vec<Option<f64>>) -> Arc<dyn MetricSource> {
    let script = Arc::new(Mutex::new(values.into_iter()));
    let last = Arc::new(Mutex::new(None));
    let mut m = MockMetricSource::new();
    m.expect_name().return_const("load".to_string());
    m.expect_sample().returning(move |_| {
        let next = script.lock().unwrap().next();
        let v = match next {
            Some(v) => {
                *last.lock().unwrap() = Some(v);
                v
            }
            None => last.lock().unwrap().unwrap_or(None),
        };
        match v {
            Some(value) => Ok(vec![Sample::new("web-01", value)]),
            None => Err(Error::other(
                ErrorKind::Transient,
                "ssh: connection refused",
            )),
        }
    });
    Arc::new(m)
}

fn trigger(source: Arc<dyn MetricSource>) -> ThresholdTrigger {
    ThresholdTrigger::builder("load-high", source)
        .when(Comparison::Greater, 2.0)
        .interval(Duration::from_secs(10))
        .window(Duration::from_secs(60))
        .cooldown(Duration::from_secs(600))
        .build()
        .unwrap()
}

fn view() -> ClusterView {
    ClusterView::new(Cluster::new("web").with_nodes([Node::new("a", "web-01")])).1
}

#[tokio::test(start_paused = true)]
async fn a_breach_for_the_whole_window_fires_once_at_the_end_of_it() {
    let mut t = trigger(scripted(vec![Some(5.0)]));
    let start = Instant::now();
    let fire = t.next(&view()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert_eq!(fire.trigger, "load-high");
    assert!(fire.reason.contains("5.00 > 2 for 1m"), "{}", fire.reason);
}

#[tokio::test(start_paused = true)]
async fn a_breach_shorter_than_the_window_does_not_fire() {
    // Breaching for 50 s (samples at 0..=50 s), then back to normal for good.
    let mut t = trigger(scripted(
        vec![Some(5.0); 6].into_iter().chain([Some(1.0)]).collect(),
    ));
    let fired = tokio::time::timeout(Duration::from_secs(3600), t.next(&view())).await;
    assert!(fired.is_err(), "fired: {fired:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dip_restarts_the_window() {
    // 0..=30 s breaching, a dip at 40 s, breaching again from 50 s: fires at 50 + 60 s.
    let values = vec![
        Some(5.0),
        Some(5.0),
        Some(5.0),
        Some(5.0),
        Some(1.0),
        Some(5.0),
    ];
    let mut t = trigger(scripted(values));
    let start = Instant::now();
    t.next(&view()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(110));
}

#[tokio::test(start_paused = true)]
async fn cooldown_suppresses_firing_again() {
    let mut t = trigger(scripted(vec![Some(5.0)]));
    let v = view();
    let start = Instant::now();
    t.next(&v).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    t.next(&v).await.unwrap();
    // Not before the 600 s cooldown is over, though the counter stayed high all along.
    assert_eq!(start.elapsed(), Duration::from_secs(660));
}

#[tokio::test(start_paused = true)]
async fn a_failed_sample_counts_as_not_breaching_and_never_fires() {
    // High, high, a failed read, then high: the failure restarts the window.
    let mut t = trigger(scripted(vec![
        Some(5.0),
        Some(5.0),
        Some(5.0),
        None,
        Some(5.0),
    ]));
    let start = Instant::now();
    t.next(&view()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(100));

    let mut broken = trigger(scripted(vec![None]));
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), broken.next(&view()))
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_disabled_trigger_does_not_fire() {
    let mut t = trigger(scripted(vec![Some(5.0)]));
    t.switch()
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), t.next(&view()))
            .await
            .is_err()
    );
}

#[test]
fn aggregations_combine_nodes_as_named() {
    let samples = [1.0, 2.0, 9.0].map(|value| Sample::new("n", value));
    let verdict = |agg: Aggregation, cmp: Comparison, thr: f64| {
        let mut t = ThresholdTrigger::builder("t", scripted(vec![]))
            .when(cmp, thr)
            .aggregation(agg)
            .window(Duration::ZERO)
            .build()
            .unwrap();
        t.evaluate(Instant::now(), &Cluster::new("web"), &samples)
            .breaching
    };
    assert!(verdict(Aggregation::AnyNode, Comparison::Greater, 8.0));
    assert!(!verdict(Aggregation::AllNodes, Comparison::Greater, 8.0));
    assert!(verdict(
        Aggregation::AllNodes,
        Comparison::GreaterOrEqual,
        1.0
    ));
    assert!(verdict(Aggregation::Average, Comparison::Equal, 4.0));
    assert!(!verdict(Aggregation::Average, Comparison::Greater, 4.0));
    assert!(verdict(Aggregation::Max, Comparison::LessOrEqual, 9.0));
    assert!(verdict(Aggregation::Max, Comparison::Less, 9.5));
}

#[test]
fn a_trigger_without_a_threshold_is_refused() {
    let err = ThresholdTrigger::builder("t", scripted(vec![]))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("has no threshold"), "{err}");
    let err = ThresholdTrigger::builder("t", scripted(vec![]))
        .when(Comparison::Greater, f64::NAN)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("finite"), "{err}");
}

#[tokio::test]
async fn manual_trigger_handles_fire_with_a_reason() {
    let mut t = ManualTrigger::new("manual");
    let handle = t.clone();
    handle.fire("asked by alice");
    let fire = t.next(&view()).await.unwrap();
    assert_eq!(
        fire,
        Fire {
            trigger: "manual".into(),
            reason: "asked by alice".into(),
            nodes: None,
        }
    );
}

/// A view whose trigger reports reach the returned receiver.
fn reporting_view() -> (ClusterView, broadcast::Receiver<Event>) {
    let (events, rx) = broadcast::channel(16);
    (view().with_events(events), rx)
}

fn sample_failures(
    rx: &mut broadcast::Receiver<Event>,
) -> Vec<(String, String, Option<String>, String)> {
    let mut failures = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let Event::SampleFailed {
            trigger,
            metric,
            node,
            error,
        } = event
        {
            failures.push((trigger, metric, node, error));
        }
    }
    failures
}

#[tokio::test(start_paused = true)]
async fn a_failed_sample_is_reported_to_subscribers_with_its_node() {
    let mut calls = 0;
    let mut m = MockMetricSource::new();
    m.expect_name().return_const("load".to_string());
    m.expect_sample().returning(move |_| {
        calls += 1;
        if calls == 2 {
            Err(Error::other(ErrorKind::Transient, "ssh: connection refused").on_node("web-01"))
        } else {
            Ok(vec![Sample::new("web-01", 5.0)])
        }
    });
    let mut t = trigger(Arc::new(m));
    let (v, mut rx) = reporting_view();
    t.next(&v).await.unwrap();
    assert_eq!(
        sample_failures(&mut rx),
        [(
            "load-high".to_string(),
            "load".to_string(),
            Some("web-01".to_string()),
            "on node web-01: ssh: connection refused".to_string()
        )]
    );
}

/// A source that answers only after `delay`.
struct Slow {
    delay: Duration,
}

#[async_trait]
impl MetricSource for Slow {
    fn name(&self) -> &str {
        "jvm-threads"
    }

    async fn sample(&self, _cluster: &Cluster) -> Result<Vec<Sample>> {
        tokio::time::sleep(self.delay).await;
        Ok(Vec::new())
    }
}

#[tokio::test(start_paused = true)]
async fn a_sample_slower_than_the_interval_is_reported_as_failed() {
    let mut t = trigger(Arc::new(Slow {
        delay: Duration::from_secs(3600),
    }));
    let (v, mut rx) = reporting_view();
    // Two intervals: at least one sample timed out.
    let fired = tokio::time::timeout(Duration::from_secs(25), t.next(&v)).await;
    assert!(fired.is_err(), "fired: {fired:?}");
    let failures = sample_failures(&mut rx);
    assert!(!failures.is_empty(), "no failure reported");
    let (trigger, metric, node, error) = &failures[0];
    assert_eq!(
        (trigger.as_str(), metric.as_str()),
        ("load-high", "jvm-threads")
    );
    assert_eq!(node, &None);
    assert_eq!(
        error,
        "reading the counter took longer than the interval (10s)"
    );
}
