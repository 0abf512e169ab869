//! `LocalScript`, `NodeTask`, `ControllerProgram` and `SshCounter` against a real sshd.

use std::sync::Arc;

use pyscaler_core::testing::run_step;
use pyscaler_core::{Cluster, Context, MetricSource, Node, NodeAddress, RunReport, Target};
use pyscaler_ssh::{
    ControllerProgram, LocalScript, NodeTask, RemoteCommand, RemoteShell, Ssh2Shell, SshConfig,
    SshCounter,
};
use pyscaler_testkit::sshd::Sshd;

struct Stack {
    sshd: Sshd,
    _dir: tempfile::TempDir,
    known: std::path::PathBuf,
    shell: Arc<Ssh2Shell>,
}

fn stack() -> Stack {
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
    Stack {
        sshd,
        _dir: dir,
        known,
        shell,
    }
}

fn cluster(s: &Stack, n: usize) -> Cluster {
    Cluster::new("web").with_nodes((0..n).map(|i| {
        Node::new(format!("i-{i}"), format!("web-{i:02}"))
            .with_address(NodeAddress::new("127.0.0.1").with_port(s.sshd.port()))
            .with_ssh_user(s.sshd.user())
    }))
}

async fn run(action: impl pyscaler_core::Action + 'static, cluster: Cluster) -> RunReport {
    run_step(action, Target::Cluster, &mut Context::new(cluster)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_script_runs_on_each_node_with_args_and_env_and_is_removed() {
    let s = stack();
    let remote_dir = format!("/tmp/pyscaler-script-test-{}", s.sshd.port());
    let node0 = &cluster(&s, 1).nodes()[0].clone();
    s.shell
        .exec(node0, &RemoteCommand::new(format!("mkdir -p {remote_dir}")))
        .await
        .expect("mkdir");
    let script = LocalScript::builder(s.shell.clone())
        .name("deploy")
        .inline("#!/bin/sh\nprintf '%s|' \"$@\"\nprintf '%s\\n' \"$TARGET\"\n")
        .arg("{node.name}")
        .arg("$(touch /tmp/injected); echo x")
        .env("TARGET", "{cluster}'s {node.id}")
        .remote_dir(&remote_dir)
        .build()
        .expect("build");
    let report = run(script, cluster(&s, 3)).await;
    assert!(report.is_success(), "{report:?}");
    let nodes = &report.steps[0].nodes;
    assert_eq!(nodes.len(), 3);
    let web01 = nodes.iter().find(|n| n.node == "web-01").expect("web-01");
    assert_eq!(
        web01.output.as_deref(),
        Some("web-01|$(touch /tmp/injected); echo x|web's i-1\n")
    );
    let left = s
        .shell
        .exec(node0, &RemoteCommand::new(format!("ls -A {remote_dir}")))
        .await
        .expect("ls");
    assert_eq!(left.stdout, "", "the script is removed afterwards");

    let failing = LocalScript::builder(s.shell.clone())
        .inline("#!/bin/sh\necho 'cannot deploy' >&2\nexit 4\n")
        .remote_dir(&remote_dir)
        .build()
        .expect("build");
    let report = run(failing, cluster(&s, 1)).await;
    let error = report.error.as_ref().expect("error");
    assert!(error.message.contains("status 4") && error.message.contains("cannot deploy"));
    assert_eq!(error.node.as_deref(), Some("web-00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribute_task_puts_runs_and_gets_on_each_node() {
    let s = stack();
    let base = format!("/tmp/pyscaler-distribute-test-{}", s.sshd.port());
    let base2 = base.clone();
    let task = NodeTask::new("deploy", s.shell.clone(), move |session| {
        let base = base2.clone();
        async move {
            let dir = format!("{base}/{}", session.node().id);
            session.run(&format!("mkdir -p {dir}")).await?;
            session
                .put(b"app v2\n".to_vec(), &format!("{dir}/app.txt"), 0o644)
                .await?;
            session
                .run(&format!(
                    "sed 's/v2/v2 deployed/' {dir}/app.txt > {dir}/status"
                ))
                .await?;
            let status = session.get(&format!("{dir}/status")).await?;
            Ok(String::from_utf8_lossy(&status).trim().to_owned())
        }
    });
    let report = run(task, cluster(&s, 4)).await;
    assert!(report.is_success(), "{report:?}");
    assert!(report.steps[0]
        .nodes
        .iter()
        .all(|n| n.summary == "app v2 deployed"));
    let _ = std::fs::remove_dir_all(&base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribute_program_gets_the_hosts_like_fab() {
    let s = stack();
    // A stand-in for `fab -H hosts deploy`: OpenSSH's client on each host given.
    let script = format!(
        "for h in $(echo \"$1\" | tr , ' '); do \
           ssh -p \"${{h##*:}}\" -i {key} -o BatchMode=yes -o UserKnownHostsFile={known} \
               -o StrictHostKeyChecking=yes \"${{h%:*}}\" 'echo deployed' || exit 1; \
         done",
        key = s.sshd.client_key().display(),
        known = s.known.display(),
    );
    let fab = ControllerProgram::new("fab-deploy", "sh", ["-c", &script, "fab", "{hosts}"]);
    let report = run(fab, cluster(&s, 2)).await;
    assert!(report.is_success(), "{report:?}");
    let out = report.steps[0].nodes[0].output.clone().unwrap_or_default();
    assert_eq!(out.matches("deployed").count(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_counter_reads_the_load_average_of_each_node() {
    let s = stack();
    let counter = SshCounter::load_average(s.shell.clone());
    let mut samples = counter.sample(&cluster(&s, 3)).await.expect("samples");
    samples.sort_by(|a, b| a.node.cmp(&b.node));
    let names: Vec<&str> = samples.iter().map(|x| x.node.as_str()).collect();
    assert_eq!(names, ["web-00", "web-01", "web-02"]);
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .expect("loadavg")
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .expect("a number");
    assert!(samples
        .iter()
        .all(|x| x.value >= 0.0 && (x.value - load).abs() < 5.0));
}
