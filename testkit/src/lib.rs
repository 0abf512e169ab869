//! The shared harness of pyscaler's integration tests.
//!
//! Each real service the tests need (moto for the AWS API, OpenSSH's sshd,
//! aiosmtpd) is started by a module of this crate on a free loopback port, with
//! its log under `target/services/<name>-<port>/`, and stopped when its guard
//! is dropped. Nothing is assumed to be running or installed: `scripts/setup`
//! installs the programs; the Python ones (moto, aiosmtpd, listed in
//! `scripts/requirements.txt`) the harness installs in `.venv` itself when
//! they are missing, and any other missing one fails the test with a message
//! that says so.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (the folder holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// A free TCP port on 127.0.0.1 (bound, then released: good enough for tests).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// A fresh folder for one service's config, data and log: `target/services/<name>-<port>/`.
pub fn service_dir(name: &str, port: u16) -> PathBuf {
    let dir = workspace_root()
        .join("target")
        .join("services")
        .join(format!("{name}-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A program from the project's virtual environment (`.venv/bin/<name>`).
/// When `.venv` does not hold `scripts/requirements.txt` yet, creates it
/// (`python3 -m venv`) and installs the list with pip first, saying so on
/// stderr; parallel test processes wait for one install.
///
/// # Panics
/// When installing fails, or the list installs no program called `name`.
pub fn venv_bin(name: &str) -> PathBuf {
    venv::ensure();
    let path = venv::dir().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing though .venv holds scripts/requirements.txt: \
         delete .venv and run scripts/setup",
        path.display()
    );
    path
}

/// Waits until `addr` accepts TCP connections, or panics after `within`
/// with the tail of the service's log.
pub fn wait_for_port(addr: SocketAddr, within: Duration, log: &Path) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = tail
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    panic!(
        "service did not listen on {addr} within {within:?}; log {}:\n{}",
        log.display(),
        tail.join("\n")
    );
}

/// A running service process, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    child: Child,
    /// Its folder under `target/services/`.
    pub dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

impl ServiceProcess {
    /// Spawns `cmd` with stdout and stderr appended to `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, mut cmd: Command) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone a log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {name} ({cmd:?}): {e}; run scripts/setup to install it")
            });
        Self {
            name: name.to_owned(),
            child,
            dir: dir.to_path_buf(),
            log,
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the process now (as dropping does).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
/// Takes the machine-wide lock named `name` and holds it until the file is
/// dropped: for what a test drives that the whole machine shares, such as
/// the system Tomcat on port 8080 that Puppet installs. The lock file is in
/// the system's temporary folder, so test runs from two checkouts wait for
/// each other too.
///
/// # Panics
/// When the lock file cannot be created or locked (a test harness).
pub fn machine_lock(name: &str) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("pyscaler-{name}.lock"));
    let file = std::fs::File::create(&path)
        .unwrap_or_else(|e| panic!("create the lock file {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    file
}

/// Locks `m`, going on with the data a panicking holder left (a harness
/// keeps tearing down what it started).
pub(crate) fn lock_ignoring_poison<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub mod fault_proxy;
pub mod latency;
pub mod moto;
pub mod nodes;
pub mod process;
pub mod prometheus;
pub mod smtp;
pub mod sshd;
pub mod toml_fuzz;
mod venv;
