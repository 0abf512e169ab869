//! Opening the run journal the config names, and taking the cluster's lease
//! when it is shared (DynamoDB): a standby waits here.

use std::sync::Arc;

use pyscaler_aws::{create_table, dynamodb_client, ClientConfig, DynamoLease};
use pyscaler_core::{CancellationToken, FileJournal, HeldLease, Journal, LeaseTiming};

use crate::config::{JournalStore, TomcatClusterConfig};

/// The journal, and the lease when the store is shared. With DynamoDB this
/// waits until the lease is this controller's (`Ok(None)` when `shutdown`
/// comes first).
///
/// # Errors
/// The journal or the table cannot be opened; a bad lease timing.
pub async fn open_journal(
    config: &TomcatClusterConfig,
    shutdown: &CancellationToken,
) -> Result<Option<(Arc<dyn Journal>, Option<HeldLease>)>, String> {
    let j = &config.journal;
    match j.store {
        JournalStore::File => {
            let journal = FileJournal::open(&config.journal_dir, &config.cluster)
                .map_err(|e| e.to_string())?;
            Ok(Some((Arc::new(journal), None)))
        }
        JournalStore::Dynamodb => {
            let client = dynamodb_client(&ClientConfig::for_profile(&config.ec2)).await;
            if j.create_table {
                create_table(&client, &j.table)
                    .await
                    .map_err(|e| format!("[journal] {e}"))?;
            }
            let lease = DynamoLease::from_client(client, &j.table, &config.cluster, j.lease);
            let journal: Arc<dyn Journal> = Arc::new(lease.journal());
            println!(
                "Taking the lease of cluster {} in DynamoDB table {} (a standby waits here) ...",
                config.cluster, j.table
            );
            let timing = LeaseTiming {
                heartbeat: j.heartbeat,
                margin: j.heartbeat.min(j.lease / 5) / 2,
            };
            let held = HeldLease::acquire(Arc::new(lease), timing, shutdown)
                .await
                .map_err(|e| format!("[journal] {e}"))?;
            let Some(held) = held else {
                return Ok(None);
            };
            let grant = held.grant();
            println!(
                "Lease acquired by {} (epoch {}): this controller scales cluster {}.",
                grant.owner, grant.epoch, config.cluster
            );
            Ok(Some((journal, Some(held))))
        }
    }
}
