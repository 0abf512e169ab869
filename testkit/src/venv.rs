//! The project's Python virtual environment (`.venv`), installed on first use.
//!
//! `scripts/requirements.txt` is the one list of what goes in it; `scripts/setup`
//! installs it, and so does [`ensure`] when a test finds `.venv` without it.
//! After an install, the list is copied to `.venv/pyscaler-requirements.txt`:
//! a `.venv` whose copy matches the list is ready. Test binaries start in
//! parallel, so installing happens under an exclusive lock on
//! `target/venv.lock` (the one `scripts/setup` takes too), and whoever waited
//! for it checks again before installing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::workspace_root;

/// The environment's folder: `<workspace>/.venv`.
pub(crate) fn dir() -> PathBuf {
    workspace_root().join(".venv")
}

/// Makes sure `.venv` holds `scripts/requirements.txt`, installing it when it
/// does not (checked once per process; other processes wait on the lock).
///
/// # Panics
/// When the install fails, with what to run to fix it.
pub(crate) fn ensure() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        ensure_in(&workspace_root());
    });
}

/// [`ensure`] for the workspace at `root`; true when this call installed.
fn ensure_in(root: &Path) -> bool {
    let requirements = root.join("scripts").join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .unwrap_or_else(|e| panic!("read {}: {e}", requirements.display()));
    let venv = root.join(".venv");
    let marker = venv.join("pyscaler-requirements.txt");
    if installed(&marker, &wanted) {
        return false;
    }
    let target = root.join("target");
    let lock_path = target.join("venv.lock");
    std::fs::create_dir_all(&target).unwrap_or_else(|e| panic!("create {}: {e}", target.display()));
    let lock =
        File::create(&lock_path).unwrap_or_else(|e| panic!("create {}: {e}", lock_path.display()));
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            log(&format!(
                "another process is installing {}: waiting for {}",
                venv.display(),
                lock_path.display()
            ));
            lock.lock()
                .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
        }
        Err(std::fs::TryLockError::Error(e)) => panic!("lock {}: {e}", lock_path.display()),
    }
    // Another test binary (or scripts/setup) may have installed it meanwhile.
    if installed(&marker, &wanted) {
        log(&format!("{} is ready", venv.display()));
        return false;
    }
    install(&venv, &requirements);
    std::fs::write(&marker, &wanted).unwrap_or_else(|e| panic!("write {}: {e}", marker.display()));
    log(&format!("{} is ready", venv.display()));
    // Dropping `lock` releases it.
    true
}

/// Whether `.venv` was installed from this very list.
fn installed(marker: &Path, wanted: &str) -> bool {
    std::fs::read_to_string(marker).is_ok_and(|have| have == wanted)
}

fn install(venv: &Path, requirements: &Path) {
    if !venv.join("bin").join("pip").exists() {
        log(&format!("creating {} with python3 -m venv", venv.display()));
        run(
            Command::new("python3").arg("-m").arg("venv").arg(venv),
            "python3 -m venv (on Debian, scripts/setup installs python3-venv)",
        );
    }
    log(&format!(
        "installing {} with pip (a minute or so, once)",
        requirements.display()
    ));
    run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(requirements),
        "pip install -r scripts/requirements.txt",
    );
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}; run scripts/setup"));
    assert!(
        out.status.success(),
        "{what} failed ({}); run scripts/setup. Its output:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Straight to the process's stderr: the test harness captures `eprintln!`
/// output, and a minute-long install should not look like a hang.
fn log(line: &str) {
    let _ = writeln!(std::io::stderr(), "testkit: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_callers_install_once_and_the_list_is_recorded() {
        let root = tempfile::tempdir().expect("a temporary workspace");
        let scripts = root.path().join("scripts");
        std::fs::create_dir_all(&scripts).expect("create scripts/");
        // An empty list: pip has nothing to fetch, so the test needs no network.
        let list = "# nothing to install\n";
        std::fs::write(scripts.join("requirements.txt"), list).expect("write the list");

        let installs: Vec<bool> = std::thread::scope(|s| {
            let callers: Vec<_> = (0..3).map(|_| s.spawn(|| ensure_in(root.path()))).collect();
            callers
                .into_iter()
                .map(|c| c.join().expect("a caller panicked"))
                .collect()
        });

        assert_eq!(installs.iter().filter(|&&i| i).count(), 1, "{installs:?}");
        let venv = root.path().join(".venv");
        assert!(venv.join("bin").join("python").exists());
        assert!(venv.join("bin").join("pip").exists());
        assert_eq!(
            std::fs::read_to_string(venv.join("pyscaler-requirements.txt")).expect("the marker"),
            list
        );
        assert!(!ensure_in(root.path()), "installed again though ready");
    }
}
