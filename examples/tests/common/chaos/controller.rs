//! One phase of a cycle: the controller (`tomcat_cluster`) runs as a process
//! of its own while the phase's node fault strikes, is maybe killed with
//! SIGKILL, and is then restarted (`recover`, or `recover --resume`) until
//! nothing of its run is left unfinished, as a supervisor would. A
//! controller that lost its lease (its renewals late, on a loaded machine)
//! abandons its run to the lease's next holder: it is restarted the same way.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pyscaler_testkit::nodes::{NodeHost, NodeHosts};

use super::plan::{Fault, Phase};

/// How long one controller process may take before the campaign calls it
/// hung (every step of the campaign's config has a shorter timeout).
const CONTROLLER_BOUND: Duration = Duration::from_secs(240);
/// How many times a killed controller is restarted before the campaign
/// gives up on the recovery.
const RECOVERY_ATTEMPTS: usize = 4;

/// What a phase's controller processes did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The first controller's exit code (`None`: killed, or hung).
    pub(crate) exit: Option<i32>,
    /// It was killed with SIGKILL.
    pub(crate) killed: bool,
    /// It lost its lease and left its run to the next holder (its report
    /// says so).
    pub(crate) lease_lost: bool,
    /// The restarted controllers' output, when it was killed.
    pub(crate) recovery_output: String,
    /// From the kill (or the exit after a lost lease) to the end of the
    /// recovery that succeeded (`None`:
    /// no recovery succeeded, or none was needed).
    pub(crate) recovery: Option<Duration>,
    /// The first controller's output.
    pub(crate) output: String,
    /// A controller that did not end within its bound (then killed).
    pub(crate) hung: Option<String>,
}

/// Runs `tomcat_cluster --config config --report report <args>` as the
/// phase says, with its node fault, and restarts it after a kill.
pub(crate) fn run(
    command: &dyn Fn(&Path) -> Command,
    report: &Path,
    args: &[&str],
    phase: &Phase,
    nodes: &NodeHosts,
    pause_for: Duration,
) -> Outcome {
    let before: HashSet<String> = nodes
        .nodes()
        .iter()
        .map(|n| n.instance_id().to_owned())
        .collect();
    let node_fault = phase.faults.iter().copied().find(|f| f.is_node_fault());
    let done = AtomicBool::new(false);
    let mut outcome = Outcome::default();
    std::thread::scope(|s| {
        let striker = node_fault.map(|fault| {
            let (before, done) = (&before, &done);
            s.spawn(move || strike(nodes, before, fault, pause_for, done))
        });
        let started = Instant::now();
        let child = spawn(command(report), args);
        let (exit, killed, output, hung) = wait(child, phase.kill_after_ms, started);
        outcome.exit = exit;
        outcome.killed = killed;
        outcome.output = output;
        outcome.hung = hung;
        done.store(true, Ordering::SeqCst);
        if let Some(striker) = striker {
            let _ = striker.join();
        }
        outcome.lease_lost = !killed && read_report(report).is_some_and(|r| lost_lease(&r));
        if killed || outcome.lease_lost {
            let killed_at = Instant::now();
            let mode: &[&str] = if phase.resume {
                &["recover", "--resume"]
            } else {
                &["recover"]
            };
            for attempt in 0..RECOVERY_ATTEMPTS {
                let recovery_report = report.with_extension(format!("recover-{attempt}.json"));
                let (exit, _, text, hung) =
                    wait(spawn(command(&recovery_report), mode), None, Instant::now());
                outcome.recovery_output.push_str(&text);
                if hung.is_some() {
                    outcome.hung = hung;
                }
                // A resumed run that failed still ended: it was undone.
                if exit == Some(0) || (phase.resume && exit == Some(1)) {
                    outcome.recovery = Some(killed_at.elapsed());
                    break;
                }
            }
        }
    });
    outcome
}

fn spawn(mut cmd: Command, args: &[&str]) -> Child {
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tomcat_cluster")
}

/// Waits for the controller, killing it `kill_after_ms` after `started`
/// (or when it outlives its bound); returns its exit code, whether it was
/// killed by the plan, its stdout and stderr, and whether it hung.
fn wait(
    mut child: Child,
    kill_after_ms: Option<u64>,
    started: Instant,
) -> (Option<i32>, bool, String, Option<String>) {
    // Read both pipes on threads, so a chatty controller never blocks.
    let out = child.stdout.take().map(read_all);
    let err = child.stderr.take().map(read_all);
    let mut killed = false;
    let mut hung = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        let elapsed = started.elapsed();
        if kill_after_ms.is_some_and(|ms| elapsed >= Duration::from_millis(ms)) {
            let _ = child.kill();
            let _ = child.wait();
            killed = true;
            break None;
        }
        if elapsed > CONTROLLER_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            hung = Some(format!(
                "the controller did not end within {CONTROLLER_BOUND:?}"
            ));
            break None;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let mut text = String::new();
    for reader in [out, err].into_iter().flatten() {
        text.push_str(&reader.join().unwrap_or_default());
    }
    (status.and_then(|s| s.code()), killed, text, hung)
}

fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Strikes one node: the phase's new node (the first that appears), or an
/// old one; `after_ms` later stops its sshd or pauses every process of it
/// for `pause_for` (cut short when the phase ends). Puts the node back
/// (sshd started, processes continued) when the phase ends, if it is
/// still there.
fn strike(
    nodes: &NodeHosts,
    before: &HashSet<String>,
    fault: Fault,
    pause_for: Duration,
    done: &AtomicBool,
) {
    let (new_node, after_ms) = match fault {
        Fault::SshdStopped { new_node, after_ms } | Fault::NodePaused { new_node, after_ms } => {
            (new_node, after_ms)
        }
        _ => return,
    };
    let began = Instant::now();
    let target = loop {
        if done.load(Ordering::SeqCst) {
            return;
        }
        let now = nodes.nodes();
        let found = if new_node {
            now.into_iter().find(|n| !before.contains(n.instance_id()))
        } else {
            now.into_iter().find(|n| before.contains(n.instance_id()))
        };
        if let Some(node) = found {
            break node;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    while began.elapsed() < Duration::from_millis(after_ms) {
        if done.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match fault {
        Fault::SshdStopped { .. } => {
            target.stop_sshd();
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if nodes.node(target.instance_id()).is_some() {
                target.start_sshd();
            }
        }
        _ => {
            signal(&target, "-STOP");
            let paused = Instant::now();
            while !done.load(Ordering::SeqCst) && paused.elapsed() < pause_for {
                std::thread::sleep(Duration::from_millis(50));
            }
            signal(&target, "-CONT");
        }
    }
}

/// Sends `sig` to every process of the node (gone ones are no matter).
fn signal(node: &NodeHost, sig: &str) {
    let pids: Vec<String> = node.pids().iter().map(u32::to_string).collect();
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(sig)
        .args(&pids)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether a report is of a run abandoned because the lease was lost.
fn lost_lease(report: &serde_json::Value) -> bool {
    report["status"] == "cancelled"
        && report["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("lease lost"))
}

/// The report a phase's controller wrote, if it wrote one.
pub(crate) fn read_report(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}
