//! `Ssh2Shell` against a real OpenSSH sshd started by the testkit.

use std::time::{Duration, Instant};

use pyscaler_core::{Classify, ErrorKind, Node, NodeAddress};
use pyscaler_ssh::{
    HostKeyPolicy, KnownHostsName, RemoteCommand, RemoteShell, Ssh2Shell, SshConfig, SshError,
    UploadOptions,
};
use pyscaler_testkit::sshd::{generate_key, Sshd};

fn node(sshd: &Sshd, id: &str) -> Node {
    Node::new(id, format!("web-{id}"))
        .with_address(NodeAddress::new("127.0.0.1").with_port(sshd.port()))
        .with_ssh_user(sshd.user())
}

/// A config trusting `sshd`'s ed25519 host key, in a fresh known_hosts file.
fn trusted(sshd: &Sshd, dir: &tempfile::TempDir) -> SshConfig {
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line("ssh-ed25519")).expect("write known_hosts");
    SshConfig::new(sshd.user())
        .with_key_file(sshd.client_key())
        .with_known_hosts(known)
        .with_connect_timeout(Duration::from_secs(10))
        .with_command_timeout(Duration::from_secs(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_returns_stdout_stderr_exit_code_and_signal() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(trusted(&sshd, &dir)).expect("shell");
    let n = node(&sshd, "1");

    let out = shell
        .exec(&n, &RemoteCommand::new("echo out; echo err >&2; exit 3"))
        .await
        .expect("exec");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(out.exit_code, Some(3));
    assert!(!out.success());

    let out = shell
        .exec(&n, &RemoteCommand::new("kill -TERM $$"))
        .await
        .expect("exec");
    assert_eq!(out.signal.as_deref(), Some("TERM"));
    assert_eq!(out.exit_code, None);

    // An argument and an environment value cannot inject a command.
    let evil = "x'; touch /tmp/pwned-$$; echo '";
    let out = shell
        .exec(
            &n,
            &RemoteCommand::program("printf", ["%s|%s", evil, "$HOME"])
                .expect("quote")
                .env("NAME", "a b; exit 7"),
        )
        .await
        .expect("exec");
    assert_eq!(out.stdout, format!("{evil}|$HOME"));
    let out = shell
        .exec(
            &n,
            &RemoteCommand::new("printf %s \"$NAME\"").env("NAME", "a b; exit 7"),
        )
        .await
        .expect("exec");
    assert_eq!(
        (out.stdout.as_str(), out.exit_code),
        ("a b; exit 7", Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stderr_does_not_deadlock_and_output_is_capped() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(trusted(&sshd, &dir).with_output_cap(100_000)).expect("shell");
    let n = node(&sshd, "1");
    // 8 MB on stderr, far beyond the channel window, with stdout after it.
    let out = shell
        .exec(
            &n,
            &RemoteCommand::new("head -c 8000000 /dev/zero | tr '\\0' e >&2; echo done"),
        )
        .await
        .expect("exec");
    assert_eq!(out.stdout, "done\n");
    assert_eq!(out.stderr.len(), 100_000);
    assert!(out.truncated);
    assert_eq!(out.exit_code, Some(0));
}

/// An empty folder `/tmp/pyscaler-ssh-<name>` on the node.
async fn fresh_remote_dir(shell: &Ssh2Shell, n: &Node, name: &str) -> String {
    let dir = format!("/tmp/pyscaler-ssh-{name}");
    shell
        .exec(
            n,
            &RemoteCommand::new(format!("rm -rf {dir}; mkdir -p {dir}")),
        )
        .await
        .expect("mkdir");
    dir
}

/// The mode of `path` (octal), then every entry of `folder`, one a line.
async fn mode_and_folder(shell: &Ssh2Shell, n: &Node, path: &str, folder: &str) -> Vec<String> {
    let out = shell
        .exec(
            n,
            &RemoteCommand::program(
                "sh",
                ["-c", "stat -c %a \"$1\"; ls -A \"$2\"", "-", path, folder],
            )
            .expect("quote"),
        )
        .await
        .expect("stat and ls");
    out.stdout.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_round_trip() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(trusted(&sshd, &dir)).expect("shell");
    let n = node(&sshd, "1");
    let remote_dir = fresh_remote_dir(&shell, &n, &format!("upload-{}", sshd.port())).await;
    let path = format!("{remote_dir}/a file; with spaces");
    let contents: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    shell
        .upload(&n, &path, contents.clone(), UploadOptions::mode(0o750))
        .await
        .expect("upload");
    let back = shell.download(&n, &path).await.expect("download");
    assert_eq!(back, contents);
    let mode = shell
        .exec(
            &n,
            &RemoteCommand::program("stat", ["-c", "%a", &path]).expect("quote"),
        )
        .await
        .expect("stat");
    assert_eq!(mode.stdout.trim(), "750");

    // Over an existing file, with a secret's mode: the new contents, exactly
    // that mode, and no temporary file left beside it.
    shell
        .upload(&n, &path, b"secret\n".to_vec(), UploadOptions::mode(0o600))
        .await
        .expect("upload over the file");
    assert_eq!(
        shell.download(&n, &path).await.expect("download"),
        b"secret\n"
    );
    assert_eq!(
        mode_and_folder(&shell, &n, &path, &remote_dir).await,
        ["600", "a file; with spaces"]
    );

    let missing = shell.download(&n, "/nonexistent/file").await.unwrap_err();
    assert!(matches!(missing, SshError::Transfer { .. }), "{missing}");
    let denied = shell
        .upload(
            &n,
            "/proc/forbidden",
            b"x".to_vec(),
            UploadOptions::mode(0o644),
        )
        .await
        .unwrap_err();
    assert!(matches!(denied, SshError::Transfer { .. }), "{denied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_works_on_a_server_without_sftp() {
    // Uploads go over SFTP; a server without the subsystem gets the shell
    // pipeline instead, with the same result.
    let sshd = Sshd::start_without_sftp();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(trusted(&sshd, &dir)).expect("shell");
    let n = node(&sshd, "1");
    let remote_dir = fresh_remote_dir(&shell, &n, &format!("nosftp-{}", sshd.port())).await;
    let path = format!("{remote_dir}/file");
    for (contents, mode) in [(b"first\n".to_vec(), 0o640), (b"second\n".to_vec(), 0o600)] {
        shell
            .upload(&n, &path, contents.clone(), UploadOptions::mode(mode))
            .await
            .expect("upload without SFTP");
        assert_eq!(shell.download(&n, &path).await.expect("download"), contents);
    }
    assert_eq!(
        mode_and_folder(&shell, &n, &path, &remote_dir).await,
        ["600", "file"]
    );
    // One connection served the refused SFTP request and both uploads: the
    // node is remembered as one without SFTP (asking again on the same
    // session made libssh2 fail to open a channel, and reconnect).
    assert_eq!(sshd.accepted_logins(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_a_changed_or_unknown_host_key() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let other = Sshd::start();
    // The file holds another server's key under this server's name.
    let known = dir.path().join("known_hosts");
    let line = other
        .known_hosts_line("ssh-ed25519")
        .replace(&other.port().to_string(), &sshd.port().to_string());
    std::fs::write(&known, line).expect("write");
    let config = SshConfig::new(sshd.user())
        .with_key_file(sshd.client_key())
        .with_known_hosts(&known);
    let shell = Ssh2Shell::new(config.clone()).expect("shell");
    let e = shell
        .exec(&node(&sshd, "1"), &RemoteCommand::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::HostKeyMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("[127.0.0.1]:{}", sshd.port())) && msg.contains("SHA256:"),
        "{msg}"
    );
    let core: pyscaler_core::Error = e.into();
    assert!(!core.is_retryable());

    // Unknown host: refused, and nothing is written.
    let empty = dir.path().join("empty_known_hosts");
    let shell = Ssh2Shell::new(config.with_known_hosts(&empty)).expect("shell");
    let e = shell
        .exec(&node(&sshd, "1"), &RemoteCommand::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::HostKeyUnknown { .. }), "{e}");
    assert!(!empty.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_key_type_is_the_one_compared() {
    // The server has ed25519 and ECDSA keys; only the ECDSA one is recorded.
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line("ecdsa-sha2-nistp256")).expect("write");
    let shell = Ssh2Shell::new(
        SshConfig::new(sshd.user())
            .with_key_file(sshd.client_key())
            .with_known_hosts(&known),
    )
    .expect("shell");
    let out = shell
        .exec(&node(&sshd, "1"), &RemoteCommand::new("echo ok"))
        .await
        .expect("the ECDSA key is offered and matches");
    assert_eq!(out.stdout, "ok\n");
    // An entry for port 22 of the same host vouches for nothing on another port.
    let port22 = dir.path().join("port22");
    std::fs::write(
        &port22,
        sshd.known_hosts_line("ssh-ed25519")
            .replace(&format!("[127.0.0.1]:{}", sshd.port()), "127.0.0.1"),
    )
    .expect("write");
    let shell = Ssh2Shell::new(
        SshConfig::new(sshd.user())
            .with_key_file(sshd.client_key())
            .with_known_hosts(&port22),
    )
    .expect("shell");
    let e = shell
        .exec(&node(&sshd, "1"), &RemoteCommand::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::HostKeyUnknown { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_records_then_refuses_a_changed_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("sub").join("known_hosts");
    let first = Sshd::start();
    let port = first.port();
    let config = SshConfig::new(first.user())
        .with_key_file(first.client_key())
        .with_host_keys(HostKeyPolicy::AcceptNew)
        .with_known_hosts(&known);
    let n = node(&first, "1");
    let shell = Ssh2Shell::new(config.clone()).expect("shell");
    shell
        .exec(&n, &RemoteCommand::new("true"))
        .await
        .expect("first use is trusted");
    let recorded = std::fs::read_to_string(&known).expect("recorded");
    assert!(
        recorded.starts_with(&format!("[127.0.0.1]:{port} ")),
        "{recorded}"
    );
    assert_eq!(recorded.lines().count(), 1);
    // A second shell (a new process) trusts the recorded key.
    Ssh2Shell::new(config.clone())
        .expect("shell")
        .exec(&n, &RemoteCommand::new("true"))
        .await
        .expect("recorded key matches");
    drop(first);

    // Same address, new host keys: refused.
    let second = Sshd::start_on(port);
    let config = config.with_key_file(second.client_key());
    let e = Ssh2Shell::new(config)
        .expect("shell")
        .exec(&n, &RemoteCommand::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::HostKeyMismatch { .. }), "{e}");
    assert_eq!(std::fs::read_to_string(&known).expect("read"), recorded);
}

/// On a cloud a terminated instance's address goes to the next instance,
/// with keys of its own: stored by node id, the new instance is a new
/// entry, and a changed key of the same instance is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stored_by_node_id_follow_the_instance_not_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    let first = Sshd::start();
    let port = first.port();
    let config = SshConfig::new(first.user())
        .with_key_file(first.client_key())
        .with_host_keys(HostKeyPolicy::AcceptNew)
        .with_known_hosts_name(KnownHostsName::NodeId)
        .with_known_hosts(&known);
    Ssh2Shell::new(config.clone())
        .expect("shell")
        .exec(&node(&first, "i-old"), &RemoteCommand::new("true"))
        .await
        .expect("first use is trusted");
    let recorded = std::fs::read_to_string(&known).expect("recorded");
    assert!(recorded.starts_with("i-old "), "{recorded}");
    drop(first);

    // The address goes to a new instance with new keys: a new entry.
    let second = Sshd::start_on(port);
    let config = config.with_key_file(second.client_key());
    Ssh2Shell::new(config.clone())
        .expect("shell")
        .exec(&node(&second, "i-new"), &RemoteCommand::new("true"))
        .await
        .expect("a new instance at a reused address is a new host");
    let recorded = std::fs::read_to_string(&known).expect("recorded");
    assert_eq!(recorded.lines().count(), 2, "{recorded}");
    assert!(
        recorded.lines().any(|l| l.starts_with("i-new ")),
        "{recorded}"
    );

    // The old instance's id now offering another key: refused.
    let e = Ssh2Shell::new(config)
        .expect("shell")
        .exec(&node(&second, "i-old"), &RemoteCommand::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::HostKeyMismatch { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_key_of_the_recorded_type_is_a_mismatch_naming_what_it_offers() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // known_hosts records an RSA key; the server has only ed25519 and ECDSA keys.
    let rsa = dir.path().join("rsa_host_key");
    generate_key(&rsa, "rsa");
    let public = std::fs::read_to_string(rsa.with_extension("pub")).expect("public key");
    let b64 = public.split_whitespace().nth(1).expect("a key field");
    let known = dir.path().join("known_hosts");
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} ssh-rsa {b64}\n", sshd.port()),
    )
    .expect("write known_hosts");
    let shell = Ssh2Shell::new(
        SshConfig::new(sshd.user())
            .with_key_file(sshd.client_key())
            .with_known_hosts(&known),
    )
    .expect("shell");
    let e = shell
        .exec(&node(&sshd, "1"), &RemoteCommand::new("true"))
        .await
        .unwrap_err();
    let SshError::HostKeyMismatch {
        host, fingerprint, ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(host, &format!("[127.0.0.1]:{}", sshd.port()));
    assert!(
        (fingerprint.starts_with("ssh-ed25519 key SHA256:")
            || fingerprint.starts_with("ecdsa-sha2-nistp256 key SHA256:"))
            && fingerprint.ends_with("but no key of the recorded type (ssh-rsa)"),
        "{fingerprint}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(host.as_str()) && msg.contains("SHA256:"),
        "{msg}"
    );
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert_eq!(sshd.accepted_logins(), 0, "no login was tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong_key");
    generate_key(&wrong, "ed25519");
    let shell = Ssh2Shell::new(trusted(&sshd, &dir).with_key_file(&wrong)).expect("shell");
    let e = shell
        .exec(&node(&sshd, "1"), &RemoteCommand::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::AuthRefused { .. }), "{e}");
    let core: pyscaler_core::Error = e.into();
    assert_eq!(core.kind(), ErrorKind::PermissionDenied);
    assert!(!core.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_against_a_port_that_never_answers() {
    // A listening socket that never accepts: TCP connects, no SSH banner
    // comes (the handshake part of the connect timeout; the TCP part is the
    // next test).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    generate_key(&key, "ed25519");
    let shell = Ssh2Shell::new(
        SshConfig::new("nobody")
            .with_key_file(&key)
            .with_known_hosts(dir.path().join("known_hosts"))
            .with_connect_timeout(Duration::from_millis(300)),
    )
    .expect("shell");
    let n = Node::new("1", "silent").with_address(NodeAddress::new("127.0.0.1").with_port(port));
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        shell.exec(&n, &RemoteCommand::new("true")),
    )
    .await
    .expect("the connect timeout ends the call")
    .unwrap_err();
    assert!(matches!(e, SshError::ConnectTimeout { .. }), "{e}");
    let core: pyscaler_core::Error = e.into();
    assert_eq!(core.kind(), ErrorKind::Timeout);
    assert!(core.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_against_a_host_whose_tcp_handshake_never_completes() {
    // A listener with a backlog of 0 whose one queue slot is taken: the
    // kernel drops further SYNs, so a TCP connect hangs (as to a firewalled
    // or vanished host), before any SSH is spoken.
    use socket2::{Domain, Socket, Type};
    let full = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    full.bind(&any.into()).expect("bind");
    full.listen(0).expect("listen");
    let addr = full
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("an inet address");
    let mut queued = Vec::new();
    let hangs = loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) if queued.len() < 8 => queued.push(s),
            Ok(_) => panic!("the listener's queue never filled"),
            Err(e) => break e,
        }
    };
    assert_eq!(hangs.kind(), std::io::ErrorKind::TimedOut, "{hangs}");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    generate_key(&key, "ed25519");
    let shell = Ssh2Shell::new(
        SshConfig::new("nobody")
            .with_key_file(&key)
            .with_known_hosts(dir.path().join("known_hosts"))
            .with_connect_timeout(Duration::from_millis(300)),
    )
    .expect("shell");
    let n = Node::new("1", "firewalled")
        .with_address(NodeAddress::new("127.0.0.1").with_port(addr.port()));
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        shell.exec(&n, &RemoteCommand::new("true")),
    )
    .await
    .expect("the connect timeout ends the call")
    .unwrap_err();
    assert!(matches!(e, SshError::ConnectTimeout { .. }), "{e}");
    assert!(
        e.to_string().contains("firewalled") || e.to_string().contains("127.0.0.1"),
        "{e}"
    );
    let core: pyscaler_core::Error = e.into();
    assert_eq!(core.kind(), ErrorKind::Timeout);
    assert!(core.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_overruns_is_ended() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(trusted(&sshd, &dir)).expect("shell");
    let n = node(&sshd, "1");
    let marker = format!("sleep 37.{}", sshd.port());
    let e = shell
        .exec(
            &n,
            &RemoteCommand::new(format!("echo started; {marker}; echo never"))
                .timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::CommandTimedOut { .. }), "{e}");
    // The session is still usable, and the command's process is gone.
    // `[s]leep` matches the sleep but not the shell running pgrep.
    let pattern = format!("[s]leep 37.{}", sshd.port());
    let out = shell
        .exec(
            &n,
            &RemoteCommand::program("pgrep", ["-f", &pattern]).expect("quote"),
        )
        .await
        .expect("pgrep");
    assert_eq!(out.exit_code, Some(1), "still running: {}", out.stdout);
}

/// This process's user + system CPU time so far (Linux `/proc/self/stat`, 100 ticks/s).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_sessions_all_succeed() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(trusted(&sshd, &dir)).expect("shell");
    let nodes: Vec<Node> = (0..100).map(|i| node(&sshd, &i.to_string())).collect();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let outs = futures::future::join_all(nodes.iter().map(|n| {
        let shell = &shell;
        async move {
            shell
                .exec(
                    n,
                    &RemoteCommand::program("echo", [&n.name]).expect("quote"),
                )
                .await
        }
    }))
    .await;
    let elapsed = started.elapsed();
    for (n, out) in nodes.iter().zip(outs) {
        let out = out.unwrap_or_else(|e| panic!("{}: {e}", n.name));
        assert_eq!(out.stdout, format!("{}\n", n.name));
    }
    eprintln!(
        "measured: 100 concurrent logins + `echo` in {elapsed:?}, client CPU {:?}",
        cpu_time().saturating_sub(cpu_before)
    );

    // 100 consecutive commands over one reused session.
    let n = &nodes[0];
    let started = Instant::now();
    for i in 0..100 {
        let out = shell
            .exec(n, &RemoteCommand::new(format!("echo {i}")))
            .await
            .expect("exec");
        assert_eq!(out.stdout, format!("{i}\n"));
    }
    eprintln!(
        "measured: 100 consecutive commands over one session: {:?} each",
        started.elapsed() / 100
    );
    // One login per node: the 100 commands reused the first node's session.
    assert_eq!(sshd.accepted_logins(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_ecdsa_keys_log_in() {
    // OpenSSH 8.8+ refuses RSA signatures with SHA-1: this passes only with rsa-sha2.
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    for kind in ["rsa", "ecdsa"] {
        let key = dir.path().join(format!("id_{kind}"));
        generate_key(&key, kind);
        sshd.authorize(&key);
        let shell = Ssh2Shell::new(trusted(&sshd, &dir).with_key_file(&key)).expect("shell");
        let out = shell
            .exec(&node(&sshd, kind), &RemoteCommand::new("echo in"))
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(out.stdout, "in\n", "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_closed_is_replaced() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let shell = Ssh2Shell::new(trusted(&sshd, &dir)).expect("shell");
    let n = node(&sshd, "1");
    // The login shell's parent is sshd's process for this connection.
    let out = shell
        .exec(&n, &RemoteCommand::new("echo $PPID"))
        .await
        .expect("first");
    let session_pid = out.stdout.trim().to_owned();
    assert_eq!(sshd.accepted_logins(), 1);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &session_pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    // The cached session is dead: the next command logs in again and runs.
    let out = shell
        .exec(&n, &RemoteCommand::new("echo again"))
        .await
        .expect("a fresh session");
    assert_eq!(out.stdout, "again\n");
    assert_eq!(sshd.accepted_logins(), 2);
}

/// The `SHA256:` words of a console block (what `pyscaler_aws::host_key_fingerprints` reads).
fn sha256_words(block: &str) -> Vec<String> {
    block
        .split_whitespace()
        .filter(|w| w.starts_with("SHA256:"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_key_is_accepted_and_recorded_and_any_other_refused() {
    let sshd = Sshd::start();
    let other = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    let config = SshConfig::new(sshd.user())
        .with_key_file(sshd.client_key())
        .with_host_keys(HostKeyPolicy::Published)
        .with_known_hosts(&known)
        .with_connect_timeout(Duration::from_secs(10));
    let published = sha256_words(&sshd.console_fingerprints());
    assert_eq!(published.len(), 2, "{published:?}");

    // The keys another machine published (an attacker answering at the
    // node's address would offer its own): refused, nothing recorded.
    let n =
        node(&sshd, "1").with_host_key_fingerprints(sha256_words(&other.console_fingerprints()));
    let e = Ssh2Shell::new(config.clone())
        .expect("shell")
        .exec(&n, &RemoteCommand::new("true"))
        .await
        .expect_err("not the published key");
    assert!(matches!(e, SshError::HostKeyNotPublished { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("not one of SHA256:"), "{e}");
    assert!(!known.exists(), "recorded a refused key");

    // None published at all: refused too, saying so.
    let bare = node(&sshd, "2");
    let e = Ssh2Shell::new(config.clone())
        .expect("shell")
        .exec(&bare, &RemoteCommand::new("true"))
        .await
        .expect_err("nothing published");
    assert!(
        e.to_string().contains("published no host key fingerprints"),
        "{e}"
    );

    // Its own published keys: accepted, and the key recorded for later.
    let n = node(&sshd, "3").with_host_key_fingerprints(published);
    let out = Ssh2Shell::new(config.clone())
        .expect("shell")
        .exec(&n, &RemoteCommand::new("echo in"))
        .await
        .expect("the published key");
    assert_eq!(out.stdout, "in\n");
    let recorded = std::fs::read_to_string(&known).expect("recorded");
    assert!(
        recorded.starts_with(&format!("[127.0.0.1]:{} ", sshd.port())),
        "{recorded}"
    );
    // Once recorded, a later session needs no published list.
    Ssh2Shell::new(config)
        .expect("shell")
        .exec(&bare, &RemoteCommand::new("true"))
        .await
        .expect("recorded key matches");
}
