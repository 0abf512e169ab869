//! Counts the round trips pyscaler's SSH client waits for (issue 18), from
//! the log of the harness's latency proxy, against the SSH protocol's minimum.
//!
//! `round_trips [one-way-ms] [ssh]` starts an `sshd` and a
//! [`LatencyProxy`] in front of it (both on loopback, through the test
//! harness; default delay 25 ms), then on ONE node, through the proxy:
//!
//! 1. logs in and runs `true` (a node's first command);
//! 2. runs `true` again on the open session;
//! 3. uploads 100 KB (the node's first upload), then 4. uploads it again;
//!
//! and prints, for each, the round trips the proxy saw the client wait for
//! (each turn from client-to-server to server-to-client), the round trips
//! its wall time is worth (wall / twice the delay), and the protocol's
//! minimum. With `ssh` (the OpenSSH client on PATH), it counts `ssh host
//! true` too, for comparison.
//!
//! The minimums, waiting only for answers the next message needs:
//! - login, 4: the version and KEXINIT (sent together, RFC 4253 §7.1), the
//!   ECDH exchange, NEWKEYS with the `ssh-userauth` service request, a
//!   `publickey` request carrying its signature (RFC 4252 §7: the query
//!   without one is optional);
//! - a command, 2: the channel open (its request needs the server's channel
//!   number), then `exec`, whose answer, output, exit status and close come
//!   back together;
//! - an upload, 2: a channel open, then the data and its end with the
//!   request that writes it (`exec` of a writer, or SFTP's requests
//!   pipelined); on a channel opened ahead of time, 1.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyscaler_core::{Node, NodeAddress};
use pyscaler_ssh::{
    HostKeyPolicy, RemoteCommand, RemoteShell, Ssh2Shell, SshConfig, UploadOptions,
};
use pyscaler_testkit::latency::{round_trips, LatencyProxy};
use pyscaler_testkit::sshd::Sshd;

type Failure = String;

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("round_trips: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One measured phase.
struct Phase {
    name: &'static str,
    waited: usize,
    wall: Duration,
    minimum: usize,
}

fn real_main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let one_way = match args.first() {
        Some(ms) => Duration::from_millis(ms.parse().map_err(|e| format!("delay {ms:?}: {e}"))?),
        None => Duration::from_millis(25),
    };
    let with_ssh = args.get(1).is_some_and(|a| a == "ssh");
    let sshd = Sshd::start();
    let proxy = LatencyProxy::start(&[sshd.port()], one_way);
    let port = proxy.ports()[0];
    let dir = sshd.dir().to_path_buf();
    let known_hosts = dir.join("round_trips_known_hosts");
    let line = sshd
        .known_hosts_line("ssh-ed25519")
        .replace(&format!(":{} ", sshd.port()), &format!(":{port} "));
    std::fs::write(&known_hosts, &line).map_err(|e| format!("write known_hosts: {e}"))?;
    let config = SshConfig::new(sshd.user())
        .with_key_file(sshd.client_key().to_path_buf())
        .with_port(port)
        .with_host_keys(HostKeyPolicy::Strict)
        .with_known_hosts(known_hosts.clone());
    let shell = Arc::new(Ssh2Shell::new(config).map_err(|e| e.to_string())?);
    let node = Node::new("h0000", "h0000").with_address(NodeAddress::new("127.0.0.1"));
    let payload: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut phases = Vec::new();
    runtime.block_on(async {
        let true_ = RemoteCommand::new("true");
        let exec = || async { shell.exec(&node, &true_).await.map(drop) };
        let upload = || async {
            shell
                .upload(
                    &node,
                    "rt-probe.bin",
                    payload.clone(),
                    UploadOptions::mode(0o644),
                )
                .await
        };
        phases.push(measure(&proxy, "login + `true`", 4 + 2, exec()).await?);
        phases.push(measure(&proxy, "`true` on the open session", 2, exec()).await?);
        phases.push(measure(&proxy, "upload 100 KB (first)", 2, upload()).await?);
        phases.push(measure(&proxy, "upload 100 KB (again)", 2, upload()).await?);
        shell.disconnect(&node).await;
        Ok::<(), Failure>(())
    })?;

    let rtt = one_way * 2;
    println!(
        "pyscaler's SSH client through the latency proxy, one-way delay {} ms (round trip {} ms)\n",
        one_way.as_millis(),
        rtt.as_millis()
    );
    println!("| phase | round trips waited (proxy log) | wall ms | wall / round trip | protocol minimum |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for p in &phases {
        println!(
            "| {} | {} | {:.0} | {:.1} | {} |",
            p.name,
            p.waited,
            p.wall.as_secs_f64() * 1000.0,
            p.wall.as_secs_f64() / rtt.as_secs_f64(),
            p.minimum
        );
    }
    if with_ssh {
        let ssh = openssh_true(&proxy, &sshd, &dir, &known_hosts, port)?;
        println!(
            "| OpenSSH `ssh host true` (login + `true`) | {} | {:.0} | {:.1} | {} |",
            ssh.waited,
            ssh.wall.as_secs_f64() * 1000.0,
            ssh.wall.as_secs_f64() / rtt.as_secs_f64(),
            ssh.minimum
        );
    }
    Ok(())
}

/// Runs `op`, and counts the round trips the proxy saw during it.
async fn measure<F, T, E>(
    proxy: &LatencyProxy,
    name: &'static str,
    minimum: usize,
    op: F,
) -> Result<Phase, Failure>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    // Let the previous phase's last segments through first.
    tokio::time::sleep(proxy.delay() * 3).await;
    let from = proxy.now();
    let started = Instant::now();
    op.await.map_err(|e| format!("{name}: {e}"))?;
    let wall = started.elapsed();
    let to = proxy.now();
    Ok(Phase {
        name,
        waited: round_trips(&proxy.segments_between(from, to)),
        wall,
        minimum,
    })
}

/// `ssh true` through the proxy, as OpenSSH does it.
fn openssh_true(
    proxy: &LatencyProxy,
    sshd: &Sshd,
    dir: &Path,
    known_hosts: &Path,
    port: u16,
) -> Result<Phase, Failure> {
    std::thread::sleep(proxy.delay() * 3);
    let from = proxy.now();
    let started = Instant::now();
    let status = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-p",
            &port.to_string(),
            "-l",
            sshd.user(),
        ])
        .arg("-i")
        .arg(sshd.client_key())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "127.0.0.1",
            "true",
        ])
        .current_dir(dir)
        .status()
        .map_err(|e| format!("run ssh: {e}"))?;
    let wall = started.elapsed();
    if !status.success() {
        return Err(format!("ssh through the proxy failed: {status}"));
    }
    std::thread::sleep(proxy.delay() * 3);
    let to = proxy.now();
    Ok(Phase {
        name: "OpenSSH",
        waited: round_trips(&proxy.segments_between(from, to)),
        wall,
        minimum: 4 + 2,
    })
}
