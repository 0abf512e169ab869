//! `LocalScript`: copy a script to each node, run it there, remove it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{Action, Context, Effects, Error, Node, Result};

use crate::fanout::{FanOut, NodeFailure, NodeResult};
use crate::quote::{check_env_name, command_line, quote};
use crate::{OnNodeFailure, RemoteCommand, RemoteShell};

/// Copies a script (a local file or inline text) to each target node, runs it
/// there with arguments and environment, and removes it afterwards — the
/// "Tomcat configuration", "Application deployment" and "Cluster update"
/// steps of a deployment.
///
/// Arguments and environment values may name the node and the run:
/// `{node.name}`, `{node.id}`, `{node.host}`, `{cluster}`, `{run_id}` and any
/// variable of the run. Each argument stays one word whatever it holds (it is
/// quoted), so a node name or a tag cannot inject a command.
///
/// A node succeeds when the script exits with status 0; its output is in the
/// run report either way. Compensation removes a script left behind by a run
/// that was cut short; what the script did is not undone.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use pyscaler_ssh::{LocalScript, Ssh2Shell, SshConfig};
/// # fn demo() -> pyscaler_core::Result<()> {
/// let shell = Arc::new(Ssh2Shell::new(SshConfig::new("admin"))?);
/// let deploy = LocalScript::builder(shell)
///     .file("scripts/deploy-app.sh")
///     .arg("--war")
///     .arg("/srv/app.war")
///     .env("NODE_NAME", "{node.name}")
///     .sudo(true)
///     .build()?;
/// # let _ = deploy; Ok(()) }
/// ```
pub struct LocalScript {
    name: String,
    shell: Arc<dyn RemoteShell>,
    script: Vec<u8>,
    source: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    sudo: bool,
    timeout: Option<Duration>,
    remote_dir: String,
    fan_out: FanOut,
}

impl std::fmt::Debug for LocalScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Environment values may be secrets: only their names are shown.
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("LocalScript")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("args", &self.args)
            .field("env", &env)
            .field("sudo", &self.sudo)
            .finish_non_exhaustive()
    }
}

/// Builds a [`LocalScript`].
pub struct LocalScriptBuilder {
    name: String,
    shell: Arc<dyn RemoteShell>,
    script: Option<std::result::Result<String, PathBuf>>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    sudo: bool,
    timeout: Option<Duration>,
    remote_dir: String,
    fan_out: FanOut,
}

impl std::fmt::Debug for LocalScriptBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalScriptBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LocalScriptBuilder {
    /// Names the action (default `local-script`), as reports show it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs this local file (read when the action is built). It needs a `#!` line.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.script = Some(Err(path.into()));
        self
    }

    /// Runs this text. It needs a `#!` line.
    pub fn inline(mut self, text: impl Into<String>) -> Self {
        self.script = Some(Ok(text.into()));
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the script.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs the script with `sudo -n`.
    pub fn sudo(mut self, on: bool) -> Self {
        self.sudo = on;
        self
    }

    /// Bounds the script's run on one node.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Where the script is copied on the node (default `/tmp`).
    pub fn remote_dir(mut self, dir: impl Into<String>) -> Self {
        self.remote_dir = dir.into();
        self
    }

    /// How many nodes at once, and what a failure does.
    pub fn fan_out(mut self, fan_out: FanOut) -> Self {
        self.fan_out = fan_out;
        self
    }

    /// Builds the action.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] without a script, when the file cannot be read,
    /// for an invalid environment variable name, or a relative `remote_dir`.
    pub fn build(self) -> Result<LocalScript> {
        let (script, source) = match self.script {
            None => return Err(Error::InvalidConfig("LocalScript needs a script".into())),
            Some(Ok(text)) => (text.into_bytes(), "inline script".to_owned()),
            Some(Err(path)) => (
                std::fs::read(&path).map_err(|e| {
                    Error::InvalidConfig(format!("cannot read script {}: {e}", path.display()))
                })?,
                path.display().to_string(),
            ),
        };
        for (name, _) in &self.env {
            check_env_name(name).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        }
        if !self.remote_dir.starts_with('/') {
            return Err(Error::InvalidConfig(format!(
                "remote_dir must be an absolute path, not {:?}",
                self.remote_dir
            )));
        }
        Ok(LocalScript {
            name: self.name,
            shell: self.shell,
            script,
            source,
            args: self.args,
            env: self.env,
            sudo: self.sudo,
            timeout: self.timeout,
            remote_dir: self.remote_dir,
            fan_out: self.fan_out,
        })
    }
}

/// Replaces `{node.name}`, `{node.id}`, `{node.host}` and `{var}` placeholders.
pub(crate) fn expand(text: &str, node: &Node, vars: &BTreeMap<String, String>) -> String {
    let mut out = text
        .replace("{node.name}", &node.name)
        .replace("{node.id}", &node.id)
        .replace(
            "{node.host}",
            node.address.as_ref().map(|a| a.host.as_str()).unwrap_or(""),
        );
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

impl LocalScript {
    /// Starts building the action around `shell`.
    pub fn builder(shell: Arc<dyn RemoteShell>) -> LocalScriptBuilder {
        LocalScriptBuilder {
            name: "local-script".into(),
            shell,
            script: None,
            args: Vec::new(),
            env: Vec::new(),
            sudo: false,
            timeout: None,
            remote_dir: "/tmp".into(),
            fan_out: FanOut::default(),
        }
    }

    /// Where the script lands on a node in this run (distinct per node, even
    /// when several nodes share a host).
    fn remote_path(&self, ctx: &Context, node: &Node) -> String {
        format!(
            "{}/pyscaler-{}-{}-{}",
            self.remote_dir.trim_end_matches('/'),
            crate::quote::file_safe(&self.name),
            ctx.run_id(),
            crate::quote::file_safe(&node.id)
        )
    }

    async fn run_on(
        &self,
        node: &Node,
        path: &str,
        vars: &BTreeMap<String, String>,
    ) -> std::result::Result<NodeResult, NodeFailure> {
        let args: Vec<String> = self.args.iter().map(|a| expand(a, node, vars)).collect();
        let mut command = RemoteCommand::new(command_line(path, &args)?).sudo(self.sudo);
        for (k, v) in &self.env {
            command = command.env(k, expand(v, node, vars));
        }
        if let Some(t) = self.timeout {
            command = command.timeout(t);
        }
        self.shell
            .upload(node, path, self.script.clone(), 0o700, false)
            .await?;
        let result = self.shell.exec(node, &command).await;
        // Removed whatever happened; a failure to remove is only logged.
        let rm = RemoteCommand::new(format!("rm -f {}", quote(path)?));
        if let Err(e) = self.shell.exec(node, &rm).await {
            tracing::warn!(node = %node.name, error = %e, "Could not remove the script.");
        }
        let out = result?;
        let (text, cut) = (out.combined(), out.truncated);
        let user = node.ssh_user.as_deref().unwrap_or("");
        match out.check(&command, &node.to_string(), user) {
            Ok(out) => Ok(NodeResult::from(&out)),
            Err(e) => Err(NodeFailure::from(e).with_output(text, cut)),
        }
    }
}

#[async_trait]
impl Action for LocalScript {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> Effects {
        Effects::says(format!(
            "run {} ({} argument(s)){} on each target node",
            self.source,
            self.args.len(),
            if self.sudo { " with sudo" } else { "" }
        ))
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let vars = ctx.vars();
        let vars = &vars;
        let ctx_ro: &Context = ctx;
        let paths: BTreeMap<String, String> = ctx_ro
            .targets()
            .iter()
            .map(|n| (n.id.clone(), self.remote_path(ctx_ro, n)))
            .collect();
        let paths = &paths;
        self.fan_out
            .run(ctx, |node| async move {
                let path = paths.get(&node.id).cloned().unwrap_or_default();
                self.run_on(&node, &path, vars).await
            })
            .await
    }

    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let ctx_ro: &Context = ctx;
        let mut commands = BTreeMap::new();
        for n in ctx_ro.targets() {
            let rm = RemoteCommand::new(format!("rm -f {}", quote(&self.remote_path(ctx_ro, n))?));
            commands.insert(n.id.clone(), rm);
        }
        let commands = &commands;
        self.fan_out
            .on_failure(OnNodeFailure::Continue)
            .run(ctx, |node| async move {
                let Some(rm) = commands.get(&node.id) else {
                    return Ok(NodeResult::new("nothing to clean"));
                };
                match self.shell.exec(&node, rm).await {
                    Ok(out) => Ok(NodeResult::from(&out)),
                    Err(e) if e.is_unreachable() => Ok(NodeResult::new("unreachable")),
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use pyscaler_core::ErrorKind;

    use super::*;
    use crate::testing::{ctx_with_nodes, output, run_step};
    use crate::{MockRemoteShell, SshError};

    #[tokio::test]
    async fn uploads_runs_with_quoted_args_and_env_then_removes() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let mut shell = MockRemoteShell::new();
        shell
            .expect_upload()
            .times(2)
            .returning(|_, path, contents, mode, _| {
                assert!(path.starts_with("/tmp/pyscaler-deploy-run-"), "{path}");
                assert_eq!(contents, b"#!/bin/sh\necho hi\n".to_vec());
                assert_eq!(mode, 0o700);
                Ok(())
            });
        shell.expect_exec().returning(move |node, cmd| {
            let line = cmd.render().expect("render");
            log.lock().unwrap().push(line.clone());
            Ok(if line.starts_with("rm -f") {
                output("", "", 0)
            } else {
                output(&format!("deployed on {}\n", node.name), "", 0)
            })
        });
        let script = LocalScript::builder(Arc::new(shell))
            .name("deploy")
            .inline("#!/bin/sh\necho hi\n")
            .arg("{node.name}; reboot")
            .env("CLUSTER", "{cluster}")
            .build()
            .expect("build");
        let mut ctx = ctx_with_nodes(2);
        let report = run_step(script, &mut ctx).await;
        assert!(report.is_success(), "{report:?}");
        let nodes = &report.steps[0].nodes;
        assert_eq!(
            nodes[0].output.as_deref().map(str::trim),
            Some("deployed on web-00")
        );
        let seen = seen.lock().unwrap();
        let runs: Vec<&String> = seen.iter().filter(|l| !l.starts_with("rm -f")).collect();
        assert_eq!(runs.len(), 2);
        assert!(
            runs.iter()
                .any(|l| l.contains("'web-00; reboot'") && l.contains("CLUSTER=web")),
            "{runs:?}"
        );
        assert_eq!(seen.iter().filter(|l| l.starts_with("rm -f")).count(), 2);
    }

    #[tokio::test]
    async fn a_failing_script_fails_the_node_and_is_still_removed() {
        let removed = Arc::new(Mutex::new(0));
        let count = removed.clone();
        let mut shell = MockRemoteShell::new();
        shell.expect_upload().returning(|_, _, _, _, _| Ok(()));
        shell.expect_exec().returning(move |_, cmd| {
            if cmd.line().starts_with("rm -f") {
                *count.lock().unwrap() += 1;
                Ok(output("", "", 0))
            } else {
                Ok(output("partial\n", "no war file\n", 3))
            }
        });
        let script = LocalScript::builder(Arc::new(shell))
            .inline("#!/bin/sh\nexit 3\n")
            .build()
            .expect("build");
        let mut ctx = ctx_with_nodes(1);
        let report = run_step(script, &mut ctx).await;
        assert!(!report.is_success());
        let error = report.error.expect("error");
        assert_eq!(error.kind, ErrorKind::RemoteCommandFailed);
        assert_eq!(error.node.as_deref(), Some("web-00"));
        assert!(error.message.contains("status 3") && error.message.contains("no war file"));
        assert_eq!(
            report.steps[0].nodes[0].output.as_deref(),
            Some("partial\nno war file\n")
        );
        // Once after the run, once more by compensation.
        assert_eq!(*removed.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_node_is_a_retryable_failure() {
        let mut shell = MockRemoteShell::new();
        shell.expect_upload().returning(|_, _, _, _, _| {
            Err(SshError::Connect {
                host: "10.0.0.0:22".into(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            })
        });
        shell.expect_exec().returning(|_, _| {
            Err(SshError::Connect {
                host: "10.0.0.0:22".into(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            })
        });
        let script = LocalScript::builder(Arc::new(shell))
            .inline("#!/bin/sh\n")
            .build()
            .expect("build");
        let mut ctx = ctx_with_nodes(1);
        let report = run_step(script, &mut ctx).await;
        let error = report.error.as_ref().expect("error");
        assert_eq!(error.kind, ErrorKind::Transient);
        // Compensation found nothing to clean on an unreachable node.
        assert!(report.undo_succeeded());
    }

    #[test]
    fn debug_output_shows_env_names_but_not_values() {
        let script = LocalScript::builder(Arc::new(MockRemoteShell::new()))
            .inline("#!/bin/sh\n")
            .env("DB_PASSWORD", "hunter2")
            .build()
            .expect("build");
        let shown = format!("{script:?}");
        assert!(
            shown.contains("DB_PASSWORD") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn build_checks_its_input() {
        let shell = Arc::new(MockRemoteShell::new());
        assert!(LocalScript::builder(shell.clone()).build().is_err());
        assert!(LocalScript::builder(shell.clone())
            .inline("x")
            .env("BAD NAME", "1")
            .build()
            .is_err());
        assert!(LocalScript::builder(shell)
            .file("/nonexistent/script.sh")
            .build()
            .is_err());
    }
}
