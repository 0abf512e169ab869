//! Starts one OpenSSH `sshd` on a free loopback port through the project's
//! test harness (`pyscaler_testkit::sshd::Sshd`), for the SSH fan-out
//! benchmark (`benches/ssh_fanout/run`).
//!
//! `bench_sshd <env-file>` writes `port=`, `user=`, `key=` and
//! `known_hosts=` lines to `<env-file>` once sshd listens, then waits for
//! SIGTERM or SIGINT and stops sshd.

use std::path::PathBuf;
use std::process::ExitCode;

use pyscaler_testkit::sshd::Sshd;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let Some(env_file) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: bench_sshd <env-file>");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_sshd: cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Signal handlers first, so a stop that comes right after start is not lost.
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("bench_sshd: cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let sshd = Sshd::start();
        let contents = format!(
            "port={}\nuser={}\nkey={}\nknown_hosts={}",
            sshd.port(),
            sshd.user(),
            sshd.client_key().display(),
            sshd.known_hosts_line("ssh-ed25519")
        );
        // Written beside, then renamed: the script never reads half a file.
        let partial = env_file.with_extension("partial");
        if let Err(e) =
            std::fs::write(&partial, contents).and_then(|()| std::fs::rename(&partial, &env_file))
        {
            eprintln!("bench_sshd: cannot write {}: {e}", env_file.display());
            return ExitCode::FAILURE;
        }
        eprintln!(
            "bench_sshd: sshd on 127.0.0.1:{}, log {}",
            sshd.port(),
            sshd.log().display()
        );
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        drop(sshd);
        ExitCode::SUCCESS
    })
}
