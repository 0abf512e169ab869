//! Remote work never outlives its step or its run: `Ssh2Shell` against a real
//! sshd, with the step timeout simulated as the engine does it (the call's
//! future is dropped) and a hung node simulated by stopping sshd (SIGSTOP).

use std::time::{Duration, Instant};

use pyscaler_core::{CancellationToken, Classify, ErrorKind, Node, NodeAddress};
use pyscaler_ssh::{RemoteCommand, RemoteShell, Ssh2Shell, SshConfig, SshError};
use pyscaler_testkit::process::{eventually, running};
use pyscaler_testkit::sshd::{Hang, Sshd};

fn node(sshd: &Sshd) -> Node {
    Node::new("1", "web-01")
        .with_address(NodeAddress::new("127.0.0.1").with_port(sshd.port()))
        .with_ssh_user(sshd.user())
}

/// A config trusting `sshd`, with the default 10-minute command timeout (the
/// one a hung node used to be waited for) and a 2 s unreachable bound.
fn config(sshd: &Sshd, dir: &tempfile::TempDir) -> SshConfig {
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line("ssh-ed25519")).expect("write known_hosts");
    SshConfig::new(sshd.user())
        .with_key_file(sshd.client_key())
        .with_known_hosts(known)
        .with_unreachable_timeout(Duration::from_secs(2))
}

/// A per-test word, so commands and markers of parallel tests never meet.
fn word(sshd: &Sshd, what: &str) -> String {
    format!("{what}-{}", sshd.port())
}

/// Kills the sshd process serving a connection: the connection drops as if
/// the controller at its other end had died, and nothing ends its command.
fn kill(session: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &session.to_string()])
        .status();
}

/// Whether the loopback TCP connection from local port `port` is established.
fn established(port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == local && f[3] == "01"
        })
}

/// The pid of the sshd process serving the shell's cached session to `n`
/// (the `$PPID` of a command's shell), and the session's local port.
async fn serving(shell: &Ssh2Shell, n: &Node) -> (u32, u16) {
    let out = shell
        .exec(n, &RemoteCommand::new("echo $PPID $SSH_CLIENT"))
        .await
        .expect("exec");
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    let session: u32 = words[0].parse().expect("a pid");
    let port: u16 = words[2].parse().expect("a port");
    (session, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_on_a_hung_node_releases_the_session_and_the_undo_is_bounded() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(config(&sshd, &dir)).expect("shell");
    let n = node(&sshd);
    let run = word(&sshd, "run-hung");
    let (session, client_port) = serving(&shell, &n).await;
    let marker = format!("/tmp/pyscaler-abandon-{}", word(&sshd, "hung"));
    let _ = std::fs::remove_file(&marker);
    let sleep = format!("sleep 41.{}", sshd.port());

    // The step: a command that runs long; the node hangs while it runs.
    let command = RemoteCommand::new(format!("{sleep}; touch {marker}")).in_run(&run, "script");
    let step = shell.exec(&n, &command);
    let step_timeout = Duration::from_secs(1);
    let hang = async {
        assert!(eventually(Duration::from_secs(10), || running(&sleep)).await);
        Hang::stop(session, true)
    };
    let (timed_out, hung) = tokio::join!(tokio::time::timeout(step_timeout, step), hang);
    assert_eq!(
        hung.pids().len(),
        3,
        "session, monitor and listener: {hung:?}"
    );
    assert!(timed_out.is_err(), "the step timed out: {timed_out:?}");
    let at_timeout = Instant::now();

    // The abandoned session's connection is closed at once.
    let released = eventually(Duration::from_secs(10), || !established(client_port)).await;
    let release_took = at_timeout.elapsed();
    assert!(
        released,
        "the abandoned session's connection is still established"
    );

    // The undo: bounded, and it says the node is unreachable.
    let undo = tokio::time::timeout(
        Duration::from_secs(60),
        shell.exec(&n, &RemoteCommand::new(format!("rm -f {marker}"))),
    )
    .await
    .expect("the undo does not wait for the abandoned command");
    let undo_took = at_timeout.elapsed();
    let e = undo.unwrap_err();
    assert!(matches!(e, SshError::Unreachable { .. }), "{e:?}");
    assert!(e.is_unreachable() && !e.is_retryable(), "{e}");
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.to_string().contains("unreachable"), "{e}");
    eprintln!(
        "measured: step timeout -> session released {release_took:?}, -> bounded undo returned {undo_took:?}"
    );

    // The node wakes up: the command is still there (nobody could end it),
    // and recovery's end_run ends it before its marker is written.
    hung.resume();
    assert!(running(&sleep), "the command survived the hang");
    let ended = shell.end_run(&n, &run, None).await.expect("end_run");
    assert_eq!(ended, 1);
    assert!(eventually(Duration::from_secs(5), || !running(&sleep)).await);
    assert!(!std::path::Path::new(&marker).exists());
    // And the node is usable again.
    let out = shell
        .exec(&n, &RemoteCommand::new("echo back"))
        .await
        .expect("the node answers again");
    assert_eq!(out.stdout, "back\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_step_ends_its_remote_command() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(config(&sshd, &dir)).expect("shell");
    let n = node(&sshd);
    let run = word(&sshd, "run-timeout");
    let marker = format!("/tmp/pyscaler-abandon-{}", word(&sshd, "timeout"));
    let _ = std::fs::remove_file(&marker);
    let sleep = format!("sleep 3.{}", sshd.port());
    let command = RemoteCommand::new(format!("{sleep}; touch {marker}")).in_run(&run, "script");

    let started = Instant::now();
    let step = tokio::time::timeout(Duration::from_millis(800), shell.exec(&n, &command)).await;
    assert!(step.is_err(), "the step timed out");
    // Its process group ends, its record is removed, its marker never comes.
    assert!(eventually(Duration::from_secs(10), || !running(&sleep)).await);
    eprintln!(
        "measured: step timeout -> remote command gone {:?}",
        started.elapsed().saturating_sub(Duration::from_millis(800))
    );
    let records = shell
        .exec(
            &n,
            &RemoteCommand::new(format!(
                "ls -A \"$HOME/.pyscaler/runs/{run}/script\" 2>/dev/null"
            )),
        )
        .await
        .expect("ls");
    assert_eq!(records.stdout, "", "a record is left");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the command ran on"
    );
    assert_eq!(shell.end_run(&n, &run, None).await.expect("end_run"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_command_is_ended_and_says_so() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(config(&sshd, &dir)).expect("shell");
    let n = node(&sshd);
    let sleep = format!("sleep 43.{}", sshd.port());
    let token = CancellationToken::new();
    let command = RemoteCommand::new(format!("{sleep}; echo never")).cancel_on(token.clone());
    let cancel = async {
        assert!(eventually(Duration::from_secs(10), || running(&sleep)).await);
        token.cancel();
    };
    let (result, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(30), shell.exec(&n, &command)),
        cancel
    );
    let e = result.expect("a cancelled command returns").unwrap_err();
    assert!(matches!(e, SshError::Cancelled { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(!running(&sleep), "the cancelled command's process is gone");
    // A cancelled upload is refused the same way.
    let e = shell
        .upload(
            &n,
            "/tmp/pyscaler-never-written",
            b"x".to_vec(),
            pyscaler_ssh::UploadOptions::mode(0o600).cancel_on(token.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::Cancelled { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_run_ends_what_a_dead_controller_left_running() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = node(&sshd);
    let run = word(&sshd, "run-dead");
    let marker = format!("/tmp/pyscaler-abandon-{}", word(&sshd, "dead"));
    let _ = std::fs::remove_file(&marker);
    let (long, other) = (
        format!("sleep 44.{}", sshd.port()),
        format!("sleep 45.{}", sshd.port()),
    );

    // The controller starts two steps' commands, then dies: its connections
    // drop (the sshd processes serving them are killed) and nobody ends them.
    let shell = Ssh2Shell::new(config(&sshd, &dir)).expect("shell");
    let (session, _) = serving(&shell, &n).await;
    let first = RemoteCommand::new(format!("{long}; touch {marker}")).in_run(&run, "deploy");
    let running_step = shell.exec(&n, &first);
    let die = async {
        assert!(eventually(Duration::from_secs(10), || running(&long)).await);
        kill(session);
    };
    let (lost, ()) = tokio::join!(running_step, die);
    assert!(lost.is_err(), "the controller lost its command: {lost:?}");
    drop(shell);
    let other_node = Node::new("2", "web-02")
        .with_address(NodeAddress::new("127.0.0.1").with_port(sshd.port()))
        .with_ssh_user(sshd.user());
    let shell = Ssh2Shell::new(config(&sshd, &dir)).expect("shell");
    let (session, _) = serving(&shell, &other_node).await;
    let second = RemoteCommand::new(other.clone()).in_run(&run, "cluster update");
    let (lost, ()) = tokio::join!(shell.exec(&other_node, &second), async {
        assert!(eventually(Duration::from_secs(10), || running(&other)).await);
        kill(session);
    });
    assert!(lost.is_err());
    drop(shell);
    assert!(
        running(&long) && running(&other),
        "both outlived the controller"
    );

    // Recovery, from a new controller: one step first, then the whole run.
    let recovery = Ssh2Shell::new(config(&sshd, &dir)).expect("shell");
    assert_eq!(
        recovery
            .end_run(&n, &run, Some("deploy"))
            .await
            .expect("end_run"),
        1
    );
    assert!(eventually(Duration::from_secs(5), || !running(&long)).await);
    assert!(running(&other), "another step's command is left alone");
    assert_eq!(recovery.end_run(&n, &run, None).await.expect("end_run"), 1);
    assert!(eventually(Duration::from_secs(5), || !running(&other)).await);
    assert!(!std::path::Path::new(&marker).exists());
    // Nothing is left to end, and no record is left behind.
    assert_eq!(recovery.end_run(&n, &run, None).await.expect("end_run"), 0);
    let left = recovery
        .exec(
            &n,
            &RemoteCommand::new(format!("ls -A \"$HOME/.pyscaler/runs/{run}\" 2>&1")),
        )
        .await
        .expect("ls");
    assert!(left.stdout.contains("No such file"), "{}", left.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_step_on_a_hung_node_times_out_and_its_undo_is_bounded() {
    use pyscaler_core::{ActionExt, Cluster, Context, Pipeline, Target};
    use pyscaler_ssh::LocalScript;
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = std::sync::Arc::new(Ssh2Shell::new(config(&sshd, &dir)).expect("shell"));
    let n = node(&sshd);
    let (session, _) = serving(&shell, &n).await;
    let sleep = format!("sleep 46.{}", sshd.port());
    let marker = format!("/tmp/pyscaler-abandon-{}", word(&sshd, "pipeline"));
    let _ = std::fs::remove_file(&marker);
    let script = LocalScript::builder(shell.clone())
        .name("script")
        .inline(format!("#!/bin/sh\n{sleep}\ntouch {marker}\n"))
        .build()
        .expect("build");
    let pipeline = Pipeline::builder("scale-out")
        .step(script.on(Target::Cluster).timeout(Duration::from_secs(1)))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(Cluster::new("web").with_nodes([n.clone()]));
    let started = Instant::now();
    let hang = async {
        assert!(eventually(Duration::from_secs(10), || running(&sleep)).await);
        Hang::stop(session, true)
    };
    let (report, hung) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(120), pipeline.run(&mut ctx)),
        hang
    );
    let took = started.elapsed();
    hung.resume();
    let report = report.expect("the run's report comes without waiting for the hung node");
    eprintln!("measured: a 1 s step timeout on a hung node -> run report after {took:?}");
    assert!(!report.is_success(), "{report:?}");
    let step = report.step("script").expect("the step");
    let error = step.error.as_ref().expect("the step's error");
    assert_eq!(error.kind, ErrorKind::Timeout, "{error:?}");
    let undo = step.undo.as_ref().expect("the step was undone");
    assert!(undo.succeeded, "{undo:?}");

    // The script outlived the hang; recovery ends it by run and step.
    assert!(running(&sleep), "the script survived the hang");
    let ended = shell
        .end_run(&n, report.run_id.as_str(), Some("script"))
        .await
        .expect("end_run");
    assert_eq!(ended, 1);
    assert!(eventually(Duration::from_secs(5), || !running(&sleep)).await);
    assert!(!std::path::Path::new(&marker).exists());
}
