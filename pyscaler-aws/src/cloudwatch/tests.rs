//! `CloudWatchSource` on the wire, with `aws-smithy-mocks` standing in for
//! CloudWatch. Not against moto: aws-sdk-cloudwatch speaks only Smithy RPC
//! v2 CBOR, and moto has no CBOR parser (getmoto/moto#9195). The refusals
//! below are CBOR bodies with CloudWatch's `x-amzn-query-error` header, read
//! by the SDK's own deserializer; the answers are the SDK's output types.

use std::sync::{Arc, Mutex};

use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataInput;
use aws_sdk_cloudwatch::types::{MetricDataResult, StatusCode};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::body::SdkBody;
use chrono::DateTime;
use pyscaler_core::{Classify, ErrorKind, Node};

use super::*;

type Client = aws_sdk_cloudwatch::Client;

/// Every request the mock saw, in order.
type Seen = Arc<Mutex<Vec<GetMetricDataInput>>>;

fn seen(s: &Seen) -> Vec<GetMetricDataInput> {
    s.lock().expect("lock").clone()
}

fn config() -> ClientConfig {
    ClientConfig::new("eu-west-1")
}

fn cpu() -> CloudWatchMetric {
    CloudWatchMetric::new("AWS/EC2", "CPUUtilization")
}

/// Nodes `web-<k>` with instance ids `i-<k>`, except those in `without`.
fn cluster(n: usize, without: &[usize]) -> Cluster {
    Cluster::new("web").with_nodes((1..=n).map(|k| {
        let node = Node::new(format!("i-{k}"), format!("web-{k}"));
        if without.contains(&k) {
            node
        } else {
            node.with_instance_id(format!("i-{k}"))
        }
    }))
}

fn now() -> i64 {
    Utc::now().timestamp()
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("time")
}

/// A result of query `id` with these `(epoch seconds, value)` points.
fn result(id: &str, points: &[(i64, f64)], status: StatusCode) -> MetricDataResult {
    let mut r = MetricDataResult::builder().id(id).status_code(status);
    for (t, v) in points {
        r = r
            .timestamps(aws_smithy_types::DateTime::from_secs(*t))
            .values(*v);
    }
    r.build()
}

fn answer(results: Vec<MetricDataResult>, next: Option<&str>) -> GetMetricDataOutput {
    GetMetricDataOutput::builder()
        .set_metric_data_results(Some(results))
        .set_next_token(next.map(str::to_owned))
        .build()
}

/// The answer to a build's test query: no data yet.
fn nothing_yet() -> Rule {
    mock!(Client::get_metric_data).then_output(|| answer(vec![], None))
}

/// A rule that writes down each request it answers, then answers with `f`.
fn recorded(
    seen: &Seen,
    f: impl Fn(&GetMetricDataInput) -> GetMetricDataOutput + Send + Sync + 'static,
) -> Rule {
    let s = seen.clone();
    mock!(Client::get_metric_data).then_compute_output(move |req| {
        s.lock().expect("lock").push(req.clone());
        f(req)
    })
}

/// The instance id a metric query asks for.
fn instance_of(q: &MetricDataQuery) -> Option<&str> {
    q.metric_stat()?
        .metric()?
        .dimensions()
        .iter()
        .find(|d| d.name() == Some("InstanceId"))?
        .value()
}

/// The source built over a mock client that answers with `rules`, each
/// once, in order.
async fn built(
    builder: CloudWatchSourceBuilder,
    rules: &[&Rule],
) -> Result<CloudWatchSource, AwsError> {
    built_with(builder, RuleMode::Sequential, rules).await
}

/// The source built over a mock client that answers with `rules` in `mode`
/// (`MatchAny`: a rule answers every call it matches).
async fn built_with(
    builder: CloudWatchSourceBuilder,
    mode: RuleMode,
    rules: &[&Rule],
) -> Result<CloudWatchSource, AwsError> {
    let client = mock_client!(aws_sdk_cloudwatch, mode, rules, |c| c
        .retry_config(RetryConfig::disabled()));
    builder.with_client(client).build().await
}

#[tokio::test]
async fn one_query_per_node_with_its_instance_id_over_a_window_of_five_periods_newest_first() {
    let log: Seen = Arc::default();
    let rule = recorded(&log, |_| answer(vec![], None));
    let metric = cpu()
        .dimension("AutoScalingGroupName", "web")
        .statistic(Statistic::Maximum);
    let source = built_with(
        CloudWatchSource::metric(&config(), metric)
            .per_instance()
            .period(Duration::from_secs(60)),
        RuleMode::MatchAny,
        &[&rule],
    )
    .await
    .expect("built");
    assert_eq!(source.name(), "CPUUtilization");
    let before = now();
    // web-2 has no instance id: it is not asked for.
    let _ = source.sample(&cluster(3, &[2])).await;
    let after = now();

    let requests = seen(&log);
    assert_eq!(requests.len(), 2, "the test query, then the sample");
    // The build's test query: the same shape, for an instance that does not exist.
    let test = requests[0].metric_data_queries();
    assert_eq!(test.len(), 1);
    assert_eq!(instance_of(&test[0]), Some(NO_INSTANCE));

    let req = &requests[1];
    assert_eq!(req.scan_by(), Some(&ScanBy::TimestampDescending));
    assert_eq!(req.next_token(), None);
    let (start, end) = (
        req.start_time().expect("start").secs(),
        req.end_time().expect("end").secs(),
    );
    assert_eq!(end - start, 300, "5 periods of 60 s");
    assert!((before..=after).contains(&end), "the window ends now");

    let queries = req.metric_data_queries();
    let ids: Vec<_> = queries.iter().map(|q| q.id().unwrap_or_default()).collect();
    assert_eq!(ids, ["m0", "m1"]);
    let instances: Vec<_> = queries.iter().map(instance_of).collect();
    assert_eq!(instances, [Some("i-1"), Some("i-3")]);
    for q in queries {
        assert_eq!(q.return_data(), Some(true));
        assert_eq!(q.expression(), None);
        let stat = q.metric_stat().expect("a metric query");
        assert_eq!(stat.stat(), Some("Maximum"));
        assert_eq!(stat.period(), Some(60));
        let metric = stat.metric().expect("metric");
        assert_eq!(metric.namespace(), Some("AWS/EC2"));
        assert_eq!(metric.metric_name(), Some("CPUUtilization"));
        let dims: Vec<_> = metric
            .dimensions()
            .iter()
            .map(|d| (d.name().unwrap_or_default(), d.value().unwrap_or_default()))
            .collect();
        assert_eq!(dims[0], ("AutoScalingGroupName", "web"));
        assert_eq!(dims[1].0, "InstanceId");
        assert_eq!(dims.len(), 2);
    }
}

#[tokio::test]
async fn each_node_gets_its_newest_finite_point_stamped_with_its_time() {
    let t = now();
    let rule = mock!(Client::get_metric_data).then_output(move || {
        let ok = StatusCode::Complete;
        answer(
            vec![
                result("m0", &[(t - 60, 5.0), (t - 120, 3.0)], ok.clone()),
                // Out of order: the newest is taken, not the first.
                result("m1", &[(t - 180, 7.0), (t - 120, 8.0)], ok.clone()),
                // NaN is no data: the point before it is taken.
                result("m2", &[(t - 60, f64::NAN), (t - 120, 2.0)], ok),
            ],
            None,
        )
    });
    let source = built(
        CloudWatchSource::metric(&config(), cpu()).per_instance(),
        &[&nothing_yet(), &rule],
    )
    .await
    .expect("built");
    let samples = source.sample(&cluster(3, &[])).await.expect("samples");
    assert_eq!(
        samples,
        [
            Sample::new("web-1", 5.0).at(at(t - 60)),
            Sample::new("web-2", 8.0).at(at(t - 120)),
            Sample::new("web-3", 2.0).at(at(t - 120)),
        ]
    );
}

#[tokio::test]
async fn next_token_is_followed_and_the_pages_are_joined() {
    let t = now();
    let log: Seen = Arc::default();
    let first = recorded(&log, move |_| {
        answer(
            vec![
                result("m0", &[(t - 60, 1.5)], StatusCode::PartialData),
                result("m1", &[], StatusCode::PartialData),
            ],
            Some("page-2"),
        )
    });
    let second = recorded(&log, move |_| {
        answer(
            vec![
                result("m0", &[(t - 120, 9.0)], StatusCode::Complete),
                result("m1", &[(t - 60, 4.0)], StatusCode::Complete),
            ],
            None,
        )
    });
    let source = built(
        CloudWatchSource::metric(&config(), cpu()).per_instance(),
        &[&nothing_yet(), &first, &second],
    )
    .await
    .expect("built");
    let samples = source.sample(&cluster(2, &[])).await.expect("samples");
    // m0's older point on page 2 does not replace its newer one from page 1.
    assert_eq!(
        samples,
        [
            Sample::new("web-1", 1.5).at(at(t - 60)),
            Sample::new("web-2", 4.0).at(at(t - 60)),
        ]
    );
    let requests = seen(&log);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].next_token(), None);
    assert_eq!(requests[1].next_token(), Some("page-2"));
    assert_eq!(
        requests[0].metric_data_queries(),
        requests[1].metric_data_queries(),
        "the same queries on every page"
    );
    assert_eq!(requests[0].start_time(), requests[1].start_time());
}

#[tokio::test]
async fn paging_ends_once_every_query_has_its_newest_point() {
    let t = now();
    let page = mock!(Client::get_metric_data).then_output(move || {
        answer(
            vec![result("m0", &[(t - 60, 2.0)], StatusCode::PartialData)],
            Some("older-points"),
        )
    });
    let never = mock!(Client::get_metric_data).then_output(|| answer(vec![], None));
    let source = built(
        CloudWatchSource::metric(&config(), cpu()),
        &[&nothing_yet(), &page, &never],
    )
    .await
    .expect("built");
    let samples = source.sample(&cluster(1, &[])).await.expect("samples");
    // Cluster-wide: the sample is the cluster's.
    assert_eq!(samples, [Sample::new("web", 2.0).at(at(t - 60))]);
    assert_eq!(page.num_calls(), 1);
    assert_eq!(never.num_calls(), 0, "older points were not asked for");
}

#[tokio::test]
async fn partial_data_is_used_as_it_came_and_a_node_without_a_point_has_no_sample() {
    let t = now();
    let rule = mock!(Client::get_metric_data).then_output(move || {
        answer(
            vec![
                result("m0", &[(t - 60, 3.0)], StatusCode::PartialData),
                result("m1", &[], StatusCode::PartialData),
            ],
            None,
        )
    });
    let source = built(
        CloudWatchSource::metric(&config(), cpu()).per_instance(),
        &[&nothing_yet(), &rule],
    )
    .await
    .expect("built");
    let samples = source.sample(&cluster(2, &[])).await.expect("samples");
    assert_eq!(samples, [Sample::new("web-1", 3.0).at(at(t - 60))]);
}

#[tokio::test]
async fn no_point_at_all_is_no_data_never_zero() {
    let empty = mock!(Client::get_metric_data).then_output(|| {
        answer(
            vec![
                result("m0", &[], StatusCode::Complete),
                result("m1", &[(now() - 60, f64::NAN)], StatusCode::Complete),
            ],
            None,
        )
    });
    let no_result = mock!(Client::get_metric_data).then_output(|| answer(vec![], None));
    let source = built(
        CloudWatchSource::metric(&config(), cpu()).per_instance(),
        &[&nothing_yet(), &empty, &no_result],
    )
    .await
    .expect("no data at build is fine");
    for what in [
        "no point in the window for any of its 2 queries",
        "no result",
    ] {
        let err = source.samples(&cluster(2, &[])).await.expect_err("no data");
        assert!(matches!(err, AwsError::NoData { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "no data: CloudWatch returned {what} for the metric AWS/EC2 CPUUtilization \
                 (Average, per instance)"
            )
        );
        // No data, not bad input: the trigger holds, and the next period may bring some.
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.is_retryable());
        let core: pyscaler_core::Error = err.into();
        assert_eq!(core.kind(), ErrorKind::NotFound);
    }
    // Nodes without instance ids: nothing to ask, and nothing is sent.
    let err = source
        .sample(&cluster(2, &[1, 2]))
        .await
        .expect_err("no data");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err
        .to_string()
        .contains("no node of cluster web has an instance id"));
    assert_eq!(no_result.num_calls(), 1);
}

#[tokio::test]
async fn a_refused_or_failed_query_without_points_says_so() {
    let failed = |status: StatusCode| {
        let message = aws_sdk_cloudwatch::types::MessageData::builder()
            .code("InternalError")
            .value("Internal service error")
            .build();
        mock!(Client::get_metric_data).then_output(move || {
            let r = MetricDataResult::builder()
                .id("m0")
                .status_code(status.clone())
                .messages(message.clone())
                .build();
            answer(vec![r], None)
        })
    };
    let (forbidden, internal) = (
        failed(StatusCode::Forbidden),
        failed(StatusCode::InternalError),
    );
    let source = built(
        CloudWatchSource::metric(&config(), cpu()),
        &[&nothing_yet(), &forbidden, &internal],
    )
    .await
    .expect("built");
    let err = source
        .samples(&cluster(1, &[]))
        .await
        .expect_err("forbidden");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let err = source.samples(&cluster(1, &[])).await.expect_err("failed");
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(
        err.to_string(),
        "CloudWatch GetMetricData failed for metric AWS/EC2 CPUUtilization (Average): \
         InternalError: Internal service error"
    );
}

#[tokio::test]
async fn an_expression_is_one_query_for_the_cluster() {
    const INSIGHTS: &str = r#"SELECT AVG(CPUUtilization) FROM SCHEMA("AWS/EC2", AutoScalingGroupName) WHERE AutoScalingGroupName = 'web'"#;
    let t = now();
    let log: Seen = Arc::default();
    let one = recorded(&log, move |_| {
        answer(
            vec![result(
                "e0",
                &[(t - 300, 41.5), (t - 600, 12.0)],
                StatusCode::Complete,
            )],
            None,
        )
    });
    let two = mock!(Client::get_metric_data).then_output(move || {
        let series = |label: &str, v: f64| {
            let mut r = result("e0", &[(t - 300, v)], StatusCode::Complete);
            r.label = Some(label.to_owned());
            r
        };
        answer(vec![series("web-a", 1.0), series("web-b", 2.0)], None)
    });
    let source = built(
        CloudWatchSource::expression(&config(), INSIGHTS)
            .name("fleet-cpu")
            .period(Duration::from_secs(300))
            .window(Duration::from_secs(900)),
        &[&nothing_yet(), &one, &two],
    )
    .await
    .expect("built");
    assert_eq!(source.name(), "fleet-cpu");
    let samples = source.sample(&cluster(3, &[])).await.expect("samples");
    assert_eq!(samples, [Sample::new("web", 41.5).at(at(t - 300))]);

    let req = &seen(&log)[0];
    let (start, end) = (
        req.start_time().expect("start").secs(),
        req.end_time().expect("end").secs(),
    );
    assert_eq!(end - start, 900);
    let [q] = req.metric_data_queries() else {
        panic!("one query: {req:?}")
    };
    assert_eq!(q.id(), Some("e0"));
    assert_eq!(q.expression(), Some(INSIGHTS));
    assert_eq!(q.period(), Some(300));
    assert!(q.metric_stat().is_none());

    // Several series for one cluster-wide value: said, not averaged in secret.
    let err = source
        .samples(&cluster(3, &[]))
        .await
        .expect_err("two series");
    assert!(matches!(err, AwsError::UnexpectedAnswer { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("2 series for the one query e0 (web-a, web-b)"),
        "{err}"
    );
}

/// Appends a CBOR text string.
fn cbor_text(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    match u8::try_from(len) {
        Ok(n) if n < 24 => out.push(0x60 | n),
        Ok(n) => out.extend([0x78, n]),
        Err(_) => {
            out.push(0x79);
            out.extend(u16::try_from(len).expect("short").to_be_bytes());
        }
    }
    out.extend(s.as_bytes());
}

/// CloudWatch's refusal on the wire: an RPC v2 CBOR error body naming the
/// error shape, and the query-compatible code in `x-amzn-query-error`.
fn refusal(status: u16, code: &str, shape: &str, message: &str) -> HttpResponse {
    let mut body = vec![0xa2];
    cbor_text(&mut body, "__type");
    cbor_text(&mut body, &format!("com.amazonaws.cloudwatch#{shape}"));
    cbor_text(&mut body, "message");
    cbor_text(&mut body, message);
    let mut response = HttpResponse::new(
        aws_smithy_runtime_api::http::StatusCode::try_from(status).expect("status"),
        SdkBody::from(body),
    );
    let headers = response.headers_mut();
    headers.insert("smithy-protocol", "rpc-v2-cbor");
    headers.insert("content-type", "application/cbor");
    headers.insert("x-amzn-query-error", format!("{code};Sender"));
    response
}

#[tokio::test]
async fn a_query_cloudwatch_refuses_is_bad_input_at_build_with_its_message() {
    const MESSAGE: &str =
        "The value p1000 for parameter MetricDataQueries.member.1.MetricStat.Stat is not valid.";
    let refused = mock!(Client::get_metric_data).then_http_response(|| {
        refusal(
            400,
            "InvalidParameterValue",
            "InvalidParameterValueException",
            MESSAGE,
        )
    });
    let err = built(
        CloudWatchSource::metric(
            &config(),
            cpu().statistic(Statistic::Extended("p1000".into())),
        ),
        &[&refused],
    )
    .await
    .expect_err("refused");
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        format!(
            "CloudWatch GetMetricData failed for metric AWS/EC2 CPUUtilization (p1000): \
             InvalidParameterValue: {MESSAGE}"
        )
    );

    // An expression CloudWatch cannot parse.
    let bad_math = mock!(Client::get_metric_data).then_http_response(|| {
        refusal(
            400,
            "ValidationError",
            "ValidationException",
            "Error in expression e0: Unrecognized token",
        )
    });
    let err = built(
        CloudWatchSource::expression(&config(), "AVG(("),
        &[&bad_math],
    )
    .await
    .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("Unrecognized token"), "{err}");
}

#[tokio::test]
async fn throttling_and_server_failures_at_build_are_transient() {
    let throttled = mock!(Client::get_metric_data)
        .then_http_response(|| refusal(400, "Throttling", "ThrottlingException", "Rate exceeded"));
    let err = built(CloudWatchSource::metric(&config(), cpu()), &[&throttled])
        .await
        .expect_err("throttled");
    assert_eq!(err.kind(), ErrorKind::Throttled);
    assert!(err.is_retryable());
    let core: pyscaler_core::Error = err.into();
    assert!(core.is_retryable());

    let failed = mock!(Client::get_metric_data).then_http_response(|| {
        refusal(
            500,
            "InternalServiceError",
            "InternalServiceFault",
            "Internal failure",
        )
    });
    let err = built(CloudWatchSource::metric(&config(), cpu()), &[&failed])
        .await
        .expect_err("failed");
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.is_retryable());
}

#[tokio::test]
async fn more_than_500_nodes_are_asked_for_in_calls_of_at_most_500_queries() {
    let t = now();
    let log: Seen = Arc::default();
    // Each node's value is its instance number.
    let rule = recorded(&log, move |req| {
        let results = req
            .metric_data_queries()
            .iter()
            .map(|q| {
                let n: f64 = instance_of(q)
                    .and_then(|i| i.strip_prefix("i-"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(-1.0);
                result(
                    q.id().unwrap_or_default(),
                    &[(t - 60, n)],
                    StatusCode::Complete,
                )
            })
            .collect();
        answer(results, None)
    });
    let source = built_with(
        CloudWatchSource::metric(&config(), cpu()).per_instance(),
        RuleMode::MatchAny,
        &[&rule],
    )
    .await
    .expect("built");
    log.lock().expect("lock").clear();

    let samples = source.sample(&cluster(1203, &[])).await.expect("samples");
    let sizes: Vec<usize> = seen(&log)
        .iter()
        .map(|r| r.metric_data_queries().len())
        .collect();
    assert_eq!(sizes, [500, 500, 203]);
    let valid = |id: &str| {
        id.starts_with(|c: char| c.is_ascii_lowercase())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    for req in seen(&log) {
        let ids: Vec<_> = req
            .metric_data_queries()
            .iter()
            .map(|q| q.id().unwrap_or_default())
            .collect();
        assert!(ids.iter().all(|id| valid(id)), "{ids:?}");
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "ids are unique within a call");
    }
    assert_eq!(samples.len(), 1203);
    for (k, s) in samples.iter().enumerate() {
        assert_eq!(s.node, format!("web-{}", k + 1));
        assert_eq!(
            s.value,
            (k + 1) as f64,
            "{} got another node's value",
            s.node
        );
    }
}

#[tokio::test]
async fn settings_cloudwatch_would_refuse_are_found_before_any_call() {
    let cases: Vec<(CloudWatchSourceBuilder, &str)> = vec![
        (
            CloudWatchSource::metric(&config(), cpu()).period(Duration::from_secs(45)),
            "invalid period: is 45s; CloudWatch takes 1, 5, 10 or 30 s, or a multiple of 60 s",
        ),
        (
            CloudWatchSource::metric(&config(), cpu()).period(Duration::from_millis(1500)),
            "invalid period",
        ),
        (
            CloudWatchSource::metric(&config(), cpu())
                .period(Duration::from_secs(60))
                .window(Duration::from_secs(90)),
            "invalid window: is 1m 30s; it must be a multiple of the period (1m)",
        ),
        (
            CloudWatchSource::metric(&config(), cpu()).window(Duration::from_secs(30)),
            "invalid window",
        ),
        (
            CloudWatchSource::expression(
                &config(),
                "SEARCH('{AWS/EC2} CPUUtilization', 'Average')",
            )
            .per_instance(),
            "invalid per_instance",
        ),
        (
            CloudWatchSource::metric(&config(), cpu().dimension("InstanceId", "i-1"))
                .per_instance(),
            "invalid dimensions",
        ),
        (
            CloudWatchSource::expression(&config(), " "),
            "invalid expression: is empty",
        ),
        (
            CloudWatchSource::metric(&config(), CloudWatchMetric::new("", "x")),
            "invalid namespace",
        ),
        (
            CloudWatchSource::metric(
                &config(),
                cpu().statistic(Statistic::Extended(String::new())),
            ),
            "invalid statistic",
        ),
        (
            CloudWatchSource::metric(&config(), cpu()).timeout(Duration::ZERO),
            "invalid timeout",
        ),
    ];
    for (builder, want) in cases {
        let rule = nothing_yet();
        let err = built(builder, &[&rule]).await.expect_err(want);
        assert!(err.to_string().starts_with(want), "{err} / {want}");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(rule.num_calls(), 0, "nothing was sent for {want}");
    }
    // The high-resolution periods and multiples of a minute are fine.
    for secs in [1, 5, 10, 30, 60, 300, 3600] {
        let rule = nothing_yet();
        built(
            CloudWatchSource::metric(&config(), cpu()).period(Duration::from_secs(secs)),
            &[&rule],
        )
        .await
        .unwrap_or_else(|e| panic!("{secs} s: {e}"));
    }
}
