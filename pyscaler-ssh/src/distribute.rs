//! `DistributeScript`: a task applied to each node, Fabric style — in Rust
//! with a session handle, or as a program run on the controller (`fab -H ...`).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use pyscaler_core::{Action, Context, Effects, Node, NodeOutcome, Result};

use crate::fanout::{FanOut, NodeFailure, NodeResult};
use crate::{CommandOutput, RemoteCommand, RemoteShell, RemoteShellExt, SshError};

/// A node and the shell that reaches it: what a task works with.
///
/// Cheap to clone; every call goes through the node's one reused session.
#[derive(Clone)]
pub struct NodeSession {
    shell: Arc<dyn RemoteShell>,
    node: Node,
}

impl std::fmt::Debug for NodeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSession")
            .field("node", &self.node.name)
            .finish_non_exhaustive()
    }
}

impl NodeSession {
    /// A session on `node` through `shell`.
    pub fn new(shell: Arc<dyn RemoteShell>, node: Node) -> Self {
        Self { shell, node }
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    fn user(&self) -> &str {
        self.node.ssh_user.as_deref().unwrap_or("")
    }

    /// Runs a command line and fails unless it exits with status 0.
    ///
    /// # Errors
    /// As [`RemoteShell::exec`] and [`CommandOutput::check`].
    pub async fn run(&self, line: &str) -> Result<CommandOutput, SshError> {
        self.exec(&RemoteCommand::new(line)).await
    }

    /// Runs a command line with `sudo -n` and fails unless it exits with status 0.
    ///
    /// # Errors
    /// As [`NodeSession::run`]; [`SshError::SudoNeedsPassword`] when sudo would prompt.
    pub async fn sudo(&self, line: &str) -> Result<CommandOutput, SshError> {
        self.exec(&RemoteCommand::new(line).sudo(true)).await
    }

    /// Runs a command and fails unless it exits with status 0.
    ///
    /// # Errors
    /// As [`NodeSession::run`].
    pub async fn exec(&self, command: &RemoteCommand) -> Result<CommandOutput, SshError> {
        self.shell
            .run_checked(&self.node, command, self.user())
            .await
    }

    /// Writes `contents` to `remote_path` with permissions `mode`.
    ///
    /// # Errors
    /// As [`RemoteShell::upload`].
    pub async fn put(
        &self,
        contents: Vec<u8>,
        remote_path: &str,
        mode: u32,
    ) -> Result<(), SshError> {
        self.shell
            .upload(&self.node, remote_path, contents, mode, false)
            .await
    }

    /// Copies a local file to `remote_path` with permissions `mode`.
    ///
    /// # Errors
    /// As [`RemoteShellExt::upload_file`].
    pub async fn put_file(
        &self,
        local: &Path,
        remote_path: &str,
        mode: u32,
    ) -> Result<(), SshError> {
        self.shell
            .upload_file(&self.node, local, remote_path, mode)
            .await
    }

    /// Reads `remote_path`.
    ///
    /// # Errors
    /// As [`RemoteShell::download`].
    pub async fn get(&self, remote_path: &str) -> Result<Vec<u8>, SshError> {
        self.shell.download(&self.node, remote_path).await
    }
}

/// A task applied to one node: returns a one-line summary for the report.
pub type Task = Arc<
    dyn Fn(NodeSession) -> BoxFuture<'static, std::result::Result<String, NodeFailure>>
        + Send
        + Sync,
>;

enum Kind {
    Task {
        shell: Arc<dyn RemoteShell>,
        task: Task,
        undo: Option<Task>,
    },
    Program {
        program: String,
        args: Vec<String>,
        timeout: Duration,
    },
}

/// Applies a task to each target node, like a Fabric task.
///
/// - [`DistributeScript::task`]: a Rust closure given a [`NodeSession`] per
///   node (put a file, run, sudo, get), run on the nodes with a [`FanOut`].
/// - [`DistributeScript::program`]: for teams migrating from Fabric, a
///   program run once on the controller with the target nodes handed to it:
///   `{hosts}` in an argument becomes `user@host:port,...` (and the
///   `PYSCALER_HOSTS` variable holds the same list). The program is started
///   directly, without a shell, so no host name can inject a command.
///
/// ```
/// # use std::sync::Arc;
/// # use pyscaler_ssh::{DistributeScript, Ssh2Shell, SshConfig};
/// # fn demo() -> Result<(), pyscaler_ssh::SshError> {
/// let shell = Arc::new(Ssh2Shell::new(SshConfig::new("admin"))?);
/// let deploy = DistributeScript::task("deploy-app", shell, |s| async move {
///     s.put(b"<war bytes>".to_vec(), "/tmp/app.war", 0o644).await?;
///     s.sudo("install -m 644 /tmp/app.war /var/lib/tomcat9/webapps/app.war").await?;
///     let status = s.run("systemctl is-active tomcat9").await?;
///     Ok(format!("tomcat {}", status.stdout.trim()))
/// });
/// let fab = DistributeScript::program("fab-deploy", "fab", ["-H", "{hosts}", "deploy"]);
/// # let _ = (deploy, fab); Ok(()) }
/// ```
pub struct DistributeScript {
    name: String,
    kind: Kind,
    fan_out: FanOut,
}

impl std::fmt::Debug for DistributeScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Task { .. } => "task".to_owned(),
            Kind::Program { program, args, .. } => format!("{program} {}", args.join(" ")),
        };
        f.debug_struct("DistributeScript")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("fan_out", &self.fan_out)
            .finish()
    }
}

impl DistributeScript {
    /// A Rust task applied to each target node.
    pub fn task<F, Fut>(name: impl Into<String>, shell: Arc<dyn RemoteShell>, task: F) -> Self
    where
        F: Fn(NodeSession) -> Fut + Send + Sync + 'static,
        Fut:
            std::future::Future<Output = std::result::Result<String, NodeFailure>> + Send + 'static,
    {
        Self {
            name: name.into(),
            kind: Kind::Task {
                shell,
                task: Arc::new(move |s| Box::pin(task(s))),
                undo: None,
            },
            fan_out: FanOut::default(),
        }
    }

    /// A program run on the controller with the target nodes given to it.
    pub fn program<I, S>(name: impl Into<String>, program: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            kind: Kind::Program {
                program: program.into(),
                args: args.into_iter().map(Into::into).collect(),
                timeout: Duration::from_secs(3600),
            },
            fan_out: FanOut::default(),
        }
    }

    /// For a task: what undoes it on a node, run by compensation (on every
    /// target node, also those where the task failed half-way; it must be
    /// safe to run twice).
    pub fn undo<F, Fut>(mut self, undo: F) -> Self
    where
        F: Fn(NodeSession) -> Fut + Send + Sync + 'static,
        Fut:
            std::future::Future<Output = std::result::Result<String, NodeFailure>> + Send + 'static,
    {
        if let Kind::Task { undo: slot, .. } = &mut self.kind {
            *slot = Some(Arc::new(move |s| Box::pin(undo(s))));
        }
        self
    }

    /// For a program: bounds its run (default one hour); it is killed past it.
    pub fn timeout(mut self, after: Duration) -> Self {
        if let Kind::Program { timeout, .. } = &mut self.kind {
            *timeout = after;
        }
        self
    }

    /// For a task: how many nodes at once, and what a failure does.
    pub fn fan_out(mut self, fan_out: FanOut) -> Self {
        self.fan_out = fan_out;
        self
    }

    async fn apply(
        &self,
        ctx: &mut Context,
        shell: &Arc<dyn RemoteShell>,
        task: &Task,
    ) -> Result<()> {
        self.fan_out
            .run(ctx, |node| {
                let session = NodeSession::new(shell.clone(), node);
                async move { task(session).await.map(NodeResult::new) }
            })
            .await
    }

    async fn run_program(
        &self,
        ctx: &mut Context,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<()> {
        let hosts: Vec<String> = ctx
            .targets()
            .iter()
            .filter_map(|n| {
                let a = n.address.as_ref()?;
                let host = if a.host.contains(':') {
                    format!("[{}]", a.host)
                } else {
                    a.host.clone()
                };
                let user = n
                    .ssh_user
                    .as_ref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default();
                Some(format!("{user}{host}:{}", a.port))
            })
            .collect();
        let hosts = hosts.join(",");
        let args: Vec<String> = args.iter().map(|a| a.replace("{hosts}", &hosts)).collect();
        let shown = format!("{program} {}", args.join(" "));
        let started = tokio::time::Instant::now();
        let child = tokio::process::Command::new(program)
            .args(&args)
            .env("PYSCALER_HOSTS", &hosts)
            .env("PYSCALER_RUN_ID", ctx.run_id().as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SshError::LocalProgramFailed {
                program: shown.clone(),
                exit_code: None,
                stderr: format!("cannot start it: {e}"),
            })?;
        let result = tokio::time::timeout(timeout, child.wait_with_output()).await;
        let took = started.elapsed();
        let (succeeded, text, error) = match result {
            Err(_) => (
                false,
                String::new(),
                Some(SshError::LocalProgramFailed {
                    program: shown.clone(),
                    exit_code: None,
                    stderr: format!("killed after {}", humantime::format_duration(timeout)),
                }),
            ),
            Ok(Err(e)) => (
                false,
                String::new(),
                Some(SshError::LocalProgramFailed {
                    program: shown.clone(),
                    exit_code: None,
                    stderr: e.to_string(),
                }),
            ),
            Ok(Ok(out)) => {
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                let text = format!("{stdout}{stderr}");
                if out.status.success() {
                    (true, text, None)
                } else {
                    (
                        false,
                        text,
                        Some(SshError::LocalProgramFailed {
                            program: shown.clone(),
                            exit_code: out.status.code(),
                            stderr: crate::error::tail(&stderr, 2000),
                        }),
                    )
                }
            }
        };
        // The program ran once for all nodes: each node gets its result.
        let (text, cut) = {
            let cap = self.fan_out.output_cap;
            if text.len() > cap {
                let mut end = cap;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                (text[..end].to_owned(), true)
            } else {
                (text, false)
            }
        };
        let nodes: Vec<String> = ctx.targets().iter().map(|n| n.name.clone()).collect();
        for name in nodes {
            let outcome = if succeeded {
                NodeOutcome::ok(name, format!("{program}: exit 0"))
            } else {
                NodeOutcome::failed(name, format!("{program} failed"))
            };
            ctx.record_node(outcome.with_output(text.clone(), cut).with_duration(took));
        }
        match error {
            None => Ok(()),
            Some(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Action for DistributeScript {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> Effects {
        match &self.kind {
            Kind::Task { .. } => {
                Effects::says(format!("apply task {} on each target node", self.name))
            }
            Kind::Program { program, args, .. } => Effects::says(format!(
                "run {program} {} on the controller for the target nodes",
                args.join(" ")
            )),
        }
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        match &self.kind {
            Kind::Task { shell, task, .. } => self.apply(ctx, shell, task).await,
            Kind::Program {
                program,
                args,
                timeout,
            } => self.run_program(ctx, program, args, *timeout).await,
        }
    }

    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        match &self.kind {
            Kind::Task {
                shell,
                undo: Some(undo),
                ..
            } => {
                let fan_out = self.fan_out.on_failure(crate::OnNodeFailure::Continue);
                fan_out
                    .run(ctx, |node| {
                        let session = NodeSession::new(shell.clone(), node);
                        async move { undo(session).await.map(NodeResult::new) }
                    })
                    .await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use pyscaler_core::ErrorKind;

    use super::*;
    use crate::testing::{ctx_with_nodes, output, run_step};
    use crate::MockRemoteShell;

    #[tokio::test]
    async fn a_task_runs_per_node_with_its_session() {
        let mut shell = MockRemoteShell::new();
        shell
            .expect_upload()
            .times(3)
            .returning(|_, path, _, mode, _| {
                assert_eq!((path, mode), ("/tmp/app.war", 0o644));
                Ok(())
            });
        shell.expect_exec().returning(|node, cmd| {
            Ok(match cmd.line() {
                "systemctl is-active tomcat9" => output("active\n", "", 0),
                l if l.starts_with("install") && cmd.is_sudo() => output("", "", 0),
                other => panic!("unexpected {other} on {}", node.name),
            })
        });
        shell
            .expect_download()
            .returning(|node, _| Ok(node.name.clone().into_bytes()));
        let task = DistributeScript::task("deploy", Arc::new(shell), |s| async move {
            s.put(b"war".to_vec(), "/tmp/app.war", 0o644).await?;
            s.sudo("install -m 644 /tmp/app.war /srv/app.war").await?;
            let status = s.run("systemctl is-active tomcat9").await?;
            let name = s.get("/etc/hostname").await?;
            Ok(format!(
                "{} {}",
                String::from_utf8_lossy(&name),
                status.stdout.trim()
            ))
        });
        let mut ctx = ctx_with_nodes(3);
        let report = run_step(task, &mut ctx).await;
        assert!(report.is_success(), "{report:?}");
        let summaries: Vec<&str> = report.steps[0]
            .nodes
            .iter()
            .map(|n| n.summary.as_str())
            .collect();
        assert!(summaries.contains(&"web-01 active"), "{summaries:?}");
    }

    #[tokio::test]
    async fn a_failed_task_is_undone_on_every_node() {
        let mut shell = MockRemoteShell::new();
        shell.expect_exec().returning(|node, cmd| {
            Ok(if cmd.line() == "deploy" && node.name == "web-01" {
                output("", "disk full\n", 1)
            } else {
                output("", "", 0)
            })
        });
        let undone = Arc::new(AtomicUsize::new(0));
        let counter = undone.clone();
        let task = DistributeScript::task("deploy", Arc::new(shell), |s| async move {
            s.run("deploy").await?;
            Ok("deployed".to_owned())
        })
        .fan_out(FanOut::new().on_failure(crate::OnNodeFailure::Continue))
        .undo(move |s| {
            let counter = counter.clone();
            async move {
                s.run("rollback").await?;
                counter.fetch_add(1, Ordering::SeqCst);
                Ok("rolled back".to_owned())
            }
        });
        let mut ctx = ctx_with_nodes(3);
        let report = run_step(task, &mut ctx).await;
        let error = report.error.as_ref().expect("error");
        assert_eq!(error.node.as_deref(), Some("web-01"));
        assert_eq!(error.kind, ErrorKind::RemoteCommandFailed);
        assert!(error.message.contains("disk full"));
        assert_eq!(undone.load(Ordering::SeqCst), 3);
        assert!(report.undo_succeeded());
    }

    #[tokio::test]
    async fn a_program_gets_the_hosts_as_one_argument() {
        let mut ctx = ctx_with_nodes(2);
        let fab = DistributeScript::program(
            "fab",
            "sh",
            [
                "-c",
                "printf '%s|%s' \"$1\" \"$PYSCALER_HOSTS\"",
                "sh",
                "{hosts}",
            ],
        );
        let report = run_step(fab, &mut ctx).await;
        assert!(report.is_success(), "{report:?}");
        let node = &report.steps[0].nodes[1];
        assert_eq!(
            node.output.as_deref(),
            Some("10.0.0.0:22,10.0.0.1:22|10.0.0.0:22,10.0.0.1:22")
        );

        let mut ctx = ctx_with_nodes(1);
        let failing = DistributeScript::program("fab", "sh", ["-c", "echo nope >&2; exit 5"]);
        let report = run_step(failing, &mut ctx).await;
        let error = report.error.expect("error");
        assert_eq!(error.kind, ErrorKind::RemoteCommandFailed);
        assert!(error.message.contains("status 5") && error.message.contains("nope"));
        assert!(!report.steps[0].nodes[0].succeeded);
    }

    #[tokio::test(start_paused = true)]
    async fn a_program_past_its_timeout_is_killed() {
        let mut ctx = ctx_with_nodes(1);
        let slow =
            DistributeScript::program("fab", "sleep", ["30"]).timeout(Duration::from_secs(1));
        let report = run_step(slow, &mut ctx).await;
        let error = report.error.expect("error");
        assert!(
            error.message.contains("killed after 1s"),
            "{}",
            error.message
        );
    }
}
