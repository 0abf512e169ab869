//! Starts OpenSSH `sshd` servers on free loopback ports through the
//! project's test harness (`pyscaler_testkit::sshd::Sshd`), for the SSH
//! fan-out benchmark (`benches/ssh_fanout/run`).
//!
//! `bench_sshd <env-file> [servers] [max-startups]` starts `servers`
//! (default 1) servers sharing one host key and one client key, each
//! letting up to `max-startups` (default 1000) connections wait for their
//! login at once. Once all listen it writes `ports=` (comma-separated),
//! `user=`, `key=` (the client key) and `host_key=` (`ssh-ed25519 <base64>`,
//! the same on every server) to `<env-file>`, then waits for SIGTERM or
//! SIGINT and stops them. The benchmark's inventory is made from `ports=`:
//! nothing else reads them.

use std::path::PathBuf;
use std::process::ExitCode;

use pyscaler_testkit::sshd::Sshd;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("usage: bench_sshd <env-file> [servers] [max-startups]");
        ExitCode::from(2)
    };
    let Some(env_file) = args.first().map(PathBuf::from) else {
        return usage();
    };
    let number = |i: usize, default: u32| match args.get(i) {
        Some(n) => n.parse::<u32>().ok().filter(|n| *n > 0),
        None => Some(default),
    };
    let (Some(servers), Some(max_startups)) = (number(1, 1), number(2, 1000)) else {
        return usage();
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
        let first = Sshd::builder().max_startups(max_startups).start();
        let mut all = vec![first];
        for _ in 1..servers {
            let next = Sshd::builder()
                .max_startups(max_startups)
                .same_keys_as(&all[0])
                .start();
            all.push(next);
        }
        let ports: Vec<String> = all.iter().map(|s| s.port().to_string()).collect();
        // "[127.0.0.1]:<port> ssh-ed25519 <base64>": the key without the address,
        // which the inventory decides.
        let known = all[0].known_hosts_line("ssh-ed25519");
        let host_key = known.split_once(' ').map_or("", |(_, key)| key.trim());
        let contents = format!(
            "ports={}\nuser={}\nkey={}\nhost_key={host_key}\n",
            ports.join(","),
            all[0].user(),
            all[0].client_key().display(),
        );
        // Written beside, then renamed: the script never reads half a file.
        let partial = env_file.with_extension("partial");
        if let Err(e) =
            std::fs::write(&partial, contents).and_then(|()| std::fs::rename(&partial, &env_file))
        {
            eprintln!("bench_sshd: cannot write {}: {e}", env_file.display());
            return ExitCode::FAILURE;
        }
        for sshd in &all {
            eprintln!(
                "bench_sshd: sshd on 127.0.0.1:{}, log {}",
                sshd.port(),
                sshd.log().display()
            );
        }
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        drop(all);
        ExitCode::SUCCESS
    })
}
