//! A session's channels: the next one opened ahead of need, and the round
//! trip a channel open takes.
//!
//! A command needs a channel, and opening one is a round trip (the request
//! for a command names the server's channel number, so it cannot be sent
//! before the answer). Once a command is under way, the open of the next
//! channel is sent without waiting for its answer ([`Channels::open_ahead`]),
//! so the node's next command or upload finds its channel ready and pays one
//! round trip, not two. The blocking opens are timed: the shortest is the
//! session's round trip, which decides how an upload goes.

use std::time::{Duration, Instant};

use ::ssh2::{BlockDirections, Channel, ErrorCode, Session};

use super::connect::Transport;

/// `LIBSSH2_ERROR_EAGAIN` (libssh2.h).
const LIBSSH2_ERROR_EAGAIN: i32 = -37;

/// The channel opened ahead, or the open under way, and the measured round trip.
#[derive(Default)]
pub(super) struct Channels {
    /// A channel opened ahead and not used yet.
    spare: Option<Channel>,
    /// An open sent ahead (whole: only its answer is awaited) whose answer
    /// has not been read yet; libssh2 keeps its state in the session, and
    /// the next channel open of the session (also the one SFTP makes)
    /// completes it.
    opening: bool,
    /// The shortest blocking channel open: one round trip.
    round_trip: Option<Duration>,
    /// A connection for one command (ending an abandoned one's group):
    /// nothing is opened ahead.
    one_shot: bool,
}

impl Channels {
    /// A channel for the next operation: the one opened ahead, or a new one.
    /// The flag says it was opened ahead: on a session the server has since
    /// closed, its first request fails as an open would have.
    ///
    /// # Errors
    /// libssh2's, when no channel can be opened.
    pub(super) fn take(
        &mut self,
        session: &Session,
        transport: &Transport,
    ) -> Result<(Channel, bool), ::ssh2::Error> {
        if let Some(channel) = self.spare.take() {
            return Ok((channel, true));
        }
        if std::mem::take(&mut self.opening) {
            // Its answer has most likely arrived while the last command ran.
            // A refused one (the server's limit of channels) gets a new try.
            if let Ok(channel) = session.channel_session() {
                return Ok((channel, true));
            }
        }
        let started = Instant::now();
        let channel = open_acking(session, transport)?;
        let took = started.elapsed();
        self.round_trip = Some(self.round_trip.map_or(took, |r| r.min(took)));
        Ok((channel, false))
    }

    /// The session's round trip, measured by opening a channel (kept for
    /// the next operation) when none has been measured yet.
    ///
    /// # Errors
    /// libssh2's, when no channel can be opened.
    pub(super) fn round_trip(
        &mut self,
        session: &Session,
        transport: &Transport,
    ) -> Result<Duration, ::ssh2::Error> {
        if let Some(rt) = self.round_trip {
            return Ok(rt);
        }
        // Channels are opened ahead only after a timed open: this one is timed.
        let (channel, _) = self.take(session, transport)?;
        self.spare = Some(channel);
        Ok(self.round_trip.unwrap_or_default())
    }

    /// The round trip measured so far, if any.
    pub(super) fn measured(&self) -> Option<Duration> {
        self.round_trip
    }

    /// Sends the open of the next channel without waiting for its answer
    /// (nothing when one is ready or under way). Should the request not
    /// go out whole at once (a full socket buffer), it is completed here:
    /// libssh2 sends no other packet while one is half-sent, so it must not
    /// be left so.
    pub(super) fn open_ahead(&mut self, session: &Session) {
        if self.spare.is_some() || self.opening || self.one_shot {
            return;
        }
        let blocking = session.is_blocking();
        session.set_blocking(false);
        let sent = session.channel_session();
        session.set_blocking(blocking);
        match sent {
            Ok(channel) => self.spare = Some(channel),
            Err(e) if e.code() == ErrorCode::Session(LIBSSH2_ERROR_EAGAIN) => {
                if session.block_directions() == BlockDirections::Inbound {
                    self.opening = true;
                } else if let Ok(channel) = session.channel_session() {
                    // Half-sent: finished now (its answer waited for).
                    self.spare = Some(channel);
                }
            }
            // Not now (the connection is going): the next operation opens its own.
            Err(_) => {}
        }
    }

    /// Opens nothing ahead from now on (a connection for one command).
    pub(super) fn one_shot(&mut self) {
        self.one_shot = true;
    }

    /// Forgets an open under way (the SFTP subsystem's open completes it
    /// and takes the channel for itself).
    pub(super) fn consumed_by_sftp(&mut self) {
        self.opening = false;
    }
}

/// Opens a channel and waits for it, acking what arrives meanwhile at once.
///
/// The first open of a session is answered late on a near link: right
/// after the login sshd sends its host keys (`hostkeys-00@openssh.com`),
/// and Nagle (sshd sets no `TCP_NODELAY` without a terminal) holds the
/// open's confirmation until those are acked, which Linux delays up to
/// 40 ms (measured: 44 ms of a loopback channel open). Quick-ack mode,
/// set once the open is sent (sending leaves it again), acks them at once.
fn open_acking(session: &Session, transport: &Transport) -> Result<Channel, ::ssh2::Error> {
    let blocking = session.is_blocking();
    session.set_blocking(false);
    let sent = session.channel_session();
    session.set_blocking(blocking);
    match sent {
        Err(e) if e.code() == ErrorCode::Session(LIBSSH2_ERROR_EAGAIN) => {
            transport.quick_ack();
            session.channel_session()
        }
        done => done,
    }
}
