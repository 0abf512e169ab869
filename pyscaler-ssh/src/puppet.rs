//! `OsConfiguration`: configure the operating system of nodes with `puppet apply`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{Action, Context, Effects, Error, Node, Result};
use serde::{Deserialize, Serialize};

use crate::fanout::{FanOut, NodeFailure, NodeResult};
use crate::quote::quote;
use crate::{CommandOutput, RemoteCommand, RemoteShell, SshError};

/// An operating-system family, as `/etc/os-release` names it (`ID` and `ID_LIKE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OsFamily {
    /// Debian, Ubuntu and their derivatives (`debian`).
    Debian,
    /// RHEL, CentOS, Rocky, Alma, Fedora, Amazon Linux (`rhel`, `fedora`).
    RedHat,
    /// SUSE and openSUSE (`suse`).
    Suse,
    /// Alpine (`alpine`).
    Alpine,
}

impl OsFamily {
    /// The `os-release` words that identify the family.
    fn ids(self) -> &'static [&'static str] {
        match self {
            Self::Debian => &["debian", "ubuntu"],
            Self::RedHat => &["rhel", "fedora", "centos", "amzn"],
            Self::Suse => &["suse", "opensuse", "sles"],
            Self::Alpine => &["alpine"],
        }
    }
}

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

/// Builds an [`OsConfiguration`].
pub struct OsConfigurationBuilder {
    shell: Arc<dyn RemoteShell>,
    manifest: Option<(String, std::result::Result<String, PathBuf>)>,
    modules: Option<PathBuf>,
    install: Vec<(OsFamily, String)>,
    sudo: bool,
    work_dir: String,
    timeout: Option<Duration>,
    fan_out: FanOut,
    facts: Vec<Fact>,
}

/// A Facter fact handed to `puppet apply` (`$facts['name']` in the manifest).
#[derive(Clone)]
struct Fact {
    name: String,
    value: String,
    secret: bool,
}

impl std::fmt::Debug for Fact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.secret {
            "***"
        } else {
            self.value.as_str()
        };
        write!(f, "{}={value}", self.name)
    }
}

impl std::fmt::Debug for OsConfigurationBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsConfigurationBuilder")
            .field("manifest", &self.manifest.as_ref().map(|m| &m.0))
            .field("modules", &self.modules)
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

/// The default install commands: the distribution's `puppet` package.
fn default_install() -> Vec<(OsFamily, String)> {
    vec![
        (
            OsFamily::Debian,
            "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q puppet"
                .into(),
        ),
        (
            OsFamily::RedHat,
            "dnf install -y puppet || yum install -y puppet".into(),
        ),
        (
            OsFamily::Suse,
            "zypper --non-interactive install puppet".into(),
        ),
        (OsFamily::Alpine, "apk add --no-cache puppet".into()),
    ]
}

impl OsConfigurationBuilder {
    /// Hands the manifest a fact, `$facts['name']` (passed as `FACTER_name`
    /// in the command's environment). For passwords use [`secret_fact`](Self::secret_fact).
    pub fn fact(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.facts.push(Fact {
            name: name.into(),
            value: value.into(),
            secret: false,
        });
        self
    }

    /// Hands the manifest a secret fact: written to a file only the login
    /// user can read in the run's work folder (removed after the run), never
    /// on a command line, in a log line or in `Debug` output.
    pub fn secret_fact(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.facts.push(Fact {
            name: name.into(),
            value: value.into(),
            secret: true,
        });
        self
    }

    /// Applies this manifest text.
    pub fn manifest(mut self, text: impl Into<String>) -> Self {
        self.manifest = Some(("inline manifest".into(), Ok(text.into())));
        self
    }

    /// Applies the manifest in this local file (read when the action is built).
    pub fn manifest_file(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.manifest = Some((path.display().to_string(), Err(path)));
        self
    }

    /// Copies this local folder of Puppet modules too, and passes it as `--modulepath`.
    pub fn modules_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.modules = Some(path.into());
        self
    }

    /// Installs Puppet on nodes of `family` with this command (run as root
    /// when [`sudo`](Self::sudo) is on) when `puppet` is missing.
    pub fn install_command(mut self, family: OsFamily, command: impl Into<String>) -> Self {
        self.install.retain(|(f, _)| *f != family);
        self.install.push((family, command.into()));
        self
    }

    /// Never installs Puppet: a node without it fails.
    pub fn no_install(mut self) -> Self {
        self.install.clear();
        self
    }

    /// Runs Puppet (and its installation) with `sudo -n`.
    pub fn sudo(mut self, on: bool) -> Self {
        self.sudo = on;
        self
    }

    /// Where the files are copied on the node (default `/tmp/pyscaler-puppet`;
    /// each run uses a folder of its own below it).
    pub fn work_dir(mut self, dir: impl Into<String>) -> Self {
        self.work_dir = dir.into();
        self
    }

    /// Bounds `puppet apply` on one node.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// How many nodes at once, and what a failure does.
    pub fn fan_out(mut self, fan_out: FanOut) -> Self {
        self.fan_out = fan_out;
        self
    }

    /// Builds the action, reading the manifest and modules.
    ///
    /// When Puppet is installed on the controller, the manifest is checked
    /// here with `puppet parser validate` (with the modules folder as its
    /// `--modulepath`; about a second, at most 60 s),
    /// so a syntax error is refused before anything runs. Without a local
    /// Puppet the check is left to `puppet apply` on the nodes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when no manifest is given, or a file cannot be
    /// read; [`SshError::PuppetInvalidManifest`] (kind `InvalidInput`) with
    /// Puppet's `Error:` lines when the manifest does not parse.
    pub fn build(self) -> Result<OsConfiguration> {
        let (manifest_name, manifest) = self
            .manifest
            .ok_or_else(|| Error::InvalidConfig("OsConfiguration needs a manifest".into()))?;
        let (manifest, manifest_path) = match manifest {
            Ok(text) => (text, None),
            Err(path) => (
                std::fs::read_to_string(&path).map_err(|e| {
                    Error::InvalidConfig(format!("cannot read manifest {}: {e}", path.display()))
                })?,
                Some(path),
            ),
        };
        let mut modules = Vec::new();
        if let Some(dir) = &self.modules {
            collect_files(dir, dir, &mut modules).map_err(|e| {
                Error::InvalidConfig(format!("cannot read modules {}: {e}", dir.display()))
            })?;
        }
        if self.work_dir.is_empty() || !self.work_dir.starts_with('/') {
            return Err(Error::InvalidConfig(format!(
                "the Puppet work folder must be an absolute path, not {:?}",
                self.work_dir
            )));
        }
        if let Some(bad) = self.facts.iter().find(|f| {
            f.name.is_empty()
                || !f
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) {
            return Err(Error::InvalidConfig(format!(
                "fact name {:?} must be letters, digits and underscores",
                bad.name
            )));
        }
        validate_locally(
            &manifest_name,
            manifest_path.as_deref(),
            &manifest,
            self.modules.as_deref(),
        )?;
        Ok(OsConfiguration {
            facts: self.facts,
            shell: self.shell,
            manifest,
            manifest_name,
            modules,
            install: self.install,
            sudo: self.sudo,
            work_dir: self.work_dir,
            timeout: self.timeout,
            fan_out: self.fan_out,
        })
    }
}

/// Bound on `puppet parser validate` when an action is built.
const LOCAL_VALIDATION_TIMEOUT: Duration = Duration::from_secs(60);

/// `puppet` on the controller's `PATH`, if any.
fn local_puppet() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("puppet"))
        .find(|p| p.is_file())
}

/// Checks the manifest's syntax with the controller's Puppet, when there is
/// one: `puppet parser validate`, with the modules folder as `--modulepath`.
/// Inline text goes through a temporary file (its path is replaced by
/// `name` in Puppet's messages). A Puppet that cannot run, hangs, or fails
/// without an `Error:` line is no verdict: the nodes' `puppet apply` decides.
fn validate_locally(
    name: &str,
    path: Option<&Path>,
    text: &str,
    modules: Option<&Path>,
) -> std::result::Result<(), SshError> {
    let Some(puppet) = local_puppet() else {
        tracing::debug!(
            manifest = name,
            "No puppet on this machine: the manifest is checked on the nodes."
        );
        return Ok(());
    };
    let temp = match path {
        Some(_) => None,
        None => Some(TempManifest::write(text).map_err(|e| {
            SshError::InvalidInput(format!("cannot write {name} to a temporary file: {e}"))
        })?),
    };
    let file = path.unwrap_or_else(|| temp.as_ref().map_or(Path::new(""), |t| t.0.as_path()));
    let mut command = std::process::Command::new(&puppet);
    command.args(["parser", "validate", "--color=false"]);
    if let Some(dir) = modules {
        command.arg("--modulepath").arg(dir);
    }
    command.arg(file);
    let out = match run_bounded(command, LOCAL_VALIDATION_TIMEOUT) {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(manifest = name, error = %e,
                "Could not check the manifest with the local puppet; the nodes will.");
            return Ok(());
        }
    };
    if out.success() {
        tracing::debug!(
            manifest = name,
            "puppet parser validate: the manifest parses."
        );
        return Ok(());
    }
    let mut errors = error_lines(&out);
    if errors.is_empty() {
        tracing::warn!(manifest = name, status = %out.status_line(),
            "The local puppet failed without an error line; the nodes will check the manifest.");
        return Ok(());
    }
    if let Some(t) = &temp {
        let shown = t.0.display().to_string();
        for e in &mut errors {
            *e = e.replace(&shown, name);
        }
    }
    Err(SshError::PuppetInvalidManifest { errors })
}

/// A manifest written to a file of its own, removed when dropped.
struct TempManifest(PathBuf);

impl TempManifest {
    fn write(text: &str) -> std::io::Result<Self> {
        use std::io::Write;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "pyscaler-manifest-{}-{}.pp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let guard = Self(path);
        file.write_all(text.as_bytes())?;
        Ok(guard)
    }
}

impl Drop for TempManifest {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs a local program to its end or until `within`, when it is killed.
fn run_bounded(
    mut command: std::process::Command,
    within: Duration,
) -> std::io::Result<CommandOutput> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Both pipes are drained while waiting, so a chatty program cannot stall on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= within {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}", humantime::format_duration(within)),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(CommandOutput {
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        exit_code: status.code(),
        signal: None,
        truncated: false,
    })
}

/// Every file below `dir`, with its path relative to `root` (`/`-separated).
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, std::fs::read(&path)?));
        }
    }
    Ok(())
}

/// Puppet's own error lines.
fn error_lines(out: &CommandOutput) -> Vec<String> {
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .filter(|l| l.starts_with("Error:"))
        .map(str::to_owned)
        .collect()
}

impl OsConfiguration {
    /// Starts building the action around `shell`.
    pub fn builder(shell: Arc<dyn RemoteShell>) -> OsConfigurationBuilder {
        OsConfigurationBuilder {
            shell,
            manifest: None,
            modules: None,
            install: default_install(),
            sudo: false,
            work_dir: "/tmp/pyscaler-puppet".into(),
            timeout: None,
            fan_out: FanOut::default(),
            facts: Vec::new(),
        }
    }

    /// The node's folder for this run (distinct per node, even when nodes share a host).
    fn run_dir(&self, ctx: &Context, node: &Node) -> String {
        format!(
            "{}/{}-{}",
            self.work_dir.trim_end_matches('/'),
            ctx.run_id(),
            crate::quote::file_safe(&node.id)
        )
    }

    /// The script that installs Puppet when it is missing (exit 0 when present).
    fn install_script(&self) -> String {
        let mut script = String::from(
            "command -v puppet >/dev/null 2>&1 && exit 0\n\
             . /etc/os-release 2>/dev/null\n\
             case \" $ID $ID_LIKE \" in\n",
        );
        for (family, command) in &self.install {
            let pattern: Vec<String> = family
                .ids()
                .iter()
                .map(|id| format!("*\" {id} \"*"))
                .collect();
            script.push_str(&format!("  {}) {command} ;;\n", pattern.join("|")));
        }
        script.push_str(
            "  *) echo \"no Puppet install command for this OS ($ID)\" >&2; exit 3 ;;\nesac\n",
        );
        script
    }

    async fn configure(
        &self,
        node: &Node,
        dir: &str,
    ) -> std::result::Result<NodeResult, NodeFailure> {
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
            let install = RemoteCommand::new(self.install_script()).sudo(self.sudo);
            let out = shell.exec(node, &install).await?;
            if !out.success() {
                let (text, cut, exit_code) = (out.combined(), out.truncated, out.exit_code);
                let error = if self.sudo && sudo_wants_password(&out) {
                    sudo_error(node)
                } else {
                    SshError::PuppetInstallFailed {
                        exit_code,
                        stderr: crate::error::tail(&out.stderr, 2000),
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
                0o600,
                false,
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
                        0o644,
                        false,
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
                    0o600,
                    false,
                )
                .await?;
            prelude.push_str(". ./facts.env && ");
        }
        // 3. puppet apply, then clean up whatever it did.
        let mut command =
            RemoteCommand::new(format!("cd {qdir} && {prelude}{apply}")).sudo(self.sudo);
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
                return Ok(NodeResult::new("puppet: no changes").with_output(text, cut))
            }
            (Some(2), None) => {
                return Ok(NodeResult::new("puppet: changes applied").with_output(text, cut))
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
                stderr: crate::error::tail(&out.stderr, 2000),
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
        let ctx_ro: &Context = ctx;
        let dirs: std::collections::BTreeMap<String, String> = ctx_ro
            .targets()
            .iter()
            .map(|n| (n.id.clone(), self.run_dir(ctx_ro, n)))
            .collect();
        let dirs = &dirs;
        self.fan_out
            .run(ctx, |node| async move {
                let dir = dirs.get(&node.id).cloned().unwrap_or_default();
                self.configure(&node, &dir).await
            })
            .await
    }

    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let ctx_ro: &Context = ctx;
        let mut commands = std::collections::BTreeMap::new();
        for n in ctx_ro.targets() {
            let dir = quote(&self.run_dir(ctx_ro, n)).map_err(Error::from)?;
            commands.insert(
                n.id.clone(),
                RemoteCommand::new(format!("rm -rf {dir}")).sudo(self.sudo),
            );
        }
        let commands = &commands;
        // Best effort on every node: a node already gone has nothing left to clean.
        self.fan_out
            .on_failure(crate::OnNodeFailure::Continue)
            .run(ctx, |node| async move {
                let Some(command) = commands.get(&node.id) else {
                    return Ok(NodeResult::new("nothing to clean"));
                };
                match self.shell.exec(&node, command).await {
                    Ok(out) => Ok(NodeResult::from(&out)),
                    Err(e) if e.is_unreachable() => Ok(NodeResult::new(format!(
                        "unreachable, nothing to clean: {e}"
                    ))),
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use pyscaler_core::ErrorKind;

    use super::*;
    use crate::testing::{ctx_with_nodes, output, run_step};
    use crate::MockRemoteShell;

    /// Command lines run, and whether with sudo.
    type Seen = Arc<Mutex<Vec<(String, bool)>>>;

    /// A shell where `puppet apply` exits with `apply_exit` (and prints `apply_err`),
    /// `command -v puppet` with `present`, and everything else succeeds. Records command lines.
    fn shell(
        present: bool,
        apply_exit: i32,
        apply_err: &'static str,
    ) -> (Arc<MockRemoteShell>, Seen) {
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
            .returning(|_, path, contents, mode, _| {
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
            let report = run_step(action(shell), &mut ctx).await;
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
        let report = run_step(action(shell), &mut ctx).await;
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
        let report = run_step(action(shell), &mut ctx).await;
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
        let report = run_step(puppet, &mut ctx).await;
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
        let failing = {
            let mut a = pyscaler_core::MockAction::new();
            a.expect_name().return_const("boom".to_owned());
            a.expect_describe().returning(Effects::none);
            a.expect_run()
                .returning(|_| Err(Error::other(ErrorKind::Unexpected, "boom")));
            a.expect_compensate().returning(|_| Ok(()));
            a
        };
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
            .returning(move |_, path, contents, mode, _| {
                up.lock().unwrap().push((
                    path.to_owned(),
                    String::from_utf8(contents).unwrap(),
                    mode,
                ));
                Ok(())
            });
        let action = OsConfiguration::builder(Arc::new(mock))
            .manifest("notify { $facts['tomcat_http_port']: }")
            .fact("tomcat_http_port", "8080")
            .secret_fact("tomcat_manager_password", "pa ss'word")
            .build()
            .unwrap();
        assert!(!format!("{action:?}").contains("pa ss"), "{action:?}");
        let report = run_step(action, &mut ctx_with_nodes(1)).await;
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
        let broken =
            "class broken {\n  package { 'tomcat10': ensure => installed\n\ninclude broken\n";
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
}
