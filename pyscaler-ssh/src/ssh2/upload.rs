//! Uploads: over SFTP where round trips are cheap, through one shell
//! command where they are dear, by the round trip of the link to the node's
//! address.
//!
//! SFTP runs inside sshd (no shell, no `cat`, no `mv`): about half the
//! server's CPU of the shell pipeline (3.6 against 7 ms a file here,
//! `sshd_cost`), but eight more round trips one after the other (its
//! subsystem, then open, write, setstat, close, unlink and rename); the
//! pipeline is one command, two round trips.
//!
//! A channel open is timed to learn the round trip, but a busy server
//! answers late too: 100 sessions to one sshd on 2 cores made a channel
//! open take 52 ms at the median while the link took well under one. The
//! link to an address is shared by every session to it and a busy moment is
//! not, so the round trip used is the least seen on any session to the
//! node's address ([`Links`]): load passes, the link stays.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use pyscaler_core::Node;

use super::exec::{run, Job, RawOutput};
use super::sftp::{sftp_upload, SftpUpload};
use super::{lock, Ssh2Shell, OPENING};
use crate::quote::quote;
use crate::{RemoteCommand, SshError, UploadOptions};

/// Uploads go over SFTP when the link's round trip is below this, and
/// through one shell command otherwise.
const SFTP_BELOW: Duration = Duration::from_millis(1);

/// The least round trip seen on any session, by the address it went to.
#[derive(Default)]
pub(super) struct Links(Mutex<HashMap<String, Duration>>);

impl Links {
    /// Takes a session's round trip to `host` into account and returns the
    /// least seen to it so far.
    pub(super) fn observe(&self, host: &str, round_trip: Duration) -> Duration {
        let mut links = lock(&self.0);
        let least = links.entry(host.to_owned()).or_insert(round_trip);
        *least = (*least).min(round_trip);
        *least
    }
}

/// How an upload went on the session.
enum Uploaded {
    Sftp(SftpUpload),
    Shell(RawOutput),
}

impl Ssh2Shell {
    /// [`RemoteShell::upload`](crate::RemoteShell::upload) of `Ssh2Shell`.
    pub(super) async fn upload_to(
        &self,
        node: &Node,
        remote_path: &str,
        contents: Vec<u8>,
        options: UploadOptions,
    ) -> Result<(), SshError> {
        let UploadOptions {
            mode,
            sudo,
            timeout,
            cancel,
        } = options;
        let timeout = timeout.unwrap_or(self.config.command_timeout);
        let cancel = cancel.as_ref();
        let path = quote(remote_path)?;
        // Written beside the target, then renamed: a reader never sees half a file.
        let script = format!(
            "t={path}.pyscaler-$$; umask 077; cat > \"$t\" && chmod {mode:o} \"$t\" && mv -f \"$t\" {path} || {{ rm -f \"$t\"; exit 1; }}"
        );
        let command = RemoteCommand::new(script).sudo(sudo);
        let job = Job {
            line: command.render()?,
            stdin: contents.into(),
            timeout,
            cap: 64 * 1024,
            sudo,
            record: None,
            display: "upload".to_owned(),
        };
        let no_sftp = sudo
            || self
                .conn(node)
                .is_ok_and(|c| c.no_sftp.load(Ordering::Relaxed));
        let target = remote_path.to_owned();
        // The same command again, should the node turn out to have no SFTP.
        let fallback = job.clone();
        let links = self.links.clone();
        let uploaded = self
            .with_session(
                node,
                cancel,
                "upload",
                Box::new(move |live, ep, _config, interrupt| {
                    let session_round_trip = lock(&live.channels)
                        .round_trip(&live.session, &live.transport)
                        .map_err(|e| SshError::Session {
                            host: ep.to_string(),
                            doing: OPENING,
                            source: e.into(),
                        })?;
                    let round_trip = links.observe(&ep.host, session_round_trip);
                    if !no_sftp && round_trip < SFTP_BELOW {
                        return sftp_upload(live, ep, &target, &job.stdin, mode, timeout)
                            .map(Uploaded::Sftp);
                    }
                    run(live, ep, &job, interrupt).map(Uploaded::Shell)
                }),
            )
            .await?;
        let out = match uploaded {
            Uploaded::Sftp(SftpUpload::Done) => return Ok(()),
            Uploaded::Sftp(SftpUpload::NoSubsystem(why)) => {
                if let Ok(c) = self.conn(node) {
                    c.no_sftp.store(true, Ordering::Relaxed);
                }
                tracing::debug!(node = %node.name, %why,
                    "No SFTP on the node; uploading through the shell from now on.");
                self.run_job(node, cancel, fallback).await?
            }
            Uploaded::Shell(raw) => raw,
        }
        .into_output();
        let ep = self.endpoint(node)?;
        let message = format!("{}: {}", out.status_line(), out.stderr.trim());
        match out.check_as(&command, &ep.to_string(), &ep.user) {
            Ok(_) => Ok(()),
            Err(e @ SshError::SudoNeedsPassword { .. }) => Err(e),
            Err(_) => Err(SshError::Transfer {
                path: remote_path.to_owned(),
                message,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_as_fast_as_its_fastest_session_and_links_are_apart() {
        let links = Links::default();
        let ms = Duration::from_millis;
        // A busy server's late answer...
        assert_eq!(links.observe("10.0.0.5", ms(52)), ms(52));
        // ...then a quick one on another session to the same address.
        assert_eq!(
            links.observe("10.0.0.5", Duration::from_micros(300)),
            Duration::from_micros(300)
        );
        assert_eq!(
            links.observe("10.0.0.5", ms(80)),
            Duration::from_micros(300)
        );
        // Another address has its own link.
        assert_eq!(links.observe("192.0.2.7", ms(40)), ms(40));
    }
}
