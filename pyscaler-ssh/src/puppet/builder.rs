//! Building an `OsConfiguration`: the manifest, modules, facts and how Puppet is run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pyscaler_core::{Error, FanOut, Result};

use super::install::{default_install, OsFamily};
use super::validate::validate_locally;
use super::OsConfiguration;
use crate::source::ScriptSource;
use crate::RemoteShell;

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
}

/// Builds an [`OsConfiguration`].
pub struct OsConfigurationBuilder {
    shell: Arc<dyn RemoteShell>,
    manifest: Option<ScriptSource>,
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
pub(super) struct Fact {
    pub(super) name: String,
    pub(super) value: String,
    pub(super) secret: bool,
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
            .field(
                "manifest",
                &self.manifest.as_ref().map(|m| m.name("manifest")),
            )
            .field("modules", &self.modules)
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
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
        self.manifest = Some(ScriptSource::Inline(text.into()));
        self
    }

    /// Applies the manifest in this local file (read when the action is built).
    pub fn manifest_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.manifest = Some(ScriptSource::File(path.into()));
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
    /// read; [`SshError::PuppetInvalidManifest`](crate::SshError::PuppetInvalidManifest) (kind `InvalidInput`) with
    /// Puppet's `Error:` lines when the manifest does not parse.
    pub fn build(self) -> Result<OsConfiguration> {
        let source = self
            .manifest
            .ok_or_else(|| Error::InvalidConfig("OsConfiguration needs a manifest".into()))?;
        let manifest_name = source.name("manifest");
        let manifest = source.read("manifest").map_err(Error::InvalidConfig)?;
        let manifest = String::from_utf8(manifest).map_err(|_| {
            Error::InvalidConfig(format!("the manifest {manifest_name} is not UTF-8 text"))
        })?;
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
            source.path(),
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
