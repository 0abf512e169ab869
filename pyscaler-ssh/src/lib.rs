//! # pyscaler-ssh
//!
//! The SSH side of pyscaler: the [`RemoteShell`] role and its libssh2
//! implementation [`Ssh2Shell`], and the actions of the middle of a
//! deployment that run on nodes over SSH.
//!
//! - [`Ssh2Shell`] runs commands on nodes (one reused session per node, a
//!   channel per command), copies files, checks host keys ([`HostKeyPolicy`]),
//!   bounds connect, login and commands in time, and runs `sudo -n`.
//! - Arguments and environment values are quoted ([`quote`], [`RemoteCommand::program`]):
//!   a node name, a tag or a script argument never injects a second command.

mod config;
mod counter;
mod distribute;
mod error;
mod fanout;
mod known_hosts;
mod puppet;
mod quote;
mod script;
mod shell;
mod ssh2_shell;
#[cfg(test)]
mod testing;

pub use config::{HostKeyPolicy, SshAuth, SshConfig};
pub use counter::{Parser, SshCounter};
pub use distribute::{DistributeScript, NodeSession, Task};
pub use error::SshError;
pub use fanout::{FanOut, NodeFailure, NodeResult, OnNodeFailure};
pub use puppet::{OsConfiguration, OsConfigurationBuilder, OsFamily};
pub use quote::{command_line, quote};
pub use script::{LocalScript, LocalScriptBuilder};
#[cfg(any(test, feature = "mocks"))]
pub use shell::MockRemoteShell;
pub use shell::{CommandOutput, RemoteCommand, RemoteShell, RemoteShellExt};
pub use ssh2_shell::Ssh2Shell;
