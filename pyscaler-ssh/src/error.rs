//! The one error type of this crate, classified once for the core.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use pyscaler_core::{Classify, ErrorKind};

/// What went wrong talking to a node over SSH, or with what ran there.
///
/// Each variant answers [`Classify::kind`] and [`Classify::is_retryable`]; the
/// provider's own error, when there is one, is the [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// A node has no SSH address, a path or a variable name is not usable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The TCP connection could not be made (refused, no route, unknown host).
    #[error("cannot connect to {host}")]
    Connect {
        /// `host:port`.
        host: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TCP connection or the SSH handshake did not finish in time.
    #[error("connecting to {host} timed out after {}", humantime::format_duration(*after))]
    ConnectTimeout {
        /// `host:port`.
        host: String,
        /// The connect timeout.
        after: Duration,
    },
    /// The proxy command (`proxy_command`, such as a bastion's `ssh -W`) could
    /// not be started, or exited before the SSH session to the node was up.
    #[error("the proxy command to {host} failed (`{command}`): {message}")]
    ProxyFailed {
        /// The node's `host:port`.
        host: String,
        /// The command line that ran.
        command: String,
        /// How it ended, and the last line of its stderr.
        message: String,
    },
    /// The SSH handshake failed (no common algorithm, the peer is not an SSH server).
    #[error("SSH handshake with {host} failed")]
    Handshake {
        /// `host:port`.
        host: String,
        /// libssh2's error.
        #[source]
        source: io::Error,
    },
    /// The server's host key is not the one recorded for it: possibly a
    /// man-in-the-middle, or a rebuilt server whose entry must be removed by hand.
    #[error(
        "host key of {host} does not match {}: the server offered {fingerprint}",
        known_hosts.display()
    )]
    HostKeyMismatch {
        /// The `known_hosts` name of the server (`[host]:port` for ports other than 22).
        host: String,
        /// The offered key's SHA256 fingerprint (or why none was offered).
        fingerprint: String,
        /// The `known_hosts` file.
        known_hosts: PathBuf,
    },
    /// The server's key is not one its provider published for the node
    /// ([`HostKeyPolicy::Published`](crate::HostKeyPolicy::Published)):
    /// possibly a man-in-the-middle, or another machine at the node's address.
    #[error(
        "host key of {host} is not one its provider published: the server offered {fingerprint}, {}",
        published_text(published)
    )]
    HostKeyNotPublished {
        /// The `known_hosts` name of the server.
        host: String,
        /// The offered key's SHA256 fingerprint.
        fingerprint: String,
        /// The fingerprints the provider published (none: it published none).
        published: Vec<String>,
    },
    /// Strict host-key checking found no entry for the server.
    #[error(
        "host key of {host} is not in {} (offered {fingerprint}); add it, or use host-key policy accept-new",
        known_hosts.display()
    )]
    HostKeyUnknown {
        /// The `known_hosts` name of the server.
        host: String,
        /// The offered key's SHA256 fingerprint.
        fingerprint: String,
        /// The `known_hosts` file.
        known_hosts: PathBuf,
    },
    /// The `known_hosts` file could not be read or written.
    #[error("known_hosts file {}: {message}", path.display())]
    KnownHosts {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The server refused our credentials (a wrong key, a user it does not know).
    #[error("{host} refused authentication of {user} with {method}")]
    AuthRefused {
        /// `host:port`.
        host: String,
        /// The login user.
        user: String,
        /// `key file <path>` or `ssh-agent`.
        method: String,
        /// libssh2's error.
        #[source]
        source: io::Error,
    },
    /// Authentication did not finish in time.
    #[error("authentication with {host} timed out after {}", humantime::format_duration(*after))]
    AuthTimeout {
        /// `host:port`.
        host: String,
        /// The authentication timeout.
        after: Duration,
    },
    /// The session or a channel failed after login (the server went away, a protocol error).
    #[error("SSH session with {host} failed while {doing}")]
    Session {
        /// `host:port`.
        host: String,
        /// What we were doing (`opening a channel`, `reading output`).
        doing: &'static str,
        /// libssh2's error.
        #[source]
        source: io::Error,
    },
    /// A command ran longer than its timeout; it was ended.
    #[error("command `{command}` timed out after {}", humantime::format_duration(*after))]
    CommandTimedOut {
        /// The command (shortened).
        command: String,
        /// The timeout.
        after: Duration,
    },
    /// A command or a transfer was cancelled (its run was); it was ended.
    #[error("`{command}` on {host} was cancelled")]
    Cancelled {
        /// The node.
        host: String,
        /// The command (shortened), or `upload`.
        command: String,
    },
    /// The node did not answer within the unreachable bound after a command
    /// there was abandoned (a hung node): nothing more is waited for there.
    #[error("{host} is unreachable: no answer within {} after a command there was abandoned", humantime::format_duration(*after))]
    Unreachable {
        /// `host:port`.
        host: String,
        /// The bound (`unreachable_timeout`).
        after: Duration,
        /// How the last connection failed.
        #[source]
        source: Box<SshError>,
    },
    /// A command ran and failed: non-zero exit status, or killed by a signal.
    #[error("command `{command}` {}{}", status_words(*exit_code, signal.as_deref()), stderr_tail(stderr))]
    CommandFailed {
        /// The command (shortened).
        command: String,
        /// Its exit status, when it exited.
        exit_code: Option<i32>,
        /// The signal that ended it (`KILL`, `TERM`), when one did.
        signal: Option<String>,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// `sudo -n` would have asked for a password: the login user needs a
    /// `NOPASSWD` rule for this command.
    #[error("sudo on {host} needs a password for {user} (add a NOPASSWD rule, or log in as a user that may run it)")]
    SudoNeedsPassword {
        /// `host:port`.
        host: String,
        /// The login user.
        user: String,
    },
    /// A file could not be copied to or from the node.
    #[error("copying {path} failed: {message}")]
    Transfer {
        /// The remote (or local) path.
        path: String,
        /// Why.
        message: String,
    },
    /// Puppet was missing and the install command failed.
    #[error("installing Puppet failed (exit {exit_code:?}){}", stderr_tail(stderr))]
    PuppetInstallFailed {
        /// The install command's exit status.
        exit_code: Option<i32>,
        /// The end of its stderr.
        stderr: String,
    },
    /// The manifest does not compile: `puppet parser validate` on the
    /// controller refused it when the action was built, or `puppet apply` on
    /// the node exited 1.
    #[error("invalid Puppet manifest: {}", errors.join("; "))]
    PuppetInvalidManifest {
        /// Puppet's own `Error:` lines.
        errors: Vec<String>,
    },
    /// `puppet apply` ran and some resources failed (exit 4 or 6).
    #[error("puppet apply failed (exit {exit_code}): {}", errors.join("; "))]
    PuppetFailed {
        /// Puppet's detailed exit code.
        exit_code: i32,
        /// Puppet's own `Error:` lines.
        errors: Vec<String>,
    },
    /// A program run on the controller (a `fab` command) failed.
    #[error("local program `{program}` {}{}", status_words(*exit_code, None), stderr_tail(stderr))]
    LocalProgramFailed {
        /// The program and its arguments.
        program: String,
        /// Its exit status (None when it could not be started or was killed).
        exit_code: Option<i32>,
        /// The end of its stderr, or why it could not start.
        stderr: String,
    },
    /// A counter's output held no number.
    #[error("no number in the output of `{command}`: {output:?}")]
    NotANumber {
        /// The command.
        command: String,
        /// What it printed (shortened).
        output: String,
    },
}

fn status_words(exit_code: Option<i32>, signal: Option<&str>) -> String {
    match (exit_code, signal) {
        (_, Some(sig)) => format!("was killed by signal {sig}"),
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "ended without an exit status".to_owned(),
    }
}

fn stderr_tail(stderr: &str) -> String {
    let tail = stderr.trim();
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// How many bytes of a failed command's stderr an error keeps (its end,
/// where the reason usually is).
pub(crate) const STDERR_TAIL: usize = 2000;

/// Keeps the last `max` bytes of `text` (on a character boundary), for error messages.
pub(crate) fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// Keeps the first `max` characters of a command, for error messages.
pub(crate) fn shorten(command: &str) -> String {
    const MAX: usize = 120;
    if command.chars().count() <= MAX {
        command.to_owned()
    } else {
        let head: String = command.chars().take(MAX).collect();
        format!("{head}...")
    }
}

impl SshError {
    /// Whether the node could not be reached at all (nothing ran there).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::ConnectTimeout { .. }
                | Self::Handshake { .. }
                | Self::ProxyFailed { .. }
                | Self::Unreachable { .. }
        )
    }

    /// `error`, a failed connection to `host` within the unreachable bound
    /// `after`, as [`SshError::Unreachable`]; other errors (a changed host
    /// key) as they are.
    pub(crate) fn as_unreachable(host: String, after: Duration, error: SshError) -> SshError {
        if error.is_unreachable() || matches!(error, Self::AuthTimeout { .. }) {
            Self::Unreachable {
                host,
                after,
                source: Box::new(error),
            }
        } else {
            error
        }
    }
}

impl Classify for SshError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidInput(_)
            | Self::KnownHosts { .. }
            | Self::PuppetInvalidManifest { .. } => ErrorKind::InvalidInput,
            // ECONNREFUSED, EHOSTUNREACH, a reset: the node may still be booting.
            // A proxy (`ssh -W` through a bastion) fails the same ways.
            Self::Connect { .. }
            | Self::Handshake { .. }
            | Self::Session { .. }
            | Self::ProxyFailed { .. } => ErrorKind::Transient,
            Self::ConnectTimeout { .. }
            | Self::AuthTimeout { .. }
            | Self::CommandTimedOut { .. }
            | Self::Unreachable { .. } => ErrorKind::Timeout,
            Self::Cancelled { .. } => ErrorKind::Cancelled,
            Self::HostKeyMismatch { .. }
            | Self::HostKeyUnknown { .. }
            | Self::HostKeyNotPublished { .. }
            | Self::AuthRefused { .. }
            | Self::SudoNeedsPassword { .. } => ErrorKind::PermissionDenied,
            Self::CommandFailed { .. }
            | Self::Transfer { .. }
            | Self::PuppetInstallFailed { .. }
            | Self::PuppetFailed { .. }
            | Self::LocalProgramFailed { .. } => ErrorKind::RemoteCommandFailed,
            Self::NotANumber { .. } => ErrorKind::Unexpected,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            // A changed host key or refused credentials do not fix themselves.
            Self::HostKeyMismatch { .. }
            | Self::HostKeyUnknown { .. }
            | Self::HostKeyNotPublished { .. }
            | Self::AuthRefused { .. }
            | Self::SudoNeedsPassword { .. } => false,
            // A node that hung already failed a bounded attempt after a
            // command there was abandoned: retrying would wait again for it.
            Self::Unreachable { .. } => false,
            // A fresh node's sshd may not have read its authorized_keys yet
            // (cloud-init writes them late): the connection and timeouts are retried.
            other => other.kind().is_retryable_by_default(),
        }
    }
}

impl From<SshError> for pyscaler_core::Error {
    fn from(e: SshError) -> Self {
        pyscaler_core::Error::provider(e)
    }
}

/// What the provider published, for [`SshError::HostKeyNotPublished`].
fn published_text(published: &[String]) -> String {
    if published.is_empty() {
        "and its provider published no host key fingerprints for it".to_owned()
    } else {
        format!("not one of {}", published.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_mismatch_is_not_retried_and_names_host_and_fingerprint() {
        let e = SshError::HostKeyMismatch {
            host: "[10.0.0.5]:2222".into(),
            fingerprint: "SHA256:abc".into(),
            known_hosts: PathBuf::from("/home/u/.ssh/known_hosts"),
        };
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(!e.is_retryable());
        let msg = e.to_string();
        assert!(
            msg.contains("[10.0.0.5]:2222") && msg.contains("SHA256:abc"),
            "{msg}"
        );
        let core: pyscaler_core::Error = e.into();
        assert!(!core.is_retryable());
    }

    #[test]
    fn connection_faults_are_retried_and_command_failures_are_not() {
        let refused = SshError::Connect {
            host: "h:22".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert!(refused.is_retryable());
        let failed = SshError::CommandFailed {
            command: "false".into(),
            exit_code: Some(1),
            signal: None,
            stderr: "boom\n".into(),
        };
        assert_eq!(failed.kind(), ErrorKind::RemoteCommandFailed);
        assert!(!failed.is_retryable());
        assert_eq!(
            failed.to_string(),
            "command `false` exited with status 1: boom"
        );
    }

    #[test]
    fn a_hung_node_is_unreachable_and_not_retried_but_a_host_key_error_stays_itself() {
        let timeout = SshError::ConnectTimeout {
            host: "h:22".into(),
            after: Duration::from_secs(2),
        };
        let e = SshError::as_unreachable("h:22".into(), Duration::from_secs(2), timeout);
        assert!(matches!(e, SshError::Unreachable { .. }), "{e:?}");
        assert!(e.is_unreachable() && !e.is_retryable());
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(
            e.to_string(),
            "h:22 is unreachable: no answer within 2s after a command there was abandoned"
        );
        let changed = SshError::HostKeyUnknown {
            host: "h".into(),
            fingerprint: "SHA256:x".into(),
            known_hosts: PathBuf::from("/k"),
        };
        let e = SshError::as_unreachable("h:22".into(), Duration::from_secs(2), changed);
        assert!(matches!(e, SshError::HostKeyUnknown { .. }), "{e:?}");
        let cancelled = SshError::Cancelled {
            host: "web-01".into(),
            command: "sleep 9".into(),
        };
        assert_eq!(cancelled.kind(), ErrorKind::Cancelled);
        assert_eq!(cancelled.to_string(), "`sleep 9` on web-01 was cancelled");
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abcdef", 3), "...def");
        assert_eq!(tail("ab", 3), "ab");
        assert_eq!(tail("aé€", 3), "...€");
    }
}
