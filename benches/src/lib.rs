//! Helpers shared by pyscaler's benchmarks.

use pyscaler_core::{async_trait, Action, Cluster, Context, MetricSource, Result, Sample};

/// An action that does nothing: measures the engine alone.
#[derive(Debug, Clone, Copy)]
pub struct NoOp;

#[async_trait]
impl Action for NoOp {
    fn name(&self) -> &str {
        "noop"
    }

    async fn run(&self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }
}

/// A metric source with no samples (benchmarks call `evaluate` directly).
#[derive(Debug, Clone, Copy)]
pub struct Silent;

#[async_trait]
impl MetricSource for Silent {
    fn name(&self) -> &str {
        "silent"
    }

    async fn sample(&self, _cluster: &Cluster) -> Result<Vec<Sample>> {
        Ok(Vec::new())
    }
}

/// Runs a benchmark's helper process: `start` on a tokio runtime (after
/// the SIGTERM and SIGINT handlers, so a stop that comes right after start
/// is not lost), then waits for either signal and gives what `start`
/// returned to `stop`. A failed start prints `name: error` and fails.
pub fn serve_until_signalled<T>(
    name: &str,
    start: impl FnOnce() -> std::result::Result<T, String>,
    stop: impl FnOnce(T),
) -> std::process::ExitCode {
    use std::process::ExitCode;
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("{name}: cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        let held = match start() {
            Ok(held) => held,
            Err(e) => {
                eprintln!("{name}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop(held);
        ExitCode::SUCCESS
    })
}

/// Writes `contents` beside `path`, then renames it over `path`: a script
/// waiting for the file never reads half of it.
///
/// # Errors
/// The write's or the rename's, naming the file.
pub fn write_whole(path: &std::path::Path, contents: &str) -> std::result::Result<(), String> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
