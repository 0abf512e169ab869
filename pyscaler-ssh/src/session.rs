//! `NodeSession`: a node, the shell that reaches it, and the run's view, for a [`NodeTask`](crate::NodeTask).

use std::path::Path;
use std::sync::Arc;

use pyscaler_core::{Node, StepInfo};

use crate::{CommandOutput, RemoteCommand, RemoteShell, RemoteShellExt, SshError, UploadOptions};

/// A node and the shell that reaches it: what a [`NodeTask`](crate::NodeTask) works with,
/// with a read-only view of the run ([`step`](Self::step)).
///
/// Cheap to clone; every call goes through the node's one reused session.
#[derive(Clone)]
pub struct NodeSession {
    shell: Arc<dyn RemoteShell>,
    node: Node,
    step: StepInfo,
}

impl std::fmt::Debug for NodeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSession")
            .field("node", &self.node.name)
            .finish_non_exhaustive()
    }
}

impl NodeSession {
    pub(crate) fn new(shell: Arc<dyn RemoteShell>, node: Node, step: StepInfo) -> Self {
        Self { shell, node, step }
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The run as this step sees it: its id, variables, and the cluster's
    /// members after this run's changes ([`StepInfo::cluster`]).
    pub fn step(&self) -> &StepInfo {
        &self.step
    }

    /// Runs a command line and fails unless it exits with status 0.
    ///
    /// # Errors
    /// As [`RemoteShellExt::run_checked`].
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

    /// Runs a command and fails unless it exits with status 0. The command
    /// is tied to the step ([`RemoteCommand::in_step`]): it ends when the
    /// step times out or the run is cancelled.
    ///
    /// # Errors
    /// As [`NodeSession::run`].
    pub async fn exec(&self, command: &RemoteCommand) -> Result<CommandOutput, SshError> {
        let command = command.clone().in_step(&self.step);
        self.shell.run_checked(&self.node, &command).await
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
            .upload(&self.node, remote_path, contents, UploadOptions::mode(mode))
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
            .upload_file(&self.node, local, remote_path, UploadOptions::mode(mode))
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
