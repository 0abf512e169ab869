//! `PrometheusSource` against a real Prometheus server (Debian's), fed
//! through a Pushgateway it scrapes every second: both started by the
//! shared harness on free loopback ports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyscaler_core::{
    Aggregation, Classify, Cluster, ClusterView, Comparison, ErrorKind, Event, MetricSource, Node,
    NodeAddress, Sample, ThresholdTrigger, Trigger,
};
use pyscaler_prometheus::{NodeKey, PrometheusError, PrometheusSource};
use pyscaler_testkit::prometheus::Prometheus;
use tokio::sync::broadcast;

fn cluster() -> Cluster {
    Cluster::new("web").with_nodes([
        Node::new("i-1", "web-01").with_address(NodeAddress::new("10.0.1.7")),
        Node::new("i-2", "web-02").with_address(NodeAddress::new("10.0.1.8")),
        Node::new("i-3", "web-03").with_address(NodeAddress::new("10.0.1.9")),
    ])
}

/// Samples `source` until it gives `count` samples (Prometheus scrapes the
/// pushed values within a few seconds); bounded.
async fn samples_once_scraped(source: &PrometheusSource, count: usize) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match source.sample(&cluster()).await {
            Ok(s) if s.len() == count => return s,
            other if Instant::now() > deadline => {
                panic!("Prometheus never gave {count} samples: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn push_loads(prometheus: &Prometheus) {
    prometheus.push(
        "load",
        "pyscaler_load1{instance=\"10.0.1.7:9100\"} 3.5\n\
         pyscaler_load1{instance=\"10.0.1.8:9100\"} 1.5\n\
         pyscaler_load1{instance=\"10.9.9.9:9100\"} 99\n",
    );
}

#[tokio::test]
async fn each_node_gets_its_own_series_matched_by_the_instance_label() {
    let prometheus = Prometheus::start();
    // Built before any data exists: no data yet is no error.
    let source = PrometheusSource::builder(prometheus.endpoint_url(), "pyscaler_load1")
        .name("load1")
        .per_node("instance", NodeKey::Host)
        .build()
        .await
        .expect("a valid query");
    push_loads(&prometheus);
    let samples = samples_once_scraped(&source, 2).await;
    let got: Vec<(&str, f64)> = samples.iter().map(|s| (s.node.as_str(), s.value)).collect();
    // web-03 has no series, and the series of a node outside the cluster is ignored.
    assert_eq!(got, [("web-01", 3.5), ("web-02", 1.5)]);
    assert_eq!(source.name(), "load1");
}

#[tokio::test]
async fn a_cluster_wide_value_comes_from_one_expression_now_or_over_a_window() {
    let prometheus = Prometheus::start();
    push_loads(&prometheus);
    let now = PrometheusSource::builder(
        prometheus.endpoint_url(),
        "sum(pyscaler_load1{instance=~\"10.0.1.*\"})",
    )
    .build()
    .await
    .expect("a valid query");
    let samples = samples_once_scraped(&now, 1).await;
    assert_eq!((samples[0].node.as_str(), samples[0].value), ("web", 5.0));

    // The same over the last 10 s, a point a second (query_range): the mean
    // of the points there are.
    let window = PrometheusSource::builder(
        prometheus.endpoint_url(),
        "sum(pyscaler_load1{instance=~\"10.0.1.*\"})",
    )
    .window(Duration::from_secs(10), Duration::from_secs(1))
    .build()
    .await
    .expect("a valid query");
    let samples = samples_once_scraped(&window, 1).await;
    assert_eq!(samples[0].value, 5.0);

    // Several series for one cluster-wide value is an error, not a guess.
    let many = PrometheusSource::builder(prometheus.endpoint_url(), "pyscaler_load1")
        .build()
        .await
        .expect("a valid query");
    let err = many.sample(&cluster()).await.expect_err("three series");
    assert!(err.to_string().contains("aggregate them"), "{err}");
}

#[tokio::test]
async fn a_query_prometheus_refuses_is_found_when_the_source_is_built() {
    let prometheus = Prometheus::start();
    let err = PrometheusSource::builder(prometheus.endpoint_url(), "sum(pyscaler_load1")
        .build()
        .await
        .expect_err("a parse error");
    let PrometheusError::BadQuery {
        status, message, ..
    } = &err
    else {
        panic!("not a bad query: {err}")
    };
    assert_eq!(*status, 400);
    // Prometheus' own words.
    assert!(message.contains("parse error"), "{message}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn no_series_is_no_data_never_zero() {
    let prometheus = Prometheus::start();
    let source = PrometheusSource::builder(prometheus.endpoint_url(), "pyscaler_never_pushed")
        .build()
        .await
        .expect("a valid query");
    let err = source.sample(&cluster()).await.expect_err("no data");
    assert!(err.to_string().contains("no data"), "{err}");
    let core: pyscaler_core::Error = PrometheusError::NoData {
        query: "x".into(),
        what: "no series".into(),
    }
    .into();
    assert_eq!(core.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_server_that_went_away_is_a_transient_error() {
    let mut prometheus = Prometheus::start();
    let source = PrometheusSource::builder(prometheus.endpoint_url(), "up")
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("a valid query");
    prometheus.stop_server();
    let err = source.sample(&cluster()).await.expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.is_retryable());
    // And one that is not there when the source is built is said so then.
    let err = PrometheusSource::builder(prometheus.endpoint_url(), "up")
        .build()
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, PrometheusError::Unavailable { .. }), "{err}");
}

/// A low-load trigger (scale in below 1.0, held for 2 s) over `source`.
fn low_load(source: PrometheusSource) -> ThresholdTrigger {
    ThresholdTrigger::builder("load-low", Arc::new(source))
        .when(Comparison::Less, 1.0)
        .aggregation(Aggregation::Max)
        .interval(Duration::from_millis(500))
        .window(Duration::from_secs(2))
        .build()
        .expect("trigger")
}

#[tokio::test]
async fn a_scale_in_trigger_fires_on_low_load_and_never_while_prometheus_is_gone() {
    let mut prometheus = Prometheus::start();
    prometheus.push("load", "pyscaler_load1{instance=\"10.0.1.7:9100\"} 0.2\n");
    let source = || {
        PrometheusSource::builder(prometheus.endpoint_url(), "pyscaler_load1")
            .per_node("instance", NodeKey::Host)
            .timeout(Duration::from_secs(2))
            .build()
    };
    let (_tx, view) = ClusterView::new(cluster());

    // With data, the low load held for the window fires the trigger.
    let mut trigger = low_load(source().await.expect("source"));
    let fired = tokio::time::timeout(Duration::from_secs(60), trigger.next(&view))
        .await
        .expect("the low load fires within the bound");
    assert!(fired.is_some_and(|f| f.trigger == "load-low"));

    // Prometheus gone: no data, never a low value; the trigger reports each
    // failed read and does not fire, however long it waits.
    let mut trigger = low_load(source().await.expect("source"));
    prometheus.stop_server();
    let (events_tx, mut events) = broadcast::channel(64);
    let view = view.with_events(events_tx);
    let waited = tokio::time::timeout(Duration::from_secs(5), trigger.next(&view)).await;
    assert!(waited.is_err(), "fired without data: {waited:?}");
    let mut failed = 0;
    while let Ok(event) = events.try_recv() {
        if let Event::SampleFailed { error, .. } = event {
            assert!(error.contains("did not answer"), "{error}");
            failed += 1;
        }
    }
    assert!(failed >= 2, "{failed} failed reads reported");
}

#[tokio::test]
async fn a_series_no_longer_scraped_is_stale_and_the_trigger_holds() {
    let prometheus = Prometheus::start();
    prometheus.push("load", "pyscaler_load1{instance=\"10.0.1.7:9100\"} 0.2\n");
    let source = PrometheusSource::builder(prometheus.endpoint_url(), "pyscaler_load1")
        .per_node("instance", NodeKey::Host)
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("source");
    samples_once_scraped(&source, 1).await;
    // The pusher is gone: the next scrape no longer has the series, and
    // Prometheus marks it stale (it drops out of instant queries at once,
    // not after its 5-minute lookback).
    prometheus.delete("load");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match source.sample(&cluster()).await {
            Err(e) if e.to_string().contains("no data") => break,
            other if Instant::now() > deadline => panic!("never stale: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    // A scale-in trigger below 1.0 on it: the last value was 0.2, but a
    // stale series is no data, so it holds and never fires.
    let (events_tx, mut events) = broadcast::channel(64);
    let (_tx, view) = ClusterView::new(cluster());
    let view = view.with_events(events_tx);
    let mut trigger = low_load(source);
    let waited = tokio::time::timeout(Duration::from_secs(5), trigger.next(&view)).await;
    assert!(waited.is_err(), "fired on a stale series: {waited:?}");
    assert_eq!(view.opinion("load-low").and_then(|o| o.breaching), None);
    let mut held = 0;
    while let Ok(event) = events.try_recv() {
        if let Event::Decided(d) = event {
            assert_eq!(d.verdict, pyscaler_core::Verdict::NoData, "{d:?}");
            assert!(d.reason.ends_with(": holding"), "{}", d.reason);
            held += 1;
        }
    }
    assert!(held >= 2, "{held} no-data decisions reported");
}
