//! `OsConfiguration` running a real `puppet apply` over SSH to a real sshd.

use std::sync::Arc;
use std::time::Duration;

use pyscaler_core::{ActionExt, Cluster, Context, ErrorKind, Node, NodeAddress, Pipeline, Target};
use pyscaler_ssh::{OsConfiguration, Ssh2Shell, SshConfig};
use pyscaler_testkit::sshd::Sshd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puppet_apply_reports_changes_then_none_then_failure() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line("ssh-ed25519")).expect("write");
    let shell = Arc::new(
        Ssh2Shell::new(
            SshConfig::new(sshd.user())
                .with_key_file(sshd.client_key())
                .with_known_hosts(&known),
        )
        .expect("shell"),
    );
    let node = Node::new("i-1", "web-01")
        .with_address(NodeAddress::new("127.0.0.1").with_port(sshd.port()))
        .with_ssh_user(sshd.user());
    // Puppet runs as the unprivileged login user: it manages files in /tmp.
    let target = format!("/tmp/pyscaler-puppet-test-{}", sshd.port());
    let _ = std::fs::remove_dir_all(&target);
    // The change comes from a class in a modules folder, copied along.
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(modules.join("motd/manifests")).expect("mkdir");
    std::fs::write(
        modules.join("motd/manifests/init.pp"),
        "class motd($dir) {\n\
           file { $dir: ensure => directory }\n\
           file { \"${dir}/motd\": ensure => file, content => \"scaled by pyscaler\\n\" }\n\
         }\n",
    )
    .expect("write module");
    let converge = format!("class {{ 'motd': dir => '{target}' }}\n");
    let run = |manifest: String| {
        let shell = shell.clone();
        let node = node.clone();
        let modules = modules.clone();
        async move {
            let puppet = OsConfiguration::builder(shell)
                .manifest(manifest)
                .modules_dir(modules)
                .no_install()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build");
            let pipeline = Pipeline::builder("configure")
                .step(puppet.on(Target::Cluster))
                .build()
                .expect("pipeline");
            let mut ctx = Context::new(Cluster::new("web").with_nodes([node]));
            pipeline.run(&mut ctx).await
        }
    };

    let first = run(converge.clone()).await;
    assert!(first.is_success(), "{first:?}");
    assert_eq!(first.steps[0].nodes[0].summary, "puppet: changes applied");
    assert_eq!(
        std::fs::read_to_string(format!("{target}/motd")).expect("managed file"),
        "scaled by pyscaler\n"
    );

    // The copied manifest and modules are removed afterwards.
    let copied = format!("/tmp/pyscaler-puppet/{}-i-1", first.run_id);
    assert!(
        !std::path::Path::new(&copied).exists(),
        "{copied} left behind"
    );

    let second = run(converge).await;
    assert!(second.is_success(), "{second:?}");
    assert_eq!(second.steps[0].nodes[0].summary, "puppet: no changes");

    let failing = "exec { 'fail on purpose': command => '/bin/false' }\n".to_owned();
    let third = run(failing).await;
    assert!(!third.is_success());
    let error = third.error.as_ref().expect("error");
    assert_eq!(error.kind, ErrorKind::RemoteCommandFailed);
    assert_eq!(error.node.as_deref(), Some("web-01"));
    assert!(error.message.contains("exit 4"), "{}", error.message);
    assert!(
        error.message.contains("Error: '/bin/false' returned 1"),
        "Puppet's own error line: {}",
        error.message
    );
    let node = &third.steps[0].nodes[0];
    assert!(!node.succeeded);
    assert!(node.output.as_deref().unwrap_or("").contains("Error:"));
    let _ = std::fs::remove_dir_all(&target);
}
