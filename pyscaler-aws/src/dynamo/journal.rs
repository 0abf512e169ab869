//! `DynamoJournal`: the run journal in DynamoDB, every write fenced by the
//! cluster's lease.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};
use pyscaler_core::{Error, ErrorKind, Journal, JournalEntry, Result, RunRecord};

use super::lease::Current;
use super::{now_ms, partition, subjects, table_error, LEASE_SK};
use crate::attempts::call;
use crate::AwsError;

/// A [`Journal`] in DynamoDB (layout: [`crate::dynamo`] module docs), made
/// by [`DynamoLease::journal`](crate::DynamoLease::journal).
///
/// Every append is one `TransactWriteItems` of a `ConditionCheck` on the
/// lease item (this owner, this epoch, not lapsed) and the `Put` of the
/// entry (on a key that does not exist yet): a controller that lost the
/// lease, even one that was paused and does not know it yet, has its write
/// refused and nothing is written. The refusal is the fencing point: the
/// pipeline does not start the side effect the entry announces, and the
/// journal is [fenced](Journal::is_fenced) from then on.
pub struct DynamoJournal {
    client: aws_sdk_dynamodb::Client,
    table: String,
    cluster: String,
    lease: Current,
    fenced: AtomicBool,
    /// The sort key of the last entry written, so keys grow within a process.
    last: Mutex<i64>,
}

impl fmt::Debug for DynamoJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoJournal")
            .field("table", &self.table)
            .field("cluster", &self.cluster)
            .field("fenced", &self.fenced.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl DynamoJournal {
    pub(super) fn new(
        client: aws_sdk_dynamodb::Client,
        table: String,
        cluster: String,
        lease: Current,
    ) -> Self {
        Self {
            client,
            table,
            cluster,
            lease,
            fenced: AtomicBool::new(false),
            last: Mutex::new(0),
        }
    }

    /// A sort key after every other this process wrote: the time in
    /// microseconds (one more than the last when the clock has not moved).
    fn next_micros(&self) -> i64 {
        let now = chrono::Utc::now().timestamp_micros();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = now.max(*last + 1);
        *last
    }

    fn lost(&self, message: String) -> Error {
        self.fenced.store(true, Ordering::SeqCst);
        Error::LeaseLost { message }
    }
}

/// The entry's kind, as its JSON tag says (`step_started`).
fn kind_of(entry: &JournalEntry) -> String {
    serde_json::to_value(entry)
        .ok()
        .and_then(|v| v.get("entry").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

#[async_trait]
impl Journal for DynamoJournal {
    async fn append(&self, entry: JournalEntry) -> Result<()> {
        let grant = self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(grant) = grant else {
            return Err(self.lost(format!(
                "no lease of cluster {} is held: the journal in {} takes no write",
                self.cluster, self.table
            )));
        };
        let json = serde_json::to_string(&entry).map_err(|e| {
            Error::other(
                ErrorKind::Unexpected,
                format!("cannot encode a journal entry: {e}"),
            )
        })?;
        let sk = format!("entry#{:020}#{}", self.next_micros(), grant.owner);
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", partition(&self.cluster))
            .key("sk", AttributeValue::S(LEASE_SK.to_owned()))
            .condition_expression("#o = :me AND epoch = :epoch AND expires_ms > :now")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", AttributeValue::S(grant.owner.clone()))
            .expression_attribute_values(":epoch", AttributeValue::N(grant.epoch.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms().to_string()))
            .build();
        let mut item = HashMap::from([
            ("pk".to_owned(), partition(&self.cluster)),
            ("sk".to_owned(), AttributeValue::S(sk)),
            ("entry".to_owned(), AttributeValue::S(json)),
            ("kind".to_owned(), AttributeValue::S(kind_of(&entry))),
            (
                "epoch".to_owned(),
                AttributeValue::N(grant.epoch.to_string()),
            ),
            ("owner".to_owned(), AttributeValue::S(grant.owner.clone())),
        ]);
        // A skipped decision is about no run.
        if let Some(run_id) = entry.run_id() {
            item.insert("run_id".to_owned(), AttributeValue::S(run_id.to_string()));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build();
        let (Ok(check), Ok(put)) = (check, put) else {
            return Err(Error::other(
                ErrorKind::Unexpected,
                "the journal write could not be built",
            ));
        };
        let request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(TransactWriteItem::builder().put(put).build());
        let sent = request.send().await;
        let refused_by_lease = match &sent {
            Err(e) => e.as_service_error().is_some_and(|s| match s {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => {
                    t.cancellation_reasons()
                        .first()
                        .and_then(|r| r.code())
                        .is_some_and(|c| c == "ConditionalCheckFailed")
                }
                _ => false,
            }),
            Ok(_) => false,
        };
        if refused_by_lease {
            return Err(self.lost(format!(
                "DynamoDB table {} refused the journal write of {} at epoch {}: the lease of cluster {} is another's",
                self.table, grant.owner, grant.epoch, self.cluster
            )));
        }
        call(
            "DynamoDB",
            "TransactWriteItems",
            &subjects(&self.table),
            std::future::ready(sent),
        )
        .await
        .map(|_| ())
        .map_err(|e| table_error(e, &self.table).into())
    }

    async fn runs(&self) -> Result<Vec<RunRecord>> {
        Ok(RunRecord::from_entries(self.entries().await?))
    }

    async fn entries(&self) -> Result<Vec<JournalEntry>> {
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND begins_with(sk, :entry)")
                .expression_attribute_values(":pk", partition(&self.cluster))
                .expression_attribute_values(":entry", AttributeValue::S("entry#".into()))
                .set_exclusive_start_key(start.take());
            let out = call("DynamoDB", "Query", &subjects(&self.table), request.send())
                .await
                .map_err(|e| table_error(e, &self.table))?;
            for item in out.items() {
                let Some(json) = item.get("entry").and_then(|v| v.as_s().ok()) else {
                    continue;
                };
                let entry: JournalEntry = serde_json::from_str(json).map_err(|e| {
                    AwsError::invalid(
                        "journal",
                        format!("an entry in DynamoDB table {} is not one: {e}", self.table),
                    )
                })?;
                entries.push(entry);
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(entries)
    }

    fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }
}
