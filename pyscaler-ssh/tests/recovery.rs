//! Recovery ends what a dead controller left running before it undoes the
//! step: the SSH actions against a real sshd, with `pyscaler_core::Recovery`
//! over the journal the dead controller left.
//!
//! The controller "dies" as in `abandon.rs`: the sshd process serving its
//! connection is killed while a step's command runs, so the connection
//! drops and nothing ends the command; the controller's shell then never
//! returns (it is dead), and its run is dropped, unfinished in the journal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyscaler_core::{
    async_trait, ActionExt, Cluster, Context, Journal, MemoryJournal, Node, NodeAddress, Pipeline,
    Recovery, RecoveryAction, Target,
};
use pyscaler_ssh::{
    CommandOutput, LocalScript, NodeTask, RemoteCommand, RemoteShell, Ssh2Shell, SshConfig,
    SshError, UploadOptions,
};
use pyscaler_testkit::process::{eventually, running};
use pyscaler_testkit::sshd::Sshd;

fn node(sshd: &Sshd) -> Node {
    Node::new("i-1", "web-01")
        .with_address(NodeAddress::new("127.0.0.1").with_port(sshd.port()))
        .with_ssh_user(sshd.user())
}

fn config(sshd: &Sshd, dir: &tempfile::TempDir) -> SshConfig {
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line("ssh-ed25519")).expect("write known_hosts");
    SshConfig::new(sshd.user())
        .with_key_file(sshd.client_key())
        .with_known_hosts(known)
        .with_unreachable_timeout(Duration::from_secs(2))
}

/// The pid of the sshd process serving `shell`'s cached session to `n`.
async fn serving(shell: &Ssh2Shell, n: &Node) -> u32 {
    let out = shell
        .exec(n, &RemoteCommand::new("echo $PPID"))
        .await
        .expect("exec");
    out.stdout.trim().parse().expect("a pid")
}

/// The dead controller's shell: once a command of the run loses its
/// connection, it never returns (the controller is gone).
struct Dying {
    inner: Arc<Ssh2Shell>,
    dead: AtomicBool,
}

#[async_trait]
impl RemoteShell for Dying {
    async fn exec(&self, node: &Node, command: &RemoteCommand) -> Result<CommandOutput, SshError> {
        let result = self.inner.exec(node, command).await;
        if result.is_err() && command.run_and_step().is_some() {
            self.dead.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        result
    }
    async fn upload(
        &self,
        node: &Node,
        path: &str,
        contents: Vec<u8>,
        options: UploadOptions,
    ) -> Result<(), SshError> {
        self.inner.upload(node, path, contents, options).await
    }
    async fn download(&self, node: &Node, path: &str) -> Result<Vec<u8>, SshError> {
        self.inner.download(node, path).await
    }
    async fn end_run<'a>(
        &self,
        node: &Node,
        run_id: &str,
        step: Option<&'a str>,
    ) -> Result<usize, SshError> {
        self.inner.end_run(node, run_id, step).await
    }
    async fn disconnect(&self, node: &Node) {
        self.inner.disconnect(node).await;
    }
}

/// The recovering controller's shell, writing down each call in order:
/// `end_run <step> -> <ended>`, or `exec <line> (running: <bool>)` with
/// whether the dead controller's command was still running then.
struct Recording {
    inner: Ssh2Shell,
    pattern: String,
    calls: Mutex<Vec<String>>,
}

impl Recording {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls").clone()
    }
}

#[async_trait]
impl RemoteShell for Recording {
    async fn exec(&self, node: &Node, command: &RemoteCommand) -> Result<CommandOutput, SshError> {
        let line = format!(
            "exec {} (running: {})",
            command.line(),
            running(&self.pattern)
        );
        self.calls.lock().expect("calls").push(line);
        self.inner.exec(node, command).await
    }
    async fn upload(
        &self,
        node: &Node,
        path: &str,
        contents: Vec<u8>,
        options: UploadOptions,
    ) -> Result<(), SshError> {
        self.inner.upload(node, path, contents, options).await
    }
    async fn download(&self, node: &Node, path: &str) -> Result<Vec<u8>, SshError> {
        self.inner.download(node, path).await
    }
    async fn end_run<'a>(
        &self,
        node: &Node,
        run_id: &str,
        step: Option<&'a str>,
    ) -> Result<usize, SshError> {
        let result = self.inner.end_run(node, run_id, step).await;
        let ended = match &result {
            Ok(n) => n.to_string(),
            Err(e) => e.to_string(),
        };
        self.calls
            .lock()
            .expect("calls")
            .push(format!("end_run {} -> {ended}", step.unwrap_or("*")));
        result
    }
    async fn disconnect(&self, node: &Node) {
        self.inner.disconnect(node).await;
    }
}

/// Runs `pipeline` on `n` until the controller's connection is cut while
/// `pattern` runs there, then drops the run as a killed controller leaves it.
async fn die_during(pipeline: &Pipeline, n: &Node, dying: &Dying, session: u32, pattern: &str) {
    let mut ctx = Context::new(Cluster::new("web").with_nodes([n.clone()]));
    let die = async {
        assert!(
            eventually(Duration::from_secs(20), || running(pattern)).await,
            "the step's command never started"
        );
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &session.to_string()])
            .status();
        assert!(
            eventually(Duration::from_secs(20), || dying
                .dead
                .load(Ordering::SeqCst))
            .await,
            "the controller never lost its command"
        );
    };
    tokio::select! {
        report = pipeline.run(&mut ctx) => panic!("the dead controller's run ended: {report:?}"),
        () = die => {}
    }
}

/// The shell of a dead controller (whose session to `n` is served by the
/// returned sshd pid) and of the controller that recovers.
async fn controllers(
    sshd: &Sshd,
    dir: &tempfile::TempDir,
    n: &Node,
    pattern: &str,
) -> (Arc<Dying>, u32, Arc<Recording>) {
    let first = Arc::new(Ssh2Shell::new(config(sshd, dir)).expect("shell"));
    let session = serving(&first, n).await;
    let dying = Arc::new(Dying {
        inner: first,
        dead: AtomicBool::new(false),
    });
    let recording = Arc::new(Recording {
        inner: Ssh2Shell::new(config(sshd, dir)).expect("shell"),
        pattern: pattern.to_owned(),
        calls: Mutex::new(Vec::new()),
    });
    (dying, session, recording)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_ends_a_dead_controllers_script_before_undoing_its_step() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = node(&sshd);
    let sleep = format!("sleep 6.{}", sshd.port());
    let marker = format!("/tmp/pyscaler-recovery-script-{}", sshd.port());
    let _ = std::fs::remove_file(&marker);
    let journal = Arc::new(MemoryJournal::new());
    let (dying, session, recording) = controllers(&sshd, &dir, &n, &sleep).await;
    let script = |shell: Arc<dyn RemoteShell>| {
        let script = LocalScript::builder(shell)
            .name("script")
            .inline(format!("#!/bin/sh\n{sleep}\ntouch {marker}\n"))
            .build()
            .expect("build");
        Pipeline::builder("scale-out")
            .journal(journal.clone())
            .step(script.on(Target::Cluster))
            .build()
            .expect("pipeline")
    };

    // The controller dies during the script step.
    let started = Instant::now();
    die_during(&script(dying.clone()), &n, &dying, session, &sleep).await;
    let unfinished = journal.unfinished_runs().await.expect("journal");
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    assert_eq!(unfinished[0].interrupted_step(), Some("script"));
    assert!(running(&sleep), "the script outlived its controller");

    // A new controller recovers the run.
    let report = Recovery::new(journal.clone())
        .pipeline(Arc::new(script(recording.clone())))
        .run(&Cluster::new("web").with_nodes([n.clone()]))
        .await
        .expect("recovery");
    assert!(report.is_success(), "{report}");
    assert_eq!(report.runs[0].action, RecoveryAction::Undone);
    assert_eq!(report.runs[0].undone, ["undid step script"]);
    assert!(journal.unfinished_runs().await.expect("journal").is_empty());

    // The script's group was ended first, then the step was undone.
    let calls = recording.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], "end_run script -> 1", "{calls:?}");
    assert!(
        calls[1].starts_with("exec rm -f ") && calls[1].ends_with("(running: false)"),
        "the undo raced the script: {calls:?}"
    );
    assert!(!running(&sleep), "the script still runs");

    // Its marker is never written.
    let after_sleep = Duration::from_secs(8).saturating_sub(started.elapsed());
    tokio::time::sleep(after_sleep).await;
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the dead controller's script wrote its file after recovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_ends_a_dead_controllers_node_task_before_its_undo_runs() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = node(&sshd);
    let sleep = format!("sleep 7.{}", sshd.port());
    let marker = format!("/tmp/pyscaler-recovery-task-{}", sshd.port());
    let _ = std::fs::remove_file(&marker);
    let journal = Arc::new(MemoryJournal::new());
    let (dying, session, recording) = controllers(&sshd, &dir, &n, &sleep).await;
    let pipeline = |shell: Arc<dyn RemoteShell>| {
        let line = format!("{sleep}; touch {marker}");
        let task = NodeTask::new("members", shell, move |s| {
            let line = line.clone();
            async move {
                s.run(&line).await?;
                Ok("written".to_owned())
            }
        })
        .undo(|s| async move {
            s.run("true").await?;
            Ok("undone".to_owned())
        });
        Pipeline::builder("scale-out")
            .journal(journal.clone())
            .step(task.on(Target::Cluster))
            .build()
            .expect("pipeline")
    };

    let started = Instant::now();
    die_during(&pipeline(dying.clone()), &n, &dying, session, &sleep).await;
    assert!(
        running(&sleep),
        "the task's command outlived its controller"
    );
    let report = Recovery::new(journal.clone())
        .pipeline(Arc::new(pipeline(recording.clone())))
        .run(&Cluster::new("web").with_nodes([n.clone()]))
        .await
        .expect("recovery");
    assert!(report.is_success(), "{report}");
    assert_eq!(report.runs[0].undone, ["undid step members"]);
    let calls = recording.calls();
    assert_eq!(
        calls,
        ["end_run members -> 1", "exec true (running: false)"],
        "the undo raced the task"
    );
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(started.elapsed())).await;
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the dead controller's task wrote its file after recovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_has_nothing_to_end_and_recovery_goes_on() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens there: the node is gone.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = gone.local_addr().expect("addr").port();
    drop(gone);
    let n = Node::new("i-9", "web-09")
        .with_address(NodeAddress::new("127.0.0.1").with_port(port))
        .with_ssh_user(sshd.user());
    let journal = Arc::new(MemoryJournal::new());
    let now = chrono::Utc::now();
    let run = pyscaler_core::RunId::new(format!("run-gone-{port}"));
    for entry in [
        pyscaler_core::JournalEntry::RunStarted {
            run_id: run.clone(),
            pipeline: "scale-out".into(),
            cluster: "web".into(),
            trigger: pyscaler_core::TriggerInfo::default(),
            at: now,
        },
        pyscaler_core::JournalEntry::StepStarted {
            run_id: run.clone(),
            step: "script".into(),
            intent: vec![],
            at: now,
        },
    ] {
        journal.append(entry).await.expect("append");
    }
    let recording = Arc::new(Recording {
        inner: Ssh2Shell::new(config(&sshd, &dir)).expect("shell"),
        pattern: format!("never-{port}"),
        calls: Mutex::new(Vec::new()),
    });
    let script = LocalScript::builder(recording.clone())
        .name("script")
        .inline("#!/bin/sh\n")
        .build()
        .expect("build");
    let pipeline = Pipeline::builder("scale-out")
        .journal(journal.clone())
        .step(script.on(Target::Cluster))
        .build()
        .expect("pipeline");
    // The node is unreachable: ending its commands is bounded by
    // `unreachable_timeout`; the guard only keeps a regression from hanging.
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        Recovery::new(journal.clone())
            .pipeline(Arc::new(pipeline))
            .run(&Cluster::new("web").with_nodes([n])),
    )
    .await
    .expect("recovery does not wait on an unreachable node")
    .expect("recovery");
    assert!(report.is_success(), "{report}");
    assert_eq!(report.runs[0].undone, ["undid step script"]);
    let calls = recording.calls();
    assert!(
        calls[0].starts_with("end_run script -> ") && calls[0].contains("unreachable"),
        "{calls:?}"
    );
    assert!(
        calls[1].starts_with("exec rm -f "),
        "the undo still ran: {calls:?}"
    );
}
