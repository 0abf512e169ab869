//! `ProxyCommand`: reaching a node through a program (a bastion's `ssh -W`),
//! as OpenSSH's `ProxyCommand` and paramiko's `ProxyCommand` do.

use std::fmt;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::quote::quote;
use crate::SshError;

/// How many bytes of the proxy's stderr are kept for error messages.
const STDERR_KEPT: usize = 4 * 1024;

/// A command whose stdin and stdout carry the SSH connection to a node, such
/// as `ssh -W %h:%p ops@bastion.example.com` (a jump host).
///
/// In the template, `%h`, `%p` and `%r` stand for the node's host, port and
/// login user, each substituted as one shell-quoted word (a node's name or
/// address never injects a command); `%%` is a literal `%`. The line is run
/// as `sh -c 'exec <line>'`, as OpenSSH runs its `ProxyCommand`.
///
/// ```
/// use pyscaler_ssh::ProxyCommand;
/// let proxy = ProxyCommand::new("ssh -W %h:%p ops@bastion.example.com");
/// assert_eq!(
///     proxy.render("10.0.1.7", 22, "admin").unwrap(),
///     "ssh -W 10.0.1.7:22 ops@bastion.example.com"
/// );
/// assert_eq!(
///     proxy.render("a;reboot", 22, "admin").unwrap(),
///     "ssh -W 'a;reboot':22 ops@bastion.example.com"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProxyCommand(String);

impl ProxyCommand {
    /// A proxy command from its template (checked by [`ProxyCommand::validate`]).
    pub fn new(template: impl Into<String>) -> Self {
        Self(template.into())
    }

    /// The template, as written.
    pub fn template(&self) -> &str {
        &self.0
    }

    /// Checks the template: not empty, and no `%` escape but `%h`, `%p`, `%r`, `%%`.
    ///
    /// # Errors
    /// [`SshError::InvalidInput`] naming the problem.
    pub fn validate(&self) -> Result<(), SshError> {
        if self.0.trim().is_empty() {
            return Err(SshError::InvalidInput("proxy_command is empty".into()));
        }
        self.expand(|_| Ok(String::new())).map(|_| ())
    }

    /// The command line for a node at `host`:`port` reached as `user`.
    ///
    /// # Errors
    /// [`SshError::InvalidInput`] for an unknown `%` escape, or a value with a NUL byte.
    pub fn render(&self, host: &str, port: u16, user: &str) -> Result<String, SshError> {
        self.expand(|escape| match escape {
            'h' => quote(host),
            'p' => Ok(port.to_string()),
            _ => quote(user),
        })
    }

    fn expand(
        &self,
        mut value: impl FnMut(char) -> Result<String, SshError>,
    ) -> Result<String, SshError> {
        let mut line = String::with_capacity(self.0.len());
        let mut chars = self.0.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                line.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => line.push('%'),
                Some(e @ ('h' | 'p' | 'r')) => line.push_str(&value(e)?),
                Some(other) => {
                    return Err(SshError::InvalidInput(format!(
                        "proxy_command {:?} has an unknown escape %{other} \
                         (known: %h host, %p port, %r user, %% a literal %)",
                        self.0
                    )))
                }
                None => {
                    return Err(SshError::InvalidInput(format!(
                        "proxy_command {:?} ends with a lone % (write %% for a literal %)",
                        self.0
                    )))
                }
            }
        }
        Ok(line)
    }
}

impl fmt::Display for ProxyCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running proxy process. Killed and reaped when the last handle goes.
struct Process {
    child: Mutex<Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: Arc<AtomicBool>,
    line: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        // An exited child refuses the kill; wait reaps it either way.
        let _ = child.kill();
        let _ = child.wait();
        let stderr = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        if !stderr.is_empty() {
            tracing::debug!(proxy = %self.line, stderr = %String::from_utf8_lossy(&stderr).trim(),
                "Proxy command ended.");
        }
    }
}

/// The session's end of the proxy's socket pair; the proxy lives as long as it.
pub(crate) struct ProxyStream {
    stream: UnixStream,
    _process: Arc<Process>,
}

impl AsRawFd for ProxyStream {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// A handle on a proxy process to tell why a connection through it failed.
pub(crate) struct ProxyWatch {
    process: Arc<Process>,
}

impl ProxyStream {
    /// A second handle on the session's end of the socket pair, to shut the
    /// connection down from another thread (a cancelled command).
    pub(crate) fn try_clone_socket(&self) -> std::io::Result<UnixStream> {
        self.stream.try_clone()
    }

    /// Starts `command` for the node at `host`:`port` as `user`, its stdin and
    /// stdout on one end of a socket pair; returns the other end, and a watch.
    pub(crate) fn spawn(
        command: &ProxyCommand,
        host: &str,
        port: u16,
        user: &str,
        target: &str,
    ) -> Result<(Self, ProxyWatch), SshError> {
        let line = command.render(host, port, user)?;
        let failed = |source: std::io::Error| SshError::ProxyFailed {
            host: target.to_owned(),
            command: line.clone(),
            message: format!("cannot start it: {source}"),
        };
        let (ours, theirs) = UnixStream::pair().map_err(failed)?;
        let theirs_out = theirs.try_clone().map_err(failed)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {line}"))
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_out)))
            .stderr(Stdio::piped())
            .spawn()
            .map_err(failed)?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_done = Arc::new(AtomicBool::new(false));
        if let Some(mut pipe) = child.stderr.take() {
            let (kept, done) = (stderr.clone(), stderr_done.clone());
            // Ends when the proxy's stderr closes (it exits, or is killed).
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                    kept.extend_from_slice(&buf[..n]);
                    let excess = kept.len().saturating_sub(STDERR_KEPT);
                    kept.drain(..excess);
                }
                done.store(true, Ordering::Release);
            });
        } else {
            stderr_done.store(true, Ordering::Release);
        }
        tracing::debug!(node = target, proxy = %line, pid = child.id(), "Proxy command started.");
        let process = Arc::new(Process {
            child: Mutex::new(child),
            stderr,
            stderr_done,
            line,
        });
        Ok((
            Self {
                stream: ours,
                _process: process.clone(),
            },
            ProxyWatch { process },
        ))
    }
}

impl ProxyWatch {
    /// When the proxy has exited, or exits within `grace`: the error that says
    /// so, with the last line of its stderr. None while it still runs.
    pub(crate) fn failure(&self, target: &str, grace: Duration) -> Option<SshError> {
        let deadline = Instant::now() + grace;
        let status = loop {
            let status: Option<ExitStatus> = self
                .process
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_wait()
                .ok()
                .flatten();
            match status {
                Some(s) => break s,
                None if Instant::now() >= deadline => return None,
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        // Let the reader take the last of stderr (bounded: a grandchild may hold it open).
        let drained = Instant::now() + Duration::from_millis(500);
        while !self.process.stderr_done.load(Ordering::Acquire) && Instant::now() < drained {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stderr = self
            .process
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&stderr);
        let last = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("");
        let ended = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_owned(),
        };
        let message = if last.is_empty() {
            format!("{ended} and wrote nothing to stderr")
        } else {
            format!("{ended}: {last}")
        };
        Some(SshError::ProxyFailed {
            host: target.to_owned(),
            command: self.process.line.clone(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_substituted_and_quoted() {
        let p = ProxyCommand::new("ssh -l %r -W %h:%p bastion # 100%%");
        assert_eq!(
            p.render("10.0.0.5", 2222, "admin").unwrap(),
            "ssh -l admin -W 10.0.0.5:2222 bastion # 100%"
        );
    }

    #[test]
    fn a_hostile_host_or_user_stays_one_word_through_sh() {
        let p = ProxyCommand::new("printf '%%s\\n' %h %r");
        for evil in [
            "x; touch /tmp/pwned",
            "$(id)",
            "`id`",
            "a'b",
            "a\nb",
            "h && exit 7",
        ] {
            let line = p.render(evil, 22, evil).unwrap();
            let out = Command::new("sh")
                .arg("-c")
                .arg(&line)
                .output()
                .expect("run sh");
            assert!(out.status.success(), "{line}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{evil}\n{evil}\n"),
                "{line}"
            );
        }
        assert!(p.render("a\0b", 22, "u").is_err());
    }

    #[test]
    fn validation_refuses_empty_and_unknown_escapes() {
        assert!(ProxyCommand::new("ssh -W %h:%p bastion").validate().is_ok());
        assert!(ProxyCommand::new("  ").validate().is_err());
        let err = ProxyCommand::new("ssh -W %h:%d bastion")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("%d"), "{err}");
        assert!(ProxyCommand::new("nc %h %p %").validate().is_err());
    }
}
