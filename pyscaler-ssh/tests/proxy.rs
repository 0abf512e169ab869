//! `Ssh2Shell` through a proxy command: OpenSSH's `ssh -W` with the test sshd
//! acting as its own bastion, and proxies that fail.

use std::path::Path;
use std::time::{Duration, Instant};

use pyscaler_core::{Classify, ErrorKind, Node, NodeAddress};
use pyscaler_ssh::{RemoteCommand, RemoteShell, Ssh2Shell, SshConfig, SshError, UploadOptions};
use pyscaler_testkit::sshd::Sshd;

/// The tests look for processes left behind: one test at a time, so that
/// another test's live proxy is not mistaken for a leak.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn node(host: &str, sshd: &Sshd) -> Node {
    Node::new("i-1", "web-01")
        .with_address(NodeAddress::new(host).with_port(sshd.port()))
        .with_ssh_user(sshd.user())
}

/// libssh2's config, trusting `sshd`'s ed25519 key under the name `host`.
fn config(sshd: &Sshd, dir: &Path, host: &str) -> SshConfig {
    let known = dir.join("known_hosts");
    let line = sshd
        .known_hosts_line("ssh-ed25519")
        .replacen("127.0.0.1", host, 1);
    std::fs::write(&known, line).expect("write known_hosts");
    SshConfig::new(sshd.user())
        .with_key_file(sshd.client_key())
        .with_known_hosts(known)
        .with_connect_timeout(Duration::from_secs(20))
        .with_command_timeout(Duration::from_secs(20))
}

/// An OpenSSH client command logging in to `sshd` as its bastion, with its own
/// settings only (no user config), checking the bastion's host key strictly.
/// `marker` is passed as a harmless option so the process can be found.
fn bastion_ssh(sshd: &Sshd, dir: &Path, port: u16, marker: &str) -> String {
    let known = dir.join("bastion_known_hosts");
    std::fs::write(&known, sshd.known_hosts_line("ssh-ed25519")).expect("write");
    format!(
        "ssh -F /dev/null -i {key} -p {port} -o IdentitiesOnly=yes -o BatchMode=yes \
         -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o SendEnv={marker} \
         -o ConnectTimeout=5 {user}@127.0.0.1",
        key = sshd.client_key().display(),
        known = known.display(),
        user = sshd.user(),
    )
}

/// Processes started by this test process that mention `marker`, or that it
/// left unreaped (zombies).
fn leftovers(marker: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let dir = entry.path();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let after_comm: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let zombie_child = after_comm.first() == Some(&"Z") && after_comm.get(1) == Some(&&*me);
        if cmdline.contains(marker) || zombie_child {
            found.push(format!("{}: {stat}", cmdline.trim()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_reached_through_ssh_w_on_a_bastion() {
    let _serial = SERIAL.lock().await;
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("PYSCALER_PROXY_OK_{}", sshd.port());
    let proxy = format!(
        "{} -W %h:%p",
        bastion_ssh(&sshd, dir.path(), sshd.port(), &marker)
    );
    let shell = Ssh2Shell::new(config(&sshd, dir.path(), "127.0.0.1").with_proxy_command(&proxy))
        .expect("shell");
    let n = node("127.0.0.1", &sshd);

    let out = shell
        .exec(&n, &RemoteCommand::new("echo through; echo $SSH_CLIENT"))
        .await
        .expect("exec through the proxy");
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("through\n"), "{out:?}");
    let path = format!("/tmp/pyscaler-ssh-proxy-{}", sshd.port());
    shell
        .upload(
            &n,
            &path,
            b"via the bastion\n".to_vec(),
            UploadOptions::mode(0o640),
        )
        .await
        .expect("upload through the proxy");
    let back = shell.download(&n, &path).await.expect("download");
    assert_eq!(back, b"via the bastion\n");
    // One connection: the bastion's login, then the node's through it.
    assert_eq!(sshd.accepted_logins(), 2);
    assert_eq!(
        leftovers(&marker).len(),
        1,
        "the proxy runs while the session lives"
    );

    shell.disconnect(&n).await;
    assert!(
        leftovers(&marker).is_empty(),
        "the proxy is killed and reaped with its session: {:?}",
        leftovers(&marker)
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_only_the_proxy_resolves_is_checked_against_its_own_host_key() {
    let _serial = SERIAL.lock().await;
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("PYSCALER_PROXY_NAME_{}", sshd.port());
    // `%h` is not used: only the proxy knows where "web-behind-bastion" is.
    let proxy = format!(
        "{} -W 127.0.0.1:%p",
        bastion_ssh(&sshd, dir.path(), sshd.port(), &marker)
    );
    let host = "web-behind-bastion.invalid";
    let shell =
        Ssh2Shell::new(config(&sshd, dir.path(), host).with_proxy_command(&proxy)).expect("shell");
    let n = node(host, &sshd);
    let out = shell
        .exec(&n, &RemoteCommand::new("echo hi"))
        .await
        .expect("exec through the proxy");
    assert_eq!(out.stdout, "hi\n");
    drop(shell);
    assert!(leftovers(&marker).is_empty(), "{:?}", leftovers(&marker));

    // known_hosts holds the key under 127.0.0.1 only: the node's own name is unknown.
    let shell = Ssh2Shell::new(config(&sshd, dir.path(), "127.0.0.1").with_proxy_command(&proxy))
        .expect("shell");
    let err = shell
        .exec(&n, &RemoteCommand::new("echo hi"))
        .await
        .expect_err("the node's name has no host key");
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err:?}");
    assert!(err.to_string().contains(host), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_proxy_is_a_typed_error_at_once_and_leaves_nothing_behind() {
    let _serial = SERIAL.lock().await;
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = node("127.0.0.1", &sshd);

    // A bastion that refuses connections: ssh says why on stderr, and exits 255.
    let closed = pyscaler_testkit::free_port();
    let marker = format!("PYSCALER_PROXY_FAIL_{}", sshd.port());
    let proxy = format!(
        "{} -W %h:%p",
        bastion_ssh(&sshd, dir.path(), closed, &marker)
    );
    // `false` exits at once and says nothing.
    for (proxy, words) in [
        (proxy.as_str(), "Connection refused"),
        ("false", "exited with status 1"),
    ] {
        let shell =
            Ssh2Shell::new(config(&sshd, dir.path(), "127.0.0.1").with_proxy_command(proxy))
                .expect("shell");
        let started = Instant::now();
        let err = shell
            .exec(&n, &RemoteCommand::new("echo hi"))
            .await
            .expect_err("the proxy fails");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{proxy}: took {:?}, far less than the connect timeout",
            started.elapsed()
        );
        assert!(matches!(err, SshError::ProxyFailed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("proxy command") && msg.contains(words),
            "{msg}"
        );
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert!(err.is_unreachable());
        assert!(leftovers(&marker).is_empty(), "{:?}", leftovers(&marker));
    }
    assert_eq!(sshd.accepted_logins(), 0);
}
