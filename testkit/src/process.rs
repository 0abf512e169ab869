//! Looking at this machine's processes from a test: whether a command a
//! test started on a (loopback) node still runs, and bounded waiting.

use std::time::{Duration, Instant};

/// Whether a process whose command line holds `pattern` runs (as far as
/// this user can see in `/proc`; `pgrep` itself does not count).
pub fn running(pattern: &str) -> bool {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok).any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| {
                        let line = String::from_utf8_lossy(&c).replace('\0', " ");
                        line.contains(pattern) && !line.contains("pgrep")
                    })
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// Waits, polling every 50 ms, until `done` holds or `within` has passed;
/// false if it never held.
pub async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}
