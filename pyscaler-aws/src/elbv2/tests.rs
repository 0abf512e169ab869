//! `TargetGroups` on the wire, with `aws-smithy-mocks` standing in for the
//! elbv2 API: the health states AWS reports and moto does not (moto makes
//! every registered target `healthy` at once).

use std::sync::{Arc, Mutex};

use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::operation::register_targets::RegisterTargetsOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    TargetHealth, TargetHealthReasonEnum, TargetHealthStateEnum,
};
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use pyscaler_core::{Classify, ErrorKind};

use super::*;

type Client = aws_sdk_elasticloadbalancingv2::Client;

const ARN: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";

fn target(
    id: &str,
    state: TargetHealthStateEnum,
    reason: Option<(TargetHealthReasonEnum, &str)>,
) -> TargetHealthDescription {
    let mut health = TargetHealth::builder().state(state);
    if let Some((code, description)) = reason {
        health = health.reason(code).description(description);
    }
    TargetHealthDescription::builder()
        .target(TargetDescription::builder().id(id).port(8080).build())
        .target_health(health.build())
        .build()
}

/// The elbv2 API's answer to a call it refuses: HTTP 400 with an error `code`.
fn refusal(code: &str, message: &str) -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(400).expect("status"),
        SdkBody::from(format!(
            "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\
             <Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error>\
             <RequestId>req-1</RequestId></ErrorResponse>"
        )),
    )
}

/// Each registration call: the target group and its targets (id, port).
type Registrations = Arc<Mutex<Vec<(String, Vec<(String, Option<i32>)>)>>>;

#[tokio::test]
async fn every_new_node_is_registered_in_one_call_on_the_chosen_port() {
    let seen: Registrations = Arc::default();
    let s = seen.clone();
    let rule = mock!(Client::register_targets)
        .match_requests(move |req| {
            s.lock().expect("lock").push((
                req.target_group_arn().unwrap_or_default().to_owned(),
                req.targets()
                    .iter()
                    .map(|t| (t.id().unwrap_or_default().to_owned(), t.port()))
                    .collect(),
            ));
            true
        })
        .then_output(|| RegisterTargetsOutput::builder().build());
    let groups = TargetGroups::from_client(mock_client!(aws_sdk_elasticloadbalancingv2, [&rule]))
        .with_port(Some(8080));
    let ids: Vec<String> = (0..6).map(|i| format!("i-{i}")).collect();
    groups.register(ARN, &ids).await.expect("registered");
    assert_eq!(rule.num_calls(), 1);
    let want: Vec<(String, Option<i32>)> = ids.iter().map(|i| (i.clone(), Some(8080))).collect();
    assert_eq!(*seen.lock().expect("lock"), [(ARN.to_owned(), want)]);
}

#[tokio::test]
async fn initial_then_healthy_is_out_of_service_then_in_service_with_the_reason() {
    let initial = mock!(Client::describe_target_health).then_output(|| {
        DescribeTargetHealthOutput::builder()
            .target_health_descriptions(target(
                "i-1",
                TargetHealthStateEnum::Initial,
                Some((
                    TargetHealthReasonEnum::InitialHealthChecking,
                    "Initial health checks in progress",
                )),
            ))
            .build()
    });
    let healthy = mock!(Client::describe_target_health).then_output(|| {
        DescribeTargetHealthOutput::builder()
            .target_health_descriptions(target("i-1", TargetHealthStateEnum::Healthy, None))
            .build()
    });
    let groups = TargetGroups::from_client(mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::Sequential,
        [&initial, &healthy]
    ));
    let ids = ["i-1".to_owned()];
    let first = groups.health(ARN, &ids).await.expect("health");
    assert_eq!(first[0].state, HealthState::OutOfService);
    assert_eq!(
        first[0].reason.as_deref(),
        Some("initial: Elb.InitialHealthChecking: Initial health checks in progress")
    );
    let then = groups.health(ARN, &ids).await.expect("health");
    assert_eq!(then[0].instance_id, "i-1");
    assert_eq!(then[0].state, HealthState::InService);
    assert_eq!(then[0].reason, None);
}

#[tokio::test]
async fn an_unhealthy_target_says_why() {
    let rule = mock!(Client::describe_target_health).then_output(|| {
        DescribeTargetHealthOutput::builder()
            .target_health_descriptions(target(
                "i-2",
                TargetHealthStateEnum::Unhealthy,
                Some((
                    TargetHealthReasonEnum::ResponseCodeMismatch,
                    "Health checks failed with these codes: [404]",
                )),
            ))
            .build()
    });
    let groups = TargetGroups::from_client(mock_client!(aws_sdk_elasticloadbalancingv2, [&rule]));
    let h = groups
        .health(ARN, &["i-2".to_owned()])
        .await
        .expect("health");
    assert_eq!(h[0].state, HealthState::OutOfService);
    assert_eq!(
        h[0].reason.as_deref(),
        Some(
            "unhealthy: Target.ResponseCodeMismatch: Health checks failed with these codes: [404]"
        )
    );
}

#[tokio::test]
async fn a_missing_target_group_does_not_exist_and_is_bad_input_naming_it() {
    let rule = mock!(Client::describe_target_groups).then_http_response(|| {
        refusal("TargetGroupNotFound", "One or more target groups not found")
    });
    let missing = mock!(Client::register_targets).then_http_response(|| {
        refusal("TargetGroupNotFound", "One or more target groups not found")
    });
    let groups = TargetGroups::from_client(mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::MatchAny,
        [&rule, &missing],
        |c| c.retry_config(aws_sdk_elasticloadbalancingv2::config::retry::RetryConfig::disabled())
    ));
    assert!(!groups.exists(ARN).await.expect("asked"));
    let err = groups
        .register(ARN, &["i-1".to_owned()])
        .await
        .expect_err("no such group");
    assert_eq!(err.code(), Some("TargetGroupNotFound"));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains(ARN), "{err}");
    assert!(err.nothing_registered());
}

#[tokio::test]
async fn the_draining_bound_is_the_groups_deregistration_delay_and_draining_targets_are_named() {
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_group_attributes::DescribeTargetGroupAttributesOutput;
    use aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute;
    let attributes = mock!(Client::describe_target_group_attributes).then_output(|| {
        DescribeTargetGroupAttributesOutput::builder()
            .attributes(
                TargetGroupAttribute::builder()
                    .key("stickiness.enabled")
                    .value("false")
                    .build(),
            )
            .attributes(
                TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value("45")
                    .build(),
            )
            .build()
    });
    let draining = mock!(Client::describe_target_health).then_output(|| {
        DescribeTargetHealthOutput::builder()
            .target_health_descriptions(target(
                "i-1",
                TargetHealthStateEnum::Draining,
                Some((
                    TargetHealthReasonEnum::DeregistrationInProgress,
                    "Target deregistration is in progress",
                )),
            ))
            .target_health_descriptions(target("i-2", TargetHealthStateEnum::Unused, None))
            .build()
    });
    let gone = mock!(Client::describe_target_health)
        .then_output(|| DescribeTargetHealthOutput::builder().build());
    let groups = TargetGroups::from_client(mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::Sequential,
        [&attributes, &draining, &gone]
    ));
    assert_eq!(
        groups.draining_timeout(ARN).await.expect("attributes"),
        Some(std::time::Duration::from_secs(45))
    );
    let ids = ["i-1".to_owned(), "i-2".to_owned()];
    assert_eq!(groups.draining(ARN, &ids).await.expect("health"), ["i-1"]);
    assert!(groups.draining(ARN, &ids).await.expect("health").is_empty());
}

#[tokio::test]
async fn elbv2_refusals_are_classified_by_their_codes_once() {
    // What AWS answers a RegisterTargets with, and what pyscaler makes of it:
    // bad input is never retried; throttling and 5xx are passing.
    let cases: [(u16, &str, ErrorKind, bool); 7] = [
        (400, "TargetGroupNotFound", ErrorKind::InvalidInput, false),
        (400, "InvalidTarget", ErrorKind::InvalidInput, false),
        (400, "TooManyTargets", ErrorKind::InvalidInput, false),
        (400, "LoadBalancerNotFound", ErrorKind::InvalidInput, false),
        (400, "Throttling", ErrorKind::Throttled, true),
        (503, "ServiceUnavailable", ErrorKind::Transient, true),
        (500, "InternalFailure", ErrorKind::Transient, true),
    ];
    for (status, code, kind, retryable) in cases {
        let rule = mock!(Client::register_targets).then_http_response(move || {
            let mut r = refusal(code, "refused by the mock");
            *r.status_mut() = StatusCode::try_from(status).expect("status");
            r
        });
        let groups = TargetGroups::from_client(mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            [&rule],
            |c| c.retry_config(
                aws_sdk_elasticloadbalancingv2::config::retry::RetryConfig::disabled()
            )
        ));
        let err = groups
            .register(ARN, &["i-1".to_owned()])
            .await
            .expect_err(code);
        assert_eq!(err.code(), Some(code), "{err}");
        assert_eq!(err.kind(), kind, "{code}: {err}");
        assert_eq!(err.is_retryable(), retryable, "{code}: {err}");
        assert!(err.to_string().contains(ARN), "{code}: {err}");
    }
}

#[tokio::test]
async fn a_deregistration_repeated_after_its_answer_was_lost_is_done_when_the_group_holds_none() {
    // AWS answers success for targets the group does not hold; moto answers
    // InvalidTarget, which a retry whose first answer was lost meets. The
    // group's own list decides: without them it is done; with one of them
    // still in it (and not draining), the refusal stands.
    let no_targets = |held: Vec<TargetHealthDescription>| {
        let refused = mock!(Client::deregister_targets)
            .then_http_response(|| refusal("InvalidTarget", "The specified target does not exist"));
        let listed = mock!(Client::describe_target_health).then_output(move || {
            DescribeTargetHealthOutput::builder()
                .set_target_health_descriptions(Some(held.clone()))
                .build()
        });
        (refused, listed)
    };
    let ids = ["i-1".to_owned()];
    for (held, done) in [
        (vec![], true),
        (
            vec![target("i-1", TargetHealthStateEnum::Draining, None)],
            true,
        ),
        (
            vec![target("i-2", TargetHealthStateEnum::Healthy, None)],
            true,
        ),
        (
            vec![target("i-1", TargetHealthStateEnum::Healthy, None)],
            false,
        ),
    ] {
        let (refused, listed) = no_targets(held.clone());
        let groups = TargetGroups::from_client(mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            [&refused, &listed],
            |c| c.retry_config(
                aws_sdk_elasticloadbalancingv2::config::retry::RetryConfig::disabled()
            )
        ));
        let result = groups.deregister(ARN, &ids).await;
        assert_eq!(result.is_ok(), done, "{held:?}: {result:?}");
        assert_eq!(listed.num_calls(), 1, "{held:?}");
    }
}
