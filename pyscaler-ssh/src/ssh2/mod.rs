//! `Ssh2Shell`: the [`RemoteShell`] built on libssh2 (the `ssh2` crate).
//!
//! - `mod.rs`: the shell, its pool of sessions (one per node) and the trait impl;
//! - `idle.rs`: the idle sessions, least recently used first, and closing those beyond the bound;
//! - `connect.rs`: transport, handshake, host key, login;
//! - `channels.rs`: the next channel opened ahead, and the round trip;
//! - `exec.rs`: one command on a channel, and what stops it early;
//! - `upload.rs`: uploads, over SFTP or through the shell, by the link's round trip;
//! - `sftp.rs`: uploads over SFTP;
//! - `group.rs`: the process groups of a run's commands on a node.

mod channels;
mod connect;
mod exec;
mod group;
mod idle;
mod record;
mod sftp;
mod upload;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ::ssh2::ErrorCode;
use async_trait::async_trait;
use pyscaler_core::{CancellationToken, Node};

use self::connect::{connect, Live};
use self::exec::{run, Interrupt, Job, RawOutput};
use self::idle::{close_if_idle, IdleSessions};
use crate::config::KnownHostsName;
use crate::quote::quote;
use crate::{CommandOutput, RemoteCommand, RemoteShell, SshConfig, SshError, UploadOptions};

/// The [`RemoteShell`] of real nodes, over SSH with libssh2.
///
/// - One authenticated session is kept per node (by node id) and reused for
///   consecutive commands; each command gets its own channel. Commands to the
///   same node run one after the other; different nodes run in parallel. At
///   most [`SshConfig::idle_sessions`] sessions (default 256) are kept idle:
///   beyond that the least recently used are closed (and reconnected when
///   their node is next used), so a fan-out over 1,000 nodes holds its
///   concurrency's sessions plus that many, not one per node it reached.
/// - libssh2 is blocking: every call runs in `tokio::task::spawn_blocking`.
/// - `TCP_NODELAY` is set before the handshake (libssh2 does not set it;
///   without it every round trip stalls about 40 ms on delayed ACKs).
/// - With [`SshConfig::proxy_command`], the session runs over a socket pair
///   whose other end is the proxy's stdin and stdout (a bastion's `ssh -W`)
///   instead of TCP; the connect timeout bounds the handshake through it, host
///   keys are still those of the node, and the proxy is killed and reaped when
///   the session ends. A proxy that exits early is [`SshError::ProxyFailed`].
/// - stdout and stderr are read together, so neither can fill the channel window and stall the other.
/// - Round trips: once a command is under way, the channel of the node's
///   next command is opened without waiting for the answer, so a command on
///   an open session waits one round trip (not two: the open, then `exec`).
///   An upload is one shell command (`cat` into a temporary name, `chmod`,
///   `mv`: two round trips) where the link's round trip is 1 ms or more, and
///   SFTP (no shell: about half the server's CPU, but nine requests one
///   after the other) where round trips are cheaper than the server's CPU,
///   as on the same machine or network. The link's round trip is the
///   quickest channel open seen on any session to the node's address: a
///   busy server answers late, its link stays as fast. Uploads with sudo, or
///   to a node without the SFTP subsystem, always use the shell.
/// - Host keys are checked as [`HostKeyPolicy`](crate::HostKeyPolicy) says, against entries for
///   exactly `host` (port 22) or `[host]:port`; the host-key algorithm is
///   pinned to the type(s) stored for the server, so a server with several
///   host keys is compared with the one that was recorded.
/// - A command that overruns its timeout ([`SshError::CommandTimedOut`]), is
///   cancelled ([`RemoteCommand::cancel_on`], [`SshError::Cancelled`]) or
///   whose call is dropped (a step's timeout) is ended at once: its
///   connection is shut down and its session dropped from the pool, then its
///   process group gets SIGTERM and, after a short grace, SIGKILL, over a
///   fresh connection bounded by [`SshConfig::unreachable_timeout`]. A node
///   that does not answer it is treated as unreachable: until a connection to
///   it succeeds again, each call connects within that bound or fails with
///   [`SshError::Unreachable`]. (This relies on the login shell being a POSIX
///   shell: each command is preceded by `echo $$` to learn the shell's pid,
///   which leads the command's process group.)
/// - A command of a run ([`RemoteCommand::in_run`]) records its process group
///   on the node under the run and step, so that [`RemoteShell::end_run`]
///   ends what a dead controller left running there: see
///   [`end_run`](RemoteShell::end_run) for where the records live.
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
    idle: Arc<Mutex<IdleSessions>>,
    links: Arc<upload::Links>,
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
    /// The host key fingerprints the node's provider published.
    published: Vec<String>,
    /// The name its key is stored under in `known_hosts`.
    known_as: String,
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
    /// The session; held for the whole of an operation, so operations on one
    /// node run one after the other (and after the end of an abandoned one).
    session: Mutex<Option<Live>>,
    /// The node refused the SFTP subsystem once: upload through the shell.
    no_sftp: AtomicBool,
    /// A command here was abandoned and its group could not be ended, or is
    /// being ended: connect within `unreachable_timeout` until one succeeds.
    suspect: AtomicBool,
    /// When its session became idle (a tick of [`IdleSessions`]), or 0: in
    /// use, or none.
    idle_since: AtomicU64,
}

impl NodeConn {
    fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            session: Mutex::new(None),
            no_sftp: AtomicBool::new(false),
            suspect: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
        }
    }

    /// A new session; bounded by `unreachable_timeout` while the node is suspect.
    fn connect(&self, config: &SshConfig) -> Result<Live, SshError> {
        if !self.suspect.load(Ordering::Relaxed) {
            return connect(config, &self.endpoint);
        }
        let live = connect(&group::bounded(config), &self.endpoint).map_err(|e| {
            SshError::as_unreachable(self.endpoint.to_string(), config.unreachable_timeout, e)
        })?;
        self.suspect.store(false, Ordering::Relaxed);
        Ok(live)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A libssh2 timeout in milliseconds (0 would mean "none": at least 1).
fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

fn is_code(e: &::ssh2::Error, code: i32) -> bool {
    e.code() == ErrorCode::Session(code)
}

const OPENING: &str = "opening a channel";

/// Cancels an operation whose caller stopped waiting (its future was
/// dropped, as a step's timeout does), unless it finished.
struct CancelOnDrop(Option<Arc<Interrupt>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(interrupt) = self.0.take() {
            interrupt.cancel();
        }
    }
}

/// An operation on a node's session, run in a blocking thread.
type Op<T> = dyn Fn(&Live, &Endpoint, &SshConfig, &Interrupt) -> Result<T, SshError> + Send + Sync;

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
            idle: Arc::default(),
            links: Arc::default(),
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
            published: node.host_key_fingerprints.clone(),
            known_as: match self.config.known_hosts_name {
                KnownHostsName::NodeId => node.id.clone(),
                _ => crate::known_hosts::host_spec(&address.host, port),
            },
        })
    }

    fn conn(&self, node: &Node) -> Result<Arc<NodeConn>, SshError> {
        let endpoint = self.endpoint(node)?;
        let mut conns = lock(&self.conns);
        match conns.get(&node.id) {
            Some(c) if c.endpoint == endpoint => Ok(c.clone()),
            _ => {
                let c = Arc::new(NodeConn::new(endpoint));
                if let Some(old) = conns.insert(node.id.clone(), c.clone()) {
                    // The node moved: its old session is closed once unused.
                    lock(&self.idle).taken(&old);
                }
                Ok(c)
            }
        }
    }

    /// Runs `op` on the node's session (connecting first when needed) in a
    /// blocking thread, until it ends or `cancel` fires ([`SshError::Cancelled`],
    /// naming `what`). Dropping the returned future cancels it too.
    async fn with_session<T: Send + 'static>(
        &self,
        node: &Node,
        cancel: Option<&CancellationToken>,
        what: &str,
        op: Box<Op<T>>,
    ) -> Result<T, SshError> {
        let conn = self.conn(node)?;
        let config = self.config.clone();
        let idle = self.idle.clone();
        let links = self.links.clone();
        let interrupt = Arc::new(Interrupt::new(cancel));
        let mut guard = CancelOnDrop(Some(interrupt.clone()));
        let mut task = {
            let interrupt = interrupt.clone();
            tokio::task::spawn_blocking(move || {
                let result = on_session(&conn, &idle, &links, &config, &interrupt, &*op);
                close_idle_beyond(&idle, config.idle_sessions);
                result
            })
        };
        let joined = tokio::select! {
            joined = &mut task => joined,
            () = interrupt.cancelled() => {
                interrupt.cancel();
                task.await
            }
        };
        guard.0 = None;
        let result = joined.map_err(|e| SshError::Session {
            host: node.name.clone(),
            doing: "running a blocking task",
            source: io::Error::other(e.to_string()),
        })?;
        let result = match result {
            Err(_) if interrupt.is_cancelled() => Err(SshError::Cancelled {
                host: node.name.clone(),
                command: what.to_owned(),
            }),
            other => other,
        };
        // The core's metrics count every operation on a node, by its error
        // kind (the command itself is never a label).
        pyscaler_core::record_provider_call(pyscaler_core::ProviderCall {
            provider: "SSH",
            operation: "Session",
            attempts: 1,
            error: result.as_ref().err().map(pyscaler_core::Classify::kind),
        });
        result
    }

    /// Runs `job` on the node's session (see [`Ssh2Shell::with_session`]).
    async fn run_job(
        &self,
        node: &Node,
        cancel: Option<&CancellationToken>,
        job: Job,
    ) -> Result<RawOutput, SshError> {
        let what = job.display.clone();
        self.with_session(
            node,
            cancel,
            &what,
            Box::new(move |live, ep, _config, interrupt| run(live, ep, &job, interrupt)),
        )
        .await
    }
}

/// Closes the least recently used idle sessions beyond `keep`.
fn close_idle_beyond(idle: &Mutex<IdleSessions>, keep: usize) {
    let beyond = lock(idle).beyond(keep);
    let closed = beyond.iter().filter(|c| close_if_idle(c)).count();
    if closed > 0 {
        tracing::trace!(
            closed,
            keep,
            "Closed the least recently used idle sessions."
        );
    }
}

/// The blocking part of [`Ssh2Shell::with_session`]: `op` on the node's
/// session, which is not idle meanwhile, and idle again after it (the most
/// recently used) if it is still connected; its round trip, once measured,
/// counts for the link to its address.
fn on_session<T>(
    conn: &Arc<NodeConn>,
    idle: &Mutex<IdleSessions>,
    links: &upload::Links,
    config: &SshConfig,
    interrupt: &Interrupt,
    op: &Op<T>,
) -> Result<T, SshError> {
    let mut slot = lock(&conn.session);
    lock(idle).taken(conn);
    let result = on_taken_session(&mut slot, conn, config, interrupt, op);
    if let Some(live) = slot.as_ref() {
        // Every session's round trip tells what the link to its address allows.
        if let Some(round_trip) = lock(&live.channels).measured() {
            links.observe(&conn.endpoint.host, round_trip);
        }
        lock(idle).released(conn);
    }
    result
}

/// [`on_session`] once the session is taken. A cancelled or timed-out
/// operation leaves its session shut down: it is dropped, and the command's
/// process group is ended over a fresh connection (bounded), before the next
/// operation on the node may start.
fn on_taken_session<T>(
    slot: &mut Option<Live>,
    conn: &NodeConn,
    config: &SshConfig,
    interrupt: &Interrupt,
    op: &Op<T>,
) -> Result<T, SshError> {
    if interrupt.is_cancelled() {
        // Cancelled while waiting for the node (the caller names the command).
        return Err(SshError::Cancelled {
            host: conn.endpoint.to_string(),
            command: String::new(),
        });
    }
    let cached = slot.is_some();
    if !cached {
        *slot = Some(conn.connect(config)?);
    }
    let live = slot
        .as_ref()
        .ok_or_else(|| SshError::InvalidInput("no session".into()))?;
    interrupt.attach(&live.transport);
    let mut result = op(live, &conn.endpoint, config, interrupt);
    if let Err(SshError::Session { doing, .. }) = &result {
        // A cached session the server closed while idle fails to open a
        // channel: nothing ran, so reconnect once and try again.
        if cached && *doing == OPENING && !interrupt.is_cancelled() {
            *slot = None;
            let live = conn.connect(config)?;
            interrupt.attach(&live.transport);
            result = op(&live, &conn.endpoint, config, interrupt);
            *slot = Some(live);
        }
    }
    let abandoned =
        interrupt.is_cancelled() || matches!(result, Err(SshError::CommandTimedOut { .. }));
    if abandoned {
        // Its connection is shut down already: drop the session now.
        if let Some(live) = slot.take() {
            live.transport.shut();
        }
        if result.is_err() {
            end_abandoned(conn, config, interrupt);
        }
    } else if let Err(SshError::Session { .. }) = &result {
        *slot = None;
    }
    result
}

/// Ends the process group of an abandoned command over a fresh connection;
/// a node that does not answer stays suspect (treated as unreachable).
fn end_abandoned(conn: &NodeConn, config: &SshConfig, interrupt: &Interrupt) {
    conn.suspect.store(true, Ordering::Relaxed);
    let ep = &conn.endpoint;
    let Some(group) = interrupt.group() else {
        tracing::warn!(node = %ep, "A command was abandoned before its pid was known; it may still run.");
        return;
    };
    let started = Instant::now();
    match group::end(config, ep, &group) {
        Ok(ended) => {
            conn.suspect.store(false, Ordering::Relaxed);
            tracing::debug!(node = %ep, pgid = group.pid, ended,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Ended the process group of an abandoned command.");
        }
        Err(e) => tracing::warn!(node = %ep, pgid = group.pid, error = %e,
            "Could not end an abandoned command; the node is treated as unreachable."),
    }
}

#[async_trait]
impl RemoteShell for Ssh2Shell {
    async fn exec(&self, node: &Node, command: &RemoteCommand) -> Result<CommandOutput, SshError> {
        let job = Job {
            line: command.render()?,
            stdin: Arc::default(),
            timeout: command.own_timeout().unwrap_or(self.config.command_timeout),
            cap: self.config.output_cap,
            sudo: command.is_sudo(),
            record: command
                .run_and_step()
                .map(|(run, step)| (run.to_owned(), step.to_owned())),
            display: command.display(),
        };
        let started = Instant::now();
        let out = self
            .run_job(node, command.cancellation(), job)
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
        options: UploadOptions,
    ) -> Result<(), SshError> {
        self.upload_to(node, remote_path, contents, options).await
    }

    async fn download(&self, node: &Node, remote_path: &str) -> Result<Vec<u8>, SshError> {
        let job = Job {
            line: format!("cat -- {}", quote(remote_path)?),
            stdin: Arc::default(),
            timeout: self.config.command_timeout,
            cap: usize::MAX,
            sudo: false,
            record: None,
            display: "download".to_owned(),
        };
        let raw = self.run_job(node, None, job).await?;
        if raw.exit_code == Some(0) {
            Ok(raw.stdout)
        } else {
            Err(SshError::Transfer {
                path: remote_path.to_owned(),
                message: String::from_utf8_lossy(&raw.stderr).trim().to_owned(),
            })
        }
    }

    async fn end_run<'a>(
        &self,
        node: &Node,
        run_id: &str,
        step: Option<&'a str>,
    ) -> Result<usize, SshError> {
        let ep = self.endpoint(node)?;
        let config = self.config.clone();
        let (run_id, step) = (run_id.to_owned(), step.map(str::to_owned));
        tokio::task::spawn_blocking(move || group::end_run(&config, &ep, &run_id, step.as_deref()))
            .await
            .map_err(|e| SshError::Session {
                host: node.name.clone(),
                doing: "running a blocking task",
                source: io::Error::other(e.to_string()),
            })?
    }

    async fn disconnect(&self, node: &Node) {
        let conn = lock(&self.conns).remove(&node.id);
        if let Some(conn) = conn {
            lock(&self.idle).taken(&conn);
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(live) = lock(&conn.session).take() {
                    live.session.set_timeout(1000);
                    let _ = live.session.disconnect(None, "bye", None);
                }
            })
            .await;
        }
    }
}
