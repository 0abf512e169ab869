//! `ControllerProgram`: a program run once on the controller for the target
//! nodes, like `fab -H hosts deploy`.

use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{Action, Context, Effects, FanOut, NodeOutcome, Result};
use tokio::process::Command;

use crate::error::{tail, STDERR_TAIL};
use crate::local::run_local;
use crate::SshError;

/// For teams migrating from Fabric: a program run once on the controller
/// with the target nodes handed to it. `{hosts}` in an argument becomes
/// `user@host:port,...` (and the `PYSCALER_HOSTS` variable holds the same
/// list; `PYSCALER_RUN_ID` the run's id). The program is started directly,
/// without a shell, so no host name can inject a command. It is killed past
/// its [`timeout`](Self::timeout); its output is each target node's output
/// in the report.
///
/// ```
/// # use std::time::Duration;
/// # use pyscaler_ssh::ControllerProgram;
/// let fab = ControllerProgram::new("fab-deploy", "fab", ["-H", "{hosts}", "deploy"])
///     .timeout(Duration::from_secs(600));
/// # let _ = fab;
/// ```
#[derive(Debug, Clone)]
pub struct ControllerProgram {
    name: String,
    program: String,
    args: Vec<String>,
    timeout: Duration,
    output_cap: usize,
}

impl ControllerProgram {
    /// `program` with `args`, as the step named `name`; bounded by one hour.
    pub fn new<I, S>(name: impl Into<String>, program: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(3600),
            output_cap: FanOut::default().output_cap,
        }
    }

    /// Bounds its run (default one hour); it is killed past it.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = after;
        self
    }

    /// How many bytes of its output the report keeps (default 64 KiB, as a fan-out).
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }
}

/// `user@host:port` of each target node with an address, comma-separated.
fn hosts(ctx: &Context) -> String {
    let hosts: Vec<String> = ctx
        .targets()
        .iter()
        .filter_map(|n| {
            let a = n.address.as_ref()?;
            let host = if a.host.contains(':') {
                format!("[{}]", a.host)
            } else {
                a.host.clone()
            };
            let user = n
                .ssh_user
                .as_ref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default();
            Some(format!("{user}{host}:{}", a.port))
        })
        .collect();
    hosts.join(",")
}

#[async_trait]
impl Action for ControllerProgram {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> Effects {
        Effects::says(format!(
            "run {} {} on the controller for the target nodes",
            self.program,
            self.args.join(" ")
        ))
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let hosts = hosts(ctx);
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.replace("{hosts}", &hosts))
            .collect();
        let shown = format!("{} {}", self.program, args.join(" "));
        let mut command = Command::new(&self.program);
        command
            .args(&args)
            .env("PYSCALER_HOSTS", &hosts)
            .env("PYSCALER_RUN_ID", ctx.run_id().as_str());
        let started = tokio::time::Instant::now();
        let result = run_local(command, self.timeout).await;
        let took = started.elapsed();
        let failed = |exit_code, stderr| SshError::LocalProgramFailed {
            program: shown.clone(),
            exit_code,
            stderr,
        };
        let (text, error) = match result {
            Err(e) => (String::new(), Some(failed(None, e.to_string()))),
            Ok(out) if out.success() => (out.combined(), None),
            Ok(out) => (
                out.combined(),
                Some(failed(out.exit_code, tail(&out.stderr, STDERR_TAIL))),
            ),
        };
        // The program ran once for all nodes: each node gets its result.
        let nodes: Vec<String> = ctx.targets().iter().map(|n| n.name.clone()).collect();
        for name in nodes {
            let outcome = match error {
                None => NodeOutcome::ok(name, format!("{}: exit 0", self.program)),
                Some(_) => NodeOutcome::failed(name, format!("{} failed", self.program)),
            };
            ctx.record_node(
                outcome
                    .with_output(text.clone(), false)
                    .cap_output(self.output_cap)
                    .with_duration(took),
            );
        }
        match error {
            None => Ok(()),
            Some(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use pyscaler_core::testing::run_step;
    use pyscaler_core::{ErrorKind, Target};

    use super::*;
    use crate::testing::ctx_with_nodes;

    #[tokio::test]
    async fn a_program_gets_the_hosts_as_one_argument() {
        let mut ctx = ctx_with_nodes(2);
        let fab = ControllerProgram::new(
            "fab",
            "sh",
            [
                "-c",
                "printf '%s|%s' \"$1\" \"$PYSCALER_HOSTS\"",
                "sh",
                "{hosts}",
            ],
        );
        let report = run_step(fab, Target::Cluster, &mut ctx).await;
        assert!(report.is_success(), "{report:?}");
        let node = &report.steps[0].nodes[1];
        assert_eq!(
            node.output.as_deref(),
            Some("10.0.0.0:22,10.0.0.1:22|10.0.0.0:22,10.0.0.1:22")
        );

        let mut ctx = ctx_with_nodes(1);
        let failing = ControllerProgram::new("fab", "sh", ["-c", "echo nope >&2; exit 5"]);
        let report = run_step(failing, Target::Cluster, &mut ctx).await;
        let error = report.error.expect("error");
        assert_eq!(error.kind, ErrorKind::RemoteCommandFailed);
        assert!(error.message.contains("status 5") && error.message.contains("nope"));
        assert!(!report.steps[0].nodes[0].succeeded);
    }

    #[tokio::test(start_paused = true)]
    async fn a_program_past_its_timeout_is_killed() {
        let mut ctx = ctx_with_nodes(1);
        let slow = ControllerProgram::new("fab", "sleep", ["30"]).timeout(Duration::from_secs(1));
        let report = run_step(slow, Target::Cluster, &mut ctx).await;
        let error = report.error.expect("error");
        assert!(
            error.message.contains("killed after 1s"),
            "{}",
            error.message
        );
    }

    #[tokio::test]
    async fn its_output_is_cut_at_its_cap() {
        let mut ctx = ctx_with_nodes(1);
        let chatty = ControllerProgram::new("fab", "sh", ["-c", "printf 0123456789"]).output_cap(4);
        let report = run_step(chatty, Target::Cluster, &mut ctx).await;
        let node = &report.steps[0].nodes[0];
        assert_eq!(
            (node.output.as_deref(), node.truncated),
            (Some("0123"), true)
        );
    }
}
