//! `FileLease`: the embedded lease, a lock on a file: one machine.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{Lease, LeaseGrant};
use crate::{Error, ErrorKind, Result};

/// A [`Lease`] on a file lock (`<dir>/<cluster>.lease`): held while this
/// process holds the lock, so it dies with the process, and with the
/// machine. The epoch is kept in the file and grows with every acquisition.
/// For controllers on one machine; a standby elsewhere needs a shared store
/// (`DynamoLease` in pyscaler-aws).
#[derive(Debug)]
pub struct FileLease {
    path: PathBuf,
    owner: String,
    duration: Duration,
    held: Mutex<Option<File>>,
}

impl FileLease {
    /// The lease of `cluster` in `dir`, for this process.
    pub fn new(dir: impl AsRef<Path>, cluster: &str, duration: Duration) -> Self {
        Self {
            path: dir.as_ref().join(format!("{cluster}.lease")),
            owner: format!("pid-{}", std::process::id()),
            duration,
            held: Mutex::new(None),
        }
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::other(
            ErrorKind::Unexpected,
            format!("lease file {}: {what}: {e}", self.path.display()),
        )
    }

    fn grant(&self, epoch: u64) -> LeaseGrant {
        LeaseGrant {
            owner: self.owner.clone(),
            epoch,
            expires_at: chrono::Utc::now()
                + chrono::Duration::from_std(self.duration).unwrap_or(chrono::Duration::MAX),
        }
    }
}

#[async_trait]
impl Lease for FileLease {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn duration(&self) -> Duration {
        self.duration
    }

    async fn try_acquire(&self) -> Result<Option<LeaseGrant>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.io("create its folder", e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| self.io("open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(self.io("lock", e)),
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| self.io("read", e))?;
        let epoch = text.trim().parse::<u64>().unwrap_or(0).saturating_add(1);
        file.set_len(0).map_err(|e| self.io("write", e))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| writeln!(file, "{epoch}"))
            .and_then(|()| file.sync_all())
            .map_err(|e| self.io("write", e))?;
        *held = Some(file);
        Ok(Some(self.grant(epoch)))
    }

    async fn renew(&self, grant: &LeaseGrant) -> Result<LeaseGrant> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none() || grant.owner != self.owner {
            return Err(Error::LeaseLost {
                message: format!("{} is not held by {}", self.path.display(), grant.owner),
            });
        }
        Ok(self.grant(grant.epoch))
    }

    async fn release(&self, _grant: &LeaseGrant) -> Result<()> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        // Closing the file lets the lock go.
        held.take();
        Ok(())
    }
}
