//! How to reach nodes over SSH: user, port, credentials, host keys, timeouts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ProxyCommand, SshError};

/// How the server's host key is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum HostKeyPolicy {
    /// Verify against the `known_hosts` file; an unknown host or a changed
    /// key is refused (the default).
    #[default]
    Strict,
    /// Trust a host seen for the first time and record its key in the
    /// `known_hosts` file (OpenSSH's `accept-new`); a later change is refused.
    AcceptNew,
    /// Trust a host seen for the first time only when the key it offers is
    /// one its provider published off the network
    /// ([`Node::host_key_fingerprints`](pyscaler_core::Node::host_key_fingerprints):
    /// on EC2, the fingerprints cloud-init prints to the console output,
    /// which `DeployEc2Node` reads when the profile asks), and record it in
    /// the `known_hosts` file; a node with no published fingerprints, or
    /// whose key is not among them, is refused, and so is a later change.
    Published,
    /// Accept any key without checking. Only for throw-away test networks: it
    /// lets anyone on the path read and change everything.
    InsecureAcceptAny,
}

/// The name a node's host key is stored under in the `known_hosts` file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KnownHostsName {
    /// Its address (`10.0.0.5`, or `[10.0.0.5]:2222` for another port), as
    /// OpenSSH stores it (the default).
    #[default]
    Address,
    /// Its node id (the EC2 instance id), as OpenSSH's `HostKeyAlias` does:
    /// on a cloud a terminated instance's private address is given to the
    /// next one launched, which has a key of its own; stored by address,
    /// that new key reads as a changed key and is refused (with
    /// [`HostKeyPolicy::AcceptNew`] or [`HostKeyPolicy::Published`]);
    /// stored by instance id, each instance's key is its own entry, and a
    /// changed key of the *same* instance is still refused.
    NodeId,
}

/// How to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "method", try_from = "AuthFields")]
#[non_exhaustive]
pub enum SshAuth {
    /// A private key file without passphrase (ed25519, ECDSA, or RSA signed with SHA-2).
    KeyFile {
        /// The private key's path.
        path: PathBuf,
    },
    /// The keys of the running SSH agent (`SSH_AUTH_SOCK`).
    Agent,
}

/// `auth` as a file writes it. Read through this rather than by the tag
/// alone: serde lets a unit variant (`agent`) carry any other key
/// unchecked, so `{ method = "agent", pth = "..." }` would pass silently.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFields {
    method: AuthMethod,
    #[serde(default)]
    path: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum AuthMethod {
    KeyFile,
    Agent,
}

impl TryFrom<AuthFields> for SshAuth {
    type Error = String;

    fn try_from(f: AuthFields) -> Result<Self, String> {
        match (f.method, f.path) {
            (AuthMethod::KeyFile, Some(path)) => Ok(Self::KeyFile { path }),
            (AuthMethod::KeyFile, None) => {
                Err("missing field `path` for method = \"key-file\"".into())
            }
            (AuthMethod::Agent, None) => Ok(Self::Agent),
            (AuthMethod::Agent, Some(_)) => Err(
                "unknown field `path` for method = \"agent\" (a key file is method = \"key-file\")"
                    .into(),
            ),
        }
    }
}

/// How to reach the nodes of a cluster over SSH.
///
/// A node's own [`ssh_user`](pyscaler_core::Node::ssh_user) and address port
/// take precedence over `user` and `port`.
///
/// With `proxy_command`, each node is reached through that program (a jump
/// host's `ssh -W %h:%p ops@bastion`) instead of a direct TCP connection; host
/// keys are still checked by the node's own address (see [`ProxyCommand`]).
///
/// ```
/// # use pyscaler_ssh::{HostKeyPolicy, SshAuth, SshConfig};
/// let config: SshConfig = toml::from_str(r#"
///     user = "admin"
///     auth = { method = "key-file", path = "/home/ops/.ssh/id_ed25519" }
///     host_keys = "accept-new"
///     connect_timeout = "5s"
///     command_timeout = "10m"
///     unreachable_timeout = "3s"
/// "#).unwrap();
/// assert_eq!(config.host_keys, HostKeyPolicy::AcceptNew);
/// assert_eq!(config.unreachable_timeout, std::time::Duration::from_secs(3));
/// assert_eq!(config.port, 22);
/// assert!(config.proxy_command.is_none());
///
/// let behind_bastion: SshConfig = toml::from_str(r#"
///     user = "admin"
///     proxy_command = "ssh -W %h:%p ops@bastion.example.com"
/// "#).unwrap();
/// assert!(behind_bastion.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// The login user when the node names none.
    pub user: String,
    /// The port when the node's address names none.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The credentials.
    #[serde(default = "default_auth")]
    pub auth: SshAuth,
    /// How host keys are checked.
    #[serde(default)]
    pub host_keys: HostKeyPolicy,
    /// The `known_hosts` file (default `~/.ssh/known_hosts`).
    #[serde(default = "default_known_hosts")]
    pub known_hosts: PathBuf,
    /// The name each node's key is stored under in it (default: its address).
    #[serde(default)]
    pub known_hosts_name: KnownHostsName,
    /// Bound on the TCP connection and the SSH handshake.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on authentication.
    #[serde(default = "default_auth_timeout", with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// Bound on one command, unless the command sets its own.
    #[serde(default = "default_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Bound on reaching a node after a command there was abandoned (timed
    /// out, cancelled, or its step timed out): the connection that ends the
    /// command's process group, and every connection to the node until one
    /// succeeds. A node that does not answer within it is
    /// [`SshError::Unreachable`], so the undo of a step on a hung node takes
    /// seconds, not `command_timeout`: at most about twice this bound (the
    /// attempt to end the abandoned command, then the undo's own
    /// connection). Default 5 s. Also bounds each connection of
    /// [`RemoteShell::end_run`](crate::RemoteShell::end_run).
    #[serde(default = "default_unreachable_timeout", with = "humantime_serde")]
    pub unreachable_timeout: Duration,
    /// How many bytes of a command's stdout (and, separately, stderr) are
    /// kept; beyond it the output is cut and marked as truncated.
    #[serde(default = "default_output_cap")]
    pub output_cap: usize,
    /// How many idle sessions (connected, no command running) are kept for
    /// the next command to their node; beyond it the least recently used are
    /// closed, and their node connects again when next used. Sessions in use
    /// are not counted: a fan-out holds at most its concurrency plus this
    /// many. 0 closes every session when its command ends. Default 256
    /// (each costs about 80 KB here, and a process on its node).
    #[serde(default = "default_idle_sessions")]
    pub idle_sessions: usize,
    /// Reach nodes through this command (a bastion's `ssh -W %h:%p ...`)
    /// instead of connecting to them directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_command: Option<ProxyCommand>,
}

fn default_port() -> u16 {
    22
}
fn default_auth() -> SshAuth {
    SshAuth::Agent
}
fn default_known_hosts() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".ssh")
        .join("known_hosts")
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_auth_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_unreachable_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_output_cap() -> usize {
    1024 * 1024
}
fn default_idle_sessions() -> usize {
    256
}

impl SshConfig {
    /// A configuration for `user`, with the agent, strict host keys and default timeouts.
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            port: default_port(),
            auth: default_auth(),
            host_keys: HostKeyPolicy::default(),
            known_hosts: default_known_hosts(),
            known_hosts_name: KnownHostsName::default(),
            connect_timeout: default_connect_timeout(),
            auth_timeout: default_auth_timeout(),
            command_timeout: default_command_timeout(),
            unreachable_timeout: default_unreachable_timeout(),
            output_cap: default_output_cap(),
            idle_sessions: default_idle_sessions(),
            proxy_command: None,
        }
    }

    /// Authenticates with this private key file.
    pub fn with_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth = SshAuth::KeyFile { path: path.into() };
        self
    }

    /// Authenticates with the SSH agent.
    pub fn with_agent(mut self) -> Self {
        self.auth = SshAuth::Agent;
        self
    }

    /// Sets the default port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the host-key policy.
    pub fn with_host_keys(mut self, policy: HostKeyPolicy) -> Self {
        self.host_keys = policy;
        self
    }

    /// Stores and looks up node keys in `known_hosts` under this name.
    pub fn with_known_hosts_name(mut self, name: KnownHostsName) -> Self {
        self.known_hosts_name = name;
        self
    }

    /// Uses this `known_hosts` file.
    pub fn with_known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts = path.into();
        self
    }

    /// Sets the connect (TCP and handshake) timeout.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets the authentication timeout.
    pub fn with_auth_timeout(mut self, d: Duration) -> Self {
        self.auth_timeout = d;
        self
    }

    /// Sets the default per-command timeout.
    pub fn with_command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }

    /// Sets the bound on reaching a node after a command there was abandoned.
    pub fn with_unreachable_timeout(mut self, d: Duration) -> Self {
        self.unreachable_timeout = d;
        self
    }

    /// Sets the output cap (bytes kept of stdout, and of stderr).
    pub fn with_output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }

    /// Sets how many idle sessions are kept (see [`SshConfig::idle_sessions`]).
    pub fn with_idle_sessions(mut self, sessions: usize) -> Self {
        self.idle_sessions = sessions;
        self
    }

    /// Reaches nodes through this proxy command (see [`ProxyCommand`]), such
    /// as `ssh -W %h:%p ops@bastion.example.com`.
    pub fn with_proxy_command(mut self, command: impl Into<String>) -> Self {
        self.proxy_command = Some(ProxyCommand::new(command));
        self
    }

    /// Checks the configuration before anything connects.
    ///
    /// # Errors
    /// [`SshError::InvalidInput`] for an empty user, a zero timeout, a proxy
    /// command that is empty or has an unknown `%` escape, or a key
    /// file that does not exist, cannot be read or holds no private key in a
    /// format libssh2 reads (OpenSSH or PEM). The message names the file,
    /// never its content.
    pub fn validate(&self) -> Result<(), SshError> {
        if self.user.trim().is_empty() {
            return Err(SshError::InvalidInput("the SSH user is empty".into()));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("auth_timeout", self.auth_timeout),
            ("command_timeout", self.command_timeout),
            ("unreachable_timeout", self.unreachable_timeout),
        ] {
            if d.is_zero() {
                return Err(SshError::InvalidInput(format!("{name} must not be zero")));
            }
        }
        if let Some(proxy) = &self.proxy_command {
            proxy.validate()?;
        }
        if let SshAuth::KeyFile { path } = &self.auth {
            check_key_file(path)?;
        }
        Ok(())
    }
}

/// How much of a key file is read to recognize it (keys are a few KiB).
const KEY_FILE_HEAD: u64 = 64 * 1024;

/// Checks that `path` holds a private key libssh2 can read: OpenSSH's own
/// format or PEM (`-----BEGIN ... PRIVATE KEY-----`). The file's content may
/// be a secret: messages name the path, never what is in it.
fn check_key_file(path: &Path) -> Result<(), SshError> {
    if !path.is_file() {
        return Err(SshError::InvalidInput(format!(
            "the private key file {} does not exist",
            path.display()
        )));
    }
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(KEY_FILE_HEAD).read_to_end(&mut head))
        .map_err(|e| {
            SshError::InvalidInput(format!(
                "the private key file {} cannot be read: {e}",
                path.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&head);
    let first = text.trim_start().lines().next().unwrap_or("").trim_end();
    let is_private_key = first
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.strip_suffix("PRIVATE KEY-----"))
        .is_some_and(|label| {
            label
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ')
        });
    if is_private_key {
        return Ok(());
    }
    let hint = if first.starts_with("ssh-") || first.starts_with("ecdsa-") {
        " (it looks like a public key: give the private key beside it)"
    } else {
        ""
    };
    Err(SshError::InvalidInput(format!(
        "the private key file {} holds no private key libssh2 can use{hint}; expected \
         OpenSSH's `-----BEGIN OPENSSH PRIVATE KEY-----` or PEM `-----BEGIN ... PRIVATE KEY-----`",
        path.display()
    )))
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_a_missing_key_file_and_zero_timeouts() {
        let c = SshConfig::new("admin").with_key_file("/nonexistent/key");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/key"));
        let c = SshConfig::new("admin").with_command_timeout(Duration::ZERO);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("command_timeout"));
        assert!(SshConfig::new("admin").validate().is_ok());
    }

    #[test]
    fn a_key_file_must_hold_a_private_key_and_its_content_is_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write");
            SshConfig::new("admin").with_key_file(&path).validate()
        };
        for (name, content) in [
            (
                "openssh",
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n",
            ),
            ("rsa", "\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"),
            ("ec", "-----BEGIN EC PRIVATE KEY-----\r\nMHcC\r\n-----END EC PRIVATE KEY-----\r\n"),
            ("pkcs8", "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n"),
        ] {
            assert!(check(name, content).is_ok(), "{name}");
        }
        for (name, content, words) in [
            (
                "garbage",
                "secret-looking garbage 7f3a\n",
                "holds no private key",
            ),
            ("empty", "", "holds no private key"),
            (
                "id_ed25519.pub",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI secret-comment\n",
                "looks like a public key",
            ),
            (
                "cert",
                "-----BEGIN CERTIFICATE-----\nMIIB secret\n",
                "holds no private key",
            ),
        ] {
            let err = check(name, content).expect_err(name);
            assert!(matches!(err, SshError::InvalidInput(_)), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains(&dir.path().join(name).display().to_string()),
                "{msg}"
            );
            assert!(msg.contains(words), "{msg}");
            assert!(!msg.contains("secret") && !msg.contains("7f3a"), "{msg}");
        }
    }

    #[test]
    fn a_proxy_command_is_checked_when_the_config_is() {
        let parse = |line: &str| -> SshConfig {
            toml::from_str(&format!("user = \"a\"\n{line}\n")).expect("parse")
        };
        let c = parse(r#"proxy_command = "ssh -W %h:%p ops@bastion""#);
        assert_eq!(
            c.proxy_command.as_ref().map(ProxyCommand::template),
            Some("ssh -W %h:%p ops@bastion")
        );
        assert!(c.validate().is_ok());
        let err = parse(r#"proxy_command = "ssh -W %h:%x bastion""#)
            .validate()
            .unwrap_err();
        assert!(matches!(err, SshError::InvalidInput(_)), "{err:?}");
        assert!(err.to_string().contains("%x"), "{err}");
        assert!(parse(r#"proxy_command = """#).validate().is_err());
    }

    #[test]
    fn the_unreachable_bound_defaults_to_seconds_and_must_not_be_zero() {
        let c: SshConfig = toml::from_str("user = \"a\"\n").expect("parse");
        assert_eq!(c.unreachable_timeout, Duration::from_secs(5));
        let e = c
            .with_unreachable_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("unreachable_timeout"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<SshConfig, _> = toml::from_str("user = \"a\"\nhost_key = \"strict\"\n");
        assert!(r.is_err());
    }
}
