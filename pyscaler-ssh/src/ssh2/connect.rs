//! Opening a session: the transport (TCP or a proxy command), the handshake,
//! the host-key check and the login.

use std::io;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ::ssh2::{MethodType, Session};

use super::channels::Channels;
use super::{is_code, lock, millis, Endpoint};
use crate::known_hosts::{self, Verdict};
use crate::proxy::{ProxyStream, ProxyWatch};
use crate::{HostKeyPolicy, SshAuth, SshConfig, SshError};

/// libssh2's error codes we tell apart (`LIBSSH2_ERROR_*` in libssh2.h).
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_KEX_FAILURE: i32 = -5;
const LIBSSH2_ERROR_FILE: i32 = -16;

/// A second handle on a session's socket, to close the connection from any
/// thread: a libssh2 call blocked on it then fails at once instead of waiting
/// out its timeout (a cancelled command on a hung node).
#[derive(Debug)]
pub(super) enum Transport {
    Tcp(TcpStream),
    Proxy(UnixStream),
}

impl Transport {
    /// Acks what arrives at once for a while (`TCP_QUICKACK`, Linux) instead
    /// of up to 40 ms late. sshd does not set `TCP_NODELAY` for a session
    /// without a terminal, so Nagle holds its next small packet (a channel's
    /// confirmation) until its last one is acked; a delayed ack would stall
    /// that answer. Sending leaves quick-ack mode again: set it once the
    /// request is sent, before waiting for the answer. A proxy command's
    /// socket has no ack of its own.
    pub(super) fn quick_ack(&self) {
        #[cfg(target_os = "linux")]
        if let Self::Tcp(s) = self {
            let _ = socket2::SockRef::from(s).set_tcp_quickack(true);
        }
    }

    /// Shuts the connection down both ways (the socket stays open until the
    /// session is dropped, so no other file can take its descriptor).
    pub(super) fn shut(&self) {
        let _ = match self {
            Self::Tcp(s) => s.shutdown(Shutdown::Both),
            Self::Proxy(s) => s.shutdown(Shutdown::Both),
        };
    }
}

/// A logged-in session and the handle that can close its connection.
pub(super) struct Live {
    pub(super) session: Session,
    pub(super) transport: std::sync::Arc<Transport>,
    /// Its next channel, opened ahead, and its round trip.
    pub(super) channels: std::sync::Mutex<Channels>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // The session is being given up. A channel opened ahead and never
        // used would, freed on a live connection, wait a round trip for the
        // server's close (one node after another, when a shell with many
        // sessions is dropped): end the connection first, as dropping it
        // would anyway.
        self.transport.shut();
    }
}

/// Connects, checks the host key and logs in.
pub(super) fn connect(config: &SshConfig, ep: &Endpoint) -> Result<Live, SshError> {
    let host = ep.to_string();
    let started = Instant::now();
    let remaining = || config.connect_timeout.saturating_sub(started.elapsed());
    let timed_out = || SshError::ConnectTimeout {
        host: host.clone(),
        after: config.connect_timeout,
    };
    let handshake_err = |source: ::ssh2::Error| SshError::Handshake {
        host: host.clone(),
        source: source.into(),
    };
    let mut session = Session::new().map_err(handshake_err)?;
    let (transport, proxy) = attach_transport(
        &mut session,
        config,
        ep,
        started + config.connect_timeout,
        config.connect_timeout,
    )?;
    session.set_timeout(millis(remaining()));

    let spec = ep.known_as.clone();
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
    verify_host_key(config, &session, &spec, &ep.published)?;
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
    Ok(Live {
        session,
        transport: std::sync::Arc::new(transport),
        channels: std::sync::Mutex::new(Channels::default()),
    })
}

/// Gives `session` its transport to `ep`: the proxy command's socket pair when
/// one is configured (with a watch, to explain failures), otherwise a TCP
/// connection opened by `deadline`; and a second handle on it.
fn attach_transport(
    session: &mut Session,
    config: &SshConfig,
    ep: &Endpoint,
    deadline: Instant,
    connect_timeout: Duration,
) -> Result<(Transport, Option<ProxyWatch>), SshError> {
    let host = ep.to_string();
    let unusable = |host: &str| {
        let host = host.to_owned();
        move |source| SshError::Connect { host, source }
    };
    if let Some(command) = &config.proxy_command {
        let (stream, watch) = ProxyStream::spawn(command, &ep.host, ep.port, &ep.user, &host)?;
        let handle = stream.try_clone_socket().map_err(unusable(&host))?;
        session.set_tcp_stream(stream);
        return Ok((Transport::Proxy(handle), Some(watch)));
    }
    let tcp = open_tcp(ep, &host, deadline, connect_timeout)?;
    // libssh2 does not set it: without it each round trip waits for a delayed ACK.
    tcp.set_nodelay(true).map_err(unusable(&host))?;
    let handle = tcp.try_clone().map_err(unusable(&host))?;
    session.set_tcp_stream(tcp);
    Ok((Transport::Tcp(handle), None))
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

fn verify_host_key(
    config: &SshConfig,
    session: &Session,
    spec: &str,
    published: &[String],
) -> Result<(), SshError> {
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
        Verdict::Unknown if config.host_keys == HostKeyPolicy::Published => {
            let offered = known_hosts::fingerprint(session);
            if !published.iter().any(|p| p == &offered) {
                return Err(SshError::HostKeyNotPublished {
                    host: spec.to_owned(),
                    fingerprint: offered,
                    published: published.to_vec(),
                });
            }
            known_hosts::record(path, spec, key, key_type)?;
            tracing::info!(host = spec, fingerprint = %offered,
                "Recorded a new host key: the one its provider published.");
            Ok(())
        }
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
