//! The DynamoDB lease and journal on the wire, with `aws-smithy-mocks`:
//! what moto does not do (throttle).

use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use pyscaler_core::{Journal, JournalEntry, Lease, RunId, TriggerInfo};

use super::*;

fn throttled() -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(400).expect("status"),
        SdkBody::from(
            "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException\",\
             \"message\":\"The level of configured provisioned throughput for the table was exceeded.\"}",
        ),
    )
}

#[tokio::test]
async fn a_throttled_journal_write_is_retried_by_the_sdk() {
    let acquire = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
        UpdateItemOutput::builder()
            .attributes("epoch", AttributeValue::N("3".into()))
            .build()
    });
    let write = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .sequence()
        .http_response(throttled)
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&acquire, &write],
        |c| c.retry_config(
            aws_sdk_dynamodb::config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
        )
    );
    let lease = DynamoLease::from_client(client, "pyscaler", "web", Duration::from_secs(20));
    let grant = lease.try_acquire().await.expect("asked").expect("granted");
    assert_eq!(grant.epoch, 3);
    lease
        .journal()
        .append(JournalEntry::RunStarted {
            run_id: RunId::new("run-1"),
            pipeline: "scale-out".into(),
            cluster: "web".into(),
            trigger: TriggerInfo::new("manual", "asked"),
            at: chrono::Utc::now(),
        })
        .await
        .expect("written on the second attempt");
    assert_eq!(write.num_calls(), 2);
}

#[test]
fn dynamodb_codes_are_classified_once() {
    use crate::kind_of_code;
    use pyscaler_core::ErrorKind;
    assert_eq!(
        kind_of_code("ProvisionedThroughputExceededException"),
        ErrorKind::Throttled
    );
    assert_eq!(kind_of_code("ThrottlingException"), ErrorKind::Throttled);
    assert_eq!(
        kind_of_code("TransactionConflictException"),
        ErrorKind::Transient
    );
    assert_eq!(
        kind_of_code("ConditionalCheckFailedException"),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind_of_code("ResourceNotFoundException"),
        ErrorKind::InvalidInput
    );
}
