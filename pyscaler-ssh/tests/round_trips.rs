//! The round trips `Ssh2Shell` waits for (issue 18), counted from the log of
//! the harness's latency proxy between it and a real sshd: a command on an
//! open session waits for one (its channel was opened ahead, while the last
//! command ran), an upload over a slow link for two (one shell command, not
//! SFTP's nine requests one after the other). Counted, not timed.

use std::time::Duration;

use pyscaler_core::{Node, NodeAddress};
use pyscaler_ssh::{RemoteCommand, RemoteShell, Ssh2Shell, SshConfig, UploadOptions};
use pyscaler_testkit::latency::{round_trips, LatencyProxy};
use pyscaler_testkit::sshd::Sshd;

/// Runs `op` and returns the round trips the proxy saw the client wait for.
async fn counted<F, T>(proxy: &LatencyProxy, op: F) -> usize
where
    F: std::future::Future<Output = T>,
{
    // The previous operation's last segments pass first.
    tokio::time::sleep(proxy.delay() * 4).await;
    let from = proxy.now();
    op.await;
    round_trips(&proxy.segments_between(from, proxy.now()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_an_open_session_waits_one_round_trip_and_an_upload_two() {
    let sshd = Sshd::start();
    let proxy = LatencyProxy::start(&[sshd.port()], Duration::from_millis(20));
    let port = proxy.ports()[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    let line = sshd
        .known_hosts_line("ssh-ed25519")
        .replace(&format!(":{} ", sshd.port()), &format!(":{port} "));
    std::fs::write(&known, line).expect("write known_hosts");
    let config = SshConfig::new(sshd.user())
        .with_key_file(sshd.client_key())
        .with_known_hosts(known)
        .with_connect_timeout(Duration::from_secs(10))
        .with_command_timeout(Duration::from_secs(20));
    let shell = Ssh2Shell::new(config).expect("shell");
    let node = Node::new("i-1", "web-1")
        .with_address(NodeAddress::new("127.0.0.1").with_port(port))
        .with_ssh_user(sshd.user());
    // In the login user's home.
    let path = "pyscaler-round-trips.bin";
    let exec = |line: &'static str| {
        let (shell, node) = (&shell, &node);
        async move {
            let out = shell
                .exec(node, &RemoteCommand::new(line))
                .await
                .expect("the command runs");
            assert!(out.success(), "{line}: {}", out.stderr);
        }
    };

    let login = counted(&proxy, exec("true")).await;
    let again = counted(&proxy, exec("true")).await;
    let upload = counted(&proxy, async {
        shell
            .upload(
                &node,
                path,
                vec![7u8; 100 * 1024],
                UploadOptions::mode(0o640),
            )
            .await
            .expect("the upload")
    })
    .await;
    let after = counted(&proxy, exec("true")).await;
    let stat = shell
        .exec(
            &node,
            &RemoteCommand::new(format!("stat -c '%s %a' {path}; rm -f {path}")),
        )
        .await
        .expect("stat");
    // Its session has the next channel's open under way: giving the
    // session up waits for nothing.
    let dropped = counted(&proxy, async move { drop(shell) }).await;

    assert!(
        login >= 6,
        "a login and a command wait at least 6, saw {login}"
    );
    assert_eq!(again, 1, "a command on the open session");
    assert_eq!(upload, 2, "an upload over a 40 ms round trip");
    assert_eq!(after, 1, "a command after an upload");
    assert_eq!(dropped, 0, "dropping the shell with an open session");
    assert_eq!(
        stat.stdout.trim(),
        "102400 640",
        "the uploaded file, whole, with its mode"
    );
}
