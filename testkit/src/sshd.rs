//! OpenSSH's `sshd` on a free loopback port, with its own host keys, a freshly
//! generated client key and a login user whose shell starts fast.
//!
//! The login user: root's shell here runs a slow `.bashrc` (pyenv), and bash
//! sources it for every command sshd starts, so the tests log in as a
//! dedicated user [`LOGIN_USER`] whose shell is `/bin/sh` (dash: no rc file).
//! When the tests run as root it is created with `useradd` (idempotently);
//! otherwise the tests log in as the current user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, service_dir, wait_for_port, ServiceProcess};

/// The dedicated login user of the SSH tests (created when running as root).
pub const LOGIN_USER: &str = "pyscaler-ssh-test";

const SSHD: &str = "/usr/sbin/sshd";

/// A running `sshd`, stopped when dropped.
#[derive(Debug)]
pub struct Sshd {
    process: ServiceProcess,
    port: u16,
    user: String,
    client_key: PathBuf,
    host_keys: Vec<(String, String)>,
}

impl Sshd {
    /// Starts sshd on a free loopback port, with fresh ed25519 and ECDSA host keys.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts sshd on `port` (to restart a server at the same address with new host keys).
    pub fn start_on(port: u16) -> Self {
        Self::launch(port, true, &SshdBuilder::default())
    }

    /// Starts sshd without the SFTP subsystem (as some hardened servers are):
    /// uploads must go another way.
    pub fn start_without_sftp() -> Self {
        Self::launch(free_port(), false, &SshdBuilder::default())
    }

    /// Options the other constructors leave at the tests' defaults: for the
    /// fan-out benchmark's servers, which take hundreds of logins at once.
    pub fn builder() -> SshdBuilder {
        SshdBuilder::default()
    }

    fn launch(port: u16, sftp: bool, options: &SshdBuilder) -> Self {
        let user = login_user();
        let dir = service_dir("sshd", port);
        let mut host_keys = Vec::new();
        let mut host_key_lines = String::new();
        for kind in ["ed25519", "ecdsa"] {
            let key = dir.join(format!("ssh_host_{kind}_key"));
            match &options.keys_from {
                Some(other) => copy_key(other, &key),
                None => generate_key(&key, kind),
            }
            let public = read(&key.with_extension("pub"));
            let mut fields = public.split_whitespace();
            let (Some(alg), Some(b64)) = (fields.next(), fields.next()) else {
                panic!("unexpected public key {public}");
            };
            host_keys.push((alg.to_owned(), b64.to_owned()));
            host_key_lines.push_str(&format!("HostKey {}\n", key.display()));
        }
        let client_key = dir.join("client_key");
        match &options.keys_from {
            Some(other) => copy_key(other, &client_key),
            None => generate_key(&client_key, "ed25519"),
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized)
            .expect("write authorized_keys");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 {host_key_lines}\
                 PidFile none\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 AuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\n\
                 MaxStartups {}\n\
                 MaxSessions 200\n\
                 UseDNS no\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 LogLevel INFO\n\
                 {}",
                authorized.display(),
                match options.max_startups {
                    // At most this many unauthenticated connections, none dropped before.
                    Some(n) => n.to_string(),
                    // Random drops (30%) past 200 waiting logins, all past 400.
                    None => "200:30:400".to_owned(),
                },
                if sftp {
                    "Subsystem sftp internal-sftp\n"
                } else {
                    ""
                }
            ),
        )
        .expect("write sshd_config");
        if is_root() {
            // sshd's privilege separation needs this folder when run as root.
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/setup (it installs openssh-server)"
        );
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        let process = ServiceProcess::spawn("sshd", &dir, cmd);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
            &process.log,
        );
        Self {
            process,
            port,
            user,
            client_key,
            host_keys,
        }
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The listener's process id (its sessions are its children).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The user the tests log in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key sshd accepts.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// Its folder under `target/services/`.
    pub fn dir(&self) -> &Path {
        &self.process.dir
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.process.log
    }

    /// Stops sshd now (as dropping does): new connections to its port are
    /// refused. Sessions already open end with their clients.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Adds a public key (`<path>.pub` of a key made by [`generate_key`]) to
    /// the keys sshd accepts; it reads them at each login.
    pub fn authorize(&self, private_key: &Path) {
        let public = read(&private_key.with_extension("pub"));
        let authorized = self.process.dir.join("authorized_keys");
        let mut keys = read(&authorized);
        keys.push_str(&public);
        std::fs::write(&authorized, keys).expect("write authorized_keys");
    }

    /// How many logins sshd accepted so far (from its log).
    pub fn accepted_logins(&self) -> usize {
        read(&self.process.log)
            .lines()
            .filter(|l| l.starts_with("Accepted publickey"))
            .count()
    }

    /// Its host keys' fingerprints as cloud-init prints them to an EC2
    /// instance's console at the end of the first boot: `ssh-keygen -l` of
    /// each public host key, between the `BEGIN`/`END SSH HOST KEY
    /// FINGERPRINTS` lines, each line prefixed `ec2: `.
    ///
    /// # Panics
    /// When `ssh-keygen` fails, as a harness does.
    pub fn console_fingerprints(&self) -> String {
        let mut out = String::from("ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n");
        for kind in ["ed25519", "ecdsa"] {
            let public = self.dir().join(format!("ssh_host_{kind}_key.pub"));
            let listed = Command::new("ssh-keygen")
                .arg("-l")
                .arg("-f")
                .arg(&public)
                .output()
                .expect("run ssh-keygen -l");
            assert!(
                listed.status.success(),
                "ssh-keygen -l {}",
                public.display()
            );
            out.push_str(&format!("ec2: {}", String::from_utf8_lossy(&listed.stdout)));
        }
        out.push_str("ec2: -----END SSH HOST KEY FINGERPRINTS-----\n");
        out
    }

    /// A `known_hosts` line for its host key of algorithm `alg` (`ssh-ed25519`,
    /// `ecdsa-sha2-nistp256`), as OpenSSH writes it for a port other than 22.
    pub fn known_hosts_line(&self, alg: &str) -> String {
        let (alg, b64) = self
            .host_keys
            .iter()
            .find(|(a, _)| a == alg)
            .unwrap_or_else(|| panic!("no {alg} host key; have {:?}", self.host_keys));
        format!("[127.0.0.1]:{} {alg} {b64}\n", self.port)
    }
}

/// How to start an [`Sshd`] that differs from the tests' one
/// ([`Sshd::builder`]): the fan-out benchmark starts several servers that
/// share one host key and one client key, each taking a thousand logins at once.
#[derive(Debug, Clone, Default)]
pub struct SshdBuilder {
    max_startups: Option<u32>,
    keys_from: Option<PathBuf>,
}

impl SshdBuilder {
    /// Lets up to `n` connections wait for their login at once (sshd's
    /// `MaxStartups`, 200:30:400 by default: past 200 it drops 30% of new
    /// connections at random), refusing only past `n`.
    pub fn max_startups(mut self, n: u32) -> Self {
        self.max_startups = Some(n);
        self
    }

    /// Uses the host keys and the client key of `other` instead of fresh
    /// ones, so one `known_hosts` key and one client key serve both servers.
    pub fn same_keys_as(mut self, other: &Sshd) -> Self {
        self.keys_from = Some(other.dir().to_path_buf());
        self
    }

    /// Starts sshd (with SFTP) on a free loopback port.
    ///
    /// # Panics
    /// As [`Sshd::start`] does, when sshd cannot be configured or started.
    pub fn start(&self) -> Sshd {
        Sshd::launch(free_port(), true, self)
    }
}

/// sshd's processes serving one connection, stopped (SIGSTOP) to simulate a
/// hung node: the kernel still accepts and acknowledges, nothing answers.
/// Continued (SIGCONT) by [`Hang::resume`] or when dropped, so a failing
/// test never leaves them stopped.
#[derive(Debug)]
pub struct Hang {
    pids: Vec<u32>,
}

impl Hang {
    /// Stops the sshd process `session` (the `$PPID` of a command's shell)
    /// and its parents up to the listener; with `listener`, the listener too,
    /// so no new connection gets a banner either.
    pub fn stop(session: u32, listener: bool) -> Self {
        let mut pids = vec![session];
        // The session process, its privileged monitor, then the listener.
        while pids.len() < if listener { 3 } else { 2 } {
            match parent(pids[pids.len() - 1]) {
                Some(up) if up > 1 => pids.push(up),
                _ => break,
            }
        }
        signal(&pids, "-STOP");
        Self { pids }
    }

    /// The stopped processes.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Continues them.
    pub fn resume(mut self) {
        signal(&std::mem::take(&mut self.pids), "-CONT");
    }
}

impl Drop for Hang {
    fn drop(&mut self) {
        signal(&self.pids, "-CONT");
    }
}

/// The parent of process `pid` (from `/proc/<pid>/stat`).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(1)?.parse().ok()
}

fn signal(pids: &[u32], sig: &str) {
    for pid in pids {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    }
}

/// An `ssh-agent` on a socket in `dir`, holding `key`; stopped when dropped.
/// Returns the agent and its socket path (for `SSH_AUTH_SOCK`).
pub fn ssh_agent(dir: &Path, key: &Path) -> (ServiceProcess, PathBuf) {
    let socket = dir.join("agent.sock");
    let mut cmd = Command::new("ssh-agent");
    cmd.arg("-D").arg("-a").arg(&socket);
    let agent = ServiceProcess::spawn("ssh-agent", dir, cmd);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh-agent did not create {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("ssh-add")
        .arg("-q")
        .arg(key)
        .env("SSH_AUTH_SOCK", &socket)
        .status()
        .expect("run ssh-add");
    assert!(status.success(), "ssh-add {} failed", key.display());
    (agent, socket)
}

/// Generates a key pair without passphrase at `path` (and `path.pub`).
pub fn generate_key(path: &Path, kind: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "pyscaler-test", "-f"])
        .arg(path)
        .status()
        .expect("run ssh-keygen (install openssh-client)");
    assert!(status.success(), "ssh-keygen -t {kind} failed");
}

/// Copies the key pair whose private half is `to`'s file name in folder `from` to `to`.
fn copy_key(from: &Path, to: &Path) {
    let Some(name) = to.file_name() else {
        panic!("no file name in {}", to.display());
    };
    for (src, dst) in [
        (from.join(name), to.to_path_buf()),
        (
            from.join(name).with_extension("pub"),
            to.with_extension("pub"),
        ),
    ] {
        std::fs::copy(&src, &dst)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The login user of the tests: [`LOGIN_USER`] (created if missing) as root,
/// the current user otherwise.
pub fn login_user() -> String {
    if !is_root() {
        let out = Command::new("id").arg("-un").output().expect("run id -un");
        return String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    // Tests of one binary run in parallel threads: create the user once.
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = CREATE.lock().unwrap_or_else(|p| p.into_inner());
    if !user_exists(LOGIN_USER) {
        // Another test binary may create it at the same time: check again after.
        let _ = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", LOGIN_USER])
            .status();
        assert!(
            user_exists(LOGIN_USER),
            "could not create the login user {LOGIN_USER} with useradd"
        );
    }
    // useradd leaves the account locked (`!` password), and without PAM sshd
    // refuses locked accounts even for keys: `*` means "no password, not locked".
    let _ = Command::new("usermod")
        .args(["-p", "*", LOGIN_USER])
        .status();
    // Puppet and other tools write to the home folder: make sure it is the user's.
    let home = format!("/home/{LOGIN_USER}");
    let _ = std::fs::create_dir_all(&home);
    let _ = Command::new("chown")
        .arg(format!("{LOGIN_USER}:"))
        .arg(&home)
        .status();
    LOGIN_USER.to_owned()
}
