//! The journal's cost per pipeline step (issue 14): a pipeline of no-op
//! steps journaled in a `FileJournal` and in a `DynamoJournal` on moto
//! (behind the harness's proxy, which counts the DynamoDB calls), and the
//! latency of one append in each. moto on loopback is not DynamoDB, so the
//! figures to quote are the ratio and the call counts, not the absolute
//! DynamoDB latency.
//!
//! `cargo run --release -p pyscaler-benches --bin journal [appends]` prints
//! min, median and max of `appends` (default 200) appends to each, and the
//! calls per step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyscaler_aws::{create_table, dynamodb_client, ClientConfig, DynamoLease, StaticCredentials};
use pyscaler_core::{
    async_trait, Action, ActionExt, Cluster, Context, FileJournal, Journal, JournalEntry, Lease,
    Pipeline, Result, RunId, Target,
};
use pyscaler_testkit::fault_proxy::FaultProxy;
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};

struct Noop(String);

#[async_trait]
impl Action for Noop {
    fn name(&self) -> &str {
        &self.0
    }
    async fn run(&self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }
}

fn entry(i: usize) -> JournalEntry {
    JournalEntry::StepStarted {
        run_id: RunId::new("run-bench"),
        step: format!("step-{i}"),
        intent: vec!["launch 1 t3.small with client token run-bench-00ff".into()],
        at: chrono::Utc::now(),
    }
}

async fn time_appends(journal: &dyn Journal, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        journal.append(entry(i)).await.expect("append");
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200)
        .max(1);
    let moto = MotoServer::start();
    let proxy = FaultProxy::start(&moto);
    let client = dynamodb_client(
        &ClientConfig::new(REGION)
            .endpoint_url(proxy.endpoint_url())
            .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
            .max_attempts(1),
    )
    .await;
    create_table(&client, "pyscaler").await.expect("table");
    let lease = DynamoLease::from_client(client, "pyscaler", "bench", Duration::from_secs(60));
    lease.try_acquire().await.expect("asked").expect("free");
    let dynamo: Arc<dyn Journal> = Arc::new(lease.journal());
    let dir = tempfile::tempdir().expect("tempdir");
    let file: Arc<dyn Journal> = Arc::new(FileJournal::open(dir.path(), "bench").expect("file"));

    // Calls per step: a 5-step run journaled in DynamoDB.
    let steps = 5;
    let mut builder = Pipeline::builder("bench").journal(dynamo.clone());
    for i in 0..steps {
        builder = builder.step(Noop(format!("step-{i}")).on(Target::None));
    }
    let pipeline = builder.build().expect("pipeline");
    let before = proxy.calls().len();
    let report = pipeline.run(&mut Context::new(Cluster::new("bench"))).await;
    assert!(report.is_success(), "{report}");
    let calls = proxy.calls()[before..].to_vec();
    let writes = calls
        .iter()
        .filter(|c| c.action == "TransactWriteItems")
        .count();
    let reads = calls.iter().filter(|c| c.action == "Query").count();
    println!(
        "a {steps}-step run: {} DynamoDB calls ({writes} TransactWriteItems, {reads} Query): \
         {} writes per step, plus {} per run (run started, steps ended, run finished) \
         and the unfinished-run check",
        calls.len(),
        2,
        writes.saturating_sub(2 * steps),
    );

    let f = time_appends(file.as_ref(), n).await;
    let d = time_appends(dynamo.as_ref(), n).await;
    println!("| journal | appends | min | median | max |");
    println!("|---|---|---|---|---|");
    for (name, t) in [("FileJournal (fsync)", &f), ("DynamoJournal on moto", &d)] {
        println!(
            "| {name} | {n} | {} | {} | {} |",
            ms(t[0]),
            ms(t[t.len() / 2]),
            ms(t[t.len() - 1])
        );
    }
    println!(
        "median ratio DynamoJournal / FileJournal: {:.1}",
        d[d.len() / 2].as_secs_f64() / f[f.len() / 2].as_secs_f64()
    );
}
