//! A lease and a fenced run journal in DynamoDB (feature `dynamodb`): a
//! controller's state outlives its machine, and a standby elsewhere takes
//! over.
//!
//! # Table layout
//!
//! One table (any name; [`create_table`] makes it) with a string partition
//! key `pk` and a string sort key `sk`. Every item of a cluster shares its
//! partition, `pk = "cluster#<cluster>"`:
//!
//! | `sk` | attributes | what |
//! |---|---|---|
//! | `lease` | `owner` (S), `epoch` (N), `expires_ms` (N: Unix ms) | the cluster's lease ([`DynamoLease`]): absent, lapsed (`expires_ms` in the past) or held by `owner` with fencing epoch `epoch` |
//! | `entry#<micros:020>#<owner>` | `entry` (S: the [`JournalEntry`](pyscaler_core::JournalEntry) as JSON: intent with the client token, the nodes with their instance ids, ...), `run_id` (S; absent for a skipped decision), `kind` (S), `epoch` (N), `owner` (S) | one journal entry ([`DynamoJournal`]), in the order written |
//!
//! The lease's expiry is decided by the conditions of the calls (`expires_ms
//! < :now`), never by DynamoDB's TTL, whose deletes are best-effort within
//! days. Reads are consistent. The clocks of the controllers must agree to
//! well within the lease's margin (NTP does; AWS's lock client avoids
//! absolute times at the price of always waiting one lease duration).
//!
//! An item holds at most 400 KB: a step entry lists the run's new nodes
//! (about 300 bytes each), so a single run may add up to about a thousand.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};

use crate::attempts::{call, CountAttempts};
use crate::error::Subjects;
use crate::{AwsError, ClientConfig};

mod journal;
mod lease;

pub use journal::DynamoJournal;
pub use lease::DynamoLease;

/// The DynamoDB client configured by `config` (region, endpoint,
/// credentials, SDK retries: throttling is retried by the SDK).
pub async fn dynamodb_client(config: &ClientConfig) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(&config.sdk_config().await)
        .interceptor(CountAttempts)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// Creates the table in the layout above (on-demand capacity), for tests
/// and first use; a table that exists already is no error.
///
/// # Errors
/// The API's refusal, classified.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), AwsError> {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let (Ok(pk), Ok(sk), Ok(pk_attr), Ok(sk_attr)) = (
        key("pk", KeyType::Hash),
        key("sk", KeyType::Range),
        attr("pk"),
        attr("sk"),
    ) else {
        return Err(AwsError::invalid(
            "table",
            "the key schema could not be built",
        ));
    };
    let request = client
        .create_table()
        .table_name(table)
        .key_schema(pk)
        .key_schema(sk)
        .attribute_definitions(pk_attr)
        .attribute_definitions(sk_attr)
        .billing_mode(BillingMode::PayPerRequest);
    match call("DynamoDB", "CreateTable", &subjects(table), request.send()).await {
        Ok(_) => Ok(()),
        Err(e) if e.has_code("ResourceInUseException") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The partition of `cluster`.
fn partition(cluster: &str) -> AttributeValue {
    AttributeValue::S(format!("cluster#{cluster}"))
}

/// The lease item's sort key.
const LEASE_SK: &str = "lease";

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn subjects(table: &str) -> Subjects {
    Subjects {
        table: Some(table.to_owned()),
        ..Subjects::default()
    }
}

/// A missing table named, instead of the API's `ResourceNotFoundException`.
fn table_error(e: AwsError, table: &str) -> AwsError {
    if e.has_code("ResourceNotFoundException") {
        AwsError::TableNotFound {
            table: table.to_owned(),
        }
    } else {
        e
    }
}

fn number(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests;
