//! Uploads over SFTP (inside sshd: no shell, no `cat`, no `mv`).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ::ssh2::ErrorCode;

use super::connect::Live;
use super::{lock, millis, Endpoint, OPENING};
use crate::SshError;

/// `LIBSSH2_ERROR_CHANNEL_FAILURE` (libssh2.h): a channel, or a subsystem on
/// it, was refused.
const LIBSSH2_ERROR_CHANNEL_FAILURE: i32 = -21;
/// `LIBSSH2_FX_NO_SUCH_FILE` (libssh2_sftp.h).
const LIBSSH2_FX_NO_SUCH_FILE: i32 = 2;

/// How an SFTP upload went, when it did not fail outright.
pub(super) enum SftpUpload {
    Done,
    /// The server offers no SFTP subsystem: upload another way.
    NoSubsystem(String),
}

/// Uploads `contents` to `path` over SFTP: written to a temporary name
/// beside it, given `mode` exactly (not masked by the server's umask), then
/// renamed over it. SFTP v3 (OpenSSH) will not rename onto an existing file,
/// so an old one is removed first: a reader sees the old file, then for one
/// round trip none, then the whole new one, never half a file.
pub(super) fn sftp_upload(
    live: &Live,
    ep: &Endpoint,
    path: &str,
    contents: &[u8],
    mode: u32,
    timeout: Duration,
) -> Result<SftpUpload, SshError> {
    let session = &live.session;
    session.set_blocking(true);
    session.set_timeout(millis(timeout));
    // A channel open sent ahead is completed by SFTP's own, and is its channel.
    lock(&live.channels).consumed_by_sftp();
    let sftp = match session.sftp() {
        Ok(sftp) => sftp,
        // The channel opened but the server refused the `sftp` subsystem.
        // libssh2's sftp_init reports this and a failed channel open with the
        // same code (LIBSSH2_ERROR_CHANNEL_FAILURE); only its message
        // ("Unable to request SFTP subsystem", sftp.c) tells them apart.
        Err(e)
            if e.code() == ErrorCode::Session(LIBSSH2_ERROR_CHANNEL_FAILURE)
                && e.message().contains("SFTP subsystem") =>
        {
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
        let text = |e: ::ssh2::Error| e.to_string();
        // Created readable by its owner only (a secret must never be
        // readable by others, not even while it is being written); the
        // asked-for mode comes once the contents are whole.
        let flags =
            ::ssh2::OpenFlags::WRITE | ::ssh2::OpenFlags::CREATE | ::ssh2::OpenFlags::EXCLUSIVE;
        let mut file = sftp
            .open_mode(Path::new(&tmp), flags, 0o600, ::ssh2::OpenType::File)
            .map_err(text)?;
        file.write_all(contents).map_err(|e| e.to_string())?;
        file.setstat(::ssh2::FileStat {
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
            // Nothing to replace.
            Err(e) if e.code() == ErrorCode::SFTP(LIBSSH2_FX_NO_SUCH_FILE) => {}
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
