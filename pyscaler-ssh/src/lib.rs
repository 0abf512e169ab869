//! # pyscaler-ssh
//!
//! The SSH side of pyscaler: the [`RemoteShell`] role and its libssh2
//! implementation [`Ssh2Shell`], and the actions of the middle of a
//! deployment that run on nodes over SSH.
//!
//! | Deployment step (`docs/scaling.rst`)   | Action                                   |
//! |----------------------------------------|------------------------------------------|
//! | Operating system configuration         | [`OsConfiguration`] (`puppet apply`)     |
//! | Tomcat configuration, app deployment   | [`LocalScript`] or [`NodeTask`]          |
//! | Cluster update (on every node)         | the same, on `Target::Cluster`           |
//! | Counters for a threshold trigger       | [`SshCounter`] (a core `MetricSource`)   |
//!
//! A team migrating from Fabric runs its `fab` command as a [`ControllerProgram`].
//!
//! - [`Ssh2Shell`] runs commands on nodes (one reused session per node, a
//!   channel per command), copies files, checks host keys ([`HostKeyPolicy`]),
//!   bounds connect, login and commands in time, and runs `sudo -n`; it
//!   reaches nodes directly or through a [`ProxyCommand`] (a bastion).
//! - The actions run on many nodes at once with the core's
//!   [`FanOut`](pyscaler_core::FanOut) (32 by default) and its failure policy
//!   ([`OnNodeFailure`](pyscaler_core::OnNodeFailure)); each node's outcome
//!   and output land in the run report.
//! - Arguments and environment values are quoted ([`quote`], [`RemoteCommand::program`]):
//!   a node name, a tag or a script argument never injects a second command.
//! - Errors are [`SshError`], classified once (kind, retryable) for the core.
//!
//! ```no_run
//! use std::sync::Arc;
//! use pyscaler_core::{ActionExt, FanOut, OnNodeFailure, Pipeline, Target};
//! use pyscaler_ssh::{HostKeyPolicy, LocalScript, OsConfiguration, Ssh2Shell, SshConfig};
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
//!         .member_args("{member.name}={member.host}")
//!         .fan_out(FanOut::new().on_failure(OnNodeFailure::MaxFailedPercent(10)))
//!         .build()?
//!         .on(Target::Cluster))
//!     .build()?;
//! # let _ = pipeline; Ok(()) }
//! ```

mod config;
mod counter;
mod error;
mod known_hosts;
mod leftovers;
mod local;
mod node_task;
mod outcome;
mod program;
mod proxy;
mod puppet;
mod quote;
mod script;
mod session;
mod shell;
mod source;
mod ssh2;
#[cfg(test)]
mod testing;

pub use self::ssh2::Ssh2Shell;
pub use config::{HostKeyPolicy, KnownHostsName, SshAuth, SshConfig};
pub use counter::SshCounter;
pub use error::SshError;
pub use node_task::NodeTask;
pub use program::ControllerProgram;
pub use proxy::ProxyCommand;
pub use puppet::{OsConfiguration, OsConfigurationBuilder, OsFamily};
pub use quote::{command_line, quote};
pub use script::{LocalScript, LocalScriptBuilder};
pub use session::NodeSession;
#[cfg(any(test, feature = "mocks"))]
pub use shell::MockRemoteShell;
pub use shell::{CommandOutput, RemoteCommand, RemoteShell, RemoteShellExt, UploadOptions};
