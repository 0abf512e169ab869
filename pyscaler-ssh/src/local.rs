//! The one runner for programs on the controller: started without a shell,
//! bounded in time (killed past it), both pipes drained while it runs.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::CommandOutput;

/// Why a local program gave no output.
#[derive(Debug)]
pub(crate) enum LocalFailure {
    /// It could not be started (not found, not executable).
    Start(std::io::Error),
    /// Reading its output or waiting for it failed.
    Wait(std::io::Error),
    /// It ran past its bound and was killed.
    TimedOut(Duration),
}

impl std::fmt::Display for LocalFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start(e) => write!(f, "cannot start it: {e}"),
            Self::Wait(e) => write!(f, "{e}"),
            Self::TimedOut(after) => {
                write!(f, "killed after {}", humantime::format_duration(*after))
            }
        }
    }
}

/// Runs `command` to its end, or kills it after `within`. Its stdin is
/// closed; stdout and stderr are read whole (invalid UTF-8 replaced).
pub(crate) async fn run_local(
    mut command: Command,
    within: Duration,
) -> Result<CommandOutput, LocalFailure> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropped on the timeout below: the child is killed with it.
        .kill_on_drop(true)
        .spawn()
        .map_err(LocalFailure::Start)?;
    let out = match tokio::time::timeout(within, child.wait_with_output()).await {
        Err(_) => return Err(LocalFailure::TimedOut(within)),
        Ok(Err(e)) => return Err(LocalFailure::Wait(e)),
        Ok(Ok(out)) => out,
    };
    #[cfg(unix)]
    let signal = {
        use std::os::unix::process::ExitStatusExt;
        out.status.signal().map(signal_name)
    };
    #[cfg(not(unix))]
    let signal = None;
    Ok(CommandOutput {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        exit_code: out.status.code(),
        signal,
        truncated: false,
    })
}

/// A signal's name without `SIG`, as a remote command's is given (`KILL`).
#[cfg(unix)]
fn signal_name(number: i32) -> String {
    match number {
        1 => "HUP".into(),
        2 => "INT".into(),
        6 => "ABRT".into(),
        9 => "KILL".into(),
        11 => "SEGV".into(),
        13 => "PIPE".into(),
        15 => "TERM".into(),
        n => n.to_string(),
    }
}

/// [`run_local`] for code that is not async (an action's `build()`): on a
/// thread of its own with a small runtime, so it works inside a runtime or
/// outside one.
pub(crate) fn run_local_blocking(
    command: Command,
    within: Duration,
) -> Result<CommandOutput, LocalFailure> {
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(LocalFailure::Start)?;
            runtime.block_on(run_local(command, within))
        });
        worker.join().unwrap_or_else(|_| {
            Err(LocalFailure::Wait(std::io::Error::other(
                "the thread running the program panicked",
            )))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn output_and_status_are_read() {
        let out = run_local(
            sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
        )
        .await
        .expect("ran");
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str(), out.exit_code),
            ("out\n", "err\n", Some(3))
        );
        let out = run_local(sh("kill -TERM $$"), Duration::from_secs(10))
            .await
            .expect("ran");
        assert_eq!(out.status_line(), "killed by TERM");
    }

    #[tokio::test(start_paused = true)]
    async fn a_program_past_its_bound_is_killed() {
        let e = run_local(sh("sleep 30"), Duration::from_secs(1))
            .await
            .expect_err("killed");
        assert_eq!(e.to_string(), "killed after 1s");
    }

    #[test]
    fn the_blocking_form_works_outside_and_inside_a_runtime() {
        let out = run_local_blocking(sh("printf x"), Duration::from_secs(10)).expect("ran");
        assert_eq!(out.stdout, "x");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let out = runtime
            .block_on(async { run_local_blocking(sh("printf y"), Duration::from_secs(10)) })
            .expect("ran");
        assert_eq!(out.stdout, "y");
        let e = run_local_blocking(Command::new("/nonexistent/prog"), Duration::from_secs(1))
            .expect_err("not found");
        assert!(e.to_string().starts_with("cannot start it"), "{e}");
    }
}
