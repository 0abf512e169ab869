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
    let start = || {
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
        pyscaler_benches::write_whole(&env_file, &contents)?;
        for sshd in &all {
            eprintln!(
                "bench_sshd: sshd on 127.0.0.1:{}, log {}",
                sshd.port(),
                sshd.log().display()
            );
        }
        Ok(all)
    };
    pyscaler_benches::serve_until_signalled("bench_sshd", start, drop)
}
