//! `DynamoLease`: the cluster's lease as one DynamoDB item, with a fencing
//! epoch.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};
use pyscaler_core::{Error, Lease, LeaseGrant, Result};

use super::{now_ms, number, partition, subjects, table_error, DynamoJournal, LEASE_SK};
use crate::attempts::call;
use crate::ClientConfig;

/// The grant this controller holds, shared with its [`DynamoJournal`]s.
pub(super) type Current = Arc<Mutex<Option<LeaseGrant>>>;

/// A [`Lease`] on one DynamoDB item per cluster (layout: [`crate::dynamo`]
/// module docs, `sk = "lease"`).
///
/// - **Acquire** is one conditional `UpdateItem`: the item is absent,
///   lapsed, or already this owner's; it sets the owner and the expiry and
///   adds one to the epoch, which it returns: the fencing token.
/// - **Renew** (the heartbeat) is conditional on owner and epoch, and never
///   moves the epoch.
/// - **Release** clears the owner and the expiry, on the same condition.
///
/// [`journal`](Self::journal) gives the journal fenced by this lease.
#[derive(Clone)]
pub struct DynamoLease {
    client: aws_sdk_dynamodb::Client,
    table: String,
    cluster: String,
    owner: String,
    duration: Duration,
    current: Current,
}

impl fmt::Debug for DynamoLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoLease")
            .field("table", &self.table)
            .field("cluster", &self.cluster)
            .field("owner", &self.owner)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl DynamoLease {
    /// The lease of `cluster` in `table`, lasting `duration` without a
    /// renewal (AWS's lock client uses 20 s, renewed every 5 s), for this
    /// process: its owner name is the host's name, the process id and a
    /// random suffix.
    pub async fn connect(
        config: &ClientConfig,
        table: impl Into<String>,
        cluster: impl Into<String>,
        duration: Duration,
    ) -> Self {
        Self::from_client(
            super::dynamodb_client(config).await,
            table,
            cluster,
            duration,
        )
    }

    /// The same, over an SDK client of the caller's.
    pub fn from_client(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        cluster: impl Into<String>,
        duration: Duration,
    ) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "controller".to_owned());
        Self {
            client,
            table: table.into(),
            cluster: cluster.into(),
            owner: format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..)),
            duration,
            current: Arc::default(),
        }
    }

    /// The same lease under another owner name (tests, or a name of the
    /// application's own).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// The run journal of this lease's cluster, in the same table, whose
    /// every write is refused unless this lease is held at its epoch.
    pub fn journal(&self) -> DynamoJournal {
        DynamoJournal::new(
            self.client.clone(),
            self.table.clone(),
            self.cluster.clone(),
            self.current.clone(),
        )
    }

    fn key(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), partition(&self.cluster)),
            ("sk".to_owned(), AttributeValue::S(LEASE_SK.to_owned())),
        ])
    }

    fn ms(&self) -> i64 {
        i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX)
    }

    fn grant(&self, epoch: u64, expires_ms: i64) -> LeaseGrant {
        LeaseGrant {
            owner: self.owner.clone(),
            epoch,
            expires_at: DateTime::<Utc>::from_timestamp_millis(expires_ms).unwrap_or_default(),
        }
    }

    fn set_current(&self, grant: Option<LeaseGrant>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = grant;
    }

    /// An `UpdateItem` of the lease item with `update`, on the condition
    /// that `grant` still holds it (its owner, its epoch): renewal and
    /// release.
    fn update_held(
        &self,
        grant: &LeaseGrant,
        update: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .update_expression(update)
            .condition_expression("#o = :me AND epoch = :epoch")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", AttributeValue::S(grant.owner.clone()))
            .expression_attribute_values(":epoch", AttributeValue::N(grant.epoch.to_string()))
    }

    /// Whether an error is DynamoDB's refusal of a condition.
    fn refused(e: &crate::AwsError) -> bool {
        e.has_code("ConditionalCheckFailedException")
    }
}

#[async_trait]
impl Lease for DynamoLease {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn duration(&self) -> Duration {
        self.duration
    }

    async fn try_acquire(&self) -> Result<Option<LeaseGrant>> {
        let now = now_ms();
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .update_expression(
                "SET #o = :me, expires_ms = :exp, epoch = if_not_exists(epoch, :zero) + :one",
            )
            .condition_expression("attribute_not_exists(pk) OR expires_ms < :now OR #o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
            .expression_attribute_values(":exp", AttributeValue::N((now + self.ms()).to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::AllNew);
        let out = match call(
            "DynamoDB",
            "UpdateItem",
            &subjects(&self.table),
            request.send(),
        )
        .await
        {
            Ok(out) => out,
            Err(e) if Self::refused(&e) => return Ok(None),
            Err(e) => return Err(table_error(e, &self.table).into()),
        };
        let attrs = out.attributes().cloned().unwrap_or_default();
        let epoch = number(&attrs, "epoch")
            .and_then(|e| u64::try_from(e).ok())
            .ok_or_else(|| {
                Error::other(
                    pyscaler_core::ErrorKind::Unexpected,
                    format!("DynamoDB table {}: the lease item has no epoch", self.table),
                )
            })?;
        let grant = self.grant(epoch, now + self.ms());
        self.set_current(Some(grant.clone()));
        Ok(Some(grant))
    }

    async fn renew(&self, grant: &LeaseGrant) -> Result<LeaseGrant> {
        let expires = now_ms() + self.ms();
        let request = self
            .update_held(grant, "SET expires_ms = :exp")
            .expression_attribute_values(":exp", AttributeValue::N(expires.to_string()));
        match call(
            "DynamoDB",
            "UpdateItem",
            &subjects(&self.table),
            request.send(),
        )
        .await
        {
            Ok(_) => {
                let next = self.grant(grant.epoch, expires);
                self.set_current(Some(next.clone()));
                Ok(next)
            }
            Err(e) if Self::refused(&e) => {
                self.set_current(None);
                Err(Error::LeaseLost {
                    message: format!(
                        "the lease of cluster {} in DynamoDB table {} is no longer {}'s at epoch {}",
                        self.cluster, self.table, grant.owner, grant.epoch
                    ),
                })
            }
            Err(e) => Err(table_error(e, &self.table).into()),
        }
    }

    async fn release(&self, grant: &LeaseGrant) -> Result<()> {
        self.set_current(None);
        let request = self
            .update_held(grant, "REMOVE #o SET expires_ms = :zero")
            .expression_attribute_values(":zero", AttributeValue::N("0".into()));
        match call(
            "DynamoDB",
            "UpdateItem",
            &subjects(&self.table),
            request.send(),
        )
        .await
        {
            Ok(_) => Ok(()),
            // Someone else's already: nothing to give up.
            Err(e) if Self::refused(&e) => Ok(()),
            Err(e) => Err(table_error(e, &self.table).into()),
        }
    }
}
