//! `LocalScript`: copy a script to each node, run it there, remove it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{
    Action, Context, Effects, Error, FanOut, Node, NodeFailure, NodeOutcome, OnNodeFailure, Result,
    RunId, StepInfo,
};

use crate::leftovers::end_leftovers;
use crate::outcome::{failure, outcome};
use crate::quote::{check_env_name, command_line, quote};
use crate::source::ScriptSource;
use crate::{RemoteCommand, RemoteShell, UploadOptions};

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
/// The cluster as the run sees it (the nodes it created in, the ones it
/// removed out) reaches the script through [`member_args`](LocalScriptBuilder::member_args):
/// one argument per member, so a "Cluster update" script learns the members
/// without a wrapper action.
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
/// let deploy = LocalScript::builder(shell.clone())
///     .file("scripts/deploy-app.sh")
///     .arg("--war")
///     .arg("/srv/app.war")
///     .env("NODE_NAME", "{node.name}")
///     .sudo(true)
///     .build()?;
/// let cluster_update = LocalScript::builder(shell)
///     .name("cluster-update")
///     .file("scripts/update-balancer-members.sh")
///     .member_args("{member.name}={member.host}")
///     .build()?;
/// # let _ = (deploy, cluster_update); Ok(()) }
/// ```
pub struct LocalScript {
    name: String,
    shell: Arc<dyn RemoteShell>,
    script: Vec<u8>,
    source: String,
    args: Vec<String>,
    member_args: Option<String>,
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
            .field("member_args", &self.member_args)
            .field("env", &env)
            .field("sudo", &self.sudo)
            .finish_non_exhaustive()
    }
}

/// Builds a [`LocalScript`].
pub struct LocalScriptBuilder {
    name: String,
    shell: Arc<dyn RemoteShell>,
    script: Option<ScriptSource>,
    args: Vec<String>,
    member_args: Option<String>,
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
        self.script = Some(ScriptSource::File(path.into()));
        self
    }

    /// Runs this text. It needs a `#!` line.
    pub fn inline(mut self, text: impl Into<String>) -> Self {
        self.script = Some(ScriptSource::Inline(text.into()));
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

    /// Adds one argument per member of the cluster as the run sees it (the
    /// nodes it created in, the ones it removed out), after the others, in the
    /// cluster's order: `template` with `{member.name}`, `{member.id}` and
    /// `{member.host}` replaced by the member's (and the other placeholders
    /// as for [`arg`](Self::arg)). `"{member.name}={member.host}"` gives
    /// `web-01=10.0.0.1 web-02=10.0.0.2 ...`.
    pub fn member_args(mut self, template: impl Into<String>) -> Self {
        self.member_args = Some(template.into());
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
        let Some(source) = self.script else {
            return Err(Error::InvalidConfig("LocalScript needs a script".into()));
        };
        let script = source.read("script").map_err(Error::InvalidConfig)?;
        let source = source.name("script");
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
            member_args: self.member_args,
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
    let mut out = expand_node(text, "node", node);
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Replaces `{<prefix>.name}`, `{<prefix>.id}` and `{<prefix>.host}` with `node`'s.
fn expand_node(text: &str, prefix: &str, node: &Node) -> String {
    text.replace(&format!("{{{prefix}.name}}"), &node.name)
        .replace(&format!("{{{prefix}.id}}"), &node.id)
        .replace(
            &format!("{{{prefix}.host}}"),
            node.address.as_ref().map(|a| a.host.as_str()).unwrap_or(""),
        )
}

impl LocalScript {
    /// Starts building the action around `shell`.
    pub fn builder(shell: Arc<dyn RemoteShell>) -> LocalScriptBuilder {
        LocalScriptBuilder {
            name: "local-script".into(),
            shell,
            script: None,
            args: Vec::new(),
            member_args: None,
            env: Vec::new(),
            sudo: false,
            timeout: None,
            remote_dir: "/tmp".into(),
            fan_out: FanOut::default(),
        }
    }

    /// Where the script lands on a node in this run (distinct per node, even
    /// when several nodes share a host).
    fn remote_path(&self, run_id: &RunId, node: &Node) -> String {
        format!(
            "{}/pyscaler-{}-{}-{}",
            self.remote_dir.trim_end_matches('/'),
            crate::quote::file_safe(&self.name),
            run_id,
            crate::quote::file_safe(&node.id)
        )
    }

    /// The script's arguments on `node`: its own, then one per member.
    fn args_on(&self, node: &Node, step: &StepInfo) -> Vec<String> {
        let vars = step.vars();
        let mut args: Vec<String> = self.args.iter().map(|a| expand(a, node, vars)).collect();
        if let Some(template) = &self.member_args {
            args.extend(
                step.cluster()
                    .nodes()
                    .iter()
                    .map(|member| expand(&expand_node(template, "member", member), node, vars)),
            );
        }
        args
    }

    async fn run_on(
        &self,
        node: &Node,
        step: &StepInfo,
    ) -> std::result::Result<NodeOutcome, NodeFailure> {
        let path = self.remote_path(step.run_id(), node);
        let path = path.as_str();
        let vars = step.vars();
        let args = self.args_on(node, step);
        let mut command = RemoteCommand::new(command_line(path, &args)?).sudo(self.sudo);
        for (k, v) in &self.env {
            command = command.env(k, expand(v, node, vars));
        }
        if let Some(t) = self.timeout {
            command = command.timeout(t);
        }
        // Ended with the run (cancelled, or by recovery's `end_run`).
        let command = command.in_step(step);
        let upload = UploadOptions::mode(0o700).cancel_on(step.cancellation().clone());
        self.shell
            .upload(node, path, self.script.clone(), upload)
            .await?;
        let result = self.shell.exec(node, &command).await;
        // Removed whatever happened; a failure to remove is only logged.
        let rm = RemoteCommand::new(format!("rm -f {}", quote(path)?));
        if let Err(e) = self.shell.exec(node, &rm).await {
            tracing::warn!(node = %node.name, error = %e, "Could not remove the script.");
        }
        let out = result?;
        match out.clone().check(&command, node) {
            Ok(out) => Ok(outcome(node, &out)),
            Err(e) => Err(failure(e, &out)),
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
        self.fan_out
            .run(
                ctx,
                |node, step| async move { self.run_on(&node, &step).await },
            )
            .await
    }

    /// When a [`Recovery`](pyscaler_core::Recovery) takes over a run whose
    /// controller died, what this step still runs on its nodes is ended
    /// first (see [`Context::is_recovering`]); here, not in `withdraw`, so
    /// that the run's nodes leave the load balancer before any SSH work.
    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let ended = end_leftovers(self.shell.as_ref(), self.fan_out, ctx).await;
        let undone = self
            .fan_out
            .on_failure(OnNodeFailure::Continue)
            .run(ctx, |node, step| async move {
                let path = quote(&self.remote_path(step.run_id(), &node))?;
                let rm = RemoteCommand::new(format!("rm -f {path}"));
                match self.shell.exec(&node, &rm).await {
                    Ok(out) => Ok(outcome(&node, &out)),
                    Err(e) if e.is_unreachable() => Ok(NodeOutcome::ok(&node.name, "unreachable")),
                    Err(e) => Err(e.into()),
                }
            })
            .await;
        undone.and(ended)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use pyscaler_core::ErrorKind;

    use pyscaler_core::testing::run_step;
    use pyscaler_core::Target;

    use super::*;
    use crate::testing::{ctx_with_nodes, output};
    use crate::{MockRemoteShell, SshError};

    #[tokio::test]
    async fn uploads_runs_with_quoted_args_and_env_then_removes() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let mut shell = MockRemoteShell::new();
        shell.expect_upload().times(2).returning(
            |_, path, contents, UploadOptions { mode, .. }| {
                assert!(path.starts_with("/tmp/pyscaler-deploy-run-"), "{path}");
                assert_eq!(contents, b"#!/bin/sh\necho hi\n".to_vec());
                assert_eq!(mode, 0o700);
                Ok(())
            },
        );
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
        let report = run_step(script, Target::Cluster, &mut ctx).await;
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
    async fn member_args_list_the_cluster_as_the_run_sees_it() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let mut shell = MockRemoteShell::new();
        shell.expect_upload().returning(|_, _, _, _| Ok(()));
        shell.expect_exec().returning(move |_, cmd| {
            if !cmd.line().starts_with("rm -f") {
                log.lock().unwrap().push(cmd.line().to_owned());
            }
            Ok(output("", "", 0))
        });
        let script = LocalScript::builder(Arc::new(shell))
            .name("cluster-update")
            .inline("#!/bin/sh\n")
            .arg("{node.name}")
            .member_args("{member.name}={member.host}")
            .build()
            .expect("build");
        let mut ctx = ctx_with_nodes(2);
        ctx.add_new_nodes([
            Node::new("i-9", "web-09").with_address(pyscaler_core::NodeAddress::new("10.0.0.9"))
        ]);
        ctx.remove_node("i-0");
        let report = run_step(script, Target::Cluster, &mut ctx).await;
        assert!(report.is_success(), "{report:?}");
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for (line, node) in seen.iter().zip(["web-01", "web-09"]) {
            assert!(
                line.ends_with(&format!(" {node} 'web-01=10.0.0.1' 'web-09=10.0.0.9'")),
                "{line}"
            );
        }
        assert!(seen.iter().all(|l| !l.contains("web-00")), "{seen:?}");
    }

    #[tokio::test]
    async fn a_failing_script_fails_the_node_and_is_still_removed() {
        let removed = Arc::new(Mutex::new(0));
        let count = removed.clone();
        let mut shell = MockRemoteShell::new();
        shell.expect_upload().returning(|_, _, _, _| Ok(()));
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
        let report = run_step(script, Target::Cluster, &mut ctx).await;
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
        shell.expect_upload().returning(|_, _, _, _| {
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
        let report = run_step(script, Target::Cluster, &mut ctx).await;
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
