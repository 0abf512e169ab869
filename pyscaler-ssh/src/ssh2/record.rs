//! The records of a run's process groups on a node: each command of a run
//! writes its group's id, and whether it runs under sudo, to
//! `~/.pyscaler/runs/<run id>/<step>/<pgid>` in the login user's home (a
//! folder only that user can change, unlike `/tmp`), and removes it when its
//! shell exits. `group.rs` ends what the records name.

use crate::quote::file_safe;

/// The folder of run records, under the login user's home.
pub(super) const RUNS_DIR: &str = ".pyscaler/runs";

/// A command's process group on a node.
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// Its id: the pid of the command's login shell.
    pub(super) pid: u32,
    /// Whether its processes run as root (they are then signalled with sudo).
    pub(super) sudo: bool,
    /// The run and step it is recorded under.
    pub(super) record: Option<(String, String)>,
}

/// The record folder of `run` (and `step`), as a shell word (home expanded).
pub(super) fn record_dir(run: &str, step: Option<&str>) -> String {
    let mut dir = format!("\"$HOME\"/{RUNS_DIR}/{}", file_safe(run));
    if let Some(step) = step {
        dir.push('/');
        dir.push_str(&file_safe(step));
    }
    dir
}

/// What each command's line starts with: its shell's pid on stdout and, for
/// a command of a run, the record of its group (removed when the shell exits).
pub(super) fn prelude(record: Option<&(String, String)>, sudo: bool) -> String {
    let Some((run, step)) = record else {
        return "echo $$; ".to_owned();
    };
    let dir = record_dir(run, Some(step));
    let sudo = u8::from(sudo);
    format!(
        "_pyscaler_group={dir}/$$; mkdir -p {dir} && echo \"$$ {sudo}\" > \"$_pyscaler_group\"; \
         trap 'rm -f \"$_pyscaler_group\"' EXIT; echo $$; "
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_named_by_run_and_step_in_plain_file_names() {
        let p = prelude(
            Some(&("run-1".to_owned(), "cluster update/2".to_owned())),
            true,
        );
        assert!(
            p.contains("\"$HOME\"/.pyscaler/runs/run-1/cluster_update_2/$$"),
            "{p}"
        );
        assert!(p.ends_with("echo $$; "), "{p}");
        assert!(p.contains("echo \"$$ 1\""), "{p}");
        assert_eq!(prelude(None, false), "echo $$; ");
    }
}
