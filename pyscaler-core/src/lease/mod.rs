//! Leases: at most one controller of a cluster issues side effects at a time.
//!
//! A [`Lease`] is the store's side (acquire, renew, release), with a
//! fencing token: the epoch a grant carries grows with every acquisition, so
//! a store can refuse the writes of an older holder. [`FileLease`] is the
//! embedded implementation (a file lock: one machine); `DynamoLease` in
//! pyscaler-aws (feature `dynamodb`) lets a standby on another machine take
//! over. [`HeldLease`] is the controller's side: it waits as a standby until
//! the lease is free, then renews it in the background, and says at once
//! when it is lost ([`HeldLease::lost`]) so nothing new starts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Error, Result};

mod file;

pub use file::FileLease;

/// A lease as granted: who holds it, its fencing epoch, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The holder (`host-1234-5678abcd`): unique per controller process.
    pub owner: String,
    /// The fencing token: larger for every new acquisition, never changed
    /// by a renewal.
    pub epoch: u64,
    /// When the grant lapses unless renewed, by the store's reckoning.
    pub expires_at: DateTime<Utc>,
}

/// A lease store: one lease per cluster.
#[async_trait]
pub trait Lease: Send + Sync + fmt::Debug {
    /// Who this controller is, as the store records the holder.
    fn owner(&self) -> &str;

    /// How long a grant lasts without a renewal.
    fn duration(&self) -> Duration;

    /// Takes the lease when it is free, lapsed, or already this owner's
    /// (with a new, larger epoch); `Ok(None)` while another holds it.
    ///
    /// # Errors
    /// The store failing (retryable kinds are tried again by [`HeldLease`]).
    async fn try_acquire(&self) -> Result<Option<LeaseGrant>>;

    /// Extends `grant` by one duration, keeping its epoch.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the store refuses (another holder took it,
    /// or the epoch moved on); the store failing otherwise.
    async fn renew(&self, grant: &LeaseGrant) -> Result<LeaseGrant>;

    /// Gives the lease up, so a standby need not wait for it to lapse.
    ///
    /// # Errors
    /// The store failing; a grant that is no longer held is no error.
    async fn release(&self, grant: &LeaseGrant) -> Result<()>;
}

/// How a [`HeldLease`] keeps its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How often the lease is renewed, and how often a standby asks for it
    /// (5 s by default; at most a third of the lease's duration).
    pub heartbeat: Duration,
    /// How long before the grant lapses a renewal must be confirmed; past
    /// that, the lease counts as lost (2 s by default).
    pub margin: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            margin: Duration::from_secs(2),
        }
    }
}

/// The lease this controller holds, renewed in the background.
///
/// Dropping it stops the renewals (the grant then lapses);
/// [`release`](Self::release) gives it up at once.
#[derive(Debug)]
pub struct HeldLease {
    lease: Arc<dyn Lease>,
    grant: watch::Receiver<LeaseGrant>,
    lost: CancellationToken,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HeldLease {
    /// Waits as a standby until the lease is this controller's, asking every
    /// heartbeat; `Ok(None)` when `shutdown` is cancelled first. Then renews
    /// it every heartbeat until released or lost.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a heartbeat that does not fit three
    /// times in the lease's duration, or a margin not below the heartbeat;
    /// a store failure that is not retryable.
    pub async fn acquire(
        lease: Arc<dyn Lease>,
        timing: LeaseTiming,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>> {
        let duration = lease.duration();
        if timing.heartbeat.is_zero() || timing.heartbeat.saturating_mul(3) > duration {
            return Err(Error::InvalidConfig(format!(
                "lease heartbeat {:?} must fit at least three times in the lease duration {duration:?}",
                timing.heartbeat
            )));
        }
        if timing.margin >= timing.heartbeat {
            return Err(Error::InvalidConfig(format!(
                "lease margin {:?} must be below the heartbeat {:?}",
                timing.margin, timing.heartbeat
            )));
        }
        let mut waiting_logged = false;
        let grant = loop {
            match lease.try_acquire().await {
                Ok(Some(grant)) => break grant,
                Ok(None) => {
                    if !waiting_logged {
                        info!(
                            owner = lease.owner(),
                            "Standby: another controller holds the lease."
                        );
                        waiting_logged = true;
                    }
                }
                Err(e) if e.is_retryable() => {
                    warn!(error = %e, "Asking for the lease failed; asking again.");
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(timing.heartbeat) => {}
            }
        };
        info!(owner = %grant.owner, epoch = grant.epoch, "Lease acquired.");
        let (tx, rx) = watch::channel(grant);
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep(lease.clone(), timing, tx, lost.clone(), stop.clone()));
        Ok(Some(Self {
            lease,
            grant: rx,
            lost,
            stop,
            task: Some(task),
        }))
    }

    /// The grant as last renewed.
    pub fn grant(&self) -> LeaseGrant {
        self.grant.borrow().clone()
    }

    /// How long a grant lasts without a renewal.
    pub fn duration(&self) -> Duration {
        self.lease.duration()
    }

    /// The fencing epoch.
    pub fn epoch(&self) -> u64 {
        self.grant.borrow().epoch
    }

    /// Cancelled the moment the lease is lost (a renewal refused, or not
    /// confirmed before the grant lapses minus the margin): a child of it
    /// cancels the run in progress.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Whether the lease is still held, as far as this controller knows.
    pub fn is_held(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// Stops renewing and gives the lease up.
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if self.is_held() {
            let grant = self.grant();
            match self.lease.release(&grant).await {
                Ok(()) => info!(epoch = grant.epoch, "Lease released."),
                Err(e) => warn!(error = %e, "Could not release the lease; it lapses by itself."),
            }
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Renews every heartbeat; cancels `lost` when a renewal is refused or not
/// confirmed before the grant lapses minus the margin.
async fn keep(
    lease: Arc<dyn Lease>,
    timing: LeaseTiming,
    grant: watch::Sender<LeaseGrant>,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let duration = lease.duration();
    // The local clock's view of when the grant lapses: measured from when
    // the acquiring call was sent at the latest, so it errs early.
    let mut lapses = Instant::now() + duration;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(timing.heartbeat) => {}
        }
        let deadline = lapses.checked_sub(timing.margin).unwrap_or(lapses);
        let sent = Instant::now();
        let current = grant.borrow().clone();
        let renewed = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout_at(deadline, lease.renew(&current)) => r,
        };
        match renewed {
            Ok(Ok(next)) => {
                lapses = sent + duration;
                let _ = grant.send(next);
            }
            Ok(Err(e)) if matches!(e, Error::LeaseLost { .. }) => {
                warn!(epoch = current.epoch, error = %e, "Lease lost: the renewal was refused.");
                lost.cancel();
                return;
            }
            Ok(Err(e)) if Instant::now() < deadline => {
                warn!(epoch = current.epoch, error = %e, "Renewing the lease failed; trying again at the next heartbeat.");
            }
            Ok(Err(e)) => {
                warn!(epoch = current.epoch, error = %e, "Lease lost: no renewal before it lapses.");
                lost.cancel();
                return;
            }
            Err(_) => {
                warn!(
                    epoch = current.epoch,
                    "Lease lost: the renewal was not confirmed before it lapses."
                );
                lost.cancel();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
