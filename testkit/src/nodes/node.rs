//! One node host: the network, mount and UTS namespaces that stand in for
//! one EC2 instance, its sshd, and the faults a test can cause on it alone.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::record::{self, Record};
use crate::ServiceProcess;

/// What the harness needs to start a node host.
#[derive(Debug)]
pub(super) struct Spec<'a> {
    pub(super) instance_id: &'a str,
    pub(super) address: Ipv4Addr,
    pub(super) prefix: u8,
    pub(super) authorized_key: Option<&'a str>,
    pub(super) netns: String,
    pub(super) link: String,
    pub(super) bridge: &'a str,
    pub(super) dir: PathBuf,
    pub(super) user: &'a str,
    pub(super) disk_size: &'a str,
}

/// A running node host: the instance's own namespaces, holding its private
/// address, its own sshd (own host key, the key pair's public key authorized
/// for the login user), its own disk; removed when the instance stops or
/// is terminated, or when the [`NodeHosts`](super::NodeHosts) is dropped.
#[derive(Debug)]
pub struct NodeHost {
    instance_id: String,
    address: Ipv4Addr,
    hostname: String,
    netns: String,
    link: String,
    dir: PathBuf,
    host_key: String,
    holder: Mutex<ServiceProcess>,
    started_in: Duration,
}

impl NodeHost {
    /// Makes the namespaces, the link to the bridge and the node's files,
    /// starts its sshd and waits (10 s at most) until it answers. Each thing
    /// is noted in `record` before it is made.
    pub(super) fn start(spec: Spec<'_>, record: &Record) -> Result<Self, String> {
        let begun = Instant::now();
        let hostname = format!("ip-{}", spec.address.to_string().replace('.', "-"));
        record.note("dir", &spec.dir.display().to_string());
        std::fs::create_dir_all(spec.dir.join("disk"))
            .map_err(|e| format!("create {}: {e}", spec.dir.display()))?;
        record.note("netns", &spec.netns);
        ip(&["netns", "add", &spec.netns])?;
        let peer = format!("{}p", spec.link);
        record.note("link", &spec.link);
        ip(&[
            "link", "add", &spec.link, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &spec.netns])?;
        ip(&["link", "set", &spec.link, "master", spec.bridge, "up"])?;
        let cidr = format!("{}/{}", spec.address, spec.prefix);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "set", peer.as_str(), "name", "eth0"],
            vec!["addr", "add", cidr.as_str(), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
        ] {
            let mut all = vec!["-n", spec.netns.as_str()];
            all.extend(args);
            ip(&all)?;
        }

        let key = spec.dir.join("ssh_host_ed25519_key");
        crate::sshd::generate_key(&key, "ed25519");
        let host_key = std::fs::read_to_string(key.with_extension("pub"))
            .map_err(|e| format!("read the host key: {e}"))?
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let authorized = spec.dir.join("authorized_keys");
        std::fs::write(&authorized, spec.authorized_key.unwrap_or_default())
            .map_err(|e| format!("write authorized_keys: {e}"))?;
        let config = spec.dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port 22\n\
                 ListenAddress {address}\n\
                 HostKey {key}\n\
                 PidFile none\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 AuthorizedKeysFile {authorized}\n\
                 AllowUsers {user}\n\
                 MaxStartups 100:30:200\n\
                 UseDNS no\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 LogLevel INFO\n\
                 Subsystem sftp internal-sftp\n",
                address = spec.address,
                key = key.display(),
                authorized = authorized.display(),
                user = spec.user,
            ),
        )
        .map_err(|e| format!("write sshd_config: {e}"))?;
        let init = spec.dir.join("node-init.sh");
        std::fs::write(&init, include_str!("node-init.sh"))
            .map_err(|e| format!("write node-init.sh: {e}"))?;

        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &spec.netns])
            .args(["unshare", "--mount", "--uts", "--propagation", "private"])
            .arg("sh")
            .arg(&init)
            .arg(spec.dir.join("disk"))
            .arg(spec.disk_size)
            .arg(&hostname)
            .arg(spec.address.to_string())
            .arg(spec.user)
            .arg(&config);
        let holder = ServiceProcess::spawn("node", &spec.dir, cmd);
        let node = Self {
            instance_id: spec.instance_id.to_owned(),
            address: spec.address,
            hostname,
            netns: spec.netns,
            link: spec.link,
            dir: spec.dir,
            host_key,
            holder: Mutex::new(holder),
            started_in: Duration::ZERO,
        };
        if !node.wait_for_ssh(Duration::from_secs(10)) {
            let log = std::fs::read_to_string(node.log()).unwrap_or_default();
            node.remove();
            return Err(format!(
                "the node's sshd did not answer on {}:22 within 10 s; its log:\n{log}",
                node.address
            ));
        }
        Ok(Self {
            started_in: begun.elapsed(),
            ..node
        })
    }

    /// The EC2 instance it stands in for.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Its private address, as moto reports it.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Its host name (`ip-172-31-200-4`, as EC2 names a VPC instance).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Its network namespace's name.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Its folder (host key, sshd config, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log (the init script's and sshd's output).
    pub fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// Its host key, as `ssh-ed25519 AAAA…`.
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// How long it took from the start to sshd answering.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Whether its sshd accepts a TCP connection now.
    pub fn answers_ssh(&self) -> bool {
        self.answers(22)
    }

    /// Whether something on the node accepts a TCP connection on `port`
    /// now (from the controller's side, through the bridge).
    pub fn answers(&self, port: u16) -> bool {
        let addr = SocketAddr::from((self.address, port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
    }

    fn wait_for_ssh(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.answers_ssh() {
                return true;
            }
            if !crate::lock_ignoring_poison(&self.holder).is_running() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Runs `script` with `sh -c` as root inside the node (its mount, UTS
    /// and network namespaces), as a console on the VM would.
    pub fn exec(&self, script: &str) -> Output {
        let pid = crate::lock_ignoring_poison(&self.holder).id();
        Command::new("nsenter")
            .args(["--target", &pid.to_string(), "--mount", "--uts", "--net"])
            .args(["sh", "-c", script])
            .output()
            .unwrap_or_else(|e| panic!("run nsenter into node {}: {e}", self.instance_id))
    }

    /// The file at `path` as the node sees it, if it can be read.
    pub fn read(&self, path: &str) -> Option<String> {
        let out = self.exec(&format!("cat {}", shell_quote(path)));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The processes running on the node (everything in its namespace).
    pub fn pids(&self) -> Vec<u32> {
        record::netns_pids(&self.netns)
    }

    /// The resident memory of everything running on the node, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum()
    }

    /// The node's processes whose command line contains `needle`.
    fn pids_running(&self, needle: &str) -> Vec<u32> {
        self.pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        String::from_utf8_lossy(&c)
                            .replace('\0', " ")
                            .contains(needle)
                    })
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Stops the node's sshd (its listener; sessions already open go on,
    /// as with `systemctl stop ssh`): new connections are refused.
    pub fn stop_sshd(&self) {
        // The listener is the sshd whose parent is not an sshd (a session's
        // processes descend from it); its command line is no help, as sshd
        // rewrites it.
        for pid in self.pids() {
            let Some((comm, ppid)) = comm_and_parent(pid) else {
                continue;
            };
            let parent_is_sshd = comm_and_parent(ppid).is_some_and(|(c, _)| c == "sshd");
            if comm == "sshd" && !parent_is_sshd {
                kill(pid, "KILL");
            }
        }
    }

    /// Starts the node's sshd again after [`stop_sshd`](Self::stop_sshd),
    /// and waits (10 s at most) until it answers.
    pub fn start_sshd(&self) -> bool {
        let config = self.dir.join("sshd_config");
        // Logging to the node's own /run: the rest of its file system is
        // read-only to it.
        let _ = self.exec(&format!(
            "/usr/sbin/sshd -f {} -E /run/sshd-restarted.log",
            shell_quote(&config.display().to_string()),
        ));
        self.wait_for_ssh(Duration::from_secs(10))
    }

    /// Kills the node's Tomcat (SIGKILL, as the OOM killer would); returns
    /// how many processes it killed (0: none ran).
    pub fn kill_tomcat(&self) -> usize {
        let pids = self.pids_running("org.apache.catalina.startup.Bootstrap");
        for pid in &pids {
            kill(*pid, "KILL");
        }
        pids.len()
    }

    /// Fills the node's disk (its writable layer and `/tmp`) until writes
    /// fail with "no space left"; [`free_disk`](Self::free_disk) undoes it.
    pub fn fill_disk(&self) {
        let _ = self.exec("dd if=/dev/zero of=/tmp/.pyscaler-disk-fill bs=1M 2>/dev/null; sync");
    }

    /// Removes what [`fill_disk`](Self::fill_disk) wrote.
    pub fn free_disk(&self) {
        let _ = self.exec("rm -f /tmp/.pyscaler-disk-fill");
    }

    /// Stops everything on the node and removes its namespaces, link and
    /// folder (the disk, a tmpfs of its mount namespace, goes with them).
    pub(super) fn remove(&self) {
        crate::lock_ignoring_poison(&self.holder).stop();
        record::remove_netns(&self.netns);
        record::remove_link(&self.link);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process's name and its parent's id, from `/proc/<pid>/stat`.
fn comm_and_parent(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, ppid))
}

/// Sends `signal` to `pid` and, for KILL, waits (2 s at most) until it is
/// gone: its sockets close only when it has exited.
fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
    if signal == "KILL" {
        let deadline = Instant::now() + Duration::from_secs(2);
        while record::is_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `ip ARGS`; its error output on failure.
pub(super) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("run ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
