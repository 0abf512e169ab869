//! The Tomcat cluster example end to end, for real, against the local stack:
//! moto for EC2 and the load balancer (an ALB target group over two
//! Availability Zones, the example's default; and a classic ELB, the path
//! older accounts keep), a host of its own for every instance moto launches
//! (its private IP in its own network namespace, its own sshd, disk and
//! Tomcat: Puppet really configures each one), aiosmtpd for the mail,
//! Prometheus for the load. First a dry run that touches nothing, then once
//! by hand, once by the threshold trigger on the load Prometheus scrapes
//! (each new node's first Puppet run applies changes; each node serves the
//! WAR at its own address; each member list names the other node), then a
//! scale-in when the load stays low: deregistered, drained, terminated, and
//! the removed node's address no longer answers.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use pyscaler_aws::{
    ClassicElb, ClientConfig, Ec2, InstanceState, LoadBalancer, SdkEc2, StaticCredentials,
    TargetGroups, TAG_CLUSTER,
};
use pyscaler_core::{FileJournal, Journal, RunState, RunStatus};
use pyscaler_demo::{Balancing, LocalStack};
use pyscaler_examples::http;
use pyscaler_testkit::moto;
use pyscaler_testkit::nodes::NodeHost;

const PASSWORD: &str = "e2e-manager-password-9f3c";

fn tomcat_cluster(stack: &LocalStack, report: &Path, mode: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tomcat_cluster"));
    cmd.arg("--config")
        .arg(&stack.config)
        .arg("--report")
        .arg(report)
        .args(mode);
    cmd.envs(stack.env())
        .env("TOMCAT_MANAGER_PASSWORD", PASSWORD);
    let out = cmd.output().expect("run tomcat_cluster");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        !text.contains(PASSWORD),
        "the manager password reached the output"
    );
    out
}

/// The application's answer at `node`'s own address (`None`: no answer).
async fn app_at(node: &NodeHost) -> Option<String> {
    let host = node.address().to_string();
    match http::get(&host, 8080, "/demo/", Duration::from_secs(5)).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// A node's member list, as the node has it.
fn members_on(node: &NodeHost) -> String {
    node.read("/etc/pyscaler/cluster-members")
        .unwrap_or_else(|| panic!("no member list on {}", node.instance_id()))
}

/// The summary of step `name`'s outcome on its (first) node.
fn summary_of(r: &serde_json::Value, name: &str) -> String {
    let step = r["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name}: {r}"));
    assert_eq!(step["status"], "succeeded", "{step}");
    step["nodes"][0]["summary"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the report was written");
    assert!(
        !text.contains(PASSWORD),
        "the manager password reached the report"
    );
    serde_json::from_str(&text).expect("the report is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tomcat_cluster_scales_behind_a_target_group_over_two_zones() {
    scales_out_by_hand_and_by_trigger_then_in(Balancing::TargetGroup).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tomcat_cluster_scales_behind_a_classic_elb() {
    scales_out_by_hand_and_by_trigger_then_in(Balancing::Classic).await;
}

async fn scales_out_by_hand_and_by_trigger_then_in(balancing: Balancing) {
    // Each instance a host of its own: no machine-wide Tomcat to share.
    let stack = LocalStack::start_with(balancing).await;
    let lb = stack.load_balancer.as_str();
    let aws = ClientConfig::new(moto::REGION)
        .endpoint_url(stack.moto.endpoint_url())
        .credentials(StaticCredentials::new(
            moto::ACCESS_KEY_ID,
            moto::SECRET_ACCESS_KEY,
        ));
    let ec2 = SdkEc2::connect(&aws).await;
    let elb: Box<dyn LoadBalancer> = match balancing {
        Balancing::Classic => Box::new(ClassicElb::connect(&aws).await),
        Balancing::TargetGroup => Box::new(TargetGroups::connect(&aws).await),
    };

    // A dry run prints the plan and touches nothing.
    let dry = stack.dir.join("dry-run.json");
    let out = tomcat_cluster(&stack, &dry, &["--dry-run"]);
    assert!(out.status.success(), "tomcat_cluster --dry-run failed");
    let plan = String::from_utf8_lossy(&out.stdout);
    for step in [
        "deploy-ec2-node",
        "os-configuration",
        "tomcat-config",
        "app-deploy",
        "cluster-update",
        "finally email",
    ] {
        assert!(plan.contains(step), "the plan names {step}:\n{plan}");
    }
    assert!(plan.contains("nothing is touched"), "{plan}");
    let anything = ec2.find_by_tags(&[], &[]).await.expect("list instances");
    assert!(anything.is_empty(), "the dry run launched {anything:?}");
    assert!(!dry.exists(), "the dry run wrote a report");
    assert!(
        !stack.dir.join("journal").exists(),
        "the dry run opened the journal"
    );
    assert!(stack.nodes().nodes().is_empty(), "the dry run started a VM");
    assert!(!stack.known_hosts().exists(), "the dry run logged in");
    assert!(stack.smtp.messages().is_empty(), "the dry run sent mail");

    // By hand.
    let by_hand = stack.dir.join("by-hand.json");
    let out = tomcat_cluster(&stack, &by_hand, &["run", "--reason", "e2e by hand"]);
    assert!(out.status.success(), "tomcat_cluster run failed");
    let r = report(&by_hand);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["nodes_added"].as_array().map(Vec::len), Some(1));
    let instance = r["nodes_added"][0]["instance_id"]
        .as_str()
        .expect("an instance id")
        .to_owned();
    for step in [
        "deploy-ec2-node",
        "os-configuration",
        "tomcat-config",
        "app-deploy",
        "cluster-update",
    ] {
        let s = r["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == step))
            .expect(step);
        assert_eq!(s["status"], "succeeded", "{step}: {s}");
    }

    // The VM runs, tagged, behind the load balancer, and the application answers.
    let running = ec2
        .find_by_tags(
            &[(TAG_CLUSTER.into(), "tomcat-demo".into())],
            &[InstanceState::Running],
        )
        .await
        .expect("list the cluster");
    assert_eq!(
        running.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [instance.as_str()]
    );
    let health = elb.health(lb, &[]).await.expect("load balancer health");
    assert_eq!(health.len(), 1, "{health:?}");
    // It is a host of its own: Puppet's first run there changed it, the
    // WAR answers at its own address, its member list names it.
    let first = stack.nodes().wait_for(&instance, Duration::from_secs(10));
    assert_eq!(
        summary_of(&r, "os-configuration"),
        "puppet: changes applied"
    );
    let body = app_at(&first)
        .await
        .expect("the application answers at the node's address");
    assert!(body.contains("pyscaler demo app"), "{body}");
    let members = members_on(&first);
    assert_eq!(
        members,
        format!("tomcat-demo-01={}\n", first.address()),
        "{members}"
    );
    // This machine's own files were not touched.
    let here = std::fs::read_to_string("/etc/pyscaler/cluster-members").unwrap_or_default();
    assert!(!here.contains(&first.address().to_string()), "{here}");

    // The mail arrived, naming the new node.
    let mails = stack.smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(
        mails[0].contains("tomcat-demo-01") && mails[0].contains(&instance),
        "{}",
        mails[0]
    );
    assert!(!mails[0].contains(PASSWORD));

    // By trigger: the load Prometheus scrapes stays past its threshold for
    // the window. (The low load before it is shorter than the scale-in
    // window, and the cluster is at its minimum of 1 node anyway.)
    stack.set_load(0.1);
    let by_trigger = stack.dir.join("by-trigger.json");
    let raise = std::thread::scope(|scope| {
        let raising = scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(4));
            stack.set_load(5.0);
        });
        let out = tomcat_cluster(
            &stack,
            &by_trigger,
            &["watch", "--runs", "1", "--timeout", "240s"],
        );
        raising.join().expect("the load was raised");
        out
    });
    let out = raise;
    stack.set_load(0.1);
    assert!(out.status.success(), "tomcat_cluster watch failed");
    let r = report(&by_trigger);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["trigger"]["name"], "load-high");
    assert!(
        r["trigger"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("5.00 > 2")),
        "{}",
        r["trigger"]
    );
    let running = ec2
        .find_by_tags(
            &[(TAG_CLUSTER.into(), "tomcat-demo".into())],
            &[InstanceState::Running],
        )
        .await
        .expect("list the cluster");
    assert_eq!(running.len(), 2);
    if balancing == Balancing::TargetGroup {
        // The second node went to the other zone.
        let mut zones: Vec<Option<&str>> = running
            .iter()
            .map(|i| i.availability_zone.as_deref())
            .collect();
        zones.sort();
        assert_eq!(zones, [Some("us-east-1a"), Some("us-east-1b")]);
    }
    assert_eq!(stack.smtp.messages().len(), 2);
    // The second node is a host of its own too: its first Puppet run
    // applies changes, it serves the WAR at its own address, and both
    // member lists name both nodes.
    assert_eq!(
        summary_of(&r, "os-configuration"),
        "puppet: changes applied"
    );
    let second_id = r["nodes_added"][0]["instance_id"]
        .as_str()
        .expect("an instance id")
        .to_owned();
    let second = stack.nodes().wait_for(&second_id, Duration::from_secs(10));
    assert_ne!(second.address(), first.address());
    assert!(
        app_at(&second).await.is_some(),
        "the second node serves the WAR"
    );
    assert!(
        app_at(&first).await.is_some(),
        "the first node still serves it"
    );
    let both = format!(
        "tomcat-demo-01={}\ntomcat-demo-02={}\n",
        first.address(),
        second.address()
    );
    assert_eq!(members_on(&first), both);
    assert_eq!(members_on(&second), both);
    // Each node's key is known under its own instance id.
    let known = std::fs::read_to_string(stack.known_hosts()).expect("known_hosts");
    for id in [&instance, &second_id] {
        assert!(
            known.lines().any(|l| l.starts_with(&format!("{id} "))),
            "{known}"
        );
    }

    // The journal shows both runs finished.
    let journal =
        FileJournal::open(stack.dir.join("journal"), "tomcat-demo").expect("open the journal");
    let runs = journal.runs().await.expect("read the journal");
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|r| r.state == RunState::Finished(RunStatus::Succeeded)),
        "{runs:?}"
    );

    // The load stays low for the scale-in window: the newest node leaves the
    // load balancer, drains, is terminated, and the member list drops it.
    // (The journal's lock keeps out a second controller: let go of it.)
    drop(journal);
    let newest = running
        .iter()
        .max_by_key(|i| i.launched_at)
        .expect("two nodes")
        .id
        .clone();
    let scaled_in = stack.dir.join("scale-in.json");
    let out = tomcat_cluster(
        &stack,
        &scaled_in,
        &["watch", "--runs", "1", "--timeout", "240s"],
    );
    assert!(
        out.status.success(),
        "tomcat_cluster watch (scale-in) failed"
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("Decision of load-low at 0.10: scale-in"),
        "the decision is printed:\n{printed}"
    );
    let r = report(&scaled_in);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["pipeline"], "tomcat-scale-in");
    assert_eq!(r["trigger"]["name"], "load-low");
    let removed: Vec<&str> = r["nodes_removed"]
        .as_array()
        .expect("nodes removed")
        .iter()
        .filter_map(|n| n["instance_id"].as_str())
        .collect();
    assert_eq!(removed, [newest.as_str()]);
    // Out of the load balancer first, then terminated: the step's own
    // account, in that order, and both facts as EC2 and the ELB tell them.
    let remove = r["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "remove-ec2-node"))
        .expect("remove-ec2-node");
    assert_eq!(
        remove["nodes"][0]["summary"],
        format!("deregistered from {lb}, terminated {newest}"),
        "{remove}"
    );
    let health = elb.health(lb, &[]).await.expect("load balancer health");
    assert!(
        health.iter().all(|h| h.instance_id != newest),
        "still registered: {health:?}"
    );
    let left = ec2
        .find_by_tags(
            &[(TAG_CLUSTER.into(), "tomcat-demo".into())],
            &[InstanceState::Running],
        )
        .await
        .expect("list the cluster");
    assert_eq!(left.len(), 1);
    assert_ne!(left[0].id, newest);
    // The removed node is gone: its host stopped, its address answers
    // neither SSH nor HTTP; the one left still serves, and its list names
    // only itself.
    assert_eq!(newest, second_id);
    assert!(
        stack
            .nodes()
            .wait_until_gone(&newest, Duration::from_secs(10)),
        "the terminated instance's host still runs"
    );
    assert!(!second.answers_ssh() && !second.answers(8080));
    assert!(app_at(&second).await.is_none());
    assert!(app_at(&first).await.is_some());
    assert_eq!(
        members_on(&first),
        format!("tomcat-demo-01={}\n", first.address())
    );
    assert_eq!(stack.smtp.messages().len(), 3);
    let journal =
        FileJournal::open(stack.dir.join("journal"), "tomcat-demo").expect("open the journal");
    let runs = journal.runs().await.expect("read the journal");
    assert_eq!(runs.len(), 3);
    assert!(
        runs.iter()
            .all(|r| r.state == RunState::Finished(RunStatus::Succeeded)),
        "{runs:?}"
    );

    // The stack stops: nothing of the node hosts is left on the machine
    // (processes, Tomcat among them; namespaces; links; folders).
    drop(journal);
    let footprint = stack.nodes().footprint();
    assert!(!footprint.pids.is_empty(), "the node left runs");
    drop(stack);
    let left = footprint.left();
    assert!(left.is_empty(), "left behind: {left:?}");
}
