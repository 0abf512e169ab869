//! `local_stack`: starts moto, a loopback sshd, aiosmtpd and Prometheus (with
//! its Pushgateway) for the demo,
//! writes the example's config and an environment file, and keeps them
//! running until interrupted (SIGINT or SIGTERM).
//!
//! ```text
//! local_stack --env-file target/services/demo.env
//! ```

use std::path::PathBuf;

use clap::Parser;
use pyscaler_demo::LocalStack;

#[derive(Debug, Parser)]
#[command(about = "Run the local stack of the Tomcat cluster demo")]
struct Args {
    /// Where to write `KEY=value` lines for the demo script (config path, ports, credentials).
    #[arg(long, default_value = "target/services/demo.env")]
    env_file: PathBuf,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let stack = LocalStack::start().await;
    let mut lines = vec![
        format!("PYSCALER_CONFIG={}", stack.config.display()),
        format!("MOTO_URL={}", stack.moto.endpoint_url()),
        format!("SSH_PORT={}", stack.sshd.port()),
        format!("SSH_USER={}", stack.sshd.user()),
        format!("SSH_KEY={}", stack.sshd.client_key().display()),
        format!("MAILDIR={}", stack.smtp.maildir().display()),
        format!("PROMETHEUS_URL={}", stack.prometheus.endpoint_url()),
        format!("PUSHGATEWAY_URL={}", stack.prometheus.gateway_url()),
        format!("LOAD_METRIC={}", pyscaler_demo::LOAD_METRIC),
        format!("PYSCALER_METRICS_LISTEN={}", stack.metrics_addr),
        format!("SERVICE_LOGS={}", stack.dir.display()),
    ];
    lines.extend(stack.env().into_iter().map(|(k, v)| format!("{k}={v}")));
    let tmp = args.env_file.with_extension("tmp");
    if let Some(dir) = args.env_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&tmp, lines.join("\n") + "\n")?;
    std::fs::rename(&tmp, &args.env_file)?;
    println!(
        "local stack up: moto {}, sshd 127.0.0.1:{}, smtp 127.0.0.1:{}, prometheus {}",
        stack.moto.endpoint_url(),
        stack.sshd.port(),
        stack.smtp.port(),
        stack.prometheus.endpoint_url()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("local stack: stopping");
    let _ = std::fs::remove_file(&args.env_file);
    drop(stack);
    Ok(())
}
