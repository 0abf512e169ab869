//! Faults on one node alone, on a cluster whose every instance is a host of
//! its own: a full disk, a stopped sshd, a killed Tomcat on one node, while
//! the others stay healthy. A scale-out whose cluster update cannot reach
//! (or write on) one old node fails, names that node, and undoes itself:
//! the new instance is terminated and its address stops answering, the old
//! nodes go on serving, and their member lists are as before.

#[path = "common/faults_support.rs"]
mod faults_support;

use std::path::PathBuf;
use std::time::Duration;

use faults_support::{tomcat_cluster, Aws, CLUSTER, PASSWORD};
use pyscaler_aws::{Ec2, InstanceState, TAG_CLUSTER};
use pyscaler_demo::{Balancing, LocalStack};
use pyscaler_examples::http;
use pyscaler_testkit::nodes::NodeHost;

struct Run {
    report: serde_json::Value,
    text: String,
}

/// One scale-out by hand with the stack's own config.
fn scale_out(stack: &LocalStack, name: &str) -> Run {
    let report: PathBuf = stack.dir.join(format!("{name}.json"));
    let out = tomcat_cluster(stack, &stack.config, &report)
        .args(["run", "--reason", name])
        .output()
        .expect("run tomcat_cluster");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("== {name}\n{text}");
    assert!(!text.contains(PASSWORD), "the password reached the output");
    let json = std::fs::read_to_string(&report).expect("the report was written");
    Run {
        report: serde_json::from_str(&json).expect("the report is JSON"),
        text,
    }
}

fn new_instance(run: &Run) -> String {
    run.report["nodes_added"][0]["instance_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no new node: {}", run.report))
        .to_owned()
}

/// The run failed in the cluster update, naming `node`, and undid itself.
async fn failed_on(run: &Run, node: &str, stack: &LocalStack, aws: &Aws) {
    let r = &run.report;
    assert_eq!(r["status"], "failed", "{}", run.text);
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(node), "the cause names {node}: {message}");
    let failed: Vec<&str> = r["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["status"] == "failed")
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(failed, ["cluster-update"], "{r}");
    // The launch was undone: no live instance of the run, no node host.
    let run_id = r["run_id"].as_str().expect("a run id");
    assert!(aws.live_instances_of_run(run_id).await.is_empty(), "{r}");
    let launched = aws.all_instances_of_run(run_id).await;
    assert_eq!(launched.len(), 1, "{launched:?}");
    assert!(
        stack
            .nodes()
            .wait_until_gone(&launched[0], Duration::from_secs(10)),
        "the terminated instance's host still runs"
    );
}

async fn serves(node: &NodeHost) -> bool {
    let host = node.address().to_string();
    matches!(
        http::get(&host, 8080, "/demo/", Duration::from_secs(5)).await,
        Ok((200, body)) if body.contains("pyscaler demo app")
    )
}

fn members(node: &NodeHost) -> String {
    node.read("/etc/pyscaler/cluster-members")
        .unwrap_or_else(|| panic!("no member list on {}", node.instance_id()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_on_one_node_fails_only_what_needs_that_node() {
    let stack = LocalStack::start_with(Balancing::TargetGroup).await;
    let aws = Aws::connect(&stack).await;

    // Two healthy nodes, each knowing the other.
    let first = scale_out(&stack, "first");
    assert_eq!(first.report["status"], "succeeded", "{}", first.text);
    let a = stack
        .nodes()
        .wait_for(&new_instance(&first), Duration::from_secs(10));
    let second = scale_out(&stack, "second");
    assert_eq!(second.report["status"], "succeeded", "{}", second.text);
    let b = stack
        .nodes()
        .wait_for(&new_instance(&second), Duration::from_secs(10));
    let both = members(&a);
    assert_eq!(both, members(&b));
    assert_eq!(both.lines().count(), 2, "{both}");

    // A killed Tomcat on one node: that node stops serving, the other does not.
    assert!(a.kill_tomcat() > 0, "a Tomcat ran on {}", a.instance_id());
    assert!(!serves(&a).await);
    assert!(serves(&b).await);
    let restarted = a.exec("/usr/local/sbin/pyscaler-tomcat start");
    assert!(restarted.status.success(), "{restarted:?}");
    assert!(serves(&a).await);

    // A full disk on one old node: the next scale-out's cluster update
    // cannot write its list there; the run names the node and is undone.
    b.fill_disk();
    let third = scale_out(&stack, "disk-full");
    failed_on(&third, "tomcat-demo-02", &stack, &aws).await;
    b.free_disk();
    assert!(serves(&a).await && serves(&b).await);
    assert_eq!(members(&a), both);
    assert_eq!(members(&b), both);

    // A stopped sshd on one old node: unreachable, named, undone.
    a.stop_sshd();
    let fourth = scale_out(&stack, "sshd-stopped");
    failed_on(&fourth, "tomcat-demo-01", &stack, &aws).await;
    assert!(a.start_sshd(), "sshd answers again");
    assert!(serves(&a).await && serves(&b).await);
    assert_eq!(members(&b), both);

    // Healthy again: the next scale-out goes through, and every list names
    // all three nodes.
    let fifth = scale_out(&stack, "healthy-again");
    assert_eq!(fifth.report["status"], "succeeded", "{}", fifth.text);
    let c = stack
        .nodes()
        .wait_for(&new_instance(&fifth), Duration::from_secs(10));
    assert!(serves(&c).await);
    let all = members(&c);
    assert_eq!(all.lines().count(), 3, "{all}");
    assert_eq!(members(&a), all);
    assert_eq!(members(&b), all);
    let running = aws
        .ec2
        .find_by_tags(
            &[(TAG_CLUSTER.into(), CLUSTER.into())],
            &[InstanceState::Running],
        )
        .await
        .expect("list the cluster");
    assert_eq!(running.len(), 3, "{running:?}");
}
