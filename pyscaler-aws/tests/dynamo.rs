//! The DynamoDB lease and the fenced journal against moto's DynamoDB:
//! acquire, renew, expiry and take-over with a larger epoch, a stale
//! holder's write refused with nothing written, and a missing table named.
#![cfg(feature = "dynamodb")]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pyscaler_aws::{create_table, dynamodb_client, ClientConfig, DynamoLease, StaticCredentials};
use pyscaler_core::{Error, ErrorKind, Journal, JournalEntry, Lease, RunId, RunState, TriggerInfo};
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};

const TABLE: &str = "pyscaler";

async fn client(moto: &MotoServer) -> aws_sdk_dynamodb::Client {
    dynamodb_client(
        &ClientConfig::new(REGION)
            .endpoint_url(moto.endpoint_url())
            .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
            .max_attempts(1),
    )
    .await
}

fn lease(client: &aws_sdk_dynamodb::Client, owner: &str, duration: Duration) -> DynamoLease {
    DynamoLease::from_client(client.clone(), TABLE, "web", duration).with_owner(owner)
}

fn started(run: &str) -> JournalEntry {
    JournalEntry::RunStarted {
        run_id: RunId::new(run),
        pipeline: "scale-out".into(),
        cluster: "web".into(),
        trigger: TriggerInfo::new("manual", "asked"),
        at: Utc::now(),
    }
}

fn step(run: &str, intent: &str) -> JournalEntry {
    JournalEntry::StepStarted {
        run_id: RunId::new(run),
        step: "deploy-ec2-node".into(),
        intent: vec![intent.into()],
        at: Utc::now(),
    }
}

#[tokio::test]
async fn one_holder_at_a_time_and_the_epoch_grows_with_each_acquisition() {
    let moto = MotoServer::start();
    let client = client(&moto).await;
    create_table(&client, TABLE).await.expect("table");
    create_table(&client, TABLE).await.expect("again: no error");
    let a = lease(&client, "a", Duration::from_secs(20));
    let b = lease(&client, "b", Duration::from_secs(20));
    let first = a.try_acquire().await.expect("asked").expect("free");
    assert_eq!((first.owner.as_str(), first.epoch), ("a", 1));
    assert!(
        b.try_acquire().await.expect("asked").is_none(),
        "a holds it"
    );
    let renewed = a.renew(&first).await.expect("renewed");
    assert_eq!(renewed.epoch, 1, "a renewal keeps the epoch");
    assert!(renewed.expires_at >= first.expires_at);
    a.release(&renewed).await.expect("released");
    let second = b.try_acquire().await.expect("asked").expect("free again");
    assert_eq!((second.owner.as_str(), second.epoch), ("b", 2));
    // a's old grant no longer renews: the lease is b's.
    let e = a.renew(&renewed).await.expect_err("not a's");
    assert!(matches!(e, Error::LeaseLost { .. }), "{e}");
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_and_the_old_holders_journal_write_is_refused() {
    let moto = MotoServer::start();
    let client = client(&moto).await;
    create_table(&client, TABLE).await.expect("table");
    let a = lease(&client, "a", Duration::from_millis(1500));
    let b = lease(&client, "b", Duration::from_secs(20));
    let a_journal = a.journal();
    let b_journal = b.journal();

    // Without the lease, no write at all.
    let e = a_journal
        .append(started("run-1"))
        .await
        .expect_err("no lease held");
    assert!(matches!(e, Error::LeaseLost { .. }), "{e}");

    let a_grant = a.try_acquire().await.expect("asked").expect("free");
    let a_journal = a.journal();
    a_journal
        .append(started("run-1"))
        .await
        .expect("a holds it");
    a_journal
        .append(step("run-1", "launch 1 t3.small with client token T1"))
        .await
        .expect("a holds it");
    assert!(!a_journal.is_fenced());

    // a stops renewing (paused, or dead): its lease lapses, b takes over.
    assert!(
        b.try_acquire().await.expect("asked").is_none(),
        "not lapsed yet"
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let b_grant = b.try_acquire().await.expect("asked").expect("lapsed");
    assert_eq!(b_grant.epoch, a_grant.epoch + 1);

    // a wakes up and writes: refused, nothing written, fenced from now on.
    let e = a_journal
        .append(step("run-1", "register with the load balancer"))
        .await
        .expect_err("stale");
    assert!(matches!(e, Error::LeaseLost { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(a_journal.is_fenced());
    let runs = b_journal.runs().await.expect("read");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, RunState::Unfinished);
    assert_eq!(runs[0].steps, [("deploy-ec2-node".to_owned(), None)]);
    // The items carry what recovery needs: the intent with the client token.
    let items = client
        .scan()
        .table_name(TABLE)
        .send()
        .await
        .expect("scan")
        .items()
        .to_vec();
    let entries: Vec<&str> = items
        .iter()
        .filter_map(|i| i.get("entry").and_then(|v| v.as_s().ok()))
        .map(String::as_str)
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries.iter().any(|e| e.contains("client token T1")),
        "{entries:?}"
    );
    // b writes, as the holder.
    b_journal
        .append(JournalEntry::RunRecovered {
            run_id: RunId::new("run-1"),
            undone: vec!["terminated i-1".into()],
            succeeded: true,
            at: Utc::now(),
        })
        .await
        .expect("b holds it");
    assert_eq!(
        b_journal.runs().await.expect("read")[0].state,
        RunState::Recovered { succeeded: true }
    );
    // And a's renewal says it lost the lease.
    let e = a.renew(&a_grant).await.expect_err("lost");
    assert!(matches!(e, Error::LeaseLost { .. }), "{e}");
}

#[tokio::test]
async fn a_missing_table_is_a_typed_error_naming_it() {
    let moto = MotoServer::start();
    let client = client(&moto).await;
    let a = lease(&client, "a", Duration::from_secs(20));
    let e = a.try_acquire().await.expect_err("no table");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.to_string()
            .contains("DynamoDB table pyscaler does not exist"),
        "{e}"
    );
    let e = a.journal().runs().await.expect_err("no table");
    assert!(
        e.to_string()
            .contains("DynamoDB table pyscaler does not exist"),
        "{e}"
    );
}

#[tokio::test]
async fn many_entries_read_back_in_order_over_pages() {
    let moto = MotoServer::start();
    let client = client(&moto).await;
    create_table(&client, TABLE).await.expect("table");
    let a = Arc::new(lease(&client, "a", Duration::from_secs(20)));
    a.try_acquire().await.expect("asked").expect("free");
    let journal = a.journal();
    // Big enough entries that moto pages the query (1 MB a page).
    let big = "x".repeat(40_000);
    for i in 0..40 {
        journal
            .append(started(&format!("run-{i:02}")))
            .await
            .expect("write");
        journal
            .append(step(&format!("run-{i:02}"), &big))
            .await
            .expect("write");
    }
    let runs = journal.runs().await.expect("read");
    let ids: Vec<String> = runs.iter().map(|r| r.run_id.to_string()).collect();
    let wanted: Vec<String> = (0..40).map(|i| format!("run-{i:02}")).collect();
    assert_eq!(ids, wanted);
    assert!(runs.iter().all(|r| r.steps.len() == 1));
}
