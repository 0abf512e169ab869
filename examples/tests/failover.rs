//! Two controllers for one cluster, with the journal and the lease in
//! (moto's) DynamoDB: `tomcat_cluster watch` twice against the local stack.
//! The first holds the lease and scales; the second stands by. The holder
//! is killed with SIGKILL right after its launch: the standby takes the
//! lease within one lease duration and a heartbeat, recovers the dead
//! holder's run (its instance terminated, out of the load balancer), and
//! scales on. Prints the failover time. And the holder paused (SIGSTOP)
//! mid-run instead: the standby takes over and recovers; continued
//! (SIGCONT), the old holder's next journal write is refused and it stops
//! without another EC2 or load-balancer call (counted by the harness's
//! proxy, which only the old holder talks through).

#[path = "common/faults_support.rs"]
mod faults_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faults_support::{
    config_copy, puppet_running, set, tomcat_cluster, tomcat_lock, Aws, Store, CLUSTER,
};
use pyscaler_aws::{
    dynamodb_client, ClientConfig, DynamoLease, Ec2, InstanceState, StaticCredentials, TAG_CLUSTER,
};
use pyscaler_core::{Journal, RunState, RunStatus};
use pyscaler_demo::{Balancing, LocalStack};
use pyscaler_testkit::fault_proxy::FaultProxy;
use pyscaler_testkit::moto;

const LEASE: Duration = Duration::from_secs(6);
const HEARTBEAT: Duration = Duration::from_secs(2);

/// A controller process, killed on drop so a failing test leaves none.
struct Controller {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Controller {
    fn start(stack: &LocalStack, config: &std::path::Path, name: &str) -> Self {
        let mut child = tomcat_cluster(stack, config, &stack.dir.join(format!("{name}.json")))
            .args(["watch", "--runs", "1", "--timeout", "400s"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tomcat_cluster");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[{tag}] {line}");
                sink.lock()
                    .expect("stdout lines")
                    .push((Instant::now(), line));
            }
        });
        Self { child, lines }
    }

    /// When a line containing `text` was printed, waiting up to `within`.
    async fn printed(&self, text: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some((at, _)) = self
                .lines
                .lock()
                .expect("stdout lines")
                .iter()
                .find(|(_, l)| l.contains(text))
            {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "`{text}` not printed within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Controller {
    /// How the process ended, waiting up to `within` for it.
    async fn exited(&mut self, who: &str, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{who} did not stop within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of the stack's config with the journal and the lease in
/// DynamoDB (6 s lease, 2 s heartbeat), and the AWS endpoint `endpoint`
/// instead of moto's own when given.
fn shared_journal(stack: &LocalStack, name: &str, endpoint: Option<String>) -> std::path::PathBuf {
    let copy = config_copy(stack, name, |t| {
        if let Some(url) = endpoint {
            set(t, "ec2", "endpoint_url", url);
        }
    });
    Store::Dynamo.config(stack, &copy)
}

fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal}");
}

/// The DynamoDB journal's runs, read as a user would.
async fn journal_states(stack: &LocalStack) -> Vec<RunState> {
    let client = dynamodb_client(
        &ClientConfig::new(moto::REGION)
            .endpoint_url(stack.moto.endpoint_url())
            .credentials(StaticCredentials::new(
                moto::ACCESS_KEY_ID,
                moto::SECRET_ACCESS_KEY,
            )),
    )
    .await;
    DynamoLease::from_client(client, "pyscaler", CLUSTER, LEASE)
        .journal()
        .runs()
        .await
        .expect("read the journal")
        .iter()
        .map(|r| r.state)
        .collect()
}

async fn live(aws: &Aws) -> Vec<String> {
    let mut ids: Vec<String> = aws
        .ec2
        .find_by_tags(
            &[(TAG_CLUSTER.to_owned(), CLUSTER.to_owned())],
            &[InstanceState::Pending, InstanceState::Running],
        )
        .await
        .expect("list the cluster")
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_from_a_killed_holder_recovers_its_run_and_scales_on() {
    let _tomcat = tomcat_lock();
    let stack = LocalStack::start_with(Balancing::Classic).await;
    let aws = Aws::connect(&stack).await;
    let config = shared_journal(&stack, "failover", None);
    // The load is high from the start: whoever holds the lease scales out.
    stack.set_load(5.0);

    let a = Controller::start(&stack, &config, "holder");
    a.printed("Lease acquired", Duration::from_secs(60)).await;
    let mut b = Controller::start(&stack, &config, "standby");
    b.printed("a standby waits here", Duration::from_secs(60))
        .await;

    // Right after the holder's launch: kill it.
    let deadline = Instant::now() + Duration::from_secs(180);
    let launched = loop {
        let ids = live(&aws).await;
        if !ids.is_empty() {
            break ids;
        }
        assert!(Instant::now() < deadline, "the holder launched nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut a = a;
    a.child.kill().expect("SIGKILL the holder");
    let _ = a.child.wait();
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    assert!(
        !b.lines
            .lock()
            .expect("lines")
            .iter()
            .any(|(_, l)| l.contains("Lease acquired")),
        "the standby held the lease while the holder did"
    );

    // The standby takes the lease within one lease duration and a heartbeat
    // (with room for a loaded machine), then recovers and scales on.
    let acquired = b.printed("Lease acquired", Duration::from_secs(60)).await;
    let failover = acquired.saturating_duration_since(killed);
    println!("failover: lease taken {failover:?} after the kill");
    assert!(
        failover <= LEASE + HEARTBEAT + Duration::from_secs(5),
        "took {failover:?}"
    );
    let status = b.exited("the standby", Duration::from_secs(400)).await;
    assert!(status.success(), "the standby failed: {status}");

    // The dead holder's instance is gone, and out of the load balancer; the
    // standby's own node runs, behind it.
    let now = live(&aws).await;
    assert!(
        launched.iter().all(|i| !now.contains(i)),
        "left running: {launched:?} in {now:?}"
    );
    assert_eq!(now.len(), 1, "{now:?}");
    let mut registered = aws.registered().await;
    registered.sort();
    assert_eq!(registered, now);

    // The journal in DynamoDB: the holder's run recovered, the standby's
    // finished.
    let client = dynamodb_client(
        &ClientConfig::new(moto::REGION)
            .endpoint_url(stack.moto.endpoint_url())
            .credentials(StaticCredentials::new(
                moto::ACCESS_KEY_ID,
                moto::SECRET_ACCESS_KEY,
            )),
    )
    .await;
    let runs = DynamoLease::from_client(client.clone(), "pyscaler", CLUSTER, LEASE)
        .journal()
        .runs()
        .await
        .expect("read the journal");
    // The failover time as the issue measures it: from the kill to the
    // standby's first journal write (its epoch's first entry).
    let items = client
        .scan()
        .table_name("pyscaler")
        .send()
        .await
        .expect("scan")
        .items()
        .to_vec();
    let first_write = items
        .iter()
        .filter(|i| {
            i.get("epoch")
                .and_then(|e| e.as_n().ok())
                .map(String::as_str)
                == Some("2")
        })
        .filter_map(|i| i.get("sk").and_then(|k| k.as_s().ok()))
        .filter_map(|sk| sk.split('#').nth(1).and_then(|m| m.parse::<i64>().ok()))
        .min()
        .expect("the standby wrote to the journal");
    println!(
        "failover: first journal write {} ms after the kill",
        first_write / 1000 - killed_at.timestamp_millis()
    );
    let states: Vec<RunState> = runs.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            RunState::Recovered { succeeded: true },
            RunState::Finished(RunStatus::Succeeded)
        ],
        "{runs:?}"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_holder_that_wakes_up_is_fenced_and_calls_aws_no_more() {
    let _tomcat = tomcat_lock();
    let stack = LocalStack::start_with(Balancing::Classic).await;
    let aws = Aws::connect(&stack).await;
    // Only the holder talks through the proxy: its calls are counted.
    let proxy = FaultProxy::start(&stack.moto);
    let holder_config = shared_journal(&stack, "paused-holder", Some(proxy.endpoint_url()));
    let standby_config = shared_journal(&stack, "paused-standby", None);
    stack.set_load(5.0);

    let mut a = Controller::start(&stack, &holder_config, "holder");
    a.printed("Lease acquired", Duration::from_secs(60)).await;
    let mut b = Controller::start(&stack, &standby_config, "standby");
    b.printed("a standby waits here", Duration::from_secs(60))
        .await;

    // Mid-run, while Puppet configures the holder's new node: pause it.
    a.printed("os-configuration ->", Duration::from_secs(180))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !puppet_running() {
        assert!(Instant::now() < deadline, "puppet never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let launched = live(&aws).await;
    signal(&a.child, "STOP");

    // The standby takes over and recovers the paused holder's run.
    b.printed("Lease acquired", Duration::from_secs(60)).await;
    b.printed("Recovered run", Duration::from_secs(120)).await;
    let now = live(&aws).await;
    assert!(
        launched.iter().all(|i| !now.contains(i)),
        "the paused holder's instance still runs: {launched:?} in {now:?}"
    );

    // The holder wakes up: fenced at its next write, it stops, and makes no
    // EC2 or load-balancer call on the way.
    let before = proxy.calls().len();
    signal(&a.child, "CONT");
    let status = a.exited("the old holder", Duration::from_secs(120)).await;
    let after: Vec<(String, String)> = proxy.calls()[before..]
        .iter()
        .map(|c| (c.service.clone(), c.action.clone()))
        .collect();
    println!("the old holder's calls after waking up: {after:?} (exit {status})");
    assert!(
        after.iter().all(|(service, _)| service == "dynamodb"),
        "{after:?}"
    );
    assert!(
        a.lines
            .lock()
            .expect("lines")
            .iter()
            .any(|(_, l)| l.contains("LEASE LOST") || l.contains("lease lost")),
        "the old holder did not say it lost the lease"
    );

    // The standby finishes its own run; the journal shows the paused
    // holder's run recovered and the standby's succeeded.
    let status = b.exited("the standby", Duration::from_secs(400)).await;
    assert!(status.success(), "the standby failed: {status}");
    assert_eq!(
        journal_states(&stack).await,
        [
            RunState::Recovered { succeeded: true },
            RunState::Finished(RunStatus::Succeeded)
        ]
    );
    let mut registered = aws.registered().await;
    registered.sort();
    assert_eq!(registered, live(&aws).await);
}
