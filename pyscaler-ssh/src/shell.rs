//! The `RemoteShell` role: run commands on a node and copy files to and from it.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{CancellationToken, Node, StepInfo};

use crate::error::shorten;
use crate::quote::{check_env_name, quote};
use crate::SshError;

/// A command to run on a node: a shell command line, plus environment
/// variables, `sudo`, a timeout, a cancellation token and the run it belongs to.
///
/// The line is run by the login user's shell as it is; build it from
/// untrusted words with [`RemoteCommand::program`] (each argument quoted) or
/// [`quote`](crate::quote).
///
/// Inside an action, [`RemoteCommand::in_step`] ties the command to the
/// running step: it is ended when the run is cancelled, and its process group
/// is recorded on the node so that [`RemoteShell::end_run`] can end it after a
/// controller died.
///
/// Two commands are equal when they run the same way; the cancellation token
/// is not compared.
#[derive(Debug, Clone)]
pub struct RemoteCommand {
    line: String,
    env: Vec<(String, String)>,
    sudo: bool,
    timeout: Option<Duration>,
    cancel: Option<CancellationToken>,
    run: Option<(String, String)>,
}

impl PartialEq for RemoteCommand {
    fn eq(&self, other: &Self) -> bool {
        (&self.line, &self.env, self.sudo, self.timeout, &self.run)
            == (
                &other.line,
                &other.env,
                other.sudo,
                other.timeout,
                &other.run,
            )
    }
}

impl Eq for RemoteCommand {}

impl RemoteCommand {
    /// A command line, run as written (`systemctl restart tomcat10`).
    pub fn new(line: impl Into<String>) -> Self {
        Self {
            line: line.into(),
            env: Vec::new(),
            sudo: false,
            timeout: None,
            cancel: None,
            run: None,
        }
    }

    /// A program and its arguments, each quoted so that none can inject a second command.
    ///
    /// # Errors
    /// [`SshError::InvalidInput`] when a word holds a NUL byte.
    pub fn program<I, S>(program: &str, args: I) -> Result<Self, SshError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Self::new(crate::quote::command_line(program, args)?))
    }

    /// Sets an environment variable for the command (its value is quoted).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs the command with `sudo -n` (never prompting: a password prompt is
    /// reported as [`SshError::SudoNeedsPassword`]).
    pub fn sudo(mut self, on: bool) -> Self {
        self.sudo = on;
        self
    }

    /// Bounds this command (instead of the configuration's `command_timeout`).
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Ends the command when `token` is cancelled ([`SshError::Cancelled`]):
    /// its connection is closed at once and its process group ended, as for a timeout.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Records the command's process group on the node under `run_id` and
    /// `step` while it runs, so that [`RemoteShell::end_run`] can end it.
    pub fn in_run(mut self, run_id: impl Into<String>, step: impl Into<String>) -> Self {
        self.run = Some((run_id.into(), step.into()));
        self
    }

    /// Ties the command to a running step: [`in_run`](Self::in_run) with its
    /// run id and step name, and [`cancel_on`](Self::cancel_on) its
    /// cancellation token. In an action, `step` is
    /// [`ctx.step_info()`](pyscaler_core::Context::step_info); in a fan-out's
    /// per-node closure, the `StepInfo` it is handed.
    pub fn in_step(self, step: &StepInfo) -> Self {
        self.in_run(step.run_id().as_str(), step.step())
            .cancel_on(step.cancellation().clone())
    }

    /// The command line as given.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Whether it runs under `sudo -n`.
    pub fn is_sudo(&self) -> bool {
        self.sudo
    }

    /// Its own timeout, if it has one.
    pub fn own_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The token that cancels it, if any.
    pub fn cancellation(&self) -> Option<&CancellationToken> {
        self.cancel.as_ref()
    }

    /// The run and step its process group is recorded under, if any.
    pub fn run_and_step(&self) -> Option<(&str, &str)> {
        self.run.as_ref().map(|(r, s)| (r.as_str(), s.as_str()))
    }

    /// The environment variables set for it.
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }

    /// The line the login shell runs: environment exported, `sudo -n` around it.
    ///
    /// # Errors
    /// [`SshError::InvalidInput`] for an invalid variable name or a NUL byte.
    pub fn render(&self) -> Result<String, SshError> {
        let mut script = String::new();
        if !self.env.is_empty() {
            script.push_str("export");
            for (name, value) in &self.env {
                check_env_name(name)?;
                script.push_str(&format!(" {name}={}", quote(value)?));
            }
            script.push_str("; ");
        }
        script.push_str(&self.line);
        if self.sudo {
            Ok(format!("sudo -n -- sh -c {}", quote(&script)?))
        } else {
            Ok(script)
        }
    }

    /// The command, shortened, for messages.
    pub(crate) fn display(&self) -> String {
        shorten(&self.line)
    }
}

/// What a command did on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// What it wrote to stdout (invalid UTF-8 replaced), up to the output cap.
    pub stdout: String,
    /// What it wrote to stderr, up to the output cap.
    pub stderr: String,
    /// Its exit status, when it exited (None when a signal ended it).
    pub exit_code: Option<i32>,
    /// The signal that ended it (`KILL`, `TERM`, without `SIG`), when one did.
    pub signal: Option<String>,
    /// Whether stdout or stderr was cut at the output cap.
    pub truncated: bool,
}

impl CommandOutput {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && self.signal.is_none()
    }

    /// stdout then stderr, as a report keeps them.
    pub fn combined(&self) -> String {
        match (self.stdout.is_empty(), self.stderr.is_empty()) {
            (_, true) => self.stdout.clone(),
            (true, false) => self.stderr.clone(),
            (false, false) => {
                let sep = if self.stdout.ends_with('\n') {
                    ""
                } else {
                    "\n"
                };
                format!("{}{sep}{}", self.stdout, self.stderr)
            }
        }
    }

    /// `exit 0`, `exit 3`, `killed by KILL`: one line for a report.
    pub fn status_line(&self) -> String {
        match (&self.signal, self.exit_code) {
            (Some(sig), _) => format!("killed by {sig}"),
            (None, Some(code)) => format!("exit {code}"),
            (None, None) => "no exit status".to_owned(),
        }
    }

    /// This output when `command` succeeded on `node`; otherwise the failure
    /// as an error (what [`RemoteShellExt::run_checked`] returns).
    ///
    /// # Errors
    /// [`SshError::SudoNeedsPassword`] when `sudo -n` refused for want of a
    /// password, [`SshError::CommandFailed`] for any other non-zero exit or signal.
    pub(crate) fn check(self, command: &RemoteCommand, node: &Node) -> Result<Self, SshError> {
        let host = node
            .address
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| node.name.clone());
        let user = node.ssh_user.as_deref().unwrap_or("the login user");
        self.check_as(command, &host, user)
    }

    /// As [`CommandOutput::check`], for a `host` and `user` known otherwise.
    pub(crate) fn check_as(
        self,
        command: &RemoteCommand,
        host: &str,
        user: &str,
    ) -> Result<Self, SshError> {
        if self.success() {
            return Ok(self);
        }
        if command.is_sudo() && self.exit_code == Some(1) && sudo_wants_password(&self.stderr) {
            return Err(SshError::SudoNeedsPassword {
                host: host.to_owned(),
                user: user.to_owned(),
            });
        }
        Err(SshError::CommandFailed {
            command: command.display(),
            exit_code: self.exit_code,
            signal: self.signal,
            stderr: crate::error::tail(&self.stderr, crate::error::STDERR_TAIL),
        })
    }
}

/// Whether sudo's stderr says it would have prompted (sudo 1.8 and 1.9 wording).
pub(crate) fn sudo_wants_password(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        l.starts_with("sudo:")
            && (l.contains("a password is required") || l.contains("a terminal is required"))
    })
}

/// Runs commands on nodes and copies files to and from them.
///
/// Implemented by [`Ssh2Shell`](crate::Ssh2Shell); mocked (`MockRemoteShell`,
/// behind the `mocks` feature) in tests of the actions.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RemoteShell: Send + Sync {
    /// Runs `command` on `node` and returns what it did, whatever its exit status.
    ///
    /// # Errors
    /// When the node cannot be reached or logged into, when the command times
    /// out ([`SshError::CommandTimedOut`]; it is ended), or the session fails.
    /// A non-zero exit is not an error here: see [`RemoteShellExt::run_checked`].
    /// A cancelled command ([`RemoteCommand::cancel_on`]) is
    /// [`SshError::Cancelled`]; a node where an abandoned command could not be
    /// ended is [`SshError::Unreachable`] until it answers again.
    async fn exec(&self, node: &Node, command: &RemoteCommand) -> Result<CommandOutput, SshError>;

    /// Writes `contents` to `remote_path` on `node` as `options` say (mode,
    /// sudo, timeout, cancellation), replacing it atomically.
    ///
    /// # Errors
    /// [`SshError::Transfer`] when the file cannot be written, or a connection error.
    async fn upload(
        &self,
        node: &Node,
        remote_path: &str,
        contents: Vec<u8>,
        options: UploadOptions,
    ) -> Result<(), SshError>;

    /// Reads `remote_path` from `node`.
    ///
    /// # Errors
    /// [`SshError::Transfer`] when the file cannot be read, or a connection error.
    async fn download(&self, node: &Node, remote_path: &str) -> Result<Vec<u8>, SshError>;

    /// Ends the commands of run `run_id` (of its `step` only, when given)
    /// still running on `node`, as recovery does before undoing a dead
    /// controller's run: each recorded process group gets SIGTERM, then
    /// SIGKILL after a short grace, over a fresh connection bounded by the
    /// shell's unreachable bound. Returns how many groups were still running.
    ///
    /// [`Ssh2Shell`](crate::Ssh2Shell) keeps the records in the login user's
    /// home, `~/.pyscaler/runs/<run id>/<step>/<pgid>` (names made file-safe),
    /// written by commands made with [`RemoteCommand::in_run`] or
    /// [`RemoteCommand::in_step`]; this call removes them.
    ///
    /// # Errors
    /// [`SshError::Unreachable`] when the node does not answer within the
    /// bound, or another connection error.
    async fn end_run<'a>(
        &self,
        node: &Node,
        run_id: &str,
        step: Option<&'a str>,
    ) -> Result<usize, SshError>;

    /// Closes the session kept open to `node`, if any (after the node is gone).
    async fn disconnect(&self, node: &Node);
}

/// How [`RemoteShell::upload`] writes a file.
///
/// ```
/// # use pyscaler_ssh::UploadOptions;
/// let secret = UploadOptions::mode(0o600);
/// let unit = UploadOptions::mode(0o644).sudo(true);
/// assert!(unit.sudo && !secret.sudo);
/// assert_eq!(UploadOptions::default().mode, 0o644);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOptions {
    /// The file's permissions, exactly (not masked by the server's umask).
    pub mode: u32,
    /// Writes it as root, through `sudo -n`.
    pub sudo: bool,
    /// Bounds the transfer (instead of the configuration's `command_timeout`).
    pub timeout: Option<Duration>,
    /// Stops the transfer when cancelled ([`SshError::Cancelled`]).
    pub cancel: Option<CancellationToken>,
}

impl Default for UploadOptions {
    /// Mode `0o644`, as the login user, the configured timeout, not cancellable.
    fn default() -> Self {
        Self::mode(0o644)
    }
}

impl UploadOptions {
    /// A file with permissions `mode` (`0o600` for a secret, `0o755` for a program).
    pub fn mode(mode: u32) -> Self {
        Self {
            mode,
            sudo: false,
            timeout: None,
            cancel: None,
        }
    }

    /// Writes the file as root, through `sudo -n`.
    pub fn sudo(mut self, on: bool) -> Self {
        self.sudo = on;
        self
    }

    /// Bounds the transfer.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Stops the transfer when `token` is cancelled.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }
}

/// Conveniences every [`RemoteShell`] gets.
#[async_trait]
pub trait RemoteShellExt: RemoteShell {
    /// Uploads a local file to `remote_path` as `options` say.
    ///
    /// # Errors
    /// [`SshError::Transfer`] when the local file cannot be read, or as [`RemoteShell::upload`].
    async fn upload_file(
        &self,
        node: &Node,
        local: &Path,
        remote_path: &str,
        options: UploadOptions,
    ) -> Result<(), SshError> {
        let contents = tokio::fs::read(local)
            .await
            .map_err(|e| SshError::Transfer {
                path: local.display().to_string(),
                message: format!("cannot read the local file: {e}"),
            })?;
        self.upload(node, remote_path, contents, options).await
    }

    /// Runs `command` on `node` and fails unless it exits with status 0; the
    /// error names the node's address and login user.
    ///
    /// # Errors
    /// As [`RemoteShell::exec`]; [`SshError::SudoNeedsPassword`] when `sudo -n`
    /// refused for want of a password, [`SshError::CommandFailed`] for any
    /// other non-zero exit or signal.
    async fn run_checked(
        &self,
        node: &Node,
        command: &RemoteCommand,
    ) -> Result<CommandOutput, SshError> {
        self.exec(node, command).await?.check(command, node)
    }
}

impl<T: RemoteShell + ?Sized> RemoteShellExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_quotes_env_values_and_wraps_sudo() {
        let c = RemoteCommand::new("echo $A")
            .env("A", "x; rm -rf /")
            .sudo(true);
        let words = shlex::split(&c.render().unwrap()).unwrap();
        assert_eq!(words[..5], ["sudo", "-n", "--", "sh", "-c"]);
        let inner = shlex::split(&words[5]).unwrap();
        assert_eq!(inner, ["export", "A=x; rm -rf /;", "echo", "$A"]);
        assert!(RemoteCommand::new("true").env("A-B", "1").render().is_err());
    }

    #[test]
    fn check_tells_sudo_password_prompts_from_other_failures() {
        let c = RemoteCommand::new("apt-get update").sudo(true);
        let out = CommandOutput {
            stderr: "sudo: a password is required\n".into(),
            exit_code: Some(1),
            ..CommandOutput::default()
        };
        assert!(matches!(
            out.check_as(&c, "h", "u"),
            Err(SshError::SudoNeedsPassword { .. })
        ));
        let out = CommandOutput {
            signal: Some("KILL".into()),
            ..CommandOutput::default()
        };
        let e = out.check_as(&c, "h", "u").unwrap_err();
        assert_eq!(
            e.to_string(),
            "command `apt-get update` was killed by signal KILL"
        );
    }
}
