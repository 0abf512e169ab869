//! The embedded journal: one JSON line per entry in a file per cluster.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{replay, Journal, JournalEntry, RunRecord};
use crate::{Error, ErrorKind, Result};

/// The embedded journal: one JSON line per entry in `<dir>/<cluster>.journal`,
/// each `fsync`ed before `append` returns, and an exclusive lock on the file so
/// two controllers on one machine cannot run the same cluster at once.
pub struct FileJournal {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl fmt::Debug for FileJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileJournal")
            .field("path", &self.path)
            .finish()
    }
}

fn io_error(what: String, e: std::io::Error) -> Error {
    Error::other(ErrorKind::Unexpected, format!("{what}: {e}"))
}

impl FileJournal {
    /// Opens (or creates) the journal of `cluster` in `dir` and takes its lock.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when another controller holds the lock; an
    /// unexpected error when the folder or file cannot be created.
    pub fn open(dir: impl AsRef<Path>, cluster: &str) -> Result<Self> {
        let dir = dir.as_ref();
        if cluster.is_empty() || cluster.contains(['/', '\\']) || cluster.starts_with('.') {
            return Err(Error::InvalidConfig(format!(
                "cluster name `{cluster}` cannot name a journal file"
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error(format!("create journal folder {}", dir.display()), e))?;
        let path = dir.join(format!("{cluster}.journal"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| io_error(format!("open journal {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::other(
                    ErrorKind::Conflict,
                    format!(
                    "another controller is running cluster `{cluster}`: it holds the lock on {}",
                    path.display()
                ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_error(format!("lock journal {}", path.display()), e))
            }
        }
        Self::end_with_newline(&file)
            .map_err(|e| io_error(format!("repair journal {}", path.display()), e))?;
        Ok(Self {
            path,
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// A controller that died mid-write leaves a last line without its newline:
    /// end it, so the next entry starts on a line of its own (the cut line is
    /// skipped when read).
    fn end_with_newline(mut file: &File) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        if file.metadata()?.len() == 0 {
            return Ok(());
        }
        file.seek(SeekFrom::End(-1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
            file.sync_data()?;
        }
        Ok(())
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal file of `cluster` in `dir` (`<dir>/<cluster>.journal`).
    pub fn path_of(dir: impl AsRef<Path>, cluster: &str) -> PathBuf {
        dir.as_ref().join(format!("{cluster}.journal"))
    }

    /// Reads every entry of the journal of `cluster` in `dir` without taking
    /// its lock: for a history while a controller runs the cluster (a line
    /// it is writing is skipped). A journal that does not exist is empty.
    ///
    /// # Errors
    /// When the file exists and cannot be read.
    pub fn read(dir: impl AsRef<Path>, cluster: &str) -> Result<Vec<JournalEntry>> {
        let path = Self::path_of(dir, cluster);
        if !path.exists() {
            return Ok(Vec::new());
        }
        Self::read_entries(&path)
    }

    fn read_entries(path: &Path) -> Result<Vec<JournalEntry>> {
        let file = File::open(path)
            .map_err(|e| io_error(format!("read journal {}", path.display()), e))?;
        Self::parse_entries(BufReader::new(file), &path.display().to_string())
            .map_err(|e| io_error(format!("read journal {}", path.display()), e))
    }

    /// The entries of the journal text `reader` holds (`journal` names it
    /// in the log). Read as bytes and decoded line by line: a line cut by a
    /// crash mid-write, even in the middle of a multi-byte character, is
    /// skipped, and every whole line before it is kept.
    pub(super) fn parse_entries(
        mut reader: impl BufRead,
        journal: &str,
    ) -> std::io::Result<Vec<JournalEntry>> {
        let mut entries = Vec::new();
        let mut line = Vec::new();
        let mut number = 0usize;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice(&line) {
                Ok(entry) => entries.push(entry),
                // A line cut by a crash mid-write is the last one: skip it, keep the rest.
                Err(e) => {
                    tracing::warn!(journal, line = number, error = %e, "Skipping an unreadable journal line.")
                }
            }
        }
        Ok(entries)
    }
}

#[async_trait]
impl Journal for FileJournal {
    async fn append(&self, entry: JournalEntry) -> Result<()> {
        let mut line = serde_json::to_vec(&entry).map_err(|e| {
            Error::other(
                ErrorKind::Unexpected,
                format!("encode a journal entry: {e}"),
            )
        })?;
        line.push(b'\n');
        let (file, path) = (self.file.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(&line)?;
            f.sync_data()
        })
        .await
        .map_err(|e| Error::other(ErrorKind::Unexpected, format!("journal writer: {e}")))?
        .map_err(|e| io_error(format!("write journal {}", path.display()), e))
    }

    async fn runs(&self) -> Result<Vec<RunRecord>> {
        Ok(replay(Journal::entries(self).await?))
    }

    async fn entries(&self) -> Result<Vec<JournalEntry>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || Self::read_entries(&path))
            .await
            .map_err(|e| Error::other(ErrorKind::Unexpected, format!("journal reader: {e}")))?
    }
}
