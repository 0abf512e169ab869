//! `SshCounter`: a counter read on each node over SSH, for threshold triggers.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use pyscaler_core::{Cluster, Error, MetricSource, Result, Sample};

use crate::{RemoteCommand, RemoteShell, RemoteShellExt, SshError};

/// Turns a command's stdout into a number.
type CounterParser = Arc<dyn Fn(&str) -> Option<f64> + Send + Sync>;

/// The first word of `text` that reads as a number (`0.52` in `/proc/loadavg`).
fn first_number(text: &str) -> Option<f64> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .find_map(|w| w.parse::<f64>().ok().filter(|v| v.is_finite()))
}

/// A [`MetricSource`] that runs a command on each node of the cluster and
/// reads a number from its output: the load average, free memory, a JVM
/// counter printed by a script.
///
/// Nodes that cannot be read are left out of the sample (and logged); when
/// none can be read, sampling fails and the trigger does not fire.
///
/// ```
/// # use std::sync::Arc;
/// # use pyscaler_ssh::{Ssh2Shell, SshConfig, SshCounter};
/// # fn demo() -> Result<(), pyscaler_ssh::SshError> {
/// let shell = Arc::new(Ssh2Shell::new(SshConfig::new("admin"))?);
/// let load = SshCounter::load_average(shell.clone());
/// let sessions = SshCounter::new("tomcat-sessions", shell, "/opt/bin/jmx-get activeSessions")
///     .parse_with(|out| out.trim().strip_prefix("activeSessions=")?.parse().ok());
/// # let _ = (load, sessions); Ok(()) }
/// ```
pub struct SshCounter {
    name: String,
    shell: Arc<dyn RemoteShell>,
    command: RemoteCommand,
    parse: CounterParser,
    concurrency: usize,
}

impl std::fmt::Debug for SshCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshCounter")
            .field("name", &self.name)
            .field("command", &self.command.line())
            .finish_non_exhaustive()
    }
}

impl SshCounter {
    /// A counter named `name` read by running `command`; the first number it prints is the value.
    pub fn new(
        name: impl Into<String>,
        shell: Arc<dyn RemoteShell>,
        command: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            shell,
            command: RemoteCommand::new(command),
            parse: Arc::new(first_number),
            concurrency: 32,
        }
    }

    /// The one-minute load average (`/proc/loadavg`).
    pub fn load_average(shell: Arc<dyn RemoteShell>) -> Self {
        Self::new("load1", shell, "cat /proc/loadavg")
    }

    /// Reads the value with `parse` instead of taking the first number.
    pub fn parse_with(
        mut self,
        parse: impl Fn(&str) -> Option<f64> + Send + Sync + 'static,
    ) -> Self {
        self.parse = Arc::new(parse);
        self
    }

    /// How many nodes are read at once (default 32).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Runs the command as it is given (a [`RemoteCommand`] with sudo, env or a timeout).
    pub fn with_command(mut self, command: RemoteCommand) -> Self {
        self.command = command;
        self
    }
}

#[async_trait]
impl MetricSource for SshCounter {
    fn name(&self) -> &str {
        &self.name
    }

    async fn sample(&self, cluster: &Cluster) -> Result<Vec<Sample>> {
        let results: Vec<(String, std::result::Result<f64, SshError>)> =
            stream::iter(cluster.nodes().iter().cloned())
                .map(|node| async move {
                    let value = match self.shell.run_checked(&node, &self.command).await {
                        Ok(out) => (self.parse)(&out.stdout).ok_or_else(|| SshError::NotANumber {
                            command: self.command.line().to_owned(),
                            output: crate::error::shorten(out.stdout.trim()),
                        }),
                        Err(e) => Err(e),
                    };
                    (node.name, value)
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        let mut samples = Vec::new();
        let mut first_error = None;
        for (node, value) in results {
            match value {
                Ok(value) => samples.push(Sample::new(node, value)),
                Err(e) => {
                    tracing::warn!(counter = %self.name, node = %node, error = %e,
                        "Could not read the counter on a node.");
                    first_error.get_or_insert((node, e));
                }
            }
        }
        match first_error {
            Some((node, e)) if samples.is_empty() => Err(Error::from(e).on_node(node)),
            _ => Ok(samples),
        }
    }
}

#[cfg(test)]
mod tests {
    use pyscaler_core::{ErrorKind, Node, NodeAddress};

    use super::*;
    use crate::testing::output;
    use crate::MockRemoteShell;

    fn cluster(n: usize) -> Cluster {
        Cluster::new("web").with_nodes((0..n).map(|i| {
            Node::new(format!("i-{i}"), format!("web-{i}"))
                .with_address(NodeAddress::new(format!("10.0.0.{i}")))
        }))
    }

    #[test]
    fn the_first_number_is_read() {
        assert_eq!(first_number("0.52 0.58 0.59 1/467 1234\n"), Some(0.52));
        assert_eq!(first_number("load: 3,7"), Some(3.0));
        assert_eq!(first_number("none here"), None);
        assert_eq!(first_number("NaN 2"), Some(2.0));
    }

    #[tokio::test]
    async fn unreadable_nodes_are_left_out() {
        let mut shell = MockRemoteShell::new();
        shell.expect_exec().returning(|node, cmd| {
            assert_eq!(cmd.line(), "cat /proc/loadavg");
            Ok(match node.name.as_str() {
                "web-0" => output("1.50 1.00 0.50 1/100 99\n", "", 0),
                "web-1" => output("garbage\n", "", 0),
                _ => output("", "No such file\n", 1),
            })
        });
        let counter = SshCounter::load_average(Arc::new(shell));
        let samples = counter.sample(&cluster(3)).await.expect("one node read");
        assert_eq!(samples, vec![Sample::new("web-0", 1.5)]);
    }

    #[tokio::test]
    async fn no_readable_node_is_an_error_naming_one() {
        let mut shell = MockRemoteShell::new();
        shell
            .expect_exec()
            .returning(|_, _| Ok(output("sessions=n/a\n", "", 0)));
        let counter = SshCounter::new("sessions", Arc::new(shell), "jmx-get")
            .parse_with(|out| out.trim().strip_prefix("sessions=")?.parse().ok());
        let e = counter.sample(&cluster(2)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unexpected);
        assert!(e.node().is_some());
        assert!(e.to_string().contains("sessions=n/a"), "{e}");
    }
}
