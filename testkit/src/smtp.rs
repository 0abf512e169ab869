//! An SMTP server for the mail tests: `aiosmtpd` (from `.venv`) on a free
//! loopback port, storing every message it accepts in a Maildir under its
//! service folder, where the tests read it back. With TLS, it presents a
//! certificate for `127.0.0.1` and `localhost` signed by a CA made for the
//! run (with the `openssl` command line), whose PEM file the client trusts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, service_dir, venv_bin, wait_for_port, ServiceProcess};

/// How the test server protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text.
    None,
    /// STARTTLS, required before any mail is accepted.
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

/// A running `aiosmtpd` with the Maildir handler, stopped when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    process: ServiceProcess,
    port: u16,
    maildir: PathBuf,
    ca_file: Option<PathBuf>,
}

impl SmtpServer {
    /// Starts `python -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox DIR`
    /// on a free port, plain text, and waits until it listens.
    pub fn start() -> Self {
        Self::start_with(SmtpTls::None)
    }

    /// Starts the server with TLS as `tls` says.
    pub fn start_with(tls: SmtpTls) -> Self {
        let port = free_port();
        let dir = service_dir("aiosmtpd", port);
        let maildir = dir.join("maildir");
        let mut cmd = Command::new(venv_bin("python"));
        cmd.env("PYTHONUNBUFFERED", "1")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"));
        let ca_file = match tls {
            SmtpTls::None => None,
            SmtpTls::Starttls | SmtpTls::Implicit => {
                let (ca, cert, key) = make_certificates(&dir);
                let (cert_flag, key_flag) = if tls == SmtpTls::Starttls {
                    ("--tlscert", "--tlskey")
                } else {
                    ("--smtpscert", "--smtpskey")
                };
                cmd.arg(cert_flag).arg(cert).arg(key_flag).arg(key);
                Some(ca)
            }
        };
        cmd.args(["-c", "aiosmtpd.handlers.Mailbox"]).arg(&maildir);
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
            ca_file,
        }
    }

    /// The PEM file of the CA that signed the server's certificate (with TLS).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
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

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it,
/// in `dir`: returns the CA's, the certificate's and the key's paths.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let cert = dir.join("server.pem");
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the certificate extensions");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=pyscaler test CA"],
        ]
        .concat(),
        &[("-keyout", &ca_key), ("-out", &ca)],
    );
    openssl(
        dir,
        &[&["req"][..], &ec, &["-subj", "/CN=localhost"]].concat(),
        &[("-keyout", &key), ("-out", &csr)],
    );
    openssl(
        dir,
        &["x509", "-req", "-days", "2", "-set_serial", "1"],
        &[
            ("-in", &csr),
            ("-CA", &ca),
            ("-CAkey", &ca_key),
            ("-extfile", &ext),
            ("-out", &cert),
        ],
    );
    (ca, cert, key)
}

fn openssl(dir: &Path, args: &[&str], paths: &[(&str, &PathBuf)]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run openssl ({e}): install Debian's openssl package"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
