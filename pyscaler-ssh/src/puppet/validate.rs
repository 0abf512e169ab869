//! Checking a manifest on the controller (`puppet parser validate`) before anything runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::local::run_local_blocking;
use crate::{CommandOutput, SshError};

/// Bound on `puppet parser validate` when an action is built.
const LOCAL_VALIDATION_TIMEOUT: Duration = Duration::from_secs(60);

/// `puppet` on the controller's `PATH`, if any.
pub(super) fn local_puppet() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("puppet"))
        .find(|p| p.is_file())
}

/// Checks the manifest's syntax with the controller's Puppet, when there is
/// one: `puppet parser validate`, with the modules folder as `--modulepath`.
/// Inline text goes through a temporary file (its path is replaced by
/// `name` in Puppet's messages). A Puppet that cannot run, hangs, or fails
/// without an `Error:` line is no verdict: the nodes' `puppet apply` decides.
pub(super) fn validate_locally(
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
    let mut command = tokio::process::Command::new(&puppet);
    command.args(["parser", "validate", "--color=false"]);
    if let Some(dir) = modules {
        command.arg("--modulepath").arg(dir);
    }
    command.arg(file);
    let out = match run_local_blocking(command, LOCAL_VALIDATION_TIMEOUT) {
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
pub(super) struct TempManifest(pub(super) PathBuf);

impl TempManifest {
    pub(super) fn write(text: &str) -> std::io::Result<Self> {
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

/// Puppet's own error lines.
pub(super) fn error_lines(out: &CommandOutput) -> Vec<String> {
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .filter(|l| l.starts_with("Error:"))
        .map(str::to_owned)
        .collect()
}
