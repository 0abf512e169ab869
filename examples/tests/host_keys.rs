//! First contact without trusting the first key, for real: moto for EC2
//! behind the harness's fault proxy, which answers GetConsoleOutput with
//! what cloud-init prints on a real instance (moto's console output is
//! canned, without fingerprints), and OpenSSH's sshd standing in for the
//! new VM. `DeployEc2Node` reads the fingerprints (`ssh.host_keys =
//! "console-output"`); the SSH step's `HostKeyPolicy::Published` accepts
//! the sshd's key only when it is one of them, and records it. A mismatch
//! fails the SSH step, and the launch is undone.

use std::sync::Arc;
use std::time::Duration;

use pyscaler_aws::{
    Aws, ClientConfig, DeployEc2Node, Ec2Profile, HostKeySource, InstanceState, SshVia,
    StaticCredentials, TAG_RUN,
};
use pyscaler_core::{
    ActionExt, Cluster, Context, ErrorKind, Pipeline, RunStatus, StepStatus, Target,
};
use pyscaler_ssh::{HostKeyPolicy, NodeTask, Ssh2Shell, SshConfig};
use pyscaler_testkit::fault_proxy::{Fault, FaultProxy};
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, AMI, REGION, SECRET_ACCESS_KEY};
use pyscaler_testkit::sshd::Sshd;

struct Stack {
    _moto: MotoServer,
    proxy: FaultProxy,
    sshd: Sshd,
    aws: Aws,
    dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Self {
        let moto = MotoServer::start();
        let proxy = FaultProxy::start(&moto);
        let sshd = Sshd::start();
        let config = ClientConfig::new(REGION)
            .endpoint_url(proxy.endpoint_url())
            .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
            .max_attempts(1);
        let profile = Ec2Profile::builder(REGION, AMI, "t3.small")
            .endpoint_url(proxy.endpoint_url())
            .ssh_via(SshVia::Fixed {
                host: "127.0.0.1".into(),
            })
            .ssh_port(sshd.port())
            .ssh_user(sshd.user())
            .ssh_host_keys(HostKeySource::ConsoleOutput)
            .build()
            .expect("profile");
        Self {
            aws: Aws::connect(&config, profile).await,
            _moto: moto,
            proxy,
            sshd,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn known_hosts(&self) -> std::path::PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Launch one node, then log in to it with the published-keys policy.
    async fn scale_out(&self) -> (pyscaler_core::RunReport, Context) {
        let shell = Arc::new(
            Ssh2Shell::new(
                SshConfig::new(self.sshd.user())
                    .with_key_file(self.sshd.client_key())
                    .with_host_keys(HostKeyPolicy::Published)
                    .with_known_hosts(self.known_hosts())
                    .with_connect_timeout(Duration::from_secs(10)),
            )
            .expect("shell"),
        );
        let login = NodeTask::new("first-login", shell, |s| async move {
            let out = s.run("echo logged-in").await?;
            Ok(out.stdout.trim().to_owned())
        });
        let deploy = DeployEc2Node::builder(&self.aws)
            .running_within(Duration::from_secs(60))
            .host_keys_within(Duration::from_secs(30))
            .terminated_within(Duration::from_secs(60))
            .build()
            .expect("action");
        let pipeline = Pipeline::builder("scale-out")
            .step(deploy.on(Target::None))
            .step(login.on(Target::NewNodes))
            .build()
            .expect("pipeline");
        let mut ctx = Context::new(Cluster::new("web"));
        let report = pipeline.run(&mut ctx).await;
        (report, ctx)
    }

    async fn live_instances_of(&self, ctx: &Context) -> Vec<String> {
        self.aws
            .ec2()
            .find_by_tags(
                &[(TAG_RUN.to_owned(), ctx.run_id().to_string())],
                &[InstanceState::Pending, InstanceState::Running],
            )
            .await
            .expect("listed")
            .into_iter()
            .map(|i| i.id)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_the_console_output_names_is_accepted_and_recorded() {
    let stack = Stack::start().await;
    // Booting at first; then cloud-init's block with the sshd's own keys.
    stack
        .proxy
        .inject(Fault::console_output("[    0.000000] Linux version 6.1\n"));
    stack.proxy.inject(
        Fault::console_output(&format!(
            "[    0.000000] Linux version 6.1\n{}",
            stack.sshd.console_fingerprints()
        ))
        .always(),
    );
    let (report, ctx) = stack.scale_out().await;
    assert_eq!(report.status, RunStatus::Succeeded, "{report}");
    assert_eq!(report.steps[1].nodes[0].summary, "logged-in", "{report}");
    assert!(stack.proxy.count("GetConsoleOutput") >= 2);
    assert_eq!(ctx.new_nodes()[0].host_key_fingerprints.len(), 2);
    let recorded = std::fs::read_to_string(stack.known_hosts()).expect("recorded");
    assert!(
        recorded.starts_with(&format!("[127.0.0.1]:{} ", stack.sshd.port())),
        "{recorded}"
    );
    assert_eq!(stack.live_instances_of(&ctx).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_console_output_does_not_name_is_refused_and_the_launch_undone() {
    let stack = Stack::start().await;
    // Another machine's keys: what the console shows when something else
    // answers at the node's address.
    let other = Sshd::start();
    stack
        .proxy
        .inject(Fault::console_output(&other.console_fingerprints()).always());
    let (report, ctx) = stack.scale_out().await;
    assert_eq!(report.status, RunStatus::Failed, "{report}");
    let err = report.error.clone().expect("failed");
    assert_eq!(report.steps[1].name, "first-login");
    assert_eq!(report.steps[1].status, StepStatus::Failed, "{report}");
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err:?}");
    assert!(
        err.message.contains("is not one its provider published"),
        "{}",
        err.message
    );
    assert!(report.undo_succeeded(), "{report}");
    assert!(stack.live_instances_of(&ctx).await.is_empty());
    assert!(!stack.known_hosts().exists(), "a refused key was recorded");
}
