//! `local_stack`: starts moto, a host of its own for every instance moto
//! launches (or one loopback sshd for all, `--one-sshd`), aiosmtpd and
//! Prometheus (with its Pushgateway) for the demo, writes the example's
//! config and an environment file, keeps a list of the running node hosts
//! (`--nodes-file`: one `instance-id address hostname netns` line each), and
//! keeps it all running until interrupted (SIGINT or SIGTERM).
//!
//! ```text
//! local_stack --env-file target/services/demo.env --nodes-file target/demo/nodes.txt
//! ```

use std::path::PathBuf;

use clap::Parser;
use pyscaler_demo::{Balancing, Hosts, LocalStack};

#[derive(Debug, Parser)]
#[command(about = "Run the local stack of the Tomcat cluster demo")]
struct Args {
    /// Where to write `KEY=value` lines for the demo script (config path, ports, credentials).
    #[arg(long, default_value = "target/services/demo.env")]
    env_file: PathBuf,
    /// Where to keep the list of running node hosts (rewritten as they come and go).
    #[arg(long, default_value = "target/services/demo-nodes.txt")]
    nodes_file: PathBuf,
    /// One loopback sshd for every instance instead of a host of its own each.
    #[arg(long)]
    one_sshd: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let hosts = if args.one_sshd {
        Hosts::OneSshd
    } else {
        Hosts::OwnHost
    };
    let stack = LocalStack::start_with_hosts(Balancing::default(), hosts).await;
    let mut lines = vec![
        format!("PYSCALER_CONFIG={}", stack.config.display()),
        format!("MOTO_URL={}", stack.moto.endpoint_url()),
        format!("SSH_USER={}", stack.user()),
        format!("SSH_KEY={}", stack.client_key().display()),
        format!("KNOWN_HOSTS={}", stack.known_hosts().display()),
        format!("NODES_FILE={}", args.nodes_file.display()),
        format!("MAILDIR={}", stack.smtp.maildir().display()),
        format!("PROMETHEUS_URL={}", stack.prometheus.endpoint_url()),
        format!("PUSHGATEWAY_URL={}", stack.prometheus.gateway_url()),
        format!("LOAD_METRIC={}", pyscaler_demo::LOAD_METRIC),
        format!("PYSCALER_METRICS_LISTEN={}", stack.metrics_addr),
        format!("SERVICE_LOGS={}", stack.dir.display()),
    ];
    lines.extend(stack.env().into_iter().map(|(k, v)| format!("{k}={v}")));
    write_atomically(&args.nodes_file, "")?;
    write_atomically(&args.env_file, &(lines.join("\n") + "\n"))?;
    let hosts = match stack.hosts() {
        Hosts::OwnHost => format!(
            "a host of its own per instance (subnets {} and {}, log {})",
            stack.nodes().subnet_cidr(0),
            stack.nodes().subnet_cidr(1),
            stack.nodes().log().display()
        ),
        Hosts::OneSshd => format!("one sshd for all at 127.0.0.1:{}", stack.sshd().port()),
    };
    println!(
        "local stack up: moto {}, {hosts}, smtp 127.0.0.1:{}, prometheus {}",
        stack.moto.endpoint_url(),
        stack.smtp.port(),
        stack.prometheus.endpoint_url()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(300));
    let mut listed = String::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if stack.hosts() == Hosts::OwnHost {
                    let now: String = stack
                        .nodes()
                        .nodes()
                        .iter()
                        .map(|n| {
                            format!(
                                "{} {} {} {}\n",
                                n.instance_id(),
                                n.address(),
                                n.hostname(),
                                n.netns()
                            )
                        })
                        .collect();
                    if now != listed {
                        write_atomically(&args.nodes_file, &now)?;
                        listed = now;
                    }
                }
            }
        }
    }
    println!("local stack: stopping");
    let _ = std::fs::remove_file(&args.env_file);
    let _ = std::fs::remove_file(&args.nodes_file);
    drop(stack);
    Ok(())
}

/// Writes `text` to `path` through a temporary file, so a reader never sees half of it.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
