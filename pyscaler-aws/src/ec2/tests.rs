//! `SdkEc2` on the wire, with `aws-smithy-mocks` standing in for EC2.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::run_instances::{RunInstancesInput, RunInstancesOutput};
use aws_sdk_ec2::types::{InstanceState as SdkState, Reservation};
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use pyscaler_core::{Classify, ErrorKind};

use super::*;

fn spec() -> LaunchSpec {
    LaunchSpec {
        launch_template: None,
        image_id: Some("ami-0abc".into()),
        instance_type: Some("t3.small".into()),
        key_name: Some("ops".into()),
        security_group_ids: vec!["sg-1".into()],
        subnet_id: None,
        user_data: Some("#!/bin/sh\necho hi\n".into()),
        iam_instance_profile: Some("arn:aws:iam::1:instance-profile/web".into()),
        tags: [
            ("Name".to_owned(), "web-03..04".to_owned()),
            ("pyscaler:run".to_owned(), "run-1".to_owned()),
        ]
        .into(),
        min_count: 2,
        max_count: 2,
        client_token: "run-1-00ff".into(),
        market: Default::default(),
    }
}

fn sdk_instance(id: &str, index: i32) -> aws_sdk_ec2::types::Instance {
    aws_sdk_ec2::types::Instance::builder()
        .instance_id(id)
        .ami_launch_index(index)
        .state(SdkState::builder().name(InstanceStateName::Pending).build())
        .private_ip_address("10.0.0.7")
        .public_dns_name("")
        .launch_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
        .tags(Tag::builder().key("Name").value("web-03..04").build())
        .build()
}

/// An EC2 error exactly as the service writes it.
fn ec2_error(status: u16, code: &str) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>refused by the mock</Message></Error></Errors><RequestID>req-1</RequestID></Response>"
    );
    HttpResponse::new(
        StatusCode::try_from(status).expect("status"),
        SdkBody::from(body),
    )
}

#[tokio::test]
async fn launch_sends_one_call_with_token_counts_tags_and_encoded_user_data() {
    let seen: Arc<Mutex<Vec<RunInstancesInput>>> = Arc::default();
    let s = seen.clone();
    let rule = mock!(aws_sdk_ec2::Client::run_instances)
        .match_requests(move |req| {
            s.lock().expect("lock").push(req.clone());
            true
        })
        .then_output(|| {
            RunInstancesOutput::builder()
                .instances(sdk_instance("i-2", 1))
                .instances(sdk_instance("i-1", 0))
                .build()
        });
    let ec2 = SdkEc2::from_client(mock_client!(aws_sdk_ec2, [&rule]));
    let launched = ec2.launch(&spec()).await.expect("launched");

    assert_eq!(rule.num_calls(), 1);
    let ids: Vec<&str> = launched.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["i-1", "i-2"], "sorted by launch index");
    assert_eq!(launched[0].state, InstanceState::Pending);
    assert_eq!(launched[0].private_ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(
        launched[0].public_dns, None,
        "empty DNS names are no address"
    );
    assert_eq!(
        launched[0].launched_at.map(|t| t.timestamp()),
        Some(1_700_000_000)
    );

    let req = seen.lock().expect("lock")[0].clone();
    assert_eq!(req.client_token(), Some("run-1-00ff"));
    assert_eq!((req.min_count(), req.max_count()), (Some(2), Some(2)));
    assert_eq!(req.image_id(), Some("ami-0abc"));
    assert_eq!(req.instance_type().map(|t| t.as_str()), Some("t3.small"));
    assert_eq!(req.security_group_ids(), ["sg-1".to_owned()]);
    assert_eq!(
        req.user_data(),
        Some(base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho hi\n")).as_deref()
    );
    assert_eq!(
        req.iam_instance_profile().and_then(|p| p.arn()),
        Some("arn:aws:iam::1:instance-profile/web")
    );
    let specs = req.tag_specifications();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].resource_type(), Some(&ResourceType::Instance));
    let tags: BTreeMap<&str, &str> = specs[0]
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")))
        .collect();
    assert_eq!(
        tags,
        [("Name", "web-03..04"), ("pyscaler:run", "run-1")].into()
    );
}

/// Keeps the body of every request as it goes on the wire, attempt by attempt.
#[derive(Debug, Clone, Default)]
struct WireLog(Arc<Mutex<Vec<String>>>);

impl aws_smithy_runtime_api::client::interceptors::Intercept for WireLog {
    fn name(&self) -> &'static str {
        "WireLog"
    }

    fn read_before_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let body = context.request().body().bytes().unwrap_or_default();
        self.0
            .lock()
            .expect("lock")
            .push(String::from_utf8_lossy(body).into_owned());
        Ok(())
    }
}

#[tokio::test]
async fn an_sdk_retry_of_a_launch_resends_the_same_token_on_the_wire() {
    let wire = WireLog::default();
    let rule = mock!(aws_sdk_ec2::Client::run_instances)
        .sequence()
        .http_status(503, None)
        .output(|| {
            RunInstancesOutput::builder()
                .instances(sdk_instance("i-1", 0))
                .build()
        })
        .build();
    let w = wire.clone();
    let client = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&rule], move |c| c
        .retry_config(
            aws_sdk_ec2::config::retry::RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(1))
        )
        .interceptor(w.clone()));
    let ec2 = SdkEc2::from_client(client);
    ec2.launch(&spec()).await.expect("second attempt succeeds");
    assert_eq!(rule.num_calls(), 2);
    let bodies = wire.0.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for body in &bodies {
        assert!(body.contains("Action=RunInstances"), "{body}");
        assert!(body.contains("ClientToken=run-1-00ff"), "{body}");
        assert!(
            body.contains("TagSpecification.1.ResourceType=instance"),
            "{body}"
        );
        assert!(
            body.contains("MinCount=2") && body.contains("MaxCount=2"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn wire_error_codes_become_kinds_naming_the_value() {
    let cases = [
        (
            400,
            "InvalidAMIID.NotFound",
            ErrorKind::InvalidInput,
            Some("image ami-0abc"),
        ),
        (
            400,
            "InvalidInstanceType",
            ErrorKind::InvalidInput,
            Some("instance type t3.small"),
        ),
        (
            400,
            "InvalidKeyPair.NotFound",
            ErrorKind::InvalidInput,
            Some("key pair ops"),
        ),
        (
            400,
            "InvalidGroup.NotFound",
            ErrorKind::InvalidInput,
            Some("security group(s) sg-1"),
        ),
        (400, "InvalidParameterValue", ErrorKind::InvalidInput, None),
        (503, "RequestLimitExceeded", ErrorKind::Throttled, None),
        (
            500,
            "InsufficientInstanceCapacity",
            ErrorKind::Transient,
            None,
        ),
        (503, "Unavailable", ErrorKind::Transient, None),
        (500, "InternalError", ErrorKind::Transient, None),
        (
            403,
            "UnauthorizedOperation",
            ErrorKind::PermissionDenied,
            None,
        ),
        (401, "AuthFailure", ErrorKind::PermissionDenied, None),
        (
            400,
            "IdempotentParameterMismatch",
            ErrorKind::Conflict,
            None,
        ),
        (500, "SomethingNew", ErrorKind::Transient, None),
        (400, "SomethingNew", ErrorKind::Unexpected, None),
    ];
    for (status, code, kind, subject) in cases {
        let rule = mock!(aws_sdk_ec2::Client::run_instances)
            .then_http_response(move || ec2_error(status, code));
        let client = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&rule], |c| c
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled()));
        let err = SdkEc2::from_client(client)
            .launch(&spec())
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Some(code));
        assert_eq!(err.kind(), kind, "{code}");
        assert_eq!(err.is_retryable(), kind.is_retryable_by_default(), "{code}");
        let shown = err.to_string();
        assert!(shown.starts_with("EC2 RunInstances failed"), "{shown}");
        assert!(shown.contains(code), "{shown}");
        if let Some(s) = subject {
            assert!(shown.contains(&format!("for {s}:")), "{shown}");
        }
    }
}

#[tokio::test]
async fn describe_and_find_read_states_and_tags() {
    let filters: Arc<Mutex<Vec<String>>> = Arc::default();
    let f = filters.clone();
    let rule = mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(move |req| {
            f.lock().expect("lock").extend(
                req.filters()
                    .iter()
                    .map(|x| format!("{}={}", x.name().unwrap_or(""), x.values().join("|"))),
            );
            true
        })
        .then_output(|| {
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(
                            aws_sdk_ec2::types::Instance::builder()
                                .instance_id("i-9")
                                .state(
                                    SdkState::builder()
                                        .name(InstanceStateName::ShuttingDown)
                                        .build(),
                                )
                                .state_reason(
                                    aws_sdk_ec2::types::StateReason::builder()
                                        .code("Client.UserInitiatedShutdown")
                                        .message(
                                            "Client.UserInitiatedShutdown: User initiated shutdown",
                                        )
                                        .build(),
                                )
                                .public_ip_address("54.1.2.3")
                                .tags(Tag::builder().key("pyscaler:cluster").value("web").build())
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let ec2 = SdkEc2::from_client(mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&rule]));
    let found = ec2
        .find_by_tags(
            &[("pyscaler:cluster".to_owned(), "web".to_owned())],
            &[InstanceState::Pending, InstanceState::Running],
        )
        .await
        .expect("found");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].state, InstanceState::ShuttingDown);
    assert!(found[0].state.is_gone());
    assert_eq!(found[0].public_ip.as_deref(), Some("54.1.2.3"));
    assert_eq!(
        found[0].tags.get("pyscaler:cluster").map(String::as_str),
        Some("web")
    );
    assert!(found[0]
        .state_reason
        .as_deref()
        .is_some_and(|r| r.contains("User initiated")));
    assert_eq!(
        *filters.lock().expect("lock"),
        [
            "tag:pyscaler:cluster=web".to_owned(),
            "instance-state-name=pending|running".to_owned()
        ]
    );
    assert!(ec2.describe(&[]).await.expect("no ids, no call").is_empty());
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn the_console_output_is_decoded_and_a_non_nitro_instance_is_asked_without_latest() {
    use aws_sdk_ec2::operation::get_console_output::{
        GetConsoleOutputInput, GetConsoleOutputOutput,
    };
    let text = "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n";
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    let seen: Arc<Mutex<Vec<GetConsoleOutputInput>>> = Arc::default();
    let s = seen.clone();
    // AWS refuses `Latest` for an instance not on the Nitro system; the
    // second call asks for the output EC2 posted at the last transition.
    let rule = mock!(aws_sdk_ec2::Client::get_console_output)
        .match_requests(move |req| {
            s.lock().expect("lock").push(req.clone());
            true
        })
        .sequence()
        .http_response(|| ec2_error(400, "UnsupportedOperation"))
        .output(move || {
            GetConsoleOutputOutput::builder()
                .instance_id("i-1")
                .output(encoded.clone())
                .build()
        })
        .output(|| GetConsoleOutputOutput::builder().instance_id("i-1").build())
        .build();
    let ec2 = SdkEc2::from_client(mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&rule]));
    assert_eq!(
        ec2.console_output("i-1").await.expect("read").as_deref(),
        Some(text)
    );
    let asked = seen.lock().expect("lock").clone();
    assert_eq!(
        asked.iter().map(|r| r.latest()).collect::<Vec<_>>(),
        [Some(true), None]
    );
    assert!(asked.iter().all(|r| r.instance_id() == Some("i-1")));
    // No output yet (a booting instance): none, not an error.
    assert_eq!(ec2.console_output("i-1").await.expect("read"), None);
}

#[tokio::test]
async fn a_console_output_that_is_not_base64_is_an_unexpected_answer_naming_the_instance() {
    use aws_sdk_ec2::operation::get_console_output::GetConsoleOutputOutput;
    let rule = mock!(aws_sdk_ec2::Client::get_console_output).then_output(|| {
        GetConsoleOutputOutput::builder()
            .output("not base64 at all!")
            .build()
    });
    let ec2 = SdkEc2::from_client(mock_client!(aws_sdk_ec2, [&rule]));
    let err = ec2.console_output("i-9").await.expect_err("garbled");
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(err.to_string().contains("instance i-9"), "{err}");
    assert!(err.to_string().contains("not base64"), "{err}");
}
