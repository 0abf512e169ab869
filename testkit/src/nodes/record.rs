//! The record of what a node host set made on the machine (network
//! namespaces, links, folders), each line written *before* the thing is
//! made, so that the next set to take the same slot removes what a set
//! whose process died left behind: by the names recorded, never by a
//! broad name match.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One slot's record file, in the system's temporary folder.
#[derive(Debug)]
pub(super) struct Record {
    path: PathBuf,
}

impl Record {
    /// The record of `slot`, beside its lock file.
    pub(super) fn of_slot(slot: u8) -> Self {
        Self {
            path: std::env::temp_dir().join(format!("pyscaler-nodes-slot-{slot}.record")),
        }
    }

    /// Notes that `kind` (`netns`, `link`, `dir`) `name` is about to be made.
    pub(super) fn note(&self, kind: &str, name: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap_or_else(|e| panic!("open the node record {}: {e}", self.path.display()));
        writeln!(file, "{kind} {name}")
            .unwrap_or_else(|e| panic!("write the node record {}: {e}", self.path.display()));
    }

    /// Whether an earlier set left anything recorded.
    pub(super) fn is_empty(&self) -> bool {
        std::fs::read_to_string(&self.path)
            .map(|s| s.trim().is_empty())
            .unwrap_or(true)
    }

    /// Removes everything recorded (newest first: a namespace's processes
    /// and the namespace before the bridge its link hangs on), then the
    /// record itself. Returns what it removed, for the harness's log.
    pub(super) fn clean_up(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut removed = Vec::new();
        for line in text.lines().rev() {
            let Some((kind, name)) = line.split_once(' ') else {
                continue;
            };
            let gone = match kind {
                "netns" => remove_netns(name),
                "link" => remove_link(name),
                "dir" => {
                    let path = Path::new(name);
                    !path.exists() || std::fs::remove_dir_all(path).is_ok()
                }
                _ => false,
            };
            if gone {
                removed.push(line.to_owned());
            }
        }
        let _ = std::fs::remove_file(&self.path);
        removed
    }
}

/// The processes inside network namespace `name` (none when it is gone).
pub(super) fn netns_pids(name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether network namespace `name` exists.
pub(super) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Whether link `name` exists in this (the controller's) namespace.
pub(super) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Kills every process in the namespace (bounded: 5 s), then deletes it.
/// True when it is gone.
pub(super) fn remove_netns(name: &str) -> bool {
    if !netns_exists(name) {
        return true;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = netns_pids(name);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("ip").args(["netns", "del", name]).status();
    !netns_exists(name)
}

/// Deletes link `name` (a veth's end takes its peer with it). True when it is gone.
pub(super) fn remove_link(name: &str) -> bool {
    if !link_exists(name) {
        return true;
    }
    // A veth whose other end's namespace was just deleted may be going
    // away by itself (the kernel removes it asynchronously): quietly.
    let _ = Command::new("ip")
        .args(["link", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
    !link_exists(name)
}

/// Whether process `pid` still runs: it exists and is not a zombie (a
/// killed process whose parent is gone waits there for the machine's init
/// to reap it, holding nothing but its number).
pub(super) fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}
