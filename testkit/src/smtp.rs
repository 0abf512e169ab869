//! An SMTP server for the mail tests: `aiosmtpd` (from `.venv`) on a free
//! loopback port, storing every message it accepts in a Maildir under its
//! service folder, where the tests read it back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, service_dir, venv_bin, wait_for_port, ServiceProcess};

/// A running `aiosmtpd` with the Maildir handler, stopped when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    process: ServiceProcess,
    port: u16,
    maildir: PathBuf,
}

impl SmtpServer {
    /// Starts `python -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox DIR`
    /// on a free port and waits until it listens.
    pub fn start() -> Self {
        let port = free_port();
        let dir = service_dir("aiosmtpd", port);
        let maildir = dir.join("maildir");
        let mut cmd = Command::new(venv_bin("python"));
        cmd.env("PYTHONUNBUFFERED", "1")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir);
        let process = ServiceProcess::spawn("aiosmtpd", &dir, cmd);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(20),
            &process.log,
        );
        Self {
            process,
            port,
            maildir,
        }
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Maildir holding what it accepted.
    pub fn maildir(&self) -> &Path {
        &self.maildir
    }

    /// The server's log file.
    pub fn log(&self) -> &Path {
        &self.process.log
    }

    /// Every message accepted so far, raw (headers and body), oldest first.
    ///
    /// The handler files a message in `new/` before the server answers `250`
    /// to its data, so a message whose send succeeded is already here.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (modified, e.path())
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| {
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            })
            .collect()
    }
}
