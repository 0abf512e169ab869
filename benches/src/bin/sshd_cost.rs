//! What one local sshd spends, in CPU, on each thing a fan-out asks of it
//! (issue 18: why sshd spent 6.2 s for pyscaler against 5.2 s for
//! parallel-ssh in workload (b)).
//!
//! `sshd_cost [n]` (default 50) starts an sshd through the harness and, one
//! phase after another, asks it `n` times for: a login and `true`
//! (`Ssh2Shell`, a new node each time); `true` on an open session (and on
//! a bare libssh2 session, as parallel-ssh's `run_command`); a 100 KB
//! upload over SFTP as `Ssh2Shell` does it (a temporary name, its mode set,
//! the target unlinked, then renamed: six requests); the same upload through
//! the shell (`cat`, `chmod`, `mv`; to a server without SFTP, as on a link
//! whose round trips are dear); and the same upload over SFTP as
//! parallel-ssh's `copy_file` does it (a new SFTP session, open, write,
//! close: three requests, on a bare libssh2 session). The sshd CPU of a phase is that of a cgroup
//! v1 cpuacct group holding the listener and all it forks (so it needs
//! root), read once every session of the phase has ended. It
//! prints a table (ms of sshd CPU per operation, the login of a reused
//! session taken out), and the algorithms each client negotiates.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pyscaler_core::{Node, NodeAddress};
use pyscaler_ssh::{RemoteCommand, RemoteShell, Ssh2Shell, SshConfig, UploadOptions};
use pyscaler_testkit::sshd::Sshd;

type Failure = String;

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sshd_cost: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A cgroup v1 cpuacct group holding one sshd listener, so every process
/// it forks (sessions, shells, sftp-server) is counted; removed on drop.
struct CpuGroup(std::path::PathBuf);

impl CpuGroup {
    fn holding(pid: u32) -> Result<Self, Failure> {
        let dir = Path::new("/sys/fs/cgroup/cpuacct")
            .join(format!("pyscaler-sshd-cost-{}-{pid}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| {
            format!(
                "create {}: {e} (needs root and a cgroup v1 cpuacct hierarchy)",
                dir.display()
            )
        })?;
        let group = Self(dir);
        std::fs::write(group.0.join("tasks"), pid.to_string())
            .map_err(|e| format!("move sshd {pid} into {}: {e}", group.0.display()))?;
        Ok(group)
    }

    /// The group's CPU seconds so far.
    fn seconds(&self) -> Result<f64, Failure> {
        let path = self.0.join("cpuacct.usage");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let nanos: u64 = text
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(nanos as f64 / 1e9)
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // Its tasks move back to the root group first (a group with tasks cannot go).
        if let Ok(tasks) = std::fs::read_to_string(self.0.join("tasks")) {
            for pid in tasks.split_whitespace() {
                let _ = std::fs::write("/sys/fs/cgroup/cpuacct/tasks", pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Waits (at most 20 s) until the listener has no child left: every
/// session of the phase ended and was reaped.
fn sessions_gone(pid: u32) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .map_err(|e| format!("read the children of {pid}: {e}"))?;
        if children.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("sshd {pid} still has sessions: {children}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Server {
    sshd: Sshd,
    known_hosts: tempfile::TempDir,
    cpu: CpuGroup,
}

impl Server {
    fn start(sftp: bool) -> Result<Self, Failure> {
        let sshd = if sftp {
            Sshd::start()
        } else {
            Sshd::start_without_sftp()
        };
        let known_hosts = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        std::fs::write(
            known_hosts.path().join("known_hosts"),
            sshd.known_hosts_line("ssh-ed25519"),
        )
        .map_err(|e| format!("write known_hosts: {e}"))?;
        let cpu = CpuGroup::holding(sshd.pid())?;
        Ok(Self {
            sshd,
            known_hosts,
            cpu,
        })
    }

    fn shell(&self) -> Result<Ssh2Shell, Failure> {
        let config = SshConfig::new(self.sshd.user())
            .with_key_file(self.sshd.client_key())
            .with_known_hosts(self.known_hosts.path().join("known_hosts"));
        Ssh2Shell::new(config).map_err(|e| e.to_string())
    }

    fn node(&self, id: &str) -> Node {
        Node::new(id, id)
            .with_address(NodeAddress::new("127.0.0.1").with_port(self.sshd.port()))
            .with_ssh_user(self.sshd.user())
    }

    /// The sshd CPU (ms) `phase` costs, once its sessions are gone.
    async fn cost<F, Fut>(&self, phase: F) -> Result<f64, Failure>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), Failure>>,
    {
        let pid = self.sshd.pid();
        sessions_gone(pid)?;
        let before = self.cpu.seconds()?;
        phase().await?;
        sessions_gone(pid)?;
        Ok((self.cpu.seconds()? - before) * 1000.0)
    }
}

async fn exec_ok(shell: &Ssh2Shell, node: &Node, line: &str) -> Result<(), Failure> {
    let out = shell
        .exec(node, &RemoteCommand::new(line))
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(format!("`{line}`: {}", out.status_line()))
    }
}

/// `n` uploads of `payload` through `shell` on one node (one session).
async fn uploads(
    server: &Server,
    shell: &Ssh2Shell,
    n: usize,
    payload: &[u8],
) -> Result<(), Failure> {
    let node = server.node("uploads");
    exec_ok(shell, &node, "true").await?;
    for i in 0..n {
        shell
            .upload(
                &node,
                &format!("sshd-cost-{i}.bin"),
                payload.to_vec(),
                UploadOptions::mode(0o644),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    exec_ok(shell, &node, "rm -f sshd-cost-*.bin").await?;
    shell.disconnect(&node).await;
    Ok(())
}

/// `n` uploads as parallel-ssh's `copy_file` makes them (an SFTP session,
/// open, write, close), then one `rm`, on one bare libssh2 session with
/// libssh2's own algorithm preferences; returns the algorithms it negotiated.
fn bare_uploads(server: &Server, n: usize, payload: &[u8]) -> Result<String, Failure> {
    let session = bare_session(server)?;
    let methods = algorithms(&session);
    for i in 0..n {
        // A new SFTP session for each file, as each copy_file call makes.
        let sftp = session.sftp().map_err(|e| format!("sftp: {e}"))?;
        let mut file = sftp
            .create(Path::new(&format!("sshd-cost-bare-{i}.bin")))
            .map_err(|e| format!("open: {e}"))?;
        file.write_all(payload).map_err(|e| format!("write: {e}"))?;
    }
    bare_exec(&session, "rm -f sshd-cost-bare-*.bin")?;
    let _ = session.disconnect(None, "done", None);
    Ok(methods)
}

/// A bare libssh2 session, logged in.
fn bare_session(server: &Server) -> Result<ssh2::Session, Failure> {
    let tcp = TcpStream::connect(("127.0.0.1", server.sshd.port()))
        .map_err(|e| format!("connect: {e}"))?;
    let mut session = ssh2::Session::new().map_err(|e| e.to_string())?;
    session.set_tcp_stream(tcp);
    session.handshake().map_err(|e| format!("handshake: {e}"))?;
    session
        .userauth_pubkey_file(server.sshd.user(), None, server.sshd.client_key(), None)
        .map_err(|e| format!("login: {e}"))?;
    Ok(session)
}

/// Runs `line` on a channel of its own and waits for its end.
fn bare_exec(session: &ssh2::Session, line: &str) -> Result<(), Failure> {
    let mut channel = session
        .channel_session()
        .map_err(|e| format!("channel: {e}"))?;
    channel.exec(line).map_err(|e| format!("exec: {e}"))?;
    channel
        .wait_eof()
        .and_then(|()| channel.close())
        .and_then(|()| channel.wait_close())
        .map_err(|e| format!("wait for `{line}`: {e}"))
}

/// `n` times `true` as parallel-ssh's run_command makes it (a channel, exec), one bare session.
fn bare_commands(server: &Server, n: usize) -> Result<(), Failure> {
    let session = bare_session(server)?;
    for _ in 0..n {
        bare_exec(&session, "true")?;
    }
    let _ = session.disconnect(None, "done", None);
    Ok(())
}

fn algorithms(session: &ssh2::Session) -> String {
    use ssh2::MethodType::{CryptCs, HostKey, Kex, MacCs};
    [Kex, HostKey, CryptCs, MacCs]
        .iter()
        .map(|m| session.methods(*m).unwrap_or("?").to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn real_main() -> Result<(), Failure> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("n {a:?}: {e}"))?,
        None => 50,
    };
    if n == 0 {
        return Err("n: at least 1".into());
    }
    let payload = vec![0x5a_u8; 100 * 1024];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        let server = Server::start(true)?;
        let without_sftp = Server::start(false)?;
        let per = |ms: f64| ms / n as f64;

        // One shell for the server's phases: the uploads find the link's
        // round trip the logins saw (loopback: SFTP), as a fan-out's would.
        let shell = server.shell()?;
        let logins = server
            .cost(|| async {
                for i in 0..n {
                    let node = server.node(&format!("login-{i}"));
                    exec_ok(&shell, &node, "true").await?;
                    shell.disconnect(&node).await;
                }
                Ok(())
            })
            .await?;
        let login = per(logins);
        let commands = server
            .cost(|| async {
                let node = server.node("commands");
                for _ in 0..n {
                    exec_ok(&shell, &node, "true").await?;
                }
                shell.disconnect(&node).await;
                Ok(())
            })
            .await?;
        // Each phase but the logins' also pays for one login (and the upload
        // phases for their first `true` and closing `rm`): taken out below.
        let sftp = server
            .cost(|| uploads(&server, &shell, n, &payload))
            .await?;
        let other = without_sftp.shell()?;
        let shell_uploads = without_sftp
            .cost(|| uploads(&without_sftp, &other, n, &payload))
            .await?;
        let bare_commands = server
            .cost(|| async { bare_commands(&server, n) })
            .await?;
        let mut negotiated = String::new();
        let bare = server
            .cost(|| async {
                negotiated = bare_uploads(&server, n, &payload)?;
                Ok(())
            })
            .await?;
        let command = (commands - login) / (n as f64 - 1.0).max(1.0);

        println!("sshd CPU per operation, {n} of each, one local sshd (ms):\n");
        println!("| operation | sshd CPU ms |");
        println!("| --- | ---: |");
        println!("| login + `true` (Ssh2Shell, a session each) | {login:.2} |");
        println!("| `true` on an open session (Ssh2Shell) | {command:.2} |");
        println!(
            "| `true` on an open session (bare libssh2, as parallel-ssh's run_command) | {:.2} |",
            (bare_commands - login + command) / n as f64
        );
        // Less the login and first `true`, and the closing `rm`.
        let upload = |total: f64| (total - login - 2.0 * command) / n as f64;
        println!(
            "| upload 100 KB over SFTP, as Ssh2Shell (open a temporary name, write, setstat, close, unlink, rename) | {:.2} |",
            upload(sftp)
        );
        println!(
            "| upload 100 KB through the shell (`cat`, `chmod`, `mv`) | {:.2} |",
            upload(shell_uploads)
        );
        // The bare session ran no `true`, one `rm`.
        println!(
            "| upload 100 KB over SFTP, as parallel-ssh's copy_file (open, write, close) | {:.2} |",
            (bare - login) / n as f64
        );
        println!("\nNegotiated by a bare libssh2 session (parallel-ssh's library): {negotiated}");
        println!("(Ssh2Shell keeps libssh2's preferences but pins the host key to the type recorded");
        println!(" in known_hosts, here ssh-ed25519.)");
        Ok(())
    })
}
