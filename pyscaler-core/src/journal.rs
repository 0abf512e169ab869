//! The run journal: every run and step written down before its side effect
//! starts and after it ends, so a controller that dies can be recovered from.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind, Node, Result, RunId, RunStatus, StepStatus, TriggerInfo};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JournalEntry {
    /// A run is about to start its first step.
    RunStarted {
        /// The run.
        run_id: RunId,
        /// The pipeline.
        pipeline: String,
        /// The cluster.
        cluster: String,
        /// Why it started.
        trigger: TriggerInfo,
        /// When.
        at: DateTime<Utc>,
    },
    /// A step is about to run: its intent, in words (`launch 2 t3.small with client token T`).
    StepStarted {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// What it is about to do.
        intent: Vec<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A step ended; `new_nodes` are the nodes this run has created so far
    /// (what undoing it needs: instance ids, addresses).
    StepFinished {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// How it ended.
        status: StepStatus,
        /// The nodes the run has created so far.
        new_nodes: Vec<Node>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A step was undone (or undoing it failed).
    StepUndone {
        /// The run.
        run_id: RunId,
        /// The step.
        step: String,
        /// Whether undoing succeeded.
        succeeded: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// The main steps (and the undo after a failure) ended with this
    /// status; the `finally` steps come next. A controller that dies in a
    /// `finally` step (a mail server that hangs) leaves a run whose work is
    /// done: recovery marks it finished rather than undoing it.
    StepsEnded {
        /// The run.
        run_id: RunId,
        /// How the main steps ended.
        status: RunStatus,
        /// The nodes it created and kept.
        new_nodes: Vec<Node>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The run ended (its `finally` steps included).
    RunFinished {
        /// The run.
        run_id: RunId,
        /// How it ended.
        status: RunStatus,
        /// The nodes it created and kept.
        new_nodes: Vec<Node>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A run that never finished is taken up again by
    /// [`Pipeline::resume`](crate::Pipeline::resume), from `from_step` (`None`:
    /// every main step had finished; only the `finally` steps are left).
    RunResumed {
        /// The run.
        run_id: RunId,
        /// The first step run again.
        from_step: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A run that never finished was cleaned up by [`recover`].
    RunRecovered {
        /// The run.
        run_id: RunId,
        /// What was undone, in words.
        undone: Vec<String>,
        /// Whether everything was undone.
        succeeded: bool,
        /// When.
        at: DateTime<Utc>,
    },
}

impl JournalEntry {
    /// The run this entry is about.
    pub fn run_id(&self) -> &RunId {
        match self {
            Self::RunStarted { run_id, .. }
            | Self::StepStarted { run_id, .. }
            | Self::StepFinished { run_id, .. }
            | Self::StepUndone { run_id, .. }
            | Self::StepsEnded { run_id, .. }
            | Self::RunFinished { run_id, .. }
            | Self::RunResumed { run_id, .. }
            | Self::RunRecovered { run_id, .. } => run_id,
        }
    }
}

/// Where a run stands according to the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunState {
    /// Started and never finished: the controller died (or is still running it).
    Unfinished,
    /// Finished with this status.
    Finished(RunStatus),
    /// Never finished, then cleaned up by `recover`.
    Recovered {
        /// Whether everything was undone.
        succeeded: bool,
    },
}

/// A run as the journal tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub run_id: RunId,
    /// The pipeline.
    pub pipeline: String,
    /// The cluster.
    pub cluster: String,
    /// What started it.
    #[serde(default)]
    pub trigger: Option<TriggerInfo>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Where it stands.
    pub state: RunState,
    /// Each step that started, in order, with its last known status
    /// (`None`: started, never finished).
    pub steps: Vec<(String, Option<StepStatus>)>,
    /// The nodes it had created at its last record.
    pub new_nodes: Vec<Node>,
    /// How its main steps ended, when they had (only `finally` steps were
    /// left or running).
    #[serde(default)]
    pub steps_ended: Option<RunStatus>,
}

impl RunRecord {
    /// Whether the run ended well (its nodes belong in the cluster).
    pub fn succeeded(&self) -> bool {
        matches!(
            self.state,
            RunState::Finished(RunStatus::Succeeded | RunStatus::CompletedWithFailures)
        )
    }

    /// The first step that started and never finished, if any.
    pub fn interrupted_step(&self) -> Option<&str> {
        self.steps
            .iter()
            .find(|(_, s)| s.is_none())
            .map(|(n, _)| n.as_str())
    }
}

/// Folds journal entries into one record per run, in the order runs started.
pub fn replay(entries: impl IntoIterator<Item = JournalEntry>) -> Vec<RunRecord> {
    let mut order = Vec::new();
    let mut runs: BTreeMap<RunId, RunRecord> = BTreeMap::new();
    for entry in entries {
        if let JournalEntry::RunStarted {
            run_id,
            pipeline,
            cluster,
            trigger,
            at,
        } = &entry
        {
            order.push(run_id.clone());
            runs.insert(
                run_id.clone(),
                RunRecord {
                    run_id: run_id.clone(),
                    pipeline: pipeline.clone(),
                    cluster: cluster.clone(),
                    trigger: Some(trigger.clone()),
                    started_at: *at,
                    state: RunState::Unfinished,
                    steps: Vec::new(),
                    new_nodes: Vec::new(),
                    steps_ended: None,
                },
            );
            continue;
        }
        let Some(run) = runs.get_mut(entry.run_id()) else {
            continue;
        };
        match entry {
            JournalEntry::StepStarted { step, .. } => run.steps.push((step, None)),
            JournalEntry::StepFinished {
                step,
                status,
                new_nodes,
                ..
            } => {
                if let Some(s) = run.steps.iter_mut().rev().find(|(n, _)| *n == step) {
                    s.1 = Some(status);
                }
                run.new_nodes = new_nodes;
            }
            JournalEntry::StepUndone {
                step, succeeded, ..
            } => {
                if succeeded {
                    if let Some(s) = run.steps.iter_mut().rev().find(|(n, _)| *n == step) {
                        if s.1 == Some(StepStatus::Succeeded) {
                            s.1 = Some(StepStatus::Compensated);
                        }
                    }
                }
            }
            JournalEntry::StepsEnded {
                status, new_nodes, ..
            } => {
                run.steps_ended = Some(status);
                run.new_nodes = new_nodes;
            }
            JournalEntry::RunFinished {
                status, new_nodes, ..
            } => {
                run.state = RunState::Finished(status);
                run.new_nodes = new_nodes;
            }
            JournalEntry::RunResumed { from_step, .. } => {
                // The steps from `from_step` on run again and are written down anew.
                let keep = from_step
                    .and_then(|f| run.steps.iter().position(|(n, _)| *n == f))
                    .unwrap_or(run.steps.len());
                run.steps.truncate(keep);
            }
            JournalEntry::RunRecovered { succeeded, .. } => {
                run.state = RunState::Recovered { succeeded }
            }
            JournalEntry::RunStarted { .. } => {}
        }
    }
    order
        .into_iter()
        .filter_map(|id| runs.remove(&id))
        .collect()
}

/// Where runs are written down. Writes are durable when `append` returns.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Journal: Send + Sync + fmt::Debug {
    /// Writes one entry, durably.
    ///
    /// # Errors
    /// When the entry could not be written; the pipeline then does not start
    /// the side effect the entry announces.
    async fn append(&self, entry: JournalEntry) -> Result<()>;

    /// Every run the journal knows, in the order they started.
    ///
    /// # Errors
    /// When the journal cannot be read.
    async fn runs(&self) -> Result<Vec<RunRecord>>;

    /// The runs that started and never finished nor were recovered.
    ///
    /// # Errors
    /// When the journal cannot be read.
    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .runs()
            .await?
            .into_iter()
            .filter(|r| r.state == RunState::Unfinished)
            .collect())
    }
}

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

    fn read_entries(path: &Path) -> Result<Vec<JournalEntry>> {
        let file = File::open(path)
            .map_err(|e| io_error(format!("read journal {}", path.display()), e))?;
        let mut entries = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| io_error(format!("read journal {}", path.display()), e))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(entry) => entries.push(entry),
                // A line cut by a crash mid-write is the last one: skip it, keep the rest.
                Err(e) => {
                    tracing::warn!(journal = %path.display(), line = i + 1, error = %e, "Skipping an unreadable journal line.")
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
        let path = self.path.clone();
        let entries = tokio::task::spawn_blocking(move || Self::read_entries(&path))
            .await
            .map_err(|e| Error::other(ErrorKind::Unexpected, format!("journal reader: {e}")))??;
        Ok(replay(entries))
    }
}

/// Undoes what an unfinished run left behind (deregister, terminate), from its
/// journal record and from the provider's own tags (a launch whose completion
/// was never recorded is found through `pyscaler:run`).
///
/// [`PipelineCleanup`](crate::PipelineCleanup) undoes a run with its own
/// pipeline's compensations; a provider crate's clean-up (pyscaler-aws's
/// `Ec2RunCleanup`) works from the provider's tags alone; [`CleanupChain`]
/// runs one after the other.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RunCleanup: Send + Sync {
    /// Cleans up after `run`; returns what was undone, in words.
    ///
    /// # Errors
    /// When something could not be undone; the run stays unfinished in the journal.
    async fn cleanup(&self, run: &RunRecord) -> Result<Vec<String>>;
}

/// Several clean-ups run in order on each unfinished run (the pipeline's own
/// undo, then a provider's sweep of the run's tags, say); every one runs,
/// and the run is recovered only when all succeeded.
#[derive(Clone, Default)]
pub struct CleanupChain {
    cleanups: Vec<Arc<dyn RunCleanup>>,
}

impl fmt::Debug for CleanupChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleanupChain")
            .field("cleanups", &self.cleanups.len())
            .finish()
    }
}

impl CleanupChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a clean-up, run after the ones before it.
    pub fn then(mut self, cleanup: Arc<dyn RunCleanup>) -> Self {
        self.cleanups.push(cleanup);
        self
    }
}

#[async_trait]
impl RunCleanup for CleanupChain {
    async fn cleanup(&self, run: &RunRecord) -> Result<Vec<String>> {
        let mut undone = Vec::new();
        let mut first_error = None;
        for cleanup in &self.cleanups {
            match cleanup.cleanup(run).await {
                Ok(done) => undone.extend(done),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(e) => tracing::error!(run_id = %run.run_id, error = %e, "A clean-up failed."),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(undone),
        }
    }
}

/// What [`recover`] did with one unfinished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// The run.
    pub run_id: RunId,
    /// The step it was in when the controller died.
    pub interrupted_step: Option<String>,
    /// What was undone.
    pub undone: Vec<String>,
    /// The nodes the run had created (from its last journal record): gone
    /// once the clean-up succeeded, so they no longer belong in the cluster.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// Whether cleaning up succeeded (else the run stays unfinished and the error says why).
    pub error: Option<String>,
}

/// Reads the runs that never finished and cleans each up, marking it
/// recovered in the journal. A run whose clean-up fails stays unfinished, so
/// the next `recover` tries again.
///
/// A run whose main steps had ended (the controller died in a `finally`
/// step, such as the notification) is not undone: it is marked finished
/// with the status its steps ended with, and its nodes stay.
///
/// # Errors
/// When the journal cannot be read or written.
pub async fn recover(journal: &dyn Journal, cleanup: &dyn RunCleanup) -> Result<Vec<Recovery>> {
    let mut done = Vec::new();
    for run in journal.unfinished_runs().await? {
        if let Some(status) = run.steps_ended {
            tracing::warn!(run_id = %run.run_id, %status, "A run whose steps had ended never finished its finally steps; marking it finished.");
            journal
                .append(JournalEntry::RunFinished {
                    run_id: run.run_id.clone(),
                    status,
                    new_nodes: run.new_nodes.clone(),
                    at: Utc::now(),
                })
                .await?;
            done.push(Recovery {
                run_id: run.run_id.clone(),
                interrupted_step: None,
                undone: vec![format!(
                    "nothing: its steps had ended ({status}); only its finally steps were cut short"
                )],
                nodes: Vec::new(),
                error: None,
            });
            continue;
        }
        tracing::warn!(run_id = %run.run_id, step = ?run.interrupted_step(), "Recovering a run that never finished.");
        let outcome = cleanup.cleanup(&run).await;
        let (undone, error) = match outcome {
            Ok(undone) => (undone, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        if error.is_none() {
            journal
                .append(JournalEntry::RunRecovered {
                    run_id: run.run_id.clone(),
                    undone: undone.clone(),
                    succeeded: true,
                    at: Utc::now(),
                })
                .await?;
        }
        done.push(Recovery {
            run_id: run.run_id.clone(),
            interrupted_step: run.interrupted_step().map(str::to_owned),
            undone,
            nodes: run.new_nodes.clone(),
            error,
        });
    }
    Ok(done)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
