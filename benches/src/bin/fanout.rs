//! pyscaler's side of the SSH fan-out benchmark (`benches/ssh_fanout/run`).
//!
//! `fanout <work-dir> <workload> [hosts] [concurrency]` runs, with
//! [`Ssh2Shell`] under the engine's own [`FanOut`] (one pipeline step whose
//! target is the cluster of `hosts` nodes, default 100):
//!
//! - `a`: `true` on each node, each its own session;
//! - `b`: on each node, upload `<work-dir>/payload.bin` (100 KB), then five commands;
//! - `c`: 100 consecutive `true` over one reused session (after logging in).
//!
//! `concurrency` is how many nodes at once: `default` (the default,
//! [`FanOut::default`]'s, 32) or a number. The nodes are the first `hosts`
//! rows of the inventory `<work-dir>/hosts.tsv` (`name<TAB>address<TAB>port`,
//! written by the run script; every tool reads it, so a proxy in front of the
//! servers only rewrites that file): each is a distinct [`Node`] at its own
//! address and port, so each gets its own SSH session, as 1,000 machines
//! would. The login user and key come from `<work-dir>/env` (written by
//! `bench_sshd`); host keys are checked strictly against
//! `<work-dir>/home/.ssh/known_hosts`, also made from the inventory. It
//! prints `concurrency=<n>`, `op_wall=<seconds>` (the fan-out alone, without
//! process start) and, for `c`, `per_command_ms=<milliseconds>`; any failure
//! exits non-zero.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use pyscaler_core::{
    async_trait, Action, ActionExt, Cluster, Context, Error, ErrorKind, FanOut, Node, NodeAddress,
    NodeOutcome, Pipeline, Target,
};
use pyscaler_ssh::{
    HostKeyPolicy, RemoteCommand, RemoteShell, Ssh2Shell, SshConfig, UploadOptions,
};

/// Consecutive commands of workload `c`.
const CONSECUTIVE: u32 = 100;

type Failure = String;

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(work), Some(workload)) = (args.first().map(Path::new), args.get(1)) else {
        return Err("usage: fanout <work-dir> <a|b|c> [hosts] [default|concurrency]".into());
    };
    let hosts: usize = match args.get(2) {
        Some(n) => n.parse().map_err(|e| format!("hosts {n:?}: {e}"))?,
        None => 100,
    };
    let fan_out = match args.get(3).map(String::as_str) {
        None | Some("default") => FanOut::default(),
        Some(n) => FanOut::new().concurrency(
            n.parse()
                .map_err(|e| format!("concurrency {n:?} (default or a number): {e}"))?,
        ),
    };
    let env = read_env(&work.join("env"))?;
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .ok_or_else(|| format!("{}/env has no {k}=", work.display()))
    };
    let config = SshConfig::new(get("user")?)
        .with_key_file(PathBuf::from(get("key")?))
        .with_host_keys(HostKeyPolicy::Strict)
        .with_known_hosts(work.join("home/.ssh/known_hosts"));
    let shell = Arc::new(Ssh2Shell::new(config).map_err(|e| e.to_string())?);
    let nodes = read_inventory(&work.join("hosts.tsv"), hosts)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // ssh2 blocks: each node at work holds a blocking thread.
        .max_blocking_threads(fan_out.concurrency + 16)
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let kind = match workload.as_str() {
            "a" => Workload::True,
            "b" => {
                let file = work.join("payload.bin");
                let contents =
                    std::fs::read(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
                Workload::Upload(Arc::new(contents))
            }
            "c" => {
                let first = nodes.first().ok_or("the inventory has no host")?;
                return consecutive(&shell, first).await.map_err(|e| e.to_string());
            }
            other => return Err(format!("unknown workload {other:?} (a, b or c)")),
        };
        println!("concurrency={}", fan_out.concurrency);
        let step = OnEachNode {
            shell,
            kind,
            fan_out,
        };
        let pipeline = Pipeline::builder("ssh-fanout")
            .step(step.on(Target::Cluster))
            .build()
            .map_err(|e| e.to_string())?;
        let mut ctx = Context::new(Cluster::new("bench").with_nodes(nodes));
        let started = Instant::now();
        let report = pipeline.run(&mut ctx).await;
        let wall = started.elapsed();
        if !report.is_success() {
            return Err(report.to_string());
        }
        println!("op_wall={:.4}", wall.as_secs_f64());
        Ok(())
    })
}

/// What workloads a and b do on each node.
enum Workload {
    /// `true`.
    True,
    /// Upload these bytes, then five commands.
    Upload(Arc<Vec<u8>>),
}

/// The benchmark's one pipeline step: the workload on every node, through [`FanOut`].
struct OnEachNode {
    shell: Arc<Ssh2Shell>,
    kind: Workload,
    fan_out: FanOut,
}

#[async_trait]
impl Action for OnEachNode {
    fn name(&self) -> &str {
        "on-each-node"
    }

    async fn run(&self, ctx: &mut Context) -> pyscaler_core::Result<()> {
        self.fan_out
            .run(ctx, |node, _| async move {
                match &self.kind {
                    Workload::True => exec_ok(&self.shell, &node, "true").await.map(drop)?,
                    Workload::Upload(contents) => task_b(&self.shell, &node, contents).await?,
                }
                Ok(NodeOutcome::ok(&node.name, "done"))
            })
            .await
    }
}

/// Upload 100 KB, then five commands, the first of which checks the upload.
async fn task_b(shell: &Ssh2Shell, node: &Node, contents: &[u8]) -> Result<(), Error> {
    let path = format!("bench-pyscaler-{}.bin", node.name);
    shell
        .upload(node, &path, contents.to_vec(), UploadOptions::mode(0o644))
        .await?;
    let size = exec_ok(shell, node, &format!("wc -c < {path}")).await?;
    if size.trim() != contents.len().to_string() {
        return Err(failed(format!(
            "uploaded {} bytes, the node has {size:?}",
            contents.len()
        )));
    }
    for line in [
        "uname -r",
        "id -u",
        &format!("ls -l {path}"),
        &format!("rm -f {path}"),
    ] {
        exec_ok(shell, node, line).await?;
    }
    Ok(())
}

/// Workload c: log in once, then time [`CONSECUTIVE`] commands on that session.
async fn consecutive(shell: &Ssh2Shell, node: &Node) -> Result<(), Error> {
    exec_ok(shell, node, "true").await?;
    let started = Instant::now();
    for _ in 0..CONSECUTIVE {
        exec_ok(shell, node, "true").await?;
    }
    let wall = started.elapsed();
    println!("op_wall={:.4}", wall.as_secs_f64());
    println!(
        "per_command_ms={:.3}",
        wall.as_secs_f64() * 1000.0 / f64::from(CONSECUTIVE)
    );
    Ok(())
}

/// Runs `line` and returns its stdout; a non-zero exit is a failure.
async fn exec_ok(shell: &Ssh2Shell, node: &Node, line: &str) -> Result<String, Error> {
    let out = shell.exec(node, &RemoteCommand::new(line)).await?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(failed(format!(
            "`{line}`: {}: {}",
            out.status_line(),
            out.stderr.trim()
        )))
    }
}

/// A node's failure that is not the shell's: a command's exit, a wrong size.
fn failed(message: String) -> Error {
    Error::other(ErrorKind::RemoteCommandFailed, message)
}

/// The first `hosts` rows of the inventory (`name<TAB>address<TAB>port`), as nodes.
fn read_inventory(path: &Path, hosts: usize) -> Result<Vec<Node>, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let nodes = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(hosts)
        .map(|line| {
            let bad = || {
                format!(
                    "{}: not name<TAB>address<TAB>port: {line:?}",
                    path.display()
                )
            };
            let mut fields = line.split('\t');
            let (Some(name), Some(host), Some(port), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad());
            };
            let port: u16 = port.trim().parse().map_err(|_| bad())?;
            // Port 22 would mean "the configured port" to Ssh2Shell: the servers are never there.
            if port == 22 {
                return Err(format!("{}: port 22 is not a bench server", path.display()));
            }
            Ok(Node::new(name, name).with_address(NodeAddress::new(host).with_port(port)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.len() < hosts {
        return Err(format!(
            "{} has {} hosts, {hosts} asked for",
            path.display(),
            nodes.len()
        ));
    }
    Ok(nodes)
}

/// `key=value` lines.
fn read_env(path: &Path) -> Result<HashMap<String, String>, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}
