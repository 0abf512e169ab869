use std::sync::{Arc, Mutex};

use pyscaler_core::testing::{run_step, CallLog, Probe};
use pyscaler_core::{ErrorKind, Target};

use super::validate::{local_puppet, TempManifest};
use super::*;
use crate::testing::{ctx_with_nodes, output};
use crate::{MockRemoteShell, UploadOptions};

/// Command lines run, and whether with sudo.
type Seen = Arc<Mutex<Vec<(String, bool)>>>;

/// A shell where `puppet apply` exits with `apply_exit` (and prints `apply_err`),
/// `command -v puppet` with `present`, and everything else succeeds. Records command lines.
fn shell(present: bool, apply_exit: i32, apply_err: &'static str) -> (Arc<MockRemoteShell>, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut mock = MockRemoteShell::new();
    mock.expect_exec().returning(move |_node, cmd| {
        log.lock()
            .unwrap()
            .push((cmd.line().to_owned(), cmd.is_sudo()));
        Ok(if cmd.line() == "command -v puppet" {
            output("", "", if present { 0 } else { 1 })
        } else if cmd.line().contains("puppet apply") {
            output("Notice: Compiled catalog\n", apply_err, apply_exit)
        } else {
            output("", "", 0)
        })
    });
    mock.expect_upload()
        .returning(|_, path, contents, UploadOptions { mode, .. }| {
            assert!(path.ends_with("/site.pp"));
            assert_eq!(contents, b"file { '/tmp/x': }".to_vec());
            assert_eq!(mode, 0o600);
            Ok(())
        });
    (Arc::new(mock), seen)
}

fn action(shell: Arc<MockRemoteShell>) -> OsConfiguration {
    OsConfiguration::builder(shell)
        .manifest("file { '/tmp/x': }")
        .sudo(true)
        .build()
        .expect("build")
}

#[tokio::test]
async fn changes_and_no_changes_are_success() {
    for (exit, summary) in [(2, "puppet: changes applied"), (0, "puppet: no changes")] {
        let (shell, seen) = shell(true, exit, "");
        let mut ctx = ctx_with_nodes(2);
        let report = run_step(action(shell), Target::Cluster, &mut ctx).await;
        assert!(report.is_success(), "{report:?}");
        let nodes = &report.steps[0].nodes;
        assert_eq!(nodes.len(), 2);
        assert!(nodes.iter().all(|n| n.succeeded && n.summary == summary));
        let seen = seen.lock().unwrap();
        let apply = seen
            .iter()
            .find(|(l, _)| l.contains("puppet apply"))
            .unwrap();
        assert!(
            apply.0.contains("--detailed-exitcodes --color=false"),
            "{}",
            apply.0
        );
        assert!(apply.1, "puppet runs under sudo");
        // The copied files are removed afterwards.
        assert!(seen
            .iter()
            .any(|(l, _)| l.starts_with("rm -rf /tmp/pyscaler-puppet/run-")));
    }
}

#[tokio::test]
async fn failed_resources_fail_with_puppets_error_lines() {
    let (shell, _) = shell(
        true,
        4,
        "Warning: x\nError: '/bin/false' returned 1 instead of one of [0]\n",
    );
    let mut ctx = ctx_with_nodes(1);
    let report = run_step(action(shell), Target::Cluster, &mut ctx).await;
    assert!(!report.is_success());
    let error = report.error.expect("error");
    assert_eq!(error.kind, ErrorKind::RemoteCommandFailed);
    assert_eq!(error.node.as_deref(), Some("web-00"));
    assert!(
        error.message.contains("exit 4")
            && error.message.contains("Error: '/bin/false' returned 1"),
        "{}",
        error.message
    );
    let node = &report.steps[0].nodes[0];
    assert!(!node.succeeded);
    assert!(node.output.as_deref().unwrap_or("").contains("Warning: x"));
}

#[tokio::test]
async fn an_invalid_manifest_is_invalid_input() {
    let (shell, _) = shell(
        true,
        1,
        "Error: Could not parse for environment production\n",
    );
    let mut ctx = ctx_with_nodes(1);
    let report = run_step(action(shell), Target::Cluster, &mut ctx).await;
    let error = report.error.expect("error");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(
        error.message.contains("Could not parse"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn puppet_is_installed_when_missing_with_the_family_command() {
    let (shell, seen) = shell(false, 2, "");
    let puppet = OsConfiguration::builder(shell)
        .manifest("file { '/tmp/x': }")
        .install_command(OsFamily::Debian, "my-apt-install puppet")
        .sudo(true)
        .build()
        .expect("build");
    let mut ctx = ctx_with_nodes(1);
    let report = run_step(puppet, Target::Cluster, &mut ctx).await;
    assert!(report.is_success(), "{report:?}");
    let seen = seen.lock().unwrap();
    let install = seen
        .iter()
        .find(|(l, _)| l.contains("my-apt-install puppet"))
        .expect("install ran");
    assert!(install.1, "installed with sudo");
    assert!(install.0.contains("*\" debian \"*"), "{}", install.0);
}

#[tokio::test]
async fn compensation_cleans_up_and_skips_unreachable_nodes() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let mut mock = MockRemoteShell::new();
    mock.expect_exec().returning(move |node, cmd| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(cmd.line().starts_with("rm -rf /tmp/pyscaler-puppet/run-"));
        if node.name == "web-01" {
            Err(SshError::ConnectTimeout {
                host: "10.0.0.1:22".into(),
                after: Duration::from_secs(1),
            })
        } else {
            Ok(output("", "", 0))
        }
    });
    let puppet = action(Arc::new(mock));
    let mut ctx = ctx_with_nodes(2);
    // Compensation runs on the step's targets: undo through a pipeline whose
    // later step fails (web-01 is gone: nothing to clean there).
    let log = CallLog::default();
    let failing = Probe::new("boom", &log).failing(u32::MAX, ErrorKind::Unexpected);
    use pyscaler_core::ActionExt;
    let pipeline = pyscaler_core::Pipeline::builder("t")
        .step(Undo(puppet).on(pyscaler_core::Target::Cluster))
        .step(failing.on(pyscaler_core::Target::None))
        .build()
        .expect("pipeline");
    let report = pipeline.run(&mut ctx).await;
    assert!(!report.is_success());
    assert!(report.undo_succeeded(), "{:?}", report.undone);
    assert_eq!(report.undone.len(), 2);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(log.entries(), ["run boom", "undo boom"]);
}

/// Runs nothing; undoes with the wrapped action's compensation.
struct Undo(OsConfiguration);

#[async_trait]
impl Action for Undo {
    fn name(&self) -> &str {
        "puppet"
    }
    async fn run(&self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }
    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        self.0.compensate(ctx).await
    }
}

#[test]
fn build_needs_a_manifest_and_an_absolute_work_dir() {
    let shell = Arc::new(MockRemoteShell::new());
    assert!(OsConfiguration::builder(shell.clone()).build().is_err());
    assert!(OsConfiguration::builder(shell.clone())
        .manifest("x")
        .work_dir("tmp")
        .build()
        .is_err());
    assert!(OsConfiguration::builder(shell)
        .manifest_file("/nonexistent.pp")
        .build()
        .is_err());
}

#[tokio::test]
async fn facts_reach_puppet_and_secret_ones_stay_off_the_command_line() {
    let uploads = Arc::new(Mutex::new(Vec::new()));
    let commands = Arc::new(Mutex::new(Vec::new()));
    let mut mock = MockRemoteShell::new();
    let log = commands.clone();
    mock.expect_exec().returning(move |_node, cmd| {
        log.lock().unwrap().push(cmd.render().unwrap());
        Ok(output(
            "",
            "",
            if cmd.line().contains("puppet apply") {
                2
            } else {
                0
            },
        ))
    });
    let up = uploads.clone();
    mock.expect_upload()
        .returning(move |_, path, contents, UploadOptions { mode, .. }| {
            up.lock()
                .unwrap()
                .push((path.to_owned(), String::from_utf8(contents).unwrap(), mode));
            Ok(())
        });
    let action = OsConfiguration::builder(Arc::new(mock))
        .manifest("notify { $facts['tomcat_http_port']: }")
        .fact("tomcat_http_port", "8080")
        .secret_fact("tomcat_manager_password", "pa ss'word")
        .build()
        .unwrap();
    assert!(!format!("{action:?}").contains("pa ss"), "{action:?}");
    let report = run_step(action, Target::Cluster, &mut ctx_with_nodes(1)).await;
    assert!(report.is_success(), "{report}");

    let commands = commands.lock().unwrap();
    let apply = commands
        .iter()
        .find(|c| c.contains("puppet apply"))
        .unwrap();
    assert!(apply.contains("FACTER_tomcat_http_port=8080"), "{apply}");
    assert!(apply.contains(". ./facts.env && puppet apply"), "{apply}");
    assert!(
        commands.iter().all(|c| !c.contains("pa ss")),
        "{commands:?}"
    );
    let uploads = uploads.lock().unwrap();
    let (path, text, mode) = uploads
        .iter()
        .find(|(p, _, _)| p.ends_with("/facts.env"))
        .unwrap();
    assert_eq!(*mode, 0o600, "{path}");
    // Sourced by sh, the file gives back the value exactly.
    let sourced = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{text}printf %s \"$FACTER_tomcat_manager_password\""
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sourced.stdout), "pa ss'word");
    assert!(!format!("{report:?}").contains("pa ss"));
}

#[test]
fn a_syntax_error_is_refused_when_built_with_puppets_error_lines() {
    assert!(
        local_puppet().is_some(),
        "these tests need Puppet on the PATH (scripts/setup installs it)"
    );
    let broken = "class broken {\n  package { 'tomcat10': ensure => installed\n\ninclude broken\n";
    // Inline text: checked through a temporary file, named as the inline manifest.
    let err = OsConfiguration::builder(Arc::new(MockRemoteShell::new()))
        .manifest(broken)
        .build()
        .expect_err("a syntax error");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("Error: ") && msg.contains("Syntax error"),
        "{msg}"
    );
    assert!(
        msg.contains("inline manifest") && !msg.contains("pyscaler-manifest-"),
        "{msg}"
    );
    // A file: Puppet's lines name it, with the line of the error.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("site.pp");
    std::fs::write(&file, broken).expect("write");
    let err = OsConfiguration::builder(Arc::new(MockRemoteShell::new()))
        .manifest_file(&file)
        .build()
        .expect_err("a syntax error");
    let msg = err.to_string();
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("line: 4"),
        "{msg}"
    );
    // The temporary copy of inline text goes when it is dropped.
    let temp = TempManifest::write("notify { 'x': }").expect("temp file");
    let path = temp.0.clone();
    assert!(path.is_file());
    drop(temp);
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn a_manifest_that_parses_is_built_with_its_modules_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(modules.join("motd/manifests")).expect("mkdir");
    std::fs::write(
        modules.join("motd/manifests/init.pp"),
        "class motd($dir) { file { $dir: ensure => directory } }\n",
    )
    .expect("write");
    OsConfiguration::builder(Arc::new(MockRemoteShell::new()))
        .manifest("class { 'motd': dir => '/tmp/x' }\n")
        .modules_dir(&modules)
        .build()
        .expect("a valid manifest");
}

#[test]
fn a_fact_name_that_is_not_a_word_is_refused() {
    let err = OsConfiguration::builder(Arc::new(MockRemoteShell::new()))
        .manifest("")
        .fact("x; rm -rf /", "1")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("fact name"), "{err}");
}
