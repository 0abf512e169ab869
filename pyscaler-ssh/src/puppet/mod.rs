//! `OsConfiguration`: configure the operating system of nodes with `puppet apply`.

mod builder;
mod install;
#[cfg(test)]
mod tests;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{
    Action, Context, Effects, FanOut, Node, NodeFailure, NodeOutcome, OnNodeFailure, Result, RunId,
    StepInfo,
};

pub use builder::OsConfigurationBuilder;
pub use install::OsFamily;

use self::builder::Fact;
use self::install::install_script;
use self::validate::error_lines;
use crate::error::{tail, STDERR_TAIL};
use crate::leftovers::end_leftovers;
use crate::outcome::outcome;
use crate::quote::quote;
use crate::{CommandOutput, RemoteCommand, RemoteShell, SshError, UploadOptions};

/// Runs `puppet apply` of a manifest on each target node.
///
/// For each node: the manifest (and the modules folder, if any) is copied to
/// a folder of its own, Puppet is installed when `puppet` is not on the path
/// (with the install command of the node's [`OsFamily`]), then
/// `puppet apply --detailed-exitcodes --color=false` runs and its exit code is
/// read: 0 (no change) and 2 (changes applied) are success; 4 and 6 (failed
/// resources) are [`SshError::PuppetFailed`]; 1 (the manifest does not
/// compile) is [`SshError::PuppetInvalidManifest`]. Failures carry Puppet's
/// own `Error:` lines, and every node's output is in the run report.
///
/// Puppet converges: running the action twice is safe. Compensation removes
/// the copied files; what Puppet changed is left (the nodes a failed scale-out
/// launched are terminated by the launch step's own compensation).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use pyscaler_ssh::{OsConfiguration, Ssh2Shell, SshConfig};
/// # fn demo() -> pyscaler_core::Result<()> {
/// let shell = Arc::new(Ssh2Shell::new(SshConfig::new("admin"))?);
/// let puppet = OsConfiguration::builder(shell)
///     .manifest_file("puppet/tomcat.pp")
///     .modules_dir("puppet/modules")
///     .sudo(true)
///     .build()?;
/// # let _ = puppet; Ok(()) }
/// ```
pub struct OsConfiguration {
    shell: Arc<dyn RemoteShell>,
    manifest: String,
    manifest_name: String,
    modules: Vec<(String, Vec<u8>)>,
    install: Vec<(OsFamily, String)>,
    sudo: bool,
    work_dir: String,
    timeout: Option<Duration>,
    fan_out: FanOut,
    facts: Vec<Fact>,
}

impl std::fmt::Debug for OsConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsConfiguration")
            .field("manifest", &self.manifest_name)
            .field("modules", &self.modules.len())
            .field("sudo", &self.sudo)
            .field("facts", &self.facts)
            .field("fan_out", &self.fan_out)
            .finish_non_exhaustive()
    }
}

impl OsConfiguration {
    /// The node's folder for this run (distinct per node, even when nodes share a host).
    fn run_dir(&self, run_id: &RunId, node: &Node) -> String {
        format!(
            "{}/{}-{}",
            self.work_dir.trim_end_matches('/'),
            run_id,
            crate::quote::file_safe(&node.id)
        )
    }

    async fn configure(
        &self,
        node: &Node,
        dir: &str,
        step: &StepInfo,
    ) -> std::result::Result<NodeOutcome, NodeFailure> {
        let shell = &self.shell;
        let qdir = quote(dir)?;
        // 1. Puppet present, or installed.
        let check = shell
            .exec(node, &RemoteCommand::new("command -v puppet"))
            .await?;
        if !check.success() {
            if self.install.is_empty() {
                return Err(SshError::PuppetInstallFailed {
                    exit_code: check.exit_code,
                    stderr: "puppet is not installed and installing it is turned off".into(),
                }
                .into());
            }
            // Tied to the step: ended when it times out or the run is cancelled.
            let install = RemoteCommand::new(install_script(&self.install))
                .sudo(self.sudo)
                .in_step(step);
            let out = shell.exec(node, &install).await?;
            if !out.success() {
                let (text, cut, exit_code) = (out.combined(), out.truncated, out.exit_code);
                let error = if self.sudo && sudo_wants_password(&out) {
                    sudo_error(node)
                } else {
                    SshError::PuppetInstallFailed {
                        exit_code,
                        stderr: tail(&out.stderr, STDERR_TAIL),
                    }
                };
                return Err(NodeFailure::from(error).with_output(text, cut));
            }
        }
        // 2. Files.
        let mkdir = shell
            .exec(node, &RemoteCommand::new(format!("mkdir -p -m 700 {qdir}")))
            .await?;
        if !mkdir.success() {
            return Err(SshError::Transfer {
                path: dir.to_owned(),
                message: mkdir.stderr.trim().to_owned(),
            }
            .into());
        }
        let manifest = format!("{dir}/site.pp");
        shell
            .upload(
                node,
                &manifest,
                self.manifest.clone().into_bytes(),
                UploadOptions::mode(0o600),
            )
            .await?;
        let mut apply = String::from("puppet apply --detailed-exitcodes --color=false");
        if !self.modules.is_empty() {
            let mut dirs: Vec<String> = self
                .modules
                .iter()
                .filter_map(|(rel, _)| {
                    rel.rsplit_once('/')
                        .map(|(d, _)| format!("{dir}/modules/{d}"))
                })
                .collect();
            dirs.sort();
            dirs.dedup();
            let words: Vec<String> = dirs
                .iter()
                .map(|d| quote(d))
                .collect::<std::result::Result<_, _>>()?;
            let mk = shell
                .exec(
                    node,
                    &RemoteCommand::new(format!("mkdir -p {}", words.join(" "))),
                )
                .await?;
            if !mk.success() {
                return Err(SshError::Transfer {
                    path: format!("{dir}/modules"),
                    message: mk.stderr.trim().to_owned(),
                }
                .into());
            }
            for (rel, contents) in &self.modules {
                shell
                    .upload(
                        node,
                        &format!("{dir}/modules/{rel}"),
                        contents.clone(),
                        UploadOptions::mode(0o644),
                    )
                    .await?;
            }
            apply.push_str(&format!(
                " --modulepath {}",
                quote(&format!("{dir}/modules"))?
            ));
        }
        apply.push(' ');
        apply.push_str(&quote(&manifest)?);
        let mut prelude = String::new();
        let secrets: Vec<&Fact> = self.facts.iter().filter(|f| f.secret).collect();
        if !secrets.is_empty() {
            let mut file = String::new();
            for f in &secrets {
                file.push_str(&format!("export FACTER_{}={}\n", f.name, quote(&f.value)?));
            }
            shell
                .upload(
                    node,
                    &format!("{dir}/facts.env"),
                    file.into_bytes(),
                    UploadOptions::mode(0o600),
                )
                .await?;
            prelude.push_str(". ./facts.env && ");
        }
        // 3. puppet apply, then clean up whatever it did.
        let mut command = RemoteCommand::new(format!("cd {qdir} && {prelude}{apply}"))
            .sudo(self.sudo)
            .in_step(step);
        for f in self.facts.iter().filter(|f| !f.secret) {
            command = command.env(format!("FACTER_{}", f.name), f.value.clone());
        }
        if let Some(t) = self.timeout {
            command = command.timeout(t);
        }
        let result = shell.exec(node, &command).await;
        let _ = shell
            .exec(
                node,
                &RemoteCommand::new(format!("rm -rf {qdir}")).sudo(self.sudo),
            )
            .await;
        let out = result?;
        let (text, cut) = (out.combined(), out.truncated);
        let error = match (out.exit_code, &out.signal) {
            (Some(0), None) => {
                return Ok(NodeOutcome::ok(&node.name, "puppet: no changes").with_output(text, cut))
            }
            (Some(2), None) => {
                return Ok(
                    NodeOutcome::ok(&node.name, "puppet: changes applied").with_output(text, cut)
                )
            }
            (Some(1), None) if self.sudo && sudo_wants_password(&out) => sudo_error(node),
            (Some(1), None) => SshError::PuppetInvalidManifest {
                errors: error_lines(&out),
            },
            (Some(code @ (4 | 6)), None) => SshError::PuppetFailed {
                exit_code: code,
                errors: error_lines(&out),
            },
            (exit_code, signal) => SshError::CommandFailed {
                command: "puppet apply".into(),
                exit_code,
                signal: signal.clone(),
                stderr: tail(&out.stderr, STDERR_TAIL),
            },
        };
        Err(NodeFailure::from(error).with_output(text, cut))
    }
}

fn sudo_wants_password(out: &CommandOutput) -> bool {
    out.exit_code == Some(1) && crate::shell::sudo_wants_password(&out.stderr)
}

fn sudo_error(node: &Node) -> SshError {
    SshError::SudoNeedsPassword {
        host: node.to_string(),
        user: node.ssh_user.clone().unwrap_or_default(),
    }
}

#[async_trait]
impl Action for OsConfiguration {
    fn name(&self) -> &str {
        "os-configuration"
    }

    /// Yes: `puppet apply` converges the node to the manifest, so applying
    /// it again after a run cut short finishes the work (a run that died
    /// during this step can be resumed).
    fn repeatable(&self) -> bool {
        true
    }

    fn describe(&self) -> Effects {
        Effects::says(format!(
            "puppet apply {}{} on each target node{}",
            self.manifest_name,
            if self.modules.is_empty() {
                String::new()
            } else {
                format!(" with {} module file(s)", self.modules.len())
            },
            if self.sudo { " (sudo)" } else { "" }
        ))
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        self.fan_out
            .run(ctx, |node, step| async move {
                let dir = self.run_dir(step.run_id(), &node);
                self.configure(&node, &dir, &step).await
            })
            .await
    }

    /// When a [`Recovery`](pyscaler_core::Recovery) takes over a run whose
    /// controller died, what this step still runs on its nodes is ended
    /// first (see [`Context::is_recovering`]); here, not in `withdraw`, so
    /// that the run's nodes leave the load balancer before any SSH work.
    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let ended = end_leftovers(self.shell.as_ref(), self.fan_out, ctx).await;
        // Best effort on every node: a node already gone has nothing left to clean.
        let undone = self
            .fan_out
            .on_failure(OnNodeFailure::Continue)
            .run(ctx, |node, step| async move {
                let dir = quote(&self.run_dir(step.run_id(), &node))?;
                let command = RemoteCommand::new(format!("rm -rf {dir}")).sudo(self.sudo);
                match self.shell.exec(&node, &command).await {
                    Ok(out) => Ok(outcome(&node, &out)),
                    Err(e) if e.is_unreachable() => Ok(NodeOutcome::ok(
                        &node.name,
                        format!("unreachable, nothing to clean: {e}"),
                    )),
                    Err(e) => Err(e.into()),
                }
            })
            .await;
        undone.and(ended)
    }
}
