//! Authentication through the SSH agent (its own test binary: it sets `SSH_AUTH_SOCK`).

use pyscaler_core::{Node, NodeAddress};
use pyscaler_ssh::{RemoteCommand, RemoteShell, Ssh2Shell, SshConfig, SshError};
use pyscaler_testkit::sshd::{generate_key, ssh_agent, Sshd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_key_logs_in_and_an_empty_agent_is_refused() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line("ssh-ed25519")).expect("write");
    let node = Node::new("1", "web-01")
        .with_address(NodeAddress::new("127.0.0.1").with_port(sshd.port()))
        .with_ssh_user(sshd.user());
    let config = SshConfig::new(sshd.user())
        .with_agent()
        .with_known_hosts(&known);

    let (_agent, socket) = ssh_agent(sshd.dir(), sshd.client_key());
    // The only test in this binary: no other thread reads the environment.
    std::env::set_var("SSH_AUTH_SOCK", &socket);
    let out = Ssh2Shell::new(config.clone())
        .expect("shell")
        .exec(&node, &RemoteCommand::new("echo via agent"))
        .await
        .expect("login with the agent's key");
    assert_eq!(out.stdout, "via agent\n");

    // An agent holding another key is refused.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = other_dir.path().join("other");
    generate_key(&other, "ed25519");
    let (_other_agent, other_socket) = ssh_agent(other_dir.path(), &other);
    std::env::set_var("SSH_AUTH_SOCK", &other_socket);
    let e = Ssh2Shell::new(config)
        .expect("shell")
        .exec(&node, &RemoteCommand::new("true"))
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::AuthRefused { .. }), "{e}");
}
