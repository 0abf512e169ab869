//! # pyscaler-ssh
//!
//! The SSH side of pyscaler: the [`RemoteShell`] role and its libssh2
//! implementation [`Ssh2Shell`], and the actions of the middle of a
//! deployment that run on nodes over SSH.
//!
//! | Deployment step (`scaling.rst`)        | Action                                   |
//! |----------------------------------------|------------------------------------------|
//! | Operating system configuration         | [`OsConfiguration`] (`puppet apply`)     |
//! | Tomcat configuration, app deployment   | [`LocalScript`] or [`DistributeScript`]  |
//! | Cluster update (on every node)         | the same, on `Target::Cluster`           |
//! | Counters for a threshold trigger       | [`SshCounter`] (a core `MetricSource`)   |
//!
//! - [`Ssh2Shell`] runs commands on nodes (one reused session per node, a
//!   channel per command), copies files, checks host keys ([`HostKeyPolicy`]),
//!   bounds connect, login and commands in time, and runs `sudo -n`; it
//!   reaches nodes directly or through a [`ProxyCommand`] (a bastion).
//! - [`FanOut`] runs an action's work on many nodes at once (32 by default)
//!   with a failure policy ([`OnNodeFailure`]); each node's outcome and output
//!   land in the run report.
//! - Arguments and environment values are quoted ([`quote`], [`RemoteCommand::program`]):
//!   a node name, a tag or a script argument never injects a second command.
//! - Errors are [`SshError`], classified once (kind, retryable) for the core.
//!
//! ```no_run
//! use std::sync::Arc;
//! use pyscaler_core::{ActionExt, Pipeline, Target};
//! use pyscaler_ssh::{FanOut, HostKeyPolicy, LocalScript, OnNodeFailure, OsConfiguration,
//!                    Ssh2Shell, SshConfig};
//!
//! # fn main() -> pyscaler_core::Result<()> {
//! let shell = Arc::new(Ssh2Shell::new(
//!     SshConfig::new("admin")
//!         .with_key_file("/home/ops/.ssh/id_ed25519")
//!         .with_host_keys(HostKeyPolicy::AcceptNew),
//! )?);
//! let pipeline = Pipeline::builder("scale-out")
//!     // ... a step that launches nodes (pyscaler-aws) comes first ...
//!     .step(OsConfiguration::builder(shell.clone())
//!         .manifest_file("puppet/tomcat.pp")
//!         .sudo(true)
//!         .build()?
//!         .on(Target::NewNodes))
//!     .step(LocalScript::builder(shell)
//!         .name("cluster-update")
//!         .file("scripts/update-balancer-members.sh")
//!         .fan_out(FanOut::new().on_failure(OnNodeFailure::MaxFailedPercent(10)))
//!         .build()?
//!         .on(Target::Cluster))
//!     .build()?;
//! # let _ = pipeline; Ok(()) }
//! ```

mod config;
mod counter;
mod distribute;
mod error;
mod fanout;
mod known_hosts;
mod proxy;
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
pub use proxy::ProxyCommand;
pub use puppet::{OsConfiguration, OsConfigurationBuilder, OsFamily};
pub use quote::{command_line, quote};
pub use script::{LocalScript, LocalScriptBuilder};
#[cfg(any(test, feature = "mocks"))]
pub use shell::MockRemoteShell;
pub use shell::{CommandOutput, RemoteCommand, RemoteShell, RemoteShellExt};
pub use ssh2_shell::Ssh2Shell;
