//! Where a script or a manifest comes from: text given inline, or a local file.

use std::path::PathBuf;

/// A script's or a manifest's text, given inline or read from a local file
/// when the action is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScriptSource {
    /// The text itself.
    Inline(String),
    /// A local file holding it.
    File(PathBuf),
}

impl ScriptSource {
    /// How messages and plans name it: the file's path, or `inline <what>`.
    pub(crate) fn name(&self, what: &str) -> String {
        match self {
            Self::Inline(_) => format!("inline {what}"),
            Self::File(path) => path.display().to_string(),
        }
    }

    /// The local file, when it is one.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Inline(_) => None,
            Self::File(path) => Some(path),
        }
    }

    /// The text, read from the file when it is one.
    ///
    /// # Errors
    /// The file's read error, with its path, in words.
    pub(crate) fn read(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            Self::Inline(text) => Ok(text.clone().into_bytes()),
            Self::File(path) => std::fs::read(path)
                .map_err(|e| format!("cannot read {what} {}: {e}", path.display())),
        }
    }
}
