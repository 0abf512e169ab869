//! What the fault-injection and crash tests share: running `tomcat_cluster`
//! against a `LocalStack`, editing a copy of its config, and the checks a
//! user would make afterwards (EC2, the load balancer, the journal).

#![allow(dead_code)] // each test binary uses its own part

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use pyscaler_aws::{
    ClassicElb, ClientConfig, Ec2, InstanceState, LoadBalancer, SdkEc2, StaticCredentials, TAG_RUN,
};
use pyscaler_core::{FileJournal, Journal, JournalEntry, RunRecord};
use pyscaler_demo::{LocalStack, LOAD_BALANCER};
use pyscaler_testkit::moto;

/// The Tomcat manager's password the runs get (never printed).
pub(crate) const PASSWORD: &str = "faults-manager-password-7d1e";
/// The cluster the local stack's config names.
pub(crate) const CLUSTER: &str = "tomcat-demo";

/// Only one test process on the machine may drive the real Tomcat on port
/// 8080 at a time (other test binaries and other checkouts too): hold this
/// while running pipelines.
pub(crate) fn tomcat_lock() -> File {
    pyscaler_testkit::machine_lock("tomcat-8080")
}

/// `tomcat_cluster` with the stack's credentials, the manager password and
/// `--config`/`--report` set; the caller adds the mode.
pub(crate) fn tomcat_cluster(stack: &LocalStack, config: &Path, report: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tomcat_cluster"));
    cmd.arg("--config")
        .arg(config)
        .arg("--report")
        .arg(report)
        .envs(stack.env())
        .env("TOMCAT_MANAGER_PASSWORD", PASSWORD);
    cmd
}

/// Writes a copy of the stack's config, changed by `edit`, to `<stack.dir>/<name>.toml`.
pub(crate) fn config_copy(
    stack: &LocalStack,
    name: &str,
    edit: impl FnOnce(&mut toml::Table),
) -> PathBuf {
    let text = std::fs::read_to_string(&stack.config).expect("read the stack's config");
    let mut table: toml::Table = text.parse().expect("the stack's config is TOML");
    edit(&mut table);
    let path = stack.dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&table).expect("encode the config"))
        .expect("write the config copy");
    path
}

/// `table[section][key] = value`.
pub(crate) fn set(
    table: &mut toml::Table,
    section: &str,
    key: &str,
    value: impl Into<toml::Value>,
) {
    table
        .get_mut(section)
        .and_then(toml::Value::as_table_mut)
        .unwrap_or_else(|| panic!("the config has a [{section}] table"))
        .insert(key.to_owned(), value.into());
}

/// EC2 and the load balancer as a user would look at them.
pub(crate) struct Aws {
    pub(crate) ec2: SdkEc2,
    pub(crate) elb: ClassicElb,
}

impl Aws {
    pub(crate) async fn connect(stack: &LocalStack) -> Self {
        let aws = ClientConfig::new(moto::REGION)
            .endpoint_url(stack.moto.endpoint_url())
            .credentials(StaticCredentials::new(
                moto::ACCESS_KEY_ID,
                moto::SECRET_ACCESS_KEY,
            ));
        Self {
            ec2: SdkEc2::connect(&aws).await,
            elb: ClassicElb::connect(&aws).await,
        }
    }

    /// The instances tagged with `run_id` that are not terminated (or going).
    pub(crate) async fn live_instances_of_run(&self, run_id: &str) -> Vec<String> {
        self.ec2
            .find_by_tags(
                &[(TAG_RUN.to_owned(), run_id.to_owned())],
                &[
                    InstanceState::Pending,
                    InstanceState::Running,
                    InstanceState::Stopping,
                    InstanceState::Stopped,
                ],
            )
            .await
            .expect("list the run's instances")
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    /// Every instance of the run, whatever its state (to tell "never
    /// launched" from "launched and terminated").
    pub(crate) async fn all_instances_of_run(&self, run_id: &str) -> Vec<String> {
        self.ec2
            .find_by_tags(&[(TAG_RUN.to_owned(), run_id.to_owned())], &[])
            .await
            .expect("list the run's instances")
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    /// The instances registered with the stack's load balancer.
    pub(crate) async fn registered(&self) -> Vec<String> {
        self.elb
            .health(LOAD_BALANCER, &[])
            .await
            .expect("the load balancer's instances")
            .into_iter()
            .map(|h| h.instance_id)
            .collect()
    }
}

/// The journal's record of every run (opened and closed again, so the lock
/// is free for the next `tomcat_cluster`).
pub(crate) async fn journal_runs(stack: &LocalStack) -> Vec<RunRecord> {
    let journal = FileJournal::open(stack.dir.join("journal"), CLUSTER).expect("open the journal");
    journal.runs().await.expect("read the journal")
}

/// The journal's entries about `run_id`, as written.
pub(crate) fn journal_entries(stack: &LocalStack, run_id: &str) -> Vec<JournalEntry> {
    let path = stack.dir.join("journal").join(format!("{CLUSTER}.journal"));
    std::fs::read_to_string(&path)
        .expect("read the journal file")
        .lines()
        .filter_map(|l| serde_json::from_str::<JournalEntry>(l).ok())
        .filter(|e| e.run_id().is_some_and(|id| id.as_str() == run_id))
        .collect()
}

/// Whether the journal says `step` of the run was undone successfully.
pub(crate) fn undone_in_journal(entries: &[JournalEntry], step: &str) -> bool {
    entries.iter().any(
        |e| matches!(e, JournalEntry::StepUndone { step: s, succeeded: true, .. } if s == step),
    )
}

/// Waits until no `puppet apply` runs on this machine (the stand-in VM), so a
/// run killed mid-Puppet does not disturb the next case. Puppet goes on after
/// its controller died (it is the node's process, not ours to kill by name).
///
/// # Panics
/// When Puppet still runs after `within`.
pub(crate) fn wait_for_no_puppet(within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    while puppet_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "a `puppet apply` still runs after {within:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Whether a `puppet apply` runs on this machine.
pub(crate) fn puppet_running() -> bool {
    Command::new("pgrep")
        .args(["-f", "puppet apply"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Where the journal of a suite's runs is: the stack's file, or DynamoDB
/// (moto's), with the lease, through a copy of each config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    File,
    Dynamo,
}

impl Store {
    /// `config`, or for DynamoDB a copy of it with the journal and the lease
    /// there (a 6 s lease renewed every 2 s, so a new controller waits
    /// little for a killed one's to lapse).
    pub(crate) fn config(self, stack: &LocalStack, config: &Path) -> PathBuf {
        if self == Self::File {
            return config.to_path_buf();
        }
        let text = std::fs::read_to_string(config).expect("read the config");
        let mut table: toml::Table = text.parse().expect("the config is TOML");
        let mut journal = toml::Table::new();
        journal.insert("store".into(), "dynamodb".into());
        journal.insert("create_table".into(), true.into());
        journal.insert("lease".into(), "6s".into());
        journal.insert("heartbeat".into(), "2s".into());
        table.insert("journal".into(), journal.into());
        let name = config
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = stack.dir.join(format!("{name}-dynamodb.toml"));
        std::fs::write(&path, toml::to_string(&table).expect("encode the config"))
            .expect("write the config copy");
        path
    }

    /// Every run the journal knows.
    pub(crate) async fn runs(self, stack: &LocalStack) -> Vec<RunRecord> {
        match self {
            Self::File => journal_runs(stack).await,
            Self::Dynamo => dynamo_journal(stack)
                .await
                .runs()
                .await
                .expect("read the DynamoDB journal"),
        }
    }

    /// The journal's entries of `run_id`, in order.
    pub(crate) async fn entries(self, stack: &LocalStack, run_id: &str) -> Vec<JournalEntry> {
        match self {
            Self::File => journal_entries(stack, run_id),
            Self::Dynamo => {
                let client = dynamo_client(stack).await;
                let out = client
                    .query()
                    .table_name("pyscaler")
                    .consistent_read(true)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :e)")
                    .expression_attribute_values(
                        ":pk",
                        aws_sdk_dynamodb::types::AttributeValue::S(format!("cluster#{CLUSTER}")),
                    )
                    .expression_attribute_values(
                        ":e",
                        aws_sdk_dynamodb::types::AttributeValue::S("entry#".into()),
                    )
                    .send()
                    .await
                    .expect("query the DynamoDB journal");
                out.items()
                    .iter()
                    .filter_map(|i| i.get("entry").and_then(|v| v.as_s().ok()))
                    .filter_map(|j| serde_json::from_str::<JournalEntry>(j).ok())
                    .filter(|e| e.run_id().is_some_and(|r| r.as_str() == run_id))
                    .collect()
            }
        }
    }
}

pub(crate) async fn dynamo_client(stack: &LocalStack) -> aws_sdk_dynamodb::Client {
    pyscaler_aws::dynamodb_client(
        &ClientConfig::new(moto::REGION)
            .endpoint_url(stack.moto.endpoint_url())
            .credentials(StaticCredentials::new(
                moto::ACCESS_KEY_ID,
                moto::SECRET_ACCESS_KEY,
            )),
    )
    .await
}

async fn dynamo_journal(stack: &LocalStack) -> pyscaler_aws::DynamoJournal {
    pyscaler_aws::DynamoLease::from_client(
        dynamo_client(stack).await,
        "pyscaler",
        CLUSTER,
        std::time::Duration::from_secs(6),
    )
    .journal()
}
