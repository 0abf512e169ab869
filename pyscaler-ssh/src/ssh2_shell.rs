//! `Ssh2Shell`: the [`RemoteShell`] built on libssh2 (the `ssh2` crate).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pyscaler_core::Node;
use ssh2::{ErrorCode, MethodType, Session};

use crate::known_hosts::{self, Verdict};
use crate::proxy::{ProxyStream, ProxyWatch};
use crate::quote::quote;
use crate::{
    CommandOutput, HostKeyPolicy, RemoteCommand, RemoteShell, SshAuth, SshConfig, SshError,
};

/// How long one blocking read waits for stdout before stderr is drained again.
/// stderr is drained without waiting in between, so a command that fills
/// the channel window with stderr never deadlocks; this bounds its stall.
/// While a command prints nothing the wait doubles, up to [`READ_QUANTUM_MAX`].
const READ_QUANTUM: Duration = Duration::from_millis(20);
const READ_QUANTUM_MAX: Duration = Duration::from_millis(320);

/// libssh2's error codes we tell apart (`LIBSSH2_ERROR_*` in libssh2.h).
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_KEX_FAILURE: i32 = -5;
const LIBSSH2_ERROR_FILE: i32 = -16;

/// The [`RemoteShell`] of real nodes, over SSH with libssh2.
///
/// - One authenticated session is kept per node (by node id) and reused for
///   consecutive commands; each command gets its own channel. Commands to the
///   same node run one after the other; different nodes run in parallel.
/// - libssh2 is blocking: every call runs in `tokio::task::spawn_blocking`.
/// - `TCP_NODELAY` is set before the handshake (libssh2 does not set it;
///   without it every round trip stalls about 40 ms on delayed ACKs).
/// - With [`SshConfig::proxy_command`], the session runs over a socket pair
///   whose other end is the proxy's stdin and stdout (a bastion's `ssh -W`)
///   instead of TCP; the connect timeout bounds the handshake through it, host
///   keys are still those of the node, and the proxy is killed and reaped when
///   the session ends. A proxy that exits early is [`SshError::ProxyFailed`].
/// - stdout and stderr are read together, so neither can fill the channel window and stall the other.
/// - Host keys are checked as [`HostKeyPolicy`] says, against entries for
///   exactly `host` (port 22) or `[host]:port`; the host-key algorithm is
///   pinned to the type(s) stored for the server, so a server with several
///   host keys is compared with the one that was recorded.
/// - A command that overruns its timeout is reported as
///   [`SshError::CommandTimedOut`] and ended: its process group is killed.
///   (This relies on the login shell being a POSIX shell: each command is
///   preceded by `echo $$` to learn the shell's pid.)
///
/// ```no_run
/// # async fn demo() -> Result<(), pyscaler_ssh::SshError> {
/// use pyscaler_core::{Node, NodeAddress};
/// use pyscaler_ssh::{RemoteCommand, RemoteShell, Ssh2Shell, SshConfig};
/// let shell = Ssh2Shell::new(SshConfig::new("admin").with_key_file("/home/ops/.ssh/id_ed25519"))?;
/// let node = Node::new("i-1", "web-01").with_address(NodeAddress::new("10.0.0.5"));
/// let out = shell.exec(&node, &RemoteCommand::new("uptime")).await?;
/// println!("{}", out.stdout);
/// # Ok(()) }
/// ```
pub struct Ssh2Shell {
    config: Arc<SshConfig>,
    conns: Mutex<HashMap<String, Arc<NodeConn>>>,
}

impl fmt::Debug for Ssh2Shell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ssh2Shell")
            .field("user", &self.config.user)
            .field("host_keys", &self.config.host_keys)
            .field("sessions", &lock(&self.conns).len())
            .finish_non_exhaustive()
    }
}

/// Where and as whom a node is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: u16,
    user: String,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A node's endpoint and its session, once connected.
struct NodeConn {
    endpoint: Endpoint,
    session: Mutex<Option<Session>>,
    /// The node refused the SFTP subsystem once: upload through the shell.
    no_sftp: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A libssh2 timeout in milliseconds (0 would mean "none": at least 1).
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

fn is_code(e: &ssh2::Error, code: i32) -> bool {
    e.code() == ErrorCode::Session(code)
}

impl Ssh2Shell {
    /// A shell for nodes reached as `config` says.
    ///
    /// # Errors
    /// [`SshError::InvalidInput`] when the configuration is not usable (see [`SshConfig::validate`]).
    pub fn new(config: SshConfig) -> Result<Self, SshError> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SshConfig {
        &self.config
    }

    fn endpoint(&self, node: &Node) -> Result<Endpoint, SshError> {
        let address = node.address.as_ref().ok_or_else(|| {
            SshError::InvalidInput(format!("node {} has no SSH address", node.name))
        })?;
        // NodeAddress has no "unset" port: 22 stands for "the configured port".
        let port = if address.port == 22 {
            self.config.port
        } else {
            address.port
        };
        Ok(Endpoint {
            host: address.host.clone(),
            port,
            user: node
                .ssh_user
                .clone()
                .unwrap_or_else(|| self.config.user.clone()),
        })
    }

    fn conn(&self, node: &Node) -> Result<Arc<NodeConn>, SshError> {
        let endpoint = self.endpoint(node)?;
        let mut conns = lock(&self.conns);
        match conns.get(&node.id) {
            Some(c) if c.endpoint == endpoint => Ok(c.clone()),
            _ => {
                let c = Arc::new(NodeConn {
                    endpoint,
                    session: Mutex::new(None),
                    no_sftp: std::sync::atomic::AtomicBool::new(false),
                });
                conns.insert(node.id.clone(), c.clone());
                Ok(c)
            }
        }
    }

    /// Runs `op` on the node's session (connecting first when needed) in a blocking thread.
    async fn with_session<T, F>(&self, node: &Node, op: F) -> Result<T, SshError>
    where
        T: Send + 'static,
        F: Fn(&Session, &Endpoint, &SshConfig) -> Result<T, SshError> + Send + 'static,
    {
        let conn = self.conn(node)?;
        let config = self.config.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut slot = lock(&conn.session);
            let cached = slot.is_some();
            if !cached {
                *slot = Some(connect(&config, &conn.endpoint)?);
            }
            let session = slot
                .as_ref()
                .ok_or_else(|| SshError::InvalidInput("no session".into()))?;
            match op(session, &conn.endpoint, &config) {
                // A cached session the server closed while idle fails to open a
                // channel: nothing ran, so reconnect once and try again.
                Err(SshError::Session { doing, .. }) if cached && doing == OPENING => {
                    *slot = None;
                    let session = connect(&config, &conn.endpoint)?;
                    let result = op(&session, &conn.endpoint, &config);
                    *slot = Some(session);
                    result
                }
                Err(e @ SshError::Session { .. }) => {
                    *slot = None;
                    Err(e)
                }
                other => other,
            }
        });
        task.await.map_err(|e| SshError::Session {
            host: node.name.clone(),
            doing: "running a blocking task",
            source: io::Error::other(e.to_string()),
        })?
    }
}

const OPENING: &str = "opening a channel";

/// Connects, checks the host key and logs in.
fn connect(config: &SshConfig, ep: &Endpoint) -> Result<Session, SshError> {
    let host = ep.to_string();
    let started = Instant::now();
    let remaining = || config.connect_timeout.saturating_sub(started.elapsed());
    let timed_out = || SshError::ConnectTimeout {
        host: host.clone(),
        after: config.connect_timeout,
    };
    let handshake_err = |source: ssh2::Error| SshError::Handshake {
        host: host.clone(),
        source: source.into(),
    };
    let mut session = Session::new().map_err(handshake_err)?;
    let proxy = attach_transport(
        &mut session,
        config,
        ep,
        started + config.connect_timeout,
        config.connect_timeout,
    )?;
    session.set_timeout(millis(remaining()));

    let spec = known_hosts::host_spec(&ep.host, ep.port);
    let stored = match config.host_keys {
        HostKeyPolicy::InsecureAcceptAny => Vec::new(),
        _ => known_hosts::stored_key_types(&config.known_hosts, &spec)?,
    };
    let pinned = known_hosts::algorithm_prefs(&stored);
    if let Some(prefs) = &pinned {
        // libssh2 compares whatever key type the server offers with the stored
        // entries: ask for the stored type so an ed25519 entry is not compared
        // with the server's ECDSA key.
        session
            .method_pref(MethodType::HostKey, prefs)
            .map_err(handshake_err)?;
    }
    if let Err(e) = session.handshake() {
        // A proxy that exited (a bastion refusing us) explains any failure.
        let grace = remaining().min(Duration::from_secs(1));
        if let Some(failed) = proxy.as_ref().and_then(|p| p.failure(&host, grace)) {
            return Err(failed);
        }
        return Err(if is_code(&e, LIBSSH2_ERROR_TIMEOUT) {
            timed_out()
        } else if pinned.is_some() && is_code(&e, LIBSSH2_ERROR_KEX_FAILURE) {
            // The server has no key of the recorded type: learn which key it
            // does offer, on a second connection that only looks at it.
            let recorded = stored.join(", ");
            let fingerprint = match offered_key(config, ep, started + config.connect_timeout) {
                Some(offered) => format!("{offered}, but no key of the recorded type ({recorded})"),
                None => format!("no key of the recorded type ({recorded})"),
            };
            SshError::HostKeyMismatch {
                host: spec,
                fingerprint,
                known_hosts: config.known_hosts.clone(),
            }
        } else {
            handshake_err(e)
        });
    }
    verify_host_key(config, &session, &spec)?;
    tracing::debug!(
        node = %host,
        kex = session.methods(MethodType::Kex).unwrap_or("?"),
        host_key = session.methods(MethodType::HostKey).unwrap_or("?"),
        cipher = session.methods(MethodType::CryptCs).unwrap_or("?"),
        "SSH handshake done."
    );

    session.set_timeout(millis(config.auth_timeout));
    let (result, method) = match &config.auth {
        SshAuth::KeyFile { path } => {
            // With the public key beside it, libssh2 need not derive it from
            // the private key (a failed OpenSSL 3 PEM decode first, which costs
            // more client CPU than the key exchange).
            let mut public = path.clone().into_os_string();
            public.push(".pub");
            let public = std::path::PathBuf::from(public);
            let public = public.is_file().then_some(public.as_path());
            (
                session.userauth_pubkey_file(&ep.user, public, path, None),
                format!("key file {}", path.display()),
            )
        }
        SshAuth::Agent => (session.userauth_agent(&ep.user), "ssh-agent".to_owned()),
    };
    match result {
        Ok(()) if session.authenticated() => {}
        Ok(()) => {
            return Err(SshError::AuthRefused {
                host,
                user: ep.user.clone(),
                method,
                source: io::Error::other("not authenticated"),
            })
        }
        Err(e) if is_code(&e, LIBSSH2_ERROR_TIMEOUT) => {
            return Err(SshError::AuthTimeout {
                host,
                after: config.auth_timeout,
            })
        }
        Err(e) if is_code(&e, LIBSSH2_ERROR_FILE) => {
            return Err(SshError::InvalidInput(format!(
                "cannot use the private key {method}: {}",
                e.message()
            )))
        }
        Err(e) => {
            return Err(SshError::AuthRefused {
                host,
                user: ep.user.clone(),
                method,
                source: e.into(),
            })
        }
    }
    tracing::debug!(node = %host, user = %ep.user, "SSH session opened.");
    Ok(session)
}

/// Gives `session` its transport to `ep`: the proxy command's socket pair when
/// one is configured (returned as a watch, to explain failures), otherwise a
/// TCP connection opened by `deadline`.
fn attach_transport(
    session: &mut Session,
    config: &SshConfig,
    ep: &Endpoint,
    deadline: Instant,
    connect_timeout: Duration,
) -> Result<Option<ProxyWatch>, SshError> {
    let host = ep.to_string();
    if let Some(command) = &config.proxy_command {
        let (stream, watch) = ProxyStream::spawn(command, &ep.host, ep.port, &ep.user, &host)?;
        session.set_tcp_stream(stream);
        return Ok(Some(watch));
    }
    let tcp = open_tcp(ep, &host, deadline, connect_timeout)?;
    // libssh2 does not set it: without it each round trip waits for a delayed ACK.
    tcp.set_nodelay(true)
        .map_err(|source| SshError::Connect { host, source })?;
    session.set_tcp_stream(tcp);
    Ok(None)
}

/// Opens the TCP connection to `ep`, trying each of its addresses until `deadline`.
fn open_tcp(
    ep: &Endpoint,
    host: &str,
    deadline: Instant,
    connect_timeout: Duration,
) -> Result<TcpStream, SshError> {
    let timed_out = || SshError::ConnectTimeout {
        host: host.to_owned(),
        after: connect_timeout,
    };
    let addrs: Vec<_> = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|source| SshError::Connect {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(timed_out()),
            Err(e) => last = e,
        }
    }
    Err(SshError::Connect {
        host: host.to_owned(),
        source: last,
    })
}

/// The host key the server offers when no type is asked for, as
/// `ssh-ed25519 key SHA256:...`; None when that cannot be learned by `deadline`
/// (at least a second is given). Nothing is sent but the key exchange.
fn offered_key(config: &SshConfig, ep: &Endpoint, deadline: Instant) -> Option<String> {
    let deadline = deadline.max(Instant::now() + Duration::from_secs(1));
    let mut session = Session::new().ok()?;
    let _proxy = attach_transport(&mut session, config, ep, deadline, Duration::ZERO).ok()?;
    session.set_timeout(millis(deadline.saturating_duration_since(Instant::now())));
    session.handshake().ok()?;
    let (_, key_type) = session.host_key()?;
    let offered = format!(
        "{} key {}",
        known_hosts::type_name(key_type).unwrap_or("unknown"),
        known_hosts::fingerprint(&session)
    );
    let _ = session.disconnect(None, "host key check only", None);
    Some(offered)
}

fn verify_host_key(config: &SshConfig, session: &Session, spec: &str) -> Result<(), SshError> {
    if config.host_keys == HostKeyPolicy::InsecureAcceptAny {
        return Ok(());
    }
    let (key, key_type) = session.host_key().ok_or_else(|| SshError::KnownHosts {
        path: config.known_hosts.clone(),
        message: "the server sent no host key".into(),
    })?;
    let path = &config.known_hosts;
    // Check and record under one lock: concurrent first connections record once.
    let _guard = lock(&known_hosts::FILE_LOCK);
    match known_hosts::check(session, path, spec, key)? {
        Verdict::Known => Ok(()),
        Verdict::Changed => Err(SshError::HostKeyMismatch {
            host: spec.to_owned(),
            fingerprint: known_hosts::fingerprint(session),
            known_hosts: path.clone(),
        }),
        Verdict::Unknown if config.host_keys == HostKeyPolicy::AcceptNew => {
            known_hosts::record(path, spec, key, key_type)?;
            tracing::info!(host = spec, fingerprint = %known_hosts::fingerprint(session),
                "Recorded a new host key.");
            Ok(())
        }
        Verdict::Unknown => Err(SshError::HostKeyUnknown {
            host: spec.to_owned(),
            fingerprint: known_hosts::fingerprint(session),
            known_hosts: path.clone(),
        }),
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
struct RawOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<i32>,
    signal: Option<String>,
    truncated: bool,
}

impl RawOutput {
    fn into_output(self) -> CommandOutput {
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
struct Job<'a> {
    /// The rendered line.
    line: &'a str,
    /// Fed to its stdin, then EOF.
    stdin: &'a [u8],
    timeout: Duration,
    /// Bytes kept of stdout, and of stderr.
    cap: usize,
    /// Whether it runs under sudo (its processes are then killed with sudo).
    sudo: bool,
    /// The command for messages.
    display: &'a str,
}

/// Runs a job on a new channel of `session`.
/// How an SFTP upload went, when it did not fail outright.
enum SftpUpload {
    Done,
    /// The server offers no SFTP subsystem: upload another way.
    NoSubsystem(String),
}

/// Uploads `contents` to `path` over SFTP: written to a temporary name
/// beside it, given `mode` exactly (not masked by the server's umask), then
/// renamed over it. SFTP v3 (OpenSSH) will not rename onto an existing file,
/// so an old one is removed first: a reader sees the old file, then for one
/// round trip none, then the whole new one, never half a file.
fn sftp_upload(
    session: &Session,
    ep: &Endpoint,
    path: &str,
    contents: &[u8],
    mode: u32,
    timeout: Duration,
) -> Result<SftpUpload, SshError> {
    use std::path::Path;
    session.set_blocking(true);
    session.set_timeout(millis(timeout));
    let sftp = match session.sftp() {
        Ok(sftp) => sftp,
        // The channel opened but the server refused the `sftp` subsystem.
        // libssh2's sftp_init reports this and a failed channel open with the
        // same code (LIBSSH2_ERROR_CHANNEL_FAILURE, -21); only its message
        // ("Unable to request SFTP subsystem", sftp.c) tells them apart.
        Err(e) if e.code() == ErrorCode::Session(-21) && e.message().contains("SFTP subsystem") => {
            return Ok(SftpUpload::NoSubsystem(e.to_string()))
        }
        // A closed cached session fails to open the channel: say so as an
        // opening failure, so the caller reconnects once, as for a command.
        Err(e) => {
            return Err(SshError::Session {
                host: ep.to_string(),
                doing: OPENING,
                source: e.into(),
            })
        }
    };
    static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = format!("{path}.pyscaler-{}-{n}", std::process::id());
    let written = (|| -> Result<(), String> {
        let text = |e: ssh2::Error| e.to_string();
        // Created readable by its owner only (a secret must never be
        // readable by others, not even while it is being written); the
        // asked-for mode comes once the contents are whole.
        let flags = ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::EXCLUSIVE;
        let mut file = sftp
            .open_mode(Path::new(&tmp), flags, 0o600, ssh2::OpenType::File)
            .map_err(text)?;
        file.write_all(contents).map_err(|e| e.to_string())?;
        file.setstat(ssh2::FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: Some(mode),
            atime: None,
            mtime: None,
        })
        .map_err(text)?;
        file.close().map_err(text)?;
        match sftp.unlink(Path::new(path)) {
            Ok(()) => {}
            // LIBSSH2_FX_NO_SUCH_FILE: nothing to replace.
            Err(e) if e.code() == ErrorCode::SFTP(2) => {}
            Err(e) => return Err(e.to_string()),
        }
        sftp.rename(Path::new(&tmp), Path::new(path), None)
            .map_err(text)
    })();
    if let Err(message) = written {
        let _ = sftp.unlink(Path::new(&tmp));
        return Err(SshError::Transfer {
            path: path.to_owned(),
            message,
        });
    }
    Ok(SftpUpload::Done)
}

fn run(session: &Session, ep: &Endpoint, job: &Job<'_>) -> Result<RawOutput, SshError> {
    let Job {
        line,
        stdin,
        timeout,
        cap,
        sudo,
        display,
    } = *job;
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let fail = |doing: &'static str| {
        move |e: io::Error| SshError::Session {
            host: ep.to_string(),
            doing,
            source: e,
        }
    };
    let timed_out = || SshError::CommandTimedOut {
        command: display.to_owned(),
        after: timeout,
    };
    session.set_blocking(true);
    session.set_timeout(millis(left().min(Duration::from_secs(30))));
    let mut channel = session
        .channel_session()
        .map_err(|e| fail(OPENING)(e.into()))?;
    channel
        .exec(&format!("echo $$; {line}"))
        .map_err(|e| fail("starting a command")(e.into()))?;
    if !stdin.is_empty() {
        session.set_timeout(millis(left()));
        if let Err(e) = channel.write_all(stdin) {
            return Err(if e.kind() == io::ErrorKind::TimedOut {
                timed_out()
            } else {
                fail("sending input")(e)
            });
        }
    }
    channel
        .send_eof()
        .map_err(|e| fail("sending input")(e.into()))?;

    let mut out = Stdout {
        head: Some(Vec::new()),
        pid: None,
        body: Capped::new(cap),
    };
    let mut err = Capped::new(cap);
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
        let wait = left();
        if wait.is_zero() {
            end_command(session, channel, out.pid, sudo, ep);
            return Err(timed_out());
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
                out.push(&buf[..n]);
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

/// Ends a command that overran: closes its channel and kills its process group.
fn end_command(
    session: &Session,
    mut channel: ssh2::Channel,
    pid: Option<u32>,
    sudo: bool,
    ep: &Endpoint,
) {
    session.set_timeout(millis(Duration::from_secs(2)));
    let _ = channel.close();
    drop(channel);
    let Some(pid) = pid else {
        tracing::warn!(node = %ep, "A command timed out before its pid was known; it may still run.");
        return;
    };
    // sshd starts each command's shell with setsid: it leads its process group.
    // This spelling works in dash and bash (dash refuses `kill -KILL -- -PID`).
    let kill =
        format!("kill -s KILL -- -{pid} 2>/dev/null || kill -s KILL {pid} 2>/dev/null; true");
    let kill = if sudo {
        format!("sudo -n sh -c {}", quote(&kill).unwrap_or_default())
    } else {
        kill
    };
    session.set_timeout(millis(Duration::from_secs(5)));
    let killed = session.channel_session().and_then(|mut c| {
        c.exec(&kill)?;
        c.send_eof()?;
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
        c.wait_close()
    });
    if let Err(e) = killed {
        tracing::warn!(node = %ep, error = %e, "Could not kill a command that timed out.");
    }
}

#[async_trait]
impl RemoteShell for Ssh2Shell {
    async fn exec(&self, node: &Node, command: &RemoteCommand) -> Result<CommandOutput, SshError> {
        let line = command.render()?;
        let timeout = command.own_timeout().unwrap_or(self.config.command_timeout);
        let sudo = command.is_sudo();
        let display = command.display();
        let started = Instant::now();
        let out = self
            .with_session(node, move |session, ep, config| {
                run(
                    session,
                    ep,
                    &Job {
                        line: &line,
                        stdin: &[],
                        timeout,
                        cap: config.output_cap,
                        sudo,
                        display: &display,
                    },
                )
            })
            .await?
            .into_output();
        tracing::debug!(node = %node.name, status = %out.status_line(),
            elapsed_ms = started.elapsed().as_millis() as u64, "Command ran.");
        Ok(out)
    }

    async fn upload(
        &self,
        node: &Node,
        remote_path: &str,
        contents: Vec<u8>,
        mode: u32,
        sudo: bool,
    ) -> Result<(), SshError> {
        let path = quote(remote_path)?;
        let no_sftp = || {
            self.conn(node)
                .is_ok_and(|c| c.no_sftp.load(std::sync::atomic::Ordering::Relaxed))
        };
        if !sudo && !no_sftp() {
            // SFTP runs inside sshd (no shell, no `cat`, no `mv`): about half
            // the server's CPU of the shell pipeline below. A server without
            // the SFTP subsystem gets the shell pipeline.
            let timeout = self.config.command_timeout;
            let (target, data) = (remote_path.to_owned(), contents.clone());
            let sent = self
                .with_session(node, move |session, ep, _config| {
                    sftp_upload(session, ep, &target, &data, mode, timeout)
                })
                .await?;
            match sent {
                SftpUpload::Done => return Ok(()),
                SftpUpload::NoSubsystem(why) => {
                    if let Ok(c) = self.conn(node) {
                        c.no_sftp.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    tracing::debug!(node = %node.name, %why,
                        "No SFTP on the node; uploading through the shell from now on.");
                }
            }
        }
        // Written beside the target, then renamed: a reader never sees half a file.
        let script = format!(
            "t={path}.pyscaler-$$; umask 077; cat > \"$t\" && chmod {mode:o} \"$t\" && mv -f \"$t\" {path} || {{ rm -f \"$t\"; exit 1; }}"
        );
        let command = RemoteCommand::new(script).sudo(sudo);
        let line = command.render()?;
        let timeout = self.config.command_timeout;
        let out = self
            .with_session(node, move |session, ep, _config| {
                run(
                    session,
                    ep,
                    &Job {
                        line: &line,
                        stdin: &contents,
                        timeout,
                        cap: 64 * 1024,
                        sudo,
                        display: "upload",
                    },
                )
            })
            .await?
            .into_output();
        let ep = self.endpoint(node)?;
        let message = format!("{}: {}", out.status_line(), out.stderr.trim());
        match out.check(&command, &ep.to_string(), &ep.user) {
            Ok(_) => Ok(()),
            Err(e @ SshError::SudoNeedsPassword { .. }) => Err(e),
            Err(_) => Err(SshError::Transfer {
                path: remote_path.to_owned(),
                message,
            }),
        }
    }

    async fn download(&self, node: &Node, remote_path: &str) -> Result<Vec<u8>, SshError> {
        let line = format!("cat -- {}", quote(remote_path)?);
        let timeout = self.config.command_timeout;
        let raw = self
            .with_session(node, move |session, ep, _config| {
                run(
                    session,
                    ep,
                    &Job {
                        line: &line,
                        stdin: &[],
                        timeout,
                        cap: usize::MAX,
                        sudo: false,
                        display: "download",
                    },
                )
            })
            .await?;
        if raw.exit_code == Some(0) {
            Ok(raw.stdout)
        } else {
            Err(SshError::Transfer {
                path: remote_path.to_owned(),
                message: String::from_utf8_lossy(&raw.stderr).trim().to_owned(),
            })
        }
    }

    async fn disconnect(&self, node: &Node) {
        let conn = lock(&self.conns).remove(&node.id);
        if let Some(conn) = conn {
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(session) = lock(&conn.session).take() {
                    session.set_timeout(1000);
                    let _ = session.disconnect(None, "bye", None);
                }
            })
            .await;
        }
    }
}
