//! `ClassicElb` on the wire, with `aws-smithy-mocks` standing in for the ELB API.

use std::sync::{Arc, Mutex};

use aws_sdk_elasticloadbalancing::operation::describe_instance_health::DescribeInstanceHealthOutput;
use aws_sdk_elasticloadbalancing::operation::register_instances_with_load_balancer::RegisterInstancesWithLoadBalancerOutput;
use aws_sdk_elasticloadbalancing::types::InstanceState as SdkHealth;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use pyscaler_core::{Classify, ErrorKind};

use super::*;

type Client = aws_sdk_elasticloadbalancing::Client;

/// The ELB API's answer to a call it refuses: HTTP 400 with an error `code`.
fn refusal(code: &str, message: &str, request_id: &str) -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(400).expect("status"),
        SdkBody::from(format!(
            "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/\">\
             <Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error>\
             <RequestId>{request_id}</RequestId></ErrorResponse>"
        )),
    )
}

/// Each registration call: the load balancer and the instance ids.
type Registrations = Arc<Mutex<Vec<(String, Vec<String>)>>>;

#[tokio::test]
async fn all_instances_are_registered_in_one_call() {
    let seen: Registrations = Arc::default();
    let s = seen.clone();
    let rule = mock!(Client::register_instances_with_load_balancer)
        .match_requests(move |req| {
            s.lock().expect("lock").push((
                req.load_balancer_name().unwrap_or_default().to_owned(),
                req.instances()
                    .iter()
                    .filter_map(|i| i.instance_id().map(str::to_owned))
                    .collect(),
            ));
            true
        })
        .then_output(|| RegisterInstancesWithLoadBalancerOutput::builder().build());
    let elb = ClassicElb::from_client(mock_client!(aws_sdk_elasticloadbalancing, [&rule]));
    let ids: Vec<String> = (0..10).map(|i| format!("i-{i}")).collect();
    elb.register("web-lb", &ids).await.expect("registered");
    assert_eq!(rule.num_calls(), 1);
    assert_eq!(*seen.lock().expect("lock"), [("web-lb".to_owned(), ids)]);
}

#[tokio::test]
async fn a_missing_load_balancer_is_bad_input_naming_it() {
    // The wire code is `LoadBalancerNotFound`; the SDK's variant is AccessPointNotFoundException.
    let rule = mock!(Client::register_instances_with_load_balancer).then_http_response(|| {
        refusal(
            "LoadBalancerNotFound",
            "There is no ACTIVE Load Balancer named 'web-lb'",
            "req-1",
        )
    });
    let client = mock_client!(
        aws_sdk_elasticloadbalancing,
        RuleMode::Sequential,
        [&rule],
        |c| c.retry_config(aws_sdk_elasticloadbalancing::config::retry::RetryConfig::disabled())
    );
    let err = ClassicElb::from_client(client)
        .register("web-lb", &["i-1".to_owned()])
        .await
        .expect_err("no such load balancer");
    assert_eq!(err.code(), Some("LoadBalancerNotFound"));
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "ELB RegisterInstancesWithLoadBalancer failed for load balancer web-lb: \
         LoadBalancerNotFound: There is no ACTIVE Load Balancer named 'web-lb'"
    );
}

#[tokio::test]
async fn health_reads_states_and_reasons() {
    let rule = mock!(Client::describe_instance_health).then_output(|| {
        DescribeInstanceHealthOutput::builder()
            .instance_states(
                SdkHealth::builder()
                    .instance_id("i-1")
                    .state("InService")
                    .reason_code("N/A")
                    .description("N/A")
                    .build(),
            )
            .instance_states(
                SdkHealth::builder()
                    .instance_id("i-2")
                    .state("OutOfService")
                    .reason_code("Instance")
                    .description("Instance has failed at least the UnhealthyThreshold number of health checks consecutively.")
                    .build(),
            )
            .instance_states(SdkHealth::builder().instance_id("i-3").state("Unknown").build())
            .build()
    });
    let elb = ClassicElb::from_client(mock_client!(aws_sdk_elasticloadbalancing, [&rule]));
    let health = elb.health("web-lb", &[]).await.expect("health");
    let states: Vec<(&str, HealthState)> = health
        .iter()
        .map(|h| (h.instance_id.as_str(), h.state))
        .collect();
    assert_eq!(
        states,
        [
            ("i-1", HealthState::InService),
            ("i-2", HealthState::OutOfService),
            ("i-3", HealthState::Unknown)
        ]
    );
    assert_eq!(health[0].reason, None, "N/A is no reason");
    assert!(health[1]
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("UnhealthyThreshold")));
}

#[tokio::test]
async fn exists_asks_describe_load_balancers_and_not_found_is_false() {
    use aws_sdk_elasticloadbalancing::operation::describe_load_balancers::DescribeLoadBalancersOutput;
    use aws_sdk_elasticloadbalancing::types::LoadBalancerDescription;
    let names = Arc::new(Mutex::new(Vec::new()));
    let n = names.clone();
    let found = mock!(Client::describe_load_balancers)
        .match_requests(move |req| {
            n.lock()
                .expect("lock")
                .extend(req.load_balancer_names().iter().cloned());
            true
        })
        .then_output(|| {
            DescribeLoadBalancersOutput::builder()
                .load_balancer_descriptions(
                    LoadBalancerDescription::builder()
                        .load_balancer_name("web-lb")
                        .build(),
                )
                .build()
        });
    // moto answers an unknown name as AWS does: 400 LoadBalancerNotFound.
    let missing = mock!(Client::describe_load_balancers).then_http_response(|| {
        refusal(
            "LoadBalancerNotFound",
            "The specified load balancer does not exist: gone-lb",
            "req-2",
        )
    });
    let throttled = mock!(Client::describe_load_balancers)
        .then_http_response(|| refusal("Throttling", "Rate exceeded", "req-3"));
    let client = mock_client!(
        aws_sdk_elasticloadbalancing,
        RuleMode::Sequential,
        [&found, &missing, &throttled],
        |c| c.retry_config(aws_sdk_elasticloadbalancing::config::retry::RetryConfig::disabled())
    );
    let elb = ClassicElb::from_client(client);
    assert!(elb.exists("web-lb").await.expect("asked"));
    assert_eq!(*names.lock().expect("lock"), ["web-lb"]);
    assert!(!elb.exists("gone-lb").await.expect("asked"));
    let err = elb.exists("web-lb").await.expect_err("throttled");
    assert_eq!(err.code(), Some("Throttling"));
}
