//! `SshConfig::idle_sessions` against a real sshd: beyond the bound, the
//! least recently used idle session is closed (its process on the node
//! ends) and its node connects again when next used; within it, sessions
//! are reused. A session is told apart by its sshd process on the node:
//! the parent of each command's shell.

use std::time::Duration;

use pyscaler_core::{Node, NodeAddress};
use pyscaler_ssh::{RemoteCommand, RemoteShell, Ssh2Shell, SshConfig};
use pyscaler_testkit::sshd::Sshd;

fn node(sshd: &Sshd, id: &str) -> Node {
    Node::new(id, format!("web-{id}"))
        .with_address(NodeAddress::new("127.0.0.1").with_port(sshd.port()))
        .with_ssh_user(sshd.user())
}

fn shell(sshd: &Sshd, dir: &tempfile::TempDir, idle: usize) -> Ssh2Shell {
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line("ssh-ed25519")).expect("write known_hosts");
    let config = SshConfig::new(sshd.user())
        .with_key_file(sshd.client_key())
        .with_known_hosts(known)
        .with_connect_timeout(Duration::from_secs(10))
        .with_command_timeout(Duration::from_secs(20))
        .with_idle_sessions(idle);
    Ssh2Shell::new(config).expect("shell")
}

/// The pid of the sshd process serving the node's session.
async fn session_pid(shell: &Ssh2Shell, node: &Node) -> u32 {
    let out = shell
        .exec(node, &RemoteCommand::new("echo $PPID"))
        .await
        .expect("exec");
    assert!(out.success(), "{}", out.stderr);
    out.stdout.trim().parse().expect("a pid")
}

/// Whether process `pid` on the node ends within 5 s (asked from `node`'s session).
async fn ends(shell: &Ssh2Shell, node: &Node, pid: u32) -> bool {
    let line = format!(
        "i=0; while kill -0 {pid} 2>/dev/null; do [ $i -lt 50 ] || exit 1; sleep 0.1; i=$((i+1)); done"
    );
    shell
        .exec(node, &RemoteCommand::new(line))
        .await
        .expect("exec")
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_bound_the_least_recently_used_session_is_closed_and_reconnected() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = shell(&sshd, &dir, 1);
    let (a, b) = (node(&sshd, "a"), node(&sshd, "b"));

    let a1 = session_pid(&shell, &a).await;
    // b idle too: one more than the bound, so a's session (the older) is closed.
    let b1 = session_pid(&shell, &b).await;
    assert!(
        ends(&shell, &b, a1).await,
        "a's sshd process {a1} still runs"
    );
    let a2 = session_pid(&shell, &a).await;
    assert_ne!(a1, a2, "a is served by a new session");
    // Now b's is the older idle one.
    let b2 = session_pid(&shell, &b).await;
    assert_ne!(b1, b2, "b is served by a new session");
    // The newest is reused: bound 1 keeps exactly one.
    assert_eq!(session_pid(&shell, &b).await, b2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_bound_sessions_are_reused_and_zero_keeps_none() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(&sshd, "a"), node(&sshd, "b"));

    let keeps = shell(&sshd, &dir, 2);
    let a1 = session_pid(&keeps, &a).await;
    let b1 = session_pid(&keeps, &b).await;
    assert_eq!(session_pid(&keeps, &a).await, a1);
    assert_eq!(session_pid(&keeps, &b).await, b1);

    let none = shell(&sshd, &dir, 0);
    let first = session_pid(&none, &a).await;
    assert!(
        ends(&none, &a, first).await,
        "the closed session's process {first} still runs"
    );
    assert_ne!(session_pid(&none, &a).await, first);
}
