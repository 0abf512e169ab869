use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::testing::run_step;
use crate::{Action, Cluster, ErrorKind, Target};

fn ctx_with(n: usize) -> Context {
    let mut ctx = Context::new(Cluster::new("web"));
    ctx.add_new_nodes((0..n).map(|i| Node::new(format!("i-{i}"), format!("web-{i:02}"))));
    ctx
}

/// Fails on the nodes named; prints 100 `x` on the others.
struct FailsOn {
    names: &'static [&'static str],
    fan: FanOut,
}

#[async_trait]
impl Action for FailsOn {
    fn name(&self) -> &str {
        "fan-out"
    }
    async fn run(&self, ctx: &mut Context) -> Result<()> {
        self.fan
            .run(ctx, |node, _| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if self.names.contains(&node.name.as_str()) {
                    Err(
                        NodeFailure::from(Error::other(ErrorKind::RemoteCommandFailed, "exit 1"))
                            .with_output("boom", false),
                    )
                } else {
                    Ok(NodeOutcome::ok(&node.name, "exit 0").with_output("x".repeat(100), false))
                }
            })
            .await
    }
}

fn fails_on(names: &'static [&'static str], fan: FanOut) -> FailsOn {
    FailsOn { names, fan }
}

/// Counts how many nodes run at once.
struct Peak {
    running: AtomicUsize,
    peak: Arc<AtomicUsize>,
}

#[async_trait]
impl Action for Peak {
    fn name(&self) -> &str {
        "fan-out"
    }
    async fn run(&self, ctx: &mut Context) -> Result<()> {
        FanOut::new()
            .concurrency(7)
            .run(ctx, |node, _| async move {
                let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                self.running.fetch_sub(1, Ordering::SeqCst);
                Ok(NodeOutcome::ok(&node.name, "ok"))
            })
            .await
    }
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let peak = Arc::new(AtomicUsize::new(0));
    let action = Peak {
        running: AtomicUsize::new(0),
        peak: peak.clone(),
    };
    let report = run_step(action, Target::Cluster, &mut ctx_with(50)).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(peak.load(Ordering::SeqCst), 7);
    assert_eq!(report.steps[0].nodes.len(), 50);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_stops_starting_nodes_and_names_the_node() {
    let fan = FanOut::new().concurrency(1).output_cap(10);
    let report = run_step(
        fails_on(&["web-02"], fan),
        Target::Cluster,
        &mut ctx_with(10),
    )
    .await;
    assert!(!report.is_success());
    let step = &report.steps[0];
    let ok: Vec<_> = step.nodes.iter().filter(|n| n.succeeded).collect();
    assert_eq!(ok.len(), 2);
    assert!(ok[0].truncated && ok[0].output.as_deref() == Some("xxxxxxxxxx"));
    let failed = step
        .nodes
        .iter()
        .find(|n| n.node == "web-02")
        .expect("web-02");
    assert_eq!(failed.output.as_deref(), Some("boom"));
    let not_run = step
        .nodes
        .iter()
        .filter(|n| n.summary.starts_with("not run"))
        .count();
    assert_eq!(not_run, 7);
    // Typed too: a node never started on is neither ok nor failed there.
    assert_eq!(step.nodes.iter().filter(|n| n.not_run).count(), 7);
    assert!(step.nodes.iter().all(|n| !(n.not_run && n.succeeded)));
    assert!(format!("{report}").contains("SKIP"), "{report}");
    let error = report.error.as_ref().expect("error");
    assert_eq!(error.node.as_deref(), Some("web-02"));
}

#[tokio::test(start_paused = true)]
async fn continue_runs_everywhere_and_still_fails_the_step() {
    let fan = FanOut::new().on_failure(OnNodeFailure::Continue);
    let action = fails_on(&["web-02", "web-05"], fan);
    let report = run_step(action, Target::Cluster, &mut ctx_with(10)).await;
    assert!(!report.is_success());
    let step = &report.steps[0];
    assert_eq!(step.nodes.iter().filter(|n| n.succeeded).count(), 8);
    assert_eq!(step.nodes.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_tolerated_share_of_failures_passes_and_more_stops() {
    let fan = FanOut::new()
        .concurrency(1)
        .on_failure(OnNodeFailure::MaxFailedPercent(20));
    let action = fails_on(&["web-02", "web-05"], fan);
    let report = run_step(action, Target::Cluster, &mut ctx_with(10)).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        report.steps[0]
            .nodes
            .iter()
            .filter(|n| !n.succeeded)
            .count(),
        2
    );

    let action = fails_on(&["web-01", "web-02", "web-03"], fan);
    let report = run_step(action, Target::Cluster, &mut ctx_with(10)).await;
    assert!(!report.is_success());
    let not_run = report.steps[0]
        .nodes
        .iter()
        .filter(|n| n.summary.starts_with("not run"))
        .count();
    assert_eq!(not_run, 6);
}

/// Writes down, per node, what the step info says of the run.
struct Sees(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Action for Sees {
    fn name(&self) -> &str {
        "cluster-update"
    }
    async fn run(&self, ctx: &mut Context) -> Result<()> {
        FanOut::new()
            .run(ctx, |node, step| async move {
                let members: Vec<&str> = step
                    .cluster()
                    .nodes()
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect();
                let line = format!(
                    "{} {} {} {} {}",
                    node.name,
                    step.step(),
                    step.run_id() == &crate::RunId::new("run-7"),
                    step.var("app").unwrap_or("?"),
                    members.join(",")
                );
                self.0.lock().expect("seen").push(line);
                Ok(NodeOutcome::ok(&node.name, "updated"))
            })
            .await
    }
}

#[tokio::test]
async fn each_node_sees_the_run_and_the_cluster_after_its_changes() {
    let cluster =
        Cluster::new("web").with_nodes([Node::new("i-1", "web-01"), Node::new("i-2", "web-02")]);
    let mut ctx = Context::new(cluster)
        .with_run_id(crate::RunId::new("run-7"))
        .with_var("app", "shop");
    ctx.add_new_nodes([Node::new("i-3", "web-03")]);
    ctx.remove_node("i-1");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let report = run_step(Sees(seen.clone()), Target::Cluster, &mut ctx).await;
    assert!(report.is_success(), "{report:?}");
    let mut seen = seen.lock().expect("seen").clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            "web-02 cluster-update true shop web-02,web-03",
            "web-03 cluster-update true shop web-02,web-03",
        ]
    );
}

#[test]
fn any_core_convertible_error_is_a_node_failure() {
    fn fails() -> std::result::Result<(), Error> {
        Err(Error::other(ErrorKind::Transient, "flaky"))
    }
    fn op() -> std::result::Result<NodeOutcome, NodeFailure> {
        fails()?;
        Ok(NodeOutcome::ok("web-01", "ok"))
    }
    let f = op().expect_err("a failure");
    assert_eq!(f.error.kind(), ErrorKind::Transient);
    assert!(f.output.is_none());
}
