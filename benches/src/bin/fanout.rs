//! pyscaler's side of the SSH fan-out benchmark (`benches/ssh_fanout/run`).
//!
//! `fanout <env-file> <workload> [hosts] [file]` reads the sshd written by
//! `bench_sshd` and runs, with [`Ssh2Shell`] and at most 100 nodes at once:
//!
//! - `a`: `true` on each of `hosts` nodes (default 100), each its own session;
//! - `b`: on each node, upload `file` (100 KB), then five commands;
//! - `c`: 100 consecutive `true` over one reused session (after logging in).
//!
//! Every node is a distinct [`Node`] (`h000`, `h001`, ...) at 127.0.0.1, so
//! each gets its own SSH session, as 100 machines would. Host keys are
//! checked strictly against the benchmark's `known_hosts` file. It prints
//! `op_wall=<seconds>` (the fan-out alone, without process start) and, for
//! `c`, `per_command_ms=<milliseconds>`; any failure exits non-zero.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use pyscaler_core::{Node, NodeAddress};
use pyscaler_ssh::{
    HostKeyPolicy, RemoteCommand, RemoteShell, Ssh2Shell, SshConfig, UploadOptions,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// At most this many nodes are worked on at once.
const CONCURRENCY: usize = 100;

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
    let (Some(env_file), Some(workload)) = (args.first(), args.get(1)) else {
        return Err("usage: fanout <env-file> <a|b|c> [hosts] [file]".into());
    };
    let hosts: usize = match args.get(2) {
        Some(n) => n.parse().map_err(|e| format!("hosts {n:?}: {e}"))?,
        None => 100,
    };
    let env = read_env(Path::new(env_file))?;
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .ok_or_else(|| format!("{env_file} has no {k}="))
    };
    let port: u16 = get("port")?.parse().map_err(|e| format!("port: {e}"))?;
    let known_hosts = Path::new(env_file).with_file_name("pyscaler_known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", get("known_hosts")?))
        .map_err(|e| format!("write {}: {e}", known_hosts.display()))?;
    let config = SshConfig::new(get("user")?)
        .with_key_file(PathBuf::from(get("key")?))
        .with_port(port)
        .with_host_keys(HostKeyPolicy::Strict)
        .with_known_hosts(known_hosts);
    let shell = Arc::new(Ssh2Shell::new(config).map_err(|e| e.to_string())?);
    let nodes: Vec<Node> = (0..hosts)
        .map(|i| {
            let name = format!("h{i:03}");
            Node::new(name.clone(), name).with_address(NodeAddress::new("127.0.0.1"))
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(CONCURRENCY + 16)
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        match workload.as_str() {
            "a" => {
                fan_out(&shell, nodes, |shell, node| async move {
                    exec_ok(&shell, &node, "true").await.map(drop)
                })
                .await
            }
            "b" => {
                let file = args.get(3).ok_or("workload b needs the file to upload")?;
                let contents =
                    Arc::new(std::fs::read(file).map_err(|e| format!("read {file}: {e}"))?);
                fan_out(&shell, nodes, move |shell, node| {
                    let contents = contents.clone();
                    async move { task_b(&shell, &node, &contents).await }
                })
                .await
            }
            "c" => consecutive(&shell, &nodes[0]).await,
            other => Err(format!("unknown workload {other:?} (a, b or c)")),
        }
    })
}

/// Runs `op` on every node, at most [`CONCURRENCY`] at once, and prints the wall time.
async fn fan_out<F, Fut>(shell: &Arc<Ssh2Shell>, nodes: Vec<Node>, op: F) -> Result<(), Failure>
where
    F: Fn(Arc<Ssh2Shell>, Node) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for node in nodes {
        let work = op(shell.clone(), node.clone());
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            work.await.map_err(|e| format!("{}: {e}", node.name))
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("a task failed: {e}")),
        }
    }
    let wall = started.elapsed();
    if !failures.is_empty() {
        return Err(format!(
            "{} node(s) failed, first: {}",
            failures.len(),
            failures[0]
        ));
    }
    println!("op_wall={:.4}", wall.as_secs_f64());
    Ok(())
}

/// Upload 100 KB, then five commands, the first of which checks the upload.
async fn task_b(shell: &Ssh2Shell, node: &Node, contents: &[u8]) -> Result<(), Failure> {
    let path = format!("bench-pyscaler-{}.bin", node.name);
    shell
        .upload(node, &path, contents.to_vec(), UploadOptions::mode(0o644))
        .await
        .map_err(|e| e.to_string())?;
    let size = exec_ok(shell, node, &format!("wc -c < {path}")).await?;
    if size.trim() != contents.len().to_string() {
        return Err(format!(
            "uploaded {} bytes, the node has {size:?}",
            contents.len()
        ));
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
async fn consecutive(shell: &Ssh2Shell, node: &Node) -> Result<(), Failure> {
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
async fn exec_ok(shell: &Ssh2Shell, node: &Node, line: &str) -> Result<String, Failure> {
    let out = shell
        .exec(node, &RemoteCommand::new(line))
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "`{line}`: {}: {}",
            out.status_line(),
            out.stderr.trim()
        ))
    }
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
