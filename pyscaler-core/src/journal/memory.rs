//! A journal kept in memory: for tests, and for programs that need no
//! recovery across restarts.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{replay, Journal, JournalEntry, RunRecord};
use crate::Result;

/// A [`Journal`] in memory: entries live as long as the value (and its
/// clones, which share them). What a test uses to write a journal of a
/// crashed run by hand, or to read back what a pipeline wrote.
///
/// ```
/// use pyscaler_core::{Journal, MemoryJournal};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pyscaler_core::Result<()> {
/// let journal = MemoryJournal::new();
/// assert!(journal.unfinished_runs().await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryJournal {
    entries: Arc<Mutex<Vec<JournalEntry>>>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// A journal that already holds `entries` (a crashed run's, say).
    pub fn with_entries(entries: impl IntoIterator<Item = JournalEntry>) -> Self {
        let journal = Self::default();
        journal.lock().extend(entries);
        journal
    }

    /// Every entry written so far, in order.
    pub fn entries(&self) -> Vec<JournalEntry> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JournalEntry>> {
        // A writer that panicked left whole entries: the list is still good.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn append(&self, entry: JournalEntry) -> Result<()> {
        self.lock().push(entry);
        Ok(())
    }

    async fn runs(&self) -> Result<Vec<RunRecord>> {
        Ok(replay(self.entries()))
    }

    async fn entries(&self) -> Result<Vec<JournalEntry>> {
        Ok(MemoryJournal::entries(self))
    }
}
