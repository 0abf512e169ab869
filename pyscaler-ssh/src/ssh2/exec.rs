//! Running one command on a channel: its input, its output read without
//! deadlock, its deadline, and what stops it early.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyscaler_core::CancellationToken;

use super::connect::{Live, Transport};
use super::record::{self, Group};
use super::{lock, millis, Endpoint, OPENING};
use crate::{CommandOutput, SshError};

/// How long one blocking read waits for stdout before stderr is drained again.
/// stderr is drained without waiting in between, so a command that fills
/// the channel window with stderr never deadlocks; this bounds its stall.
/// While a command prints nothing the wait doubles, up to [`READ_QUANTUM_MAX`]
/// (which also bounds how late a cancellation is noticed between reads).
const READ_QUANTUM: Duration = Duration::from_millis(20);
const READ_QUANTUM_MAX: Duration = Duration::from_millis(320);

/// What can stop one operation early, shared by the async caller and the
/// blocking thread that runs it.
///
/// Cancelling shuts the session's connection down at once, so a libssh2 call
/// blocked on a hung node fails now rather than at its own timeout; the
/// blocking thread then drops the session and ends the command's process
/// group over a fresh connection (see `Ssh2Shell::with_session`).
#[derive(Debug, Default)]
pub(super) struct Interrupt {
    token: CancellationToken,
    transport: Mutex<Option<Arc<Transport>>>,
    /// The command's process group, once its shell said its pid.
    group: Mutex<Option<Group>>,
}

impl Interrupt {
    /// Stopped when `parent` is cancelled (or by [`Interrupt::cancel`]).
    pub(super) fn new(parent: Option<&CancellationToken>) -> Self {
        Self {
            token: parent
                .map(CancellationToken::child_token)
                .unwrap_or_default(),
            ..Self::default()
        }
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(super) async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Cancels the operation and closes the connection it runs on.
    pub(super) fn cancel(&self) {
        self.token.cancel();
        self.shut();
    }

    /// Closes the connection the operation runs on (its session is then dead).
    pub(super) fn shut(&self) {
        if let Some(t) = lock(&self.transport).as_ref() {
            t.shut();
        }
    }

    /// The operation now runs on this connection (closed at once if already cancelled).
    pub(super) fn attach(&self, transport: &Arc<Transport>) {
        *lock(&self.transport) = Some(transport.clone());
        if self.is_cancelled() {
            transport.shut();
        }
    }

    fn started(&self, group: Group) {
        *lock(&self.group) = Some(group);
    }

    /// The command's process group, when it started.
    pub(super) fn group(&self) -> Option<Group> {
        lock(&self.group).clone()
    }
}

/// Keeps up to `cap` bytes and counts what it dropped.
struct Capped {
    data: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self {
            data: Vec::new(),
            cap,
            truncated: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.data.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// stdout, whose first line is the login shell's pid (from `echo $$`).
struct Stdout {
    head: Option<Vec<u8>>,
    pid: Option<u32>,
    body: Capped,
}

impl Stdout {
    fn push(&mut self, bytes: &[u8]) {
        let Some(head) = &mut self.head else {
            self.body.push(bytes);
            return;
        };
        match bytes.iter().position(|b| *b == b'\n') {
            Some(i) => {
                head.extend_from_slice(&bytes[..i]);
                self.pid = std::str::from_utf8(head)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                if self.pid.is_none() {
                    // Not our line (a login script printed first): keep it.
                    let mut line = std::mem::take(head);
                    line.push(b'\n');
                    self.body.push(&line);
                }
                self.head = None;
                self.body.push(&bytes[i + 1..]);
            }
            None => head.extend_from_slice(bytes),
        }
    }
}

/// What a command did, bytes as they came.
pub(super) struct RawOutput {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) exit_code: Option<i32>,
    pub(super) signal: Option<String>,
    pub(super) truncated: bool,
}

impl RawOutput {
    pub(super) fn into_output(self) -> CommandOutput {
        CommandOutput {
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
            exit_code: self.exit_code,
            signal: self.signal,
            truncated: self.truncated,
        }
    }
}

/// One command to run on a channel.
#[derive(Debug, Clone)]
pub(super) struct Job {
    /// The rendered line.
    pub(super) line: String,
    /// Fed to its stdin, then EOF; shared, so a job kept to try again
    /// (an upload's, should SFTP be missing) holds no copy of an upload.
    pub(super) stdin: Arc<[u8]>,
    pub(super) timeout: Duration,
    /// Bytes kept of stdout, and of stderr.
    pub(super) cap: usize,
    /// Whether it runs under sudo (its processes are then ended with sudo).
    pub(super) sudo: bool,
    /// The run and step its process group is recorded under on the node.
    pub(super) record: Option<(String, String)>,
    /// The command for messages.
    pub(super) display: String,
}

/// Runs `job` on a new channel of `session`, until it ends, its deadline
/// passes ([`SshError::CommandTimedOut`]) or `interrupt` is cancelled. On
/// either of the last two the connection is shut down before returning: the
/// caller drops the session and ends the command's process group.
pub(super) fn run(
    live: &Live,
    ep: &Endpoint,
    job: &Job,
    interrupt: &Interrupt,
) -> Result<RawOutput, SshError> {
    let session = &live.session;
    let deadline = Instant::now() + job.timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let fail = |doing: &'static str| {
        move |e: io::Error| SshError::Session {
            host: ep.to_string(),
            doing,
            source: e,
        }
    };
    let stop = |error: SshError| {
        interrupt.shut();
        error
    };
    let timed_out = || SshError::CommandTimedOut {
        command: job.display.clone(),
        after: job.timeout,
    };
    session.set_blocking(true);
    session.set_timeout(millis(left().min(Duration::from_secs(30))));
    let (mut channel, ahead) = lock(&live.channels)
        .take(session, &live.transport)
        .map_err(|e| fail(OPENING)(e.into()))?;
    let prelude = record::prelude(job.record.as_ref(), job.sudo);
    // On a channel opened ahead, a failed start is a failed open (the
    // session died meanwhile): nothing ran, and the caller reconnects once.
    let starting = if ahead { OPENING } else { "starting a command" };
    channel
        .exec(&format!("{prelude}{}", job.line))
        .map_err(|e| fail(starting)(e.into()))?;
    if !job.stdin.is_empty() {
        session.set_timeout(millis(left()));
        if let Err(e) = channel.write_all(&job.stdin) {
            return Err(if e.kind() == io::ErrorKind::TimedOut {
                stop(timed_out())
            } else {
                fail("sending input")(e)
            });
        }
    }
    channel
        .send_eof()
        .map_err(|e| fail("sending input")(e.into()))?;
    // While it runs, the next command's channel.
    lock(&live.channels).open_ahead(session);

    let mut out = Stdout {
        head: Some(Vec::new()),
        pid: None,
        body: Capped::new(job.cap),
    };
    let mut err = Capped::new(job.cap);
    let (mut out_done, mut err_done) = (false, false);
    let mut buf = vec![0u8; 32 * 1024];
    let reading = fail("reading output");
    let mut quantum = READ_QUANTUM;
    loop {
        // Take whatever stderr is queued without waiting.
        session.set_blocking(false);
        while !err_done {
            match channel.stderr().read(&mut buf) {
                Ok(0) => err_done = true,
                Ok(n) => {
                    err.push(&buf[..n]);
                    quantum = READ_QUANTUM;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    session.set_blocking(true);
                    return Err(reading(e));
                }
            }
        }
        session.set_blocking(true);
        if out_done && err_done {
            break;
        }
        if interrupt.is_cancelled() {
            // The caller reports the cancellation; this error only stops the job.
            return Err(stop(timed_out()));
        }
        let wait = left();
        if wait.is_zero() {
            return Err(stop(timed_out()));
        }
        // Wait (a short while) for stdout, or for stderr once stdout ended.
        session.set_timeout(millis(wait.min(quantum)));
        let read = if out_done {
            channel.stderr().read(&mut buf)
        } else {
            channel.read(&mut buf)
        };
        match read {
            Ok(0) if out_done => err_done = true,
            Ok(0) => out_done = true,
            Ok(n) if out_done => {
                err.push(&buf[..n]);
                quantum = READ_QUANTUM;
            }
            Ok(n) => {
                let known = out.pid.is_some();
                out.push(&buf[..n]);
                if let (false, Some(pid)) = (known, out.pid) {
                    interrupt.started(Group {
                        pid,
                        sudo: job.sudo,
                        record: job.record.clone(),
                    });
                }
                quantum = READ_QUANTUM;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                quantum = (quantum * 2).min(READ_QUANTUM_MAX);
            }
            Err(e) => return Err(reading(e)),
        }
    }
    session.set_timeout(millis(left().max(Duration::from_secs(1))));
    channel
        .wait_close()
        .map_err(|e| fail("closing a channel")(e.into()))?;
    let signal = channel
        .exit_signal()
        .ok()
        .and_then(|s| s.exit_signal)
        .filter(|s| !s.is_empty());
    let exit_code = if signal.is_some() {
        None
    } else {
        Some(
            channel
                .exit_status()
                .map_err(|e| fail("reading the exit status")(e.into()))?,
        )
    };
    Ok(RawOutput {
        truncated: out.body.truncated || err.truncated,
        stdout: out.body.data,
        stderr: err.data,
        exit_code,
        signal,
    })
}
