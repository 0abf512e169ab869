//! The source's reading of answers and its settings, without a server
//! (`tests/prometheus.rs` asks a real one).

use std::collections::BTreeMap;

use pyscaler_core::{Classify, ErrorKind, NodeAddress};

use super::*;

fn source(per_node: Option<(&str, NodeKey)>) -> PrometheusSource {
    let b = PrometheusSource::builder("http://127.0.0.1:9/prom", "node_load5");
    let b = match per_node {
        Some((label, key)) => b.per_node(label, key),
        None => b,
    };
    b.check().expect("valid settings")
}

fn series(labels: &[(&str, &str)], values: &[f64]) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        values: values.to_vec(),
    }
}

fn cluster() -> Cluster {
    Cluster::new("web").with_nodes([
        Node::new("i-1", "web-01").with_address(NodeAddress::new("10.0.1.7")),
        Node::new("i-2", "web-02").with_address(NodeAddress::new("10.0.1.8")),
        Node::new("i-3", "web-03").with_address(NodeAddress::new("10.0.1.9")),
    ])
}

#[test]
fn per_node_series_are_matched_by_host_and_a_node_without_one_is_left_out() {
    let s = source(Some(("instance", NodeKey::Host)));
    let answer = Answer::Series(vec![
        series(&[("instance", "10.0.1.8:9100")], &[2.0]),
        series(&[("instance", "10.0.1.7:9100")], &[1.0, 5.0]),
        series(&[("instance", "10.9.9.9:9100")], &[7.0]),
    ]);
    let samples = s.samples(&cluster(), answer).expect("samples");
    let got: Vec<(&str, f64)> = samples.iter().map(|s| (s.node.as_str(), s.value)).collect();
    assert_eq!(got, [("web-01", 3.0), ("web-02", 2.0)]);
}

#[test]
fn per_node_series_can_be_matched_by_name_or_id() {
    let by_id = source(Some(("instance_id", NodeKey::Id)));
    let answer = Answer::Series(vec![series(&[("instance_id", "i-3")], &[5.0])]);
    let samples = by_id.samples(&cluster(), answer).expect("samples");
    assert_eq!(samples[0].node, "web-03");
    let by_name = source(Some(("node", NodeKey::Name)));
    let answer = Answer::Series(vec![series(&[("node", "web-02")], &[4.0])]);
    assert_eq!(
        by_name.samples(&cluster(), answer).expect("samples")[0].node,
        "web-02"
    );
}

#[test]
fn missing_data_is_no_data_never_zero() {
    let wide = source(None);
    for answer in [
        Answer::Series(Vec::new()),
        Answer::Scalar(None),
        Answer::Series(vec![series(&[], &[])]),
    ] {
        let e = wide.samples(&cluster(), answer).expect_err("no data");
        assert!(matches!(e, PrometheusError::NoData { .. }), "{e}");
        assert!(e.is_retryable());
    }
    let per_node = source(Some(("instance", NodeKey::Host)));
    let e = per_node
        .samples(
            &cluster(),
            Answer::Series(vec![series(&[("instance", "10.9.9.9:9100")], &[1.0])]),
        )
        .expect_err("no node's series");
    assert!(e.to_string().contains("none with a `instance`"), "{e}");
}

#[test]
fn a_cluster_wide_value_is_one_sample_named_after_the_cluster() {
    let s = source(None);
    let samples = s
        .samples(&cluster(), Answer::Scalar(Some(4.5)))
        .expect("scalar");
    assert_eq!((samples[0].node.as_str(), samples[0].value), ("web", 4.5));
    let e = s
        .samples(
            &cluster(),
            Answer::Series(vec![
                series(&[("a", "1")], &[1.0]),
                series(&[("a", "2")], &[2.0]),
            ]),
        )
        .expect_err("two series");
    assert!(e.to_string().contains("aggregate them"), "{e}");
}

#[test]
fn answers_are_classified_by_status() {
    let s = source(None);
    let bad = s
        .read(
            StatusCode::BAD_REQUEST,
            br#"{"status":"error","errorType":"bad_data","error":"1:6: parse error: unexpected"}"#,
        )
        .expect_err("refused");
    assert_eq!(bad.kind(), ErrorKind::InvalidInput);
    assert!(bad.to_string().contains("1:6: parse error"), "{bad}");
    let down = s
        .read(StatusCode::SERVICE_UNAVAILABLE, b"Service Unavailable")
        .expect_err("down");
    assert_eq!(down.kind(), ErrorKind::Transient);
    assert!(down.is_retryable());
    let timeout = s
        .read(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"status":"error","errorType":"timeout","error":"query timed out"}"#,
        )
        .expect_err("timeout");
    assert!(timeout.is_retryable(), "{timeout}");
    let html = s.read(StatusCode::OK, b"<html>").expect_err("not json");
    assert_eq!(html.kind(), ErrorKind::Unexpected);
}

#[test]
fn settings_are_checked_before_any_request() {
    let check = |b: PrometheusSourceBuilder| b.check().map(|_| ()).map_err(|e| e.to_string());
    let b = || PrometheusSource::builder("http://127.0.0.1:9090", "up");
    assert!(check(b()).is_ok());
    assert!(check(PrometheusSource::builder("ftp://x", "up"))
        .expect_err("scheme")
        .contains("endpoint"));
    assert!(check(PrometheusSource::builder("not a url", "up")).is_err());
    assert!(
        check(PrometheusSource::builder("http://127.0.0.1:9090", " "))
            .expect_err("query")
            .contains("query")
    );
    assert!(check(b().timeout(Duration::ZERO)).is_err());
    assert!(check(b().per_node("", NodeKey::Host)).is_err());
    assert!(check(b().window(Duration::from_secs(60), Duration::ZERO)).is_err());
    assert!(check(b().window(Duration::from_secs(10), Duration::from_secs(60))).is_err());
    assert!(
        check(b().window(Duration::from_secs(86_400 * 30), Duration::from_secs(1)))
            .expect_err("too many points")
            .contains("11000")
    );
}

#[test]
fn credentials_never_show_in_debug_output() {
    let s = PrometheusSource::builder("http://127.0.0.1:9090", "up")
        .basic_auth("ops", "hunter2-secret")
        .check()
        .expect("valid");
    assert!(!format!("{s:?}").contains("hunter2-secret"));
    let s = PrometheusSource::builder("http://127.0.0.1:9090", "up")
        .bearer_token("tok-abc123")
        .check()
        .expect("valid");
    assert!(!format!("{s:?}").contains("tok-abc123"));
}

#[test]
fn credentials_in_the_url_become_basic_authentication_and_leave_the_url() {
    let s = PrometheusSource::builder("http://ops:s3cret-pw@127.0.0.1:9090", "up")
        .check()
        .expect("valid");
    assert_eq!(s.endpoint_str(), "http://127.0.0.1:9090");
    assert!(!format!("{s:?}").contains("s3cret-pw"));
    assert!(matches!(&s.auth, Some(Auth::Basic { user, .. }) if user == "ops"));
}

#[test]
fn two_series_for_one_node_are_refused_not_picked_from() {
    let s = source(Some(("instance", NodeKey::Host)));
    let answer = Answer::Series(vec![
        series(&[("instance", "10.0.1.7:9100"), ("cpu", "0")], &[1.0]),
        series(&[("instance", "10.0.1.7:9100"), ("cpu", "1")], &[9.0]),
    ]);
    let e = s.samples(&cluster(), answer).expect_err("ambiguous");
    assert!(e.to_string().contains("2 series for node web-01"), "{e}");
}

#[test]
fn the_builders_debug_and_errors_never_show_url_credentials() {
    let b = PrometheusSource::builder("http://ops:s3cret-pw@127.0.0.1:9090", "up");
    assert!(!format!("{b:?}").contains("s3cret-pw"));
    let e = PrometheusSource::builder("ftp://ops:s3cret-pw@host/", "up")
        .check()
        .expect_err("scheme");
    assert!(!e.to_string().contains("s3cret-pw"), "{e}");
    // Percent-encoded credentials are sent decoded.
    let s = PrometheusSource::builder("http://ops:p%40ss@127.0.0.1:9090", "up")
        .check()
        .expect("valid");
    assert!(matches!(&s.auth, Some(Auth::Basic { password, .. }) if password == "p@ss"));
}
