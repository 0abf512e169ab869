//! Fault injection: the Tomcat example pipeline, run for real through the
//! `tomcat_cluster` binary against the local stack, with one fault injected
//! per case (through a copy of the config, or the stack itself). For each
//! failing case a user finds: the run failed, naming the step and the cause;
//! no instance of the run is left running on EC2; the load balancer holds
//! none of them; the journal shows the run failed and its deploy undone.
//! The SMTP outage alone leaves the new node in place and reports the failed
//! notification.
//!
//! One test walks the cases one after another (they share the real Tomcat
//! on port 8080 and one local stack) and prints the outcome table. The
//! `FAULTS` variable (`FAULTS=RegistrationRefused,PuppetFails`) picks cases.

#[path = "common/faults_support.rs"]
mod faults_support;

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faults_support::{
    config_copy, set, tomcat_cluster, tomcat_lock, undone_in_journal, wait_for_no_puppet, Aws,
    Store, PASSWORD,
};
use pyscaler_aws::{Ec2, LoadBalancer};
use pyscaler_core::{RunState, RunStatus};
use pyscaler_demo::{Balancing, Hosts, LocalStack, LOAD_BALANCER};
use pyscaler_testkit::free_port;

/// The fault a case injects.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// A well-formed AMI id that does not exist.
    LaunchRefused,
    /// A load balancer that does not exist.
    RegistrationRefused,
    /// A manifest with a resource that fails when applied.
    PuppetFails,
    /// A heap value `jvm-options.sh` rejects.
    ScriptFails,
    /// Text the application's page never contains, and a short bound.
    NeverHealthy,
    /// Nothing listens on the SMTP port.
    SmtpDown,
    /// sshd stopped after launch; its port answers TCP but speaks no SSH.
    SshdStopped,
}

struct Case {
    fault: Fault,
    /// The step the report must name.
    step: &'static str,
    /// Words of the cause the error message must contain (lower case).
    cause: &'static str,
    /// A defect this case shows today, outside this test (strict: the test
    /// fails once the case passes, so the marker gets removed).
    known_defect: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        fault: Fault::LaunchRefused,
        step: "deploy-ec2-node",
        cause: "invalidamiid.notfound",
        known_defect: None,
    },
    Case {
        fault: Fault::RegistrationRefused,
        step: "deploy-ec2-node",
        cause: "load balancer no-such-lb does not exist",
        // The deploy checks its load balancer (DescribeLoadBalancers) before
        // it launches: nothing is started. (moto would answer the
        // registration itself with a bare HTTP 500, where AWS says 400
        // LoadBalancerNotFound.)
        known_defect: None,
    },
    Case {
        fault: Fault::PuppetFails,
        step: "os-configuration",
        cause: "pyscaler-injected-fault",
        known_defect: None,
    },
    Case {
        fault: Fault::ScriptFails,
        step: "tomcat-config",
        cause: "bad --heap",
        known_defect: None,
    },
    Case {
        fault: Fault::NeverHealthy,
        step: "app-deploy",
        cause: "timeout after 5s",
        known_defect: None,
    },
    Case {
        fault: Fault::SmtpDown,
        step: "email",
        cause: "",
        known_defect: None,
    },
    // Last: the stack's sshd does not come back.
    Case {
        fault: Fault::SshdStopped,
        step: "os-configuration",
        cause: "ssh handshake",
        known_defect: None,
    },
];

/// A listener on sshd's port that accepts and hangs up: the port answers
/// (the deploy's SSH wait passes) but no SSH server is behind it.
struct DeadPort {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeadPort {
    fn bind(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind sshd's port");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DeadPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `examples/tomcat` to `to` and adds a resource to the manifest that
/// fails when Puppet applies it.
fn broken_assets(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tomcat");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(status.success(), "copy the assets");
    let manifest = to.join("manifests").join("tomcat.pp");
    let mut text = std::fs::read_to_string(&manifest).expect("read the manifest");
    text.push_str(
        "\n# Injected by examples/tests/faults.rs: fails at apply time.\n\
         exec { 'pyscaler-injected-fault':\n  \
           command => '/bin/sh -c \"echo injected fault >&2; exit 1\"',\n\
         }\n",
    );
    std::fs::write(&manifest, text).expect("write the broken manifest");
}

/// Applies the case's fault; returns the config to run with and what must
/// stay alive during the run.
fn inject(stack: &mut LocalStack, fault: Fault) -> (std::path::PathBuf, Option<DeadPort>) {
    let name = format!("fault-{fault:?}").to_lowercase();
    let mut guard = None;
    let config = match fault {
        Fault::LaunchRefused => config_copy(stack, &name, |t| {
            set(t, "ec2", "image_id", "ami-00000000");
        }),
        Fault::RegistrationRefused => config_copy(stack, &name, |t| {
            set(t, "ec2", "load_balancer", "no-such-lb");
        }),
        Fault::PuppetFails => {
            let assets = stack.dir.join("broken-assets");
            let _ = std::fs::remove_dir_all(&assets);
            broken_assets(&assets);
            config_copy(stack, &name, |t| {
                t.insert("assets".into(), assets.display().to_string().into());
            })
        }
        Fault::ScriptFails => config_copy(stack, &name, |t| {
            set(t, "tomcat", "heap", "lots");
        }),
        Fault::NeverHealthy => config_copy(stack, &name, |t| {
            set(t, "tomcat", "expected_text", "never-shown-text");
            set(t, "tomcat", "ready_within", "5s");
        }),
        Fault::SmtpDown => config_copy(stack, &name, |t| {
            set(t, "smtp", "port", i64::from(free_port()));
        }),
        Fault::SshdStopped => {
            let port = stack.sshd().port();
            stack.sshd_mut().stop();
            guard = Some(DeadPort::bind(port));
            config_copy(stack, &name, |_| {})
        }
    };
    (config, guard)
}

/// One row of the outcome table.
struct Outcome {
    fault: Fault,
    exit: String,
    status: String,
    failed_step: String,
    launched: usize,
    live: usize,
    in_lb: usize,
    journal: String,
    problems: Vec<String>,
    known_defect: bool,
}

fn str_of(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

async fn run_case(stack: &mut LocalStack, store: Store, aws: &Aws, case: &Case) -> Outcome {
    let (config, dead_port) = inject(stack, case.fault);
    let config = store.config(stack, &config);
    let report_path = stack.dir.join(format!("fault-{:?}.json", case.fault));
    let out = tomcat_cluster(stack, &config, &report_path)
        .args([
            "run",
            "--reason",
            &format!("fault injection: {:?}", case.fault),
        ])
        .output()
        .expect("run tomcat_cluster");
    drop(dead_port);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("--- {:?} ---\n{text}", case.fault);
    let mut problems = Vec::new();
    if text.contains(PASSWORD) {
        problems.push("the manager password reached the output".to_owned());
    }
    let report_text = std::fs::read_to_string(&report_path).expect("the report was written");
    let r: serde_json::Value = serde_json::from_str(&report_text).expect("the report is JSON");
    let run_id = str_of(&r["run_id"]);
    let message = str_of(&r["error"]["message"]);

    let launched = aws.all_instances_of_run(&run_id).await;
    let live = aws.live_instances_of_run(&run_id).await;
    let registered = aws.registered().await;
    let in_lb = launched.iter().filter(|i| registered.contains(i)).count();
    let record = store
        .runs(stack)
        .await
        .into_iter()
        .find(|rec| rec.run_id.as_str() == run_id);
    let entries = store.entries(stack, &run_id).await;
    let journal = match &record {
        Some(rec) => format!("{:?}", rec.state),
        None => "missing".to_owned(),
    };
    let failed_step = r["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(r["finally"].as_array().into_iter().flatten())
        .filter(|s| s["status"] == "failed")
        .map(|s| str_of(&s["name"]))
        .collect::<Vec<_>>()
        .join(",");

    if let Fault::SmtpDown = case.fault {
        // The notification failed; the node the run added stays.
        if r["status"] != "completed_with_failures" {
            problems.push(format!("run status {}", r["status"]));
        }
        if r["finally"][0]["status"] != "failed" {
            problems.push(format!("finally {}", r["finally"]));
        }
        for s in r["steps"].as_array().into_iter().flatten() {
            if s["status"] != "succeeded" {
                problems.push(format!("step {} {}", s["name"], s["status"]));
            }
        }
        if live.len() != 1 || in_lb != 1 {
            problems.push(format!(
                "the new node should stay running and registered: live {live:?}, registered {registered:?}"
            ));
        }
        if record.map(|r| r.state) != Some(RunState::Finished(RunStatus::CompletedWithFailures)) {
            problems.push(format!("journal {journal}"));
        }
    } else {
        if out.status.success() {
            problems.push("tomcat_cluster exited 0".to_owned());
        }
        if r["status"] != "failed" {
            problems.push(format!("run status {}", r["status"]));
        }
        let named = format!("step `{}` failed", case.step);
        if !message.contains(&named) || !message.to_lowercase().contains(case.cause) {
            problems.push(format!(
                "error message should name `{}` and `{}`: {message}",
                case.step, case.cause
            ));
        }
        if failed_step != case.step {
            problems.push(format!("failed step(s) in the report: {failed_step}"));
        }
        // The fault must hit where it is meant to: a refused launch or an
        // unknown load balancer starts nothing, every later fault comes after
        // a launch.
        let expect_launch = !matches!(
            case.fault,
            Fault::LaunchRefused | Fault::RegistrationRefused
        );
        if launched.is_empty() == expect_launch {
            problems.push(format!("instances of the run: {launched:?}"));
        }
        if !live.is_empty() {
            problems.push(format!("left running: {live:?}"));
        }
        if in_lb != 0 {
            problems.push(format!("left in the load balancer: {registered:?}"));
        }
        if record.map(|r| r.state) != Some(RunState::Finished(RunStatus::Failed)) {
            problems.push(format!("journal {journal}"));
        }
        if !undone_in_journal(&entries, "deploy-ec2-node") {
            problems.push("the journal does not show deploy-ec2-node undone".to_owned());
        }
        let undone = r["undone"].as_array().cloned().unwrap_or_default();
        if undone.is_empty() || undone.iter().any(|u| u["succeeded"] != true) {
            problems.push(format!(
                "the report's undo did not succeed: {}",
                r["undone"]
            ));
        }
    }
    let mut known_defect = false;
    if let Some(defect) = case.known_defect {
        let leaked = problems
            .iter()
            .any(|p| p.starts_with("left running") || p.starts_with("left in the load balancer"));
        if problems.is_empty() {
            problems.push(format!(
                "passes now: remove its known_defect marker ({defect})"
            ));
        } else if leaked {
            problems.push(format!(
                "a leak is never excused by a known defect ({defect})"
            ));
        } else {
            known_defect = true;
            problems.push(format!("KNOWN DEFECT: {defect}"));
            // What the defect left must not disturb the next cases.
            if !live.is_empty() {
                let _ = aws.elb.deregister(LOAD_BALANCER, &live).await;
                aws.ec2
                    .terminate(&live)
                    .await
                    .expect("terminate what the known defect left");
            }
        }
    }
    Outcome {
        known_defect,
        fault: case.fault,
        exit: out.status.code().map_or("signal".into(), |c| c.to_string()),
        status: str_of(&r["status"]),
        failed_step,
        launched: launched.len(),
        live: live.len(),
        in_lb,
        journal,
        problems,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_injected_fault_fails_cleanly_and_leaves_nothing_behind() {
    let _tomcat = tomcat_lock();
    // Behind the classic ELB: this suite predates target groups and keeps
    // that path covered (tomcat_e2e runs both).
    let mut stack = LocalStack::start_with_hosts(Balancing::Classic, Hosts::OneSshd).await;
    let aws = Aws::connect(&stack).await;
    let mut outcomes = Vec::new();
    // FAULTS=RegistrationRefused,PuppetFails runs only those cases.
    let only = std::env::var("FAULTS").ok();
    for case in CASES {
        let name = format!("{:?}", case.fault);
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|f| f.trim() == name))
        {
            continue;
        }
        outcomes.push(run_case(&mut stack, Store::File, &aws, case).await);
        wait_for_no_puppet(Duration::from_secs(120));
    }
    report_outcomes(&outcomes);
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_fail_as_cleanly_with_the_dynamodb_journal() {
    let _tomcat = tomcat_lock();
    let mut stack = LocalStack::start_with_hosts(Balancing::Classic, Hosts::OneSshd).await;
    let aws = Aws::connect(&stack).await;
    // A subset: a failure on the node, one of the application, and the
    // notification's (the node stays), each journaled in DynamoDB.
    let mut outcomes = Vec::new();
    for case in CASES.iter().filter(|c| {
        matches!(
            c.fault,
            Fault::PuppetFails | Fault::NeverHealthy | Fault::SmtpDown
        )
    }) {
        outcomes.push(run_case(&mut stack, Store::Dynamo, &aws, case).await);
        wait_for_no_puppet(Duration::from_secs(120));
    }
    report_outcomes(&outcomes);
}

/// Prints the outcome table and fails on any case that failed.
fn report_outcomes(outcomes: &[Outcome]) {
    println!(
        "\n{:<20} {:>4} {:<24} {:<17} {:>8} {:>4} {:>5}  {:<40} result",
        "fault", "exit", "run status", "failed step", "launched", "live", "in LB", "journal"
    );
    for o in outcomes {
        println!(
            "{:<20} {:>4} {:<24} {:<17} {:>8} {:>4} {:>5}  {:<40} {}",
            format!("{:?}", o.fault),
            o.exit,
            o.status,
            o.failed_step,
            o.launched,
            o.live,
            o.in_lb,
            o.journal,
            if o.problems.is_empty() {
                "ok".to_owned()
            } else if o.known_defect {
                o.problems.join("; ")
            } else {
                format!("FAIL: {}", o.problems.join("; "))
            }
        );
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.problems.is_empty() && !o.known_defect)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed (table above)",
        failed.len(),
        outcomes.len()
    );
}
