//! Bad input, at the level a user meets it: the Tomcat cluster's config file
//! (written by `LocalStack` for moto, a loopback sshd and aiosmtpd) with one
//! thing wrong, loaded and run through the public API. Each test asserts a
//! typed error (its kind, and a message naming the bad value) and that
//! nothing was started: no instance in EC2, no login on the node, no mail
//! for the bad mail inputs. Three inputs can only be found wrong by the new
//! VM itself (a wrong key, a host-key mismatch, an unreachable host): those
//! cases launch, and assert that the launch was undone and nothing is left.
//!
//! And keeping secrets: a real run configured with an SMTP password and an
//! AWS secret key, with tracing captured at debug level; neither secret may
//! appear in the log, the JSON report or any `Debug` output.
//!
//! The tests run one after another (a shared lock): each starts its own
//! local stack, and the secrets test's run uses the real Tomcat on port 8080.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use pyscaler_aws::{
    Aws, ClassicElb, ClientConfig, Ec2, Ec2Profile, Instance, SdkEc2, StaticCredentials,
    TAG_CLUSTER,
};
use pyscaler_core::testing::{CallLog, Probe};
use pyscaler_core::{
    ActionExt, Classify, Cluster, Context, ErrorKind, Pipeline, RunReport, RunStatus, StepStatus,
    Target, TriggerInfo,
};
use pyscaler_demo::{Balancing, Hosts, LocalStack};
use pyscaler_examples::{tomcat_pipeline, ConfigError, Providers, TomcatClusterConfig};
use pyscaler_notify::{Email, NotifyError, Secret, SmtpConfig, SmtpMailer, Templates};
use pyscaler_ssh::{Ssh2Shell, SshConfig, SshError};
use pyscaler_testkit::{free_port, moto};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How many bad inputs this file tries (one test each).
const BAD_INPUTS: usize = 13;
static TRIED: AtomicUsize = AtomicUsize::new(0);
/// One local stack at a time: they are heavy on two cores, and a real run uses port 8080.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MANAGER_PASSWORD: &str = "bad-inputs-manager-password-71c2";

/// Only one test process on the machine may drive the node's real Puppet
/// and Tomcat (port 8080) at a time, other test binaries and checkouts too.
fn tomcat_lock() -> std::fs::File {
    pyscaler_testkit::machine_lock("tomcat-8080")
}

fn tried(what: &str) {
    let n = TRIED.fetch_add(1, Ordering::SeqCst) + 1;
    println!("bad input tried: {what} ({n} of {BAD_INPUTS} in this run)");
}

/// A local stack and its config file's text, to edit one thing in.
struct Case {
    stack: LocalStack,
    text: String,
}

impl Case {
    async fn start() -> Self {
        // The pipeline reads the manager's password from the environment; every test sets the same value.
        std::env::set_var("TOMCAT_MANAGER_PASSWORD", MANAGER_PASSWORD);
        // Behind the classic ELB: this suite predates target groups and keeps
        // that path covered (tomcat_e2e runs both).
        let stack = LocalStack::start_with_hosts(Balancing::Classic, Hosts::OneSshd).await;
        let text = std::fs::read_to_string(&stack.config).expect("read the stack's config");
        Self { stack, text }
    }

    /// The config file with the line starting with `key` replaced by `line`.
    fn edited(&self, key: &str, line: &str) -> String {
        let mut found = false;
        let text: Vec<String> = self
            .text
            .lines()
            .map(|l| {
                if !found && l.trim_start().starts_with(key) {
                    found = true;
                    line.to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect();
        assert!(found, "the stack's config has no `{key}` line");
        text.join("\n") + "\n"
    }

    /// Writes `text` as a config file beside the stack's and loads it.
    fn load(&self, text: &str) -> Result<TomcatClusterConfig, ConfigError> {
        let path = self.stack.dir.join("bad-input.toml");
        std::fs::write(&path, text).expect("write the config");
        TomcatClusterConfig::load(&path)
    }

    async fn providers(&self, config: &TomcatClusterConfig) -> Providers {
        let aws = ClientConfig::for_profile(&config.ec2)
            .credentials(StaticCredentials::new(
                moto::ACCESS_KEY_ID,
                moto::SECRET_ACCESS_KEY,
            ))
            .max_attempts(1);
        Providers {
            aws: Aws::connect(&aws, config.ec2.clone()).await,
            shell: Arc::new(Ssh2Shell::new(config.ssh.clone()).expect("valid ssh config")),
            mailer: Arc::new(SmtpMailer::from_config(&config.smtp).expect("valid smtp config")),
        }
    }

    /// One scale-out of the Tomcat pipeline with `config`.
    async fn run(&self, config: &TomcatClusterConfig) -> RunReport {
        let providers = self.providers(config).await;
        let pipeline = tomcat_pipeline(config, &providers, None).expect("the pipeline builds");
        let mut ctx = Context::new(Cluster::new(&config.cluster))
            .with_trigger(TriggerInfo::new("manual", "bad input test"));
        let _node = tomcat_lock();
        let report = pipeline.run(&mut ctx).await;
        println!("{report}");
        report
    }

    /// Every instance moto knows, in any state.
    async fn instances(&self) -> Vec<Instance> {
        let aws = ClientConfig::new(moto::REGION)
            .endpoint_url(self.stack.moto.endpoint_url())
            .credentials(StaticCredentials::new(
                moto::ACCESS_KEY_ID,
                moto::SECRET_ACCESS_KEY,
            ));
        SdkEc2::connect(&aws)
            .await
            .find_by_tags(&[], &[])
            .await
            .expect("list the instances")
    }

    /// The cluster's instances that are not terminated (or on their way).
    async fn live_instances(&self) -> Vec<String> {
        self.instances()
            .await
            .into_iter()
            .filter(|i| i.tags.contains_key(TAG_CLUSTER) && !i.state.is_gone())
            .map(|i| i.id)
            .collect()
    }

    /// Asserts nothing was started: no instance at all, no login on the node, no mail.
    async fn assert_nothing_started(&self) {
        assert!(
            self.instances().await.is_empty(),
            "an instance was launched"
        );
        assert_eq!(
            self.stack.sshd().accepted_logins(),
            0,
            "something logged in to the node"
        );
        assert!(self.stack.smtp.messages().is_empty(), "a mail was sent");
    }

    /// Asserts a run that failed at `step` with `kind`, naming `bad` in its
    /// message, left nothing running: every instance it launched is
    /// terminated and nothing reached the load balancer or a later step.
    async fn assert_failed_and_undone(
        &self,
        report: &RunReport,
        step: &str,
        kind: ErrorKind,
        bad: &str,
    ) {
        assert_eq!(report.status, RunStatus::Failed);
        let failed = report.step(step).expect("the failed step is reported");
        let error = failed.error.as_ref().expect("the step's error");
        assert_eq!(error.kind, kind, "{error:?}");
        assert!(
            error.message.contains(bad) || error.chain.iter().any(|c| c.contains(bad)),
            "the error does not name `{bad}`: {error:?}"
        );
        let run_error = report.error.as_ref().expect("the run's error");
        assert!(run_error.message.contains(step), "{run_error:?}");
        assert!(report.nodes_added.is_empty(), "{:?}", report.nodes_added);
        assert!(
            report
                .step("cluster-update")
                .is_none_or(|s| s.status == StepStatus::Skipped),
            "later steps must not run"
        );
        let live = self.live_instances().await;
        assert!(
            live.is_empty(),
            "an instance of the run is left running: {live:?}; every instance: {:?}",
            self.instances()
                .await
                .iter()
                .map(|i| format!("{} {} {:?}", i.id, i.state, i.tags))
                .collect::<Vec<_>>()
        );
        let health = ClassicElb::connect(
            &ClientConfig::new(moto::REGION)
                .endpoint_url(self.stack.moto.endpoint_url())
                .credentials(StaticCredentials::new(
                    moto::ACCESS_KEY_ID,
                    moto::SECRET_ACCESS_KEY,
                )),
        )
        .await;
        let registered =
            pyscaler_aws::LoadBalancer::health(&health, pyscaler_demo::LOAD_BALANCER, &[])
                .await
                .expect("load balancer health");
        assert!(registered.is_empty(), "{registered:?}");
        // The one mail is the failure notice, naming the step.
        let mails = self.stack.smtp.messages();
        assert_eq!(mails.len(), 1, "{mails:?}");
        assert!(mails[0].contains(step), "{}", mails[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ami_launches_nothing() {
    let _serial = SERIAL.lock().await;
    tried("unknown AMI");
    let case = Case::start().await;
    let config = case
        .load(&case.edited("image_id", "image_id = \"ami-0badc0de0badc0de\""))
        .expect("the file is well-formed");
    let report = case.run(&config).await;
    case.assert_failed_and_undone(
        &report,
        "deploy-ec2-node",
        ErrorKind::InvalidInput,
        "ami-0badc0de0badc0de",
    )
    .await;
    assert!(case.instances().await.is_empty(), "nothing was launched");
    assert_eq!(case.stack.sshd().accepted_logins(), 0);
    assert_eq!(report.step("deploy-ec2-node").map(|s| s.attempts), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_instance_type_launches_nothing() {
    let _serial = SERIAL.lock().await;
    tried("unknown instance type");
    let case = Case::start().await;
    let config = case
        .load(&case.edited("instance_type", "instance_type = \"t9.gigantic\""))
        .expect("the file is well-formed");
    let report = case.run(&config).await;
    case.assert_failed_and_undone(
        &report,
        "deploy-ec2-node",
        ErrorKind::InvalidInput,
        "t9.gigantic",
    )
    .await;
    assert!(case.instances().await.is_empty(), "nothing was launched");
    assert_eq!(case.stack.sshd().accepted_logins(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ssh_key_is_refused_before_anything_runs() {
    let _serial = SERIAL.lock().await;
    tried("missing SSH key");
    let case = Case::start().await;
    let missing = case.stack.dir.join("no-such-key");
    let text = case.edited(
        "auth",
        &format!(
            "auth = {{ method = \"key-file\", path = {:?} }}",
            missing.display().to_string()
        ),
    );
    // Through the config file: loading names the file and the key.
    let err = case.load(&text).expect_err("a missing key");
    assert!(
        matches!(err, ConfigError::Invalid { section: "ssh", .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("[ssh]"), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    // Through the library: a typed error from the SSH crate.
    let config = SshConfig::new(case.stack.sshd().user()).with_key_file(&missing);
    let err = Ssh2Shell::new(config).expect_err("a missing key");
    assert!(matches!(err, SshError::InvalidInput(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("no-such-key"), "{err}");
    case.assert_nothing_started().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ssh_key_is_refused_before_anything_runs() {
    let _serial = SERIAL.lock().await;
    tried("unreadable SSH key");
    let case = Case::start().await;
    // The tests may run as root, who reads any file: "unreadable" is a file that holds no key.
    let garbage = case.stack.dir.join("garbage-key");
    const CONTENT: &str = "this is not a private key 5e1f\n";
    std::fs::write(&garbage, CONTENT).expect("write the key");
    let text = case.edited(
        "auth",
        &format!(
            "auth = {{ method = \"key-file\", path = {:?} }}",
            garbage.display().to_string()
        ),
    );
    // Through the config file: loading names the file, not what is in it.
    let err = case.load(&text).expect_err("a file that holds no key");
    assert!(
        matches!(err, ConfigError::Invalid { section: "ssh", .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&garbage.display().to_string()),
        "{message}"
    );
    assert!(
        !message.contains("5e1f"),
        "the key file's content was shown: {message}"
    );
    // Through the library: a typed error from the SSH crate.
    let config = SshConfig::new(case.stack.sshd().user()).with_key_file(&garbage);
    let err = Ssh2Shell::new(config).expect_err("a file that holds no key");
    assert!(matches!(err, SshError::InvalidInput(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let message = err.to_string();
    assert!(message.contains("garbage-key"), "{message}");
    assert!(message.contains("no private key"), "{message}");
    assert!(
        !message.contains("5e1f"),
        "the key file's content was shown: {message}"
    );
    case.assert_nothing_started().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ssh_key_is_refused_and_the_launch_is_undone() {
    // Whether a well-formed key is the right one only the new VM can say: it
    // does not exist before the launch, so this case launches and is undone.
    let _serial = SERIAL.lock().await;
    tried("wrong SSH key");
    let case = Case::start().await;
    let other = case.stack.dir.join("other-key");
    pyscaler_testkit::sshd::generate_key(&other, "ed25519");
    let config = case
        .load(&case.edited(
            "auth",
            &format!(
                "auth = {{ method = \"key-file\", path = {:?} }}",
                other.display().to_string()
            ),
        ))
        .expect("the file is well-formed");
    let report = case.run(&config).await;
    case.assert_failed_and_undone(
        &report,
        "os-configuration",
        ErrorKind::PermissionDenied,
        "other-key",
    )
    .await;
    assert_eq!(case.stack.sshd().accepted_logins(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_mismatch_stops_before_login_and_the_launch_is_undone() {
    // A host key is offered by the new VM's sshd: it cannot be compared with
    // known_hosts before the VM exists, so this case launches and is undone.
    let _serial = SERIAL.lock().await;
    tried("host-key mismatch");
    let case = Case::start().await;
    // known_hosts records another key for the node's address.
    let impostor = case.stack.dir.join("impostor-host-key");
    pyscaler_testkit::sshd::generate_key(&impostor, "ed25519");
    let public = std::fs::read_to_string(impostor.with_extension("pub")).expect("public key");
    let key = public.split_whitespace().nth(1).expect("a key field");
    let line = format!(
        "[127.0.0.1]:{} ssh-ed25519 {key}\n",
        case.stack.sshd().port()
    );
    std::fs::write(case.stack.dir.join("known_hosts"), line).expect("write known_hosts");
    let config = case.load(&case.text).expect("the file is well-formed");
    let report = case.run(&config).await;
    case.assert_failed_and_undone(
        &report,
        "os-configuration",
        ErrorKind::PermissionDenied,
        "known_hosts",
    )
    .await;
    let error = report.error.as_ref().expect("error");
    assert!(
        error.message.contains("does not match")
            || error.chain.iter().any(|c| c.contains("does not match")),
        "{error:?}"
    );
    assert_eq!(case.stack.sshd().accepted_logins(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_fails_the_deploy_and_the_launch_is_undone() {
    // The address to reach is the new VM's: whether it answers cannot be
    // known before the VM exists, so this case launches and is undone.
    let _serial = SERIAL.lock().await;
    tried("unreachable host");
    let case = Case::start().await;
    let dead = free_port();
    // The first `port` line is `[ec2.ssh]`'s: the port of every new node.
    let text = case
        .edited("port", &format!("port = {dead}"))
        .replace("ssh_within = \"30s\"", "ssh_within = \"3s\"");
    let config = case.load(&text).expect("the file is well-formed");
    let report = case.run(&config).await;
    case.assert_failed_and_undone(
        &report,
        "deploy-ec2-node",
        ErrorKind::Timeout,
        &format!("127.0.0.1:{dead}"),
    )
    .await;
    assert_eq!(case.stack.sshd().accepted_logins(), 0);
}

/// A copy of the shipped assets in `dir`, for a test to break one of them.
fn copy_assets(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tomcat");
    let dst = dir.join("assets");
    copy_dir(&src, &dst);
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create the assets copy");
    for entry in std::fs::read_dir(src).expect("read the assets") {
        let entry = entry.expect("an entry");
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy an asset");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_with_a_syntax_error_is_refused_before_anything_runs() {
    let _serial = SERIAL.lock().await;
    tried("Puppet manifest with a syntax error");
    let case = Case::start().await;
    let assets = copy_assets(&case.stack.dir);
    let manifest = assets.join("manifests/tomcat.pp");
    std::fs::write(
        &manifest,
        "class broken {\n  package { 'tomcat10': ensure => installed\n\ninclude broken\n",
    )
    .expect("write the broken manifest");
    let config = case
        .load(&case.edited(
            "assets",
            &format!("assets = {:?}", assets.display().to_string()),
        ))
        .expect("the file is well-formed");
    // The controller's Puppet checks the manifest when the pipeline is built.
    let providers = case.providers(&config).await;
    let err = tomcat_pipeline(&config, &providers, None).expect_err("a syntax error");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        message.push_str(&format!("\n{s}"));
        source = s.source();
    }
    assert!(message.contains("Syntax error"), "{message}");
    assert!(
        message.contains(&manifest.display().to_string()),
        "the error names the manifest: {message}"
    );
    case.assert_nothing_started().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_does_not_exist_is_refused_before_anything_runs() {
    let _serial = SERIAL.lock().await;
    tried("script that does not exist");
    let case = Case::start().await;
    let assets = copy_assets(&case.stack.dir);
    std::fs::remove_file(assets.join("scripts/jvm-options.sh")).expect("remove the script");
    let config = case
        .load(&case.edited(
            "assets",
            &format!("assets = {:?}", assets.display().to_string()),
        ))
        .expect("the file is well-formed");
    let providers = case.providers(&config).await;
    let err = tomcat_pipeline(&config, &providers, None).expect_err("a missing script");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");
    assert!(err.to_string().contains("jvm-options.sh"), "{err}");
    case.assert_nothing_started().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_email_address_is_refused_before_anything_runs() {
    let _serial = SERIAL.lock().await;
    tried("invalid email address");
    let case = Case::start().await;
    // Through the config file: loading names the address.
    let err = case
        .load(&case.edited("to", "to = [\"ops@\"]"))
        .expect_err("an invalid address");
    // The address is checked as the file is read: a malformed file, naming the key.
    assert!(matches!(err, ConfigError::Malformed { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("to"), "{err}");
    let message = err.to_string();
    assert!(message.contains("ops@"), "{message}");
    // Through the library: a typed error naming it.
    let config = case.load(&case.text).expect("the stack's config");
    let mailer = Arc::new(SmtpMailer::from_config(&config.smtp).expect("mailer"));
    let err = Email::builder(mailer)
        .from("pyscaler@localhost")
        .to("ops@")
        .build()
        .expect_err("an invalid address");
    assert!(
        matches!(&err, NotifyError::InvalidAddress { address, .. } if address == "ops@"),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    case.assert_nothing_started().await;
}

/// A minimal SMTP server: it offers `AUTH` and accepts any login, answers
/// `RCPT` with `rcpt`, and keeps every line it was sent.
async fn scripted_smtp(rcpt: &'static str) -> (u16, Arc<StdMutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 scripted ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().expect("lock").push(line.clone());
                    if in_data {
                        if line == "." {
                            in_data = false;
                            let _ = write.write_all(b"250 2.0.0 queued as 42\r\n").await;
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply = match verb.as_str() {
                        "EHLO" | "HELO" => "250-scripted\r\n250 AUTH PLAIN LOGIN",
                        "AUTH" => "235 2.7.0 Authentication successful",
                        "MAIL" => "250 2.1.0 OK",
                        "RCPT" => rcpt,
                        "DATA" => {
                            in_data = true;
                            "354 go ahead"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => "250 OK",
                    };
                    let _ = write.write_all(format!("{reply}\r\n").as_bytes()).await;
                }
            });
        }
    });
    (port, seen)
}

/// A step that does nothing, so the run's mail is all that can fail.
fn noop() -> Probe {
    Probe::new("noop", &CallLog::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_that_refuses_the_recipient_is_a_typed_rejection() {
    let _serial = SERIAL.lock().await;
    tried("SMTP server that refuses (550)");
    let case = Case::start().await;
    let (port, seen) = scripted_smtp("550 5.1.1 <ops@localhost>: Recipient address rejected").await;
    let mut config = case.load(&case.text).expect("the stack's config");
    config.smtp.port = Some(port);
    let mailer = Arc::new(SmtpMailer::from_config(&config.smtp).expect("mailer"));
    let email = Email::builder(mailer)
        .addresses_from(&config.smtp)
        .build()
        .expect("valid email");
    let pipeline = Pipeline::builder("bad-inputs")
        .step(noop().on(Target::None))
        .finally(email.on(Target::None))
        .build()
        .expect("valid pipeline");
    let report = pipeline
        .run(&mut Context::new(Cluster::new(&config.cluster)))
        .await;
    println!("{report}");
    assert_eq!(report.status, RunStatus::CompletedWithFailures);
    let error = report.finally[0].error.as_ref().expect("the mail's error");
    assert_eq!(error.kind, ErrorKind::InvalidInput, "{error:?}");
    assert!(error.message.contains("550"), "{error:?}");
    assert!(error.message.contains("ops@localhost"), "{error:?}");
    let seen = seen.lock().expect("lock").clone();
    assert!(
        !seen.iter().any(|l| l.eq_ignore_ascii_case("DATA")),
        "no mail was sent after the refusal: {seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|l| l.to_ascii_uppercase().starts_with("RCPT"))
            .count(),
        1,
        "a permanent refusal is not retried: {seen:?}"
    );
    case.assert_nothing_started().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_profile_file_names_the_bad_value() {
    let _serial = SERIAL.lock().await;
    tried("malformed profile file");
    let case = Case::start().await;
    // Through the config file: the `[ec2]` table's region is a number.
    let text = case.edited("region", "region = 3");
    let err = case.load(&text).expect_err("a malformed profile");
    assert!(matches!(err, ConfigError::Malformed { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let message = err.to_string();
    assert!(message.contains("bad-input.toml"), "{message}");
    assert!(message.contains("region"), "{message}");
    // Through the library: a typed error from the AWS crate.
    let err = Ec2Profile::from_toml(
        "region = \"us-east-1\"\nimage_id = \"ami-03cf127a\"\ninstance_type = \"t3.small\"\ncount = \"two\"\n",
    )
    .expect_err("an unknown field");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");
    assert!(err.to_string().contains("count"), "{err}");
    case.assert_nothing_started().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_does_not_render_sends_nothing() {
    let _serial = SERIAL.lock().await;
    tried("template that does not render");
    let case = Case::start().await;
    let config = case.load(&case.text).expect("the stack's config");
    let mailer = Arc::new(SmtpMailer::from_config(&config.smtp).expect("mailer"));
    // A template that does not parse is refused when the action is built.
    let err = Email::builder(mailer.clone())
        .addresses_from(&config.smtp)
        .on_success(Templates::new("{{ cluster", "body"))
        .build()
        .expect_err("an unclosed tag");
    assert!(matches!(err, NotifyError::Template { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("success subject"), "{err}");
    // One that parses but names what the run does not have fails at run time, sending nothing.
    let email = Email::builder(mailer)
        .addresses_from(&config.smtp)
        .on_success(Templates::new("{{ cluster }}", "{{ no_such_value }}"))
        .build()
        .expect("the templates parse");
    let pipeline = Pipeline::builder("bad-inputs")
        .step(noop().on(Target::None))
        .finally(email.on(Target::None))
        .build()
        .expect("valid pipeline");
    let report = pipeline
        .run(&mut Context::new(Cluster::new(&config.cluster)))
        .await;
    assert_eq!(report.status, RunStatus::CompletedWithFailures);
    let error = report.finally[0].error.as_ref().expect("a render error");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(error.message.contains("success body"), "{error:?}");
    assert!(error.message.contains("no_such_value"), "{error:?}");
    case.assert_nothing_started().await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<StdMutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_no_log_line_report_or_debug_output() {
    let _serial = SERIAL.lock().await;
    const SMTP_PASSWORD: &str = "smtp-pass-4b1d9e77";
    const AWS_SECRET: &str = "aws-secret-0c55f1a3e9";
    let captured = Captured::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(captured.clone())
            .finish(),
    )
    .expect("the only subscriber of this test binary");

    // Declared before the stack, so released after it stops Tomcat.
    let _node = tomcat_lock();
    let case = Case::start().await;
    let (port, seen) = scripted_smtp("250 2.1.5 OK").await;
    let mut config = case.load(&case.text).expect("the stack's config");
    let smtp_text = format!(
        "host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nusername = \"pyscaler\"\npassword = \"{SMTP_PASSWORD}\"\nfrom = \"pyscaler@localhost\"\nto = [\"ops@localhost\"]\n"
    );
    config.smtp = SmtpConfig::from_toml(&smtp_text).expect("smtp config");
    let credentials = StaticCredentials::new(moto::ACCESS_KEY_ID, AWS_SECRET);
    let aws = ClientConfig::for_profile(&config.ec2)
        .credentials(credentials.clone())
        .max_attempts(1);
    let mailer = SmtpMailer::from_config(&config.smtp).expect("mailer");
    let shell = Ssh2Shell::new(config.ssh.clone()).expect("shell");
    let debug = format!(
        "{config:?}\n{:?}\n{credentials:?}\n{aws:?}\n{mailer:?}\n{shell:?}\n{:?}",
        config.smtp,
        Secret::new(SMTP_PASSWORD)
    );
    let providers = Providers {
        aws: Aws::connect(&aws, config.ec2.clone()).await,
        shell: Arc::new(shell),
        mailer: Arc::new(mailer),
    };
    let pipeline = tomcat_pipeline(&config, &providers, None).expect("pipeline");
    let mut ctx = Context::new(Cluster::new(&config.cluster))
        .with_trigger(TriggerInfo::new("manual", "secrets test"));
    let report = pipeline.run(&mut ctx).await;
    let json = serde_json::to_string_pretty(&report).expect("the report as JSON");
    println!("{report}");
    assert_eq!(report.status, RunStatus::Succeeded, "{json}");

    // The secrets were used: the mail server saw the login, and AWS answered signed requests.
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.eq_ignore_ascii_case("DATA")),
        "{seen:?}"
    );
    let log = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    assert!(
        log.lines().count() > 20,
        "the debug log was captured:\n{log}"
    );
    let report_text = format!("{report}\n{report:?}");
    for (what, text) in [
        ("the debug log", &log),
        ("the JSON report", &json),
        ("the report", &report_text),
        ("Debug output", &debug),
    ] {
        for secret in [SMTP_PASSWORD, AWS_SECRET, MANAGER_PASSWORD] {
            assert!(!text.contains(secret), "{what} holds a secret");
        }
    }
    // The stand-in VM goes when the stack drops; so does the instance's record.
    assert_eq!(case.live_instances().await.len(), 1);
}
