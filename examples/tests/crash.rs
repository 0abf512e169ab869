//! Crash recovery: the controller (`tomcat_cluster run`) is killed with
//! SIGKILL at several points of a real run against the local stack; a new
//! controller process (`tomcat_cluster recover`, or a new `run`, which
//! recovers first) then cleans up. After each,
//! a user finds no instance of the run left running (EC2), none of them in
//! the load balancer, and the journal showing the run recovered and no run
//! unfinished. Or the new controller resumes the run
//! (`tomcat_cluster recover --resume`): then the run's instances (the ones it
//! launched before the kill, no second set) run and are in the load
//! balancer, and the journal shows the run succeeded.
//!
//! One test walks the kill points one after another (they share the real
//! Tomcat on port 8080 and one local stack) and prints the outcome table; a
//! second walks a subset with the journal and the lease in DynamoDB (the new
//! controller takes the lease once the killed one's lapses).

#[path = "common/faults_support.rs"]
mod faults_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faults_support::{
    puppet_running, tomcat_cluster, tomcat_lock, wait_for_no_puppet, Aws, Store, CLUSTER, PASSWORD,
};
use pyscaler_aws::{Ec2, InstanceState, TAG_CLUSTER};
use pyscaler_core::{RunState, RunStatus};
use pyscaler_demo::{Balancing, LocalStack};

/// Where the controller is killed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KillPoint {
    /// As soon as EC2 lists the run's instance (RunInstances answered).
    AfterLaunch,
    /// As soon as the load balancer lists the instance.
    DuringRegistration,
    /// While `puppet apply` runs on the node.
    DuringPuppet,
}

impl KillPoint {
    /// The step the journal must show interrupted.
    fn step(self) -> &'static str {
        match self {
            Self::AfterLaunch | Self::DuringRegistration => "deploy-ec2-node",
            Self::DuringPuppet => "os-configuration",
        }
    }
}

/// The controller's stdout, collected line by line while it runs.
fn collect_stdout(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("piped stdout");
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("stdout lines").push(line);
        }
    });
    lines
}

/// Kills the controller with SIGKILL on drop, so a failing test leaves no
/// controller behind.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cluster's instances that are not terminated.
async fn live_cluster_instances(aws: &Aws) -> Vec<String> {
    aws.ec2
        .find_by_tags(
            &[(TAG_CLUSTER.to_owned(), CLUSTER.to_owned())],
            &[InstanceState::Pending, InstanceState::Running],
        )
        .await
        .expect("list the cluster")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// Waits (polling every 50 ms) until the kill point is reached; returns
/// what was seen there, or why it was not reached. Instances that ran or
/// were registered `before` (the nodes earlier cases left) do not count.
async fn wait_for(
    point: KillPoint,
    aws: &Aws,
    before: &[String],
    controller: &mut Controller,
    stdout: &Mutex<Vec<String>>,
) -> Result<String, String> {
    let new = |ids: Vec<String>| -> Vec<String> {
        ids.into_iter().filter(|i| !before.contains(i)).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = controller.0.try_wait() {
            return Err(format!("the controller ended first ({status})"));
        }
        match point {
            KillPoint::AfterLaunch => {
                let live = new(live_cluster_instances(aws).await);
                if !live.is_empty() {
                    return Ok(format!("launched {live:?}"));
                }
            }
            KillPoint::DuringRegistration => {
                let registered = new(aws.registered().await);
                if !registered.is_empty() {
                    return Ok(format!("registered {registered:?}"));
                }
            }
            KillPoint::DuringPuppet => {
                let started = stdout
                    .lock()
                    .expect("stdout lines")
                    .iter()
                    .any(|l| l.contains("os-configuration ->"));
                if started && puppet_running() {
                    return Ok("puppet apply running".to_owned());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("not reached within 180 s".to_owned())
}

/// The new controller: `recover`, `recover --resume`, or a `run` (which
/// recovers first by default).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Next {
    Recover,
    Resume,
    Run,
}

/// One row of the outcome table.
struct Outcome {
    point: KillPoint,
    next: Next,
    seen: String,
    interrupted: String,
    recovered: String,
    live: usize,
    in_lb: usize,
    journal: String,
    problems: Vec<String>,
}

async fn crash_and_recover(
    stack: &LocalStack,
    store: Store,
    aws: &Aws,
    point: KillPoint,
    next: Next,
) -> Outcome {
    let report = stack.dir.join(format!("crash-{point:?}.json"));
    let mut problems = Vec::new();

    // What earlier cases left running (a resumed run keeps its node).
    let mut before = live_cluster_instances(aws).await;
    before.extend(aws.registered().await);

    // The controller, killed at the point.
    let config = store.config(stack, &stack.config);
    let mut child = tomcat_cluster(stack, &config, &report)
        .args(["run", "--reason", &format!("crash test: {point:?}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tomcat_cluster");
    let stdout = collect_stdout(&mut child);
    let mut controller = Controller(child);
    let seen = match wait_for(point, aws, &before, &mut controller, &stdout).await {
        Ok(seen) => seen,
        Err(why) => {
            problems.push(format!("kill point not reached: {why}"));
            why
        }
    };
    controller.0.kill().expect("SIGKILL the controller");
    let status = controller.0.wait().expect("reap the controller");
    println!(
        "--- {point:?}: killed ({status}) at: {seen}\n{}",
        stdout.lock().expect("stdout lines").join("\n")
    );
    // Puppet goes on without its controller: let it end before recovering
    // and before the next case.
    wait_for_no_puppet(Duration::from_secs(300));

    // The dead controller's run, as the journal left it.
    let unfinished: Vec<_> = store
        .runs(stack)
        .await
        .into_iter()
        .filter(|r| r.state == RunState::Unfinished)
        .collect();
    let Some(run) = unfinished.first().cloned() else {
        problems.push("the journal shows no unfinished run after the kill".to_owned());
        return Outcome {
            point,
            next,
            seen,
            interrupted: "-".into(),
            recovered: "-".into(),
            live: 0,
            in_lb: 0,
            journal: "-".into(),
            problems,
        };
    };
    let run_id = run.run_id.as_str().to_owned();
    let interrupted = run.interrupted_step().unwrap_or("none").to_owned();
    if interrupted != point.step() {
        problems.push(format!(
            "interrupted in {interrupted}, expected {}",
            point.step()
        ));
    }
    let launched = aws.all_instances_of_run(&run_id).await;
    if launched.is_empty() {
        problems.push("the run had launched nothing when killed".to_owned());
    }

    // A new controller recovers.
    let args: &[&str] = match next {
        Next::Recover => &["recover"],
        Next::Resume => &["recover", "--resume"],
        Next::Run => &["run", "--reason", "after a crash"],
    };
    let out = tomcat_cluster(stack, &config, &report)
        .args(args)
        .output()
        .expect("run the new tomcat_cluster");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("--- {point:?}: then {next:?} ({})\n{text}", out.status);
    if !out.status.success() {
        problems.push(format!(
            "recover exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if next == Next::Run {
        // It went on to scale out, in a run of its own.
        let r: serde_json::Value = std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if r["status"] != "succeeded" || r["run_id"] == run_id.as_str() {
            problems.push(format!("the new run: {} {}", r["run_id"], r["status"]));
        }
    }
    if text.contains(PASSWORD) {
        problems.push("the manager password reached the output".to_owned());
    }
    let recovered = text
        .lines()
        .find(|l| {
            l.contains(&run_id)
                && ["Recovered run", "Resumed run", "Could NOT", "Not resuming"]
                    .iter()
                    .any(|start| l.starts_with(start))
        })
        .map(|l| l.split(": ").skip(1).collect::<Vec<_>>().join(": "))
        .unwrap_or_else(|| {
            problems.push("recover did not name the run".to_owned());
            "-".to_owned()
        });

    // What a user checks afterwards.
    let live = aws.live_instances_of_run(&run_id).await;
    let registered = aws.registered().await;
    let in_lb = launched.iter().filter(|i| registered.contains(i)).count();
    let runs = store.runs(stack).await;
    let state = runs
        .iter()
        .find(|r| r.run_id.as_str() == run_id)
        .map(|r| r.state);
    if next == Next::Resume {
        // Finished: what it had launched runs, behind the load balancer, and
        // nothing was launched a second time.
        if !text.contains(&format!("Resumed run {run_id} from {}", point.step())) {
            problems.push(format!("not resumed from {}", point.step()));
        }
        let all = aws.all_instances_of_run(&run_id).await;
        if live.is_empty() || live.len() != all.len() || all.len() != launched.len() {
            problems.push(format!(
                "launched before the kill {launched:?}, now {all:?}, running {live:?}"
            ));
        }
        if in_lb != live.len() {
            problems.push(format!("not all in the load balancer: {registered:?}"));
        }
        if state != Some(RunState::Finished(RunStatus::Succeeded)) {
            problems.push(format!("journal state {state:?}"));
        }
    } else {
        if !live.is_empty() {
            problems.push(format!("left running: {live:?}"));
        }
        if in_lb != 0 {
            problems.push(format!("left in the load balancer: {registered:?}"));
        }
        if state != Some(RunState::Recovered { succeeded: true }) {
            problems.push(format!("journal state {state:?}"));
        }
    }
    let still: Vec<_> = runs
        .iter()
        .filter(|r| r.state == RunState::Unfinished)
        .map(|r| r.run_id.to_string())
        .collect();
    if !still.is_empty() {
        problems.push(format!("unfinished runs after recover: {still:?}"));
    }
    Outcome {
        point,
        next,
        seen,
        interrupted,
        recovered,
        live: live.len(),
        in_lb,
        journal: state.map_or("missing".into(), |s| format!("{s:?}")),
        problems,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_controller_recovers_whatever_a_killed_one_left() {
    let _tomcat = tomcat_lock();
    // Behind the classic ELB: this suite predates target groups and keeps
    // that path covered (tomcat_e2e runs both).
    let stack = LocalStack::start_with(Balancing::Classic).await;
    let aws = Aws::connect(&stack).await;
    let mut outcomes = Vec::new();
    let store = Store::File;
    for (point, next) in [
        (KillPoint::AfterLaunch, Next::Recover),
        (KillPoint::DuringRegistration, Next::Recover),
        (KillPoint::DuringPuppet, Next::Recover),
        // From here on each case leaves a node (and Tomcat) running.
        (KillPoint::DuringPuppet, Next::Resume),
        (KillPoint::DuringRegistration, Next::Resume),
        (KillPoint::AfterLaunch, Next::Run),
    ] {
        outcomes.push(crash_and_recover(&stack, store, &aws, point, next).await);
    }
    wait_for_no_puppet(Duration::from_secs(300));
    report_outcomes(&outcomes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_controller_recovers_with_the_dynamodb_journal_too() {
    let _tomcat = tomcat_lock();
    let stack = LocalStack::start_with(Balancing::Classic).await;
    let aws = Aws::connect(&stack).await;
    // The journal and the lease in moto's DynamoDB.
    let store = Store::Dynamo;
    let mut outcomes = Vec::new();
    for (point, next) in [
        (KillPoint::AfterLaunch, Next::Recover),
        (KillPoint::DuringPuppet, Next::Recover),
        (KillPoint::AfterLaunch, Next::Run),
    ] {
        outcomes.push(crash_and_recover(&stack, store, &aws, point, next).await);
    }
    wait_for_no_puppet(Duration::from_secs(300));
    report_outcomes(&outcomes);
}

/// Prints the outcome table and fails on any problem.
fn report_outcomes(outcomes: &[Outcome]) {
    println!(
        "\n{:<19} {:<8} {:<17} {:<33} {:>4} {:>5}  {:<30} result",
        "killed", "then", "interrupted step", "seen at the kill", "live", "in LB", "journal"
    );
    for o in outcomes {
        println!(
            "{:<19} {:<8} {:<17} {:<33} {:>4} {:>5}  {:<30} {}",
            format!("{:?}", o.point),
            format!("{:?}", o.next),
            o.interrupted,
            o.seen,
            o.live,
            o.in_lb,
            o.journal,
            if o.problems.is_empty() {
                format!("ok ({})", o.recovered)
            } else {
                format!("FAIL: {}", o.problems.join("; "))
            }
        );
    }
    let failed = outcomes.iter().filter(|o| !o.problems.is_empty()).count();
    assert_eq!(failed, 0, "{failed} kill points failed (table above)");
    assert!(!puppet_running(), "a puppet apply is still running");
}
