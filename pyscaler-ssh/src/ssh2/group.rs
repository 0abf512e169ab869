//! The process groups of a run's commands on a node: recorded when they
//! start, ended (SIGTERM, then SIGKILL after a grace) when their command is
//! abandoned or their run is over.
//!
//! sshd starts each command's shell with `setsid`, so the shell leads a
//! process group of its own, whose id is its pid (`echo $$`, the first line
//! of every command's stdout). A command of a run (see
//! [`RemoteCommand::in_run`](crate::RemoteCommand::in_run)) also records that
//! id (`record.rs`). A record left behind names a group still running, or one
//! a signal ended; ending it again is harmless.

use std::sync::Arc;
use std::time::Duration;

use super::connect::connect;
use super::exec::{run, Interrupt, Job};
use super::record::{record_dir, Group};
use super::Endpoint;
use crate::{SshConfig, SshError};

/// How long a group has between SIGTERM and SIGKILL.
pub(super) const TERM_GRACE: Duration = Duration::from_secs(2);

/// Shell functions: `k SIG SUDO PGID` signals a group, `e PGID SUDO` ends it
/// (TERM, a grace, KILL) and prints `ended` when it was still running.
fn functions() -> String {
    let tenths = TERM_GRACE.as_millis() / 100;
    // `kill -s SIG -- -PGID` is the spelling dash and procps both take; a
    // group whose leader exited is still signalled by its id.
    format!(
        "k() {{ if [ \"$2\" = 1 ]; then sudo -n kill -s \"$1\" -- \"-$3\"; \
         else kill -s \"$1\" -- \"-$3\"; fi 2>/dev/null; }}; \
         e() {{ k 0 \"$2\" \"$1\" || return 0; k TERM \"$2\" \"$1\"; i=0; \
         while k 0 \"$2\" \"$1\" && [ $i -lt {tenths} ]; do sleep 0.1; i=$((i+1)); done; \
         k KILL \"$2\" \"$1\"; echo ended; }}; "
    )
}

/// The script that ends one group (and removes its record).
fn end_one(group: &Group) -> String {
    let sudo = u8::from(group.sudo);
    let mut script = format!("{}e {} {sudo}", functions(), group.pid);
    if let Some((run, step)) = &group.record {
        script.push_str(&format!(
            "; rm -f {}/{}",
            record_dir(run, Some(step)),
            group.pid
        ));
    }
    script.push_str("; true");
    script
}

/// The script that ends every group recorded under `run` (and `step`) and
/// removes their records. A record's second field is 1 for a command run
/// under sudo, whose group is then signalled with sudo.
fn end_recorded(run: &str, step: Option<&str>) -> String {
    let dir = record_dir(run, step);
    format!(
        "{}d={dir}; for f in \"$d\"/* \"$d\"/*/*; do [ -f \"$f\" ] || continue; \
         read p s < \"$f\"; \
         case $p in ''|*[!0-9]*) ;; *) e \"$p\" \"$s\";; esac; rm -f \"$f\"; done; \
         rmdir \"$d\"/* \"$d\" 2>/dev/null; true",
        functions()
    )
}

/// `config` with its connect and login bounded by `unreachable_timeout`.
pub(super) fn bounded(config: &SshConfig) -> SshConfig {
    let bound = config.unreachable_timeout;
    let mut config = config.clone();
    config.connect_timeout = config.connect_timeout.min(bound);
    config.auth_timeout = config.auth_timeout.min(bound);
    config
}

/// Runs `script` over a fresh connection bounded by `unreachable_timeout`;
/// returns how many groups it ended.
fn end_with(config: &SshConfig, ep: &Endpoint, script: String) -> Result<usize, SshError> {
    let live = connect(&bounded(config), ep)
        .map_err(|e| SshError::as_unreachable(ep.to_string(), config.unreachable_timeout, e))?;
    let job = Job {
        line: script,
        stdin: Arc::default(),
        timeout: config.unreachable_timeout + TERM_GRACE,
        cap: 64 * 1024,
        sudo: false,
        record: None,
        display: "ending a command's process group".to_owned(),
    };
    super::lock(&live.channels).one_shot();
    let result = run(&live, ep, &job, &Interrupt::default());
    live.session.set_timeout(1000);
    let _ = live.session.disconnect(None, "done", None);
    let out = result?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l == "ended")
        .count())
}

/// Ends `group` over a fresh connection (the command's own may be hung).
///
/// # Errors
/// [`SshError::Unreachable`] when the node does not answer within its bound.
pub(super) fn end(config: &SshConfig, ep: &Endpoint, group: &Group) -> Result<usize, SshError> {
    end_with(config, ep, end_one(group))
}

/// Ends every group recorded for `run` (and `step`) on the node.
///
/// # Errors
/// [`SshError::Unreachable`] when the node does not answer within its bound.
pub(super) fn end_run(
    config: &SshConfig,
    ep: &Endpoint,
    run: &str,
    step: Option<&str>,
) -> Result<usize, SshError> {
    end_with(config, ep, end_recorded(run, step))
}
