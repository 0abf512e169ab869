//! What an operator changes while a scaler runs: pause and resume a
//! direction, protect a node from scale-in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::Direction;

/// A change to the scaler's view of a node, applied between runs.
#[derive(Debug)]
pub(super) struct Protect {
    pub(super) node: String,
    pub(super) protected: bool,
}

/// A cheap-to-clone handle that changes a running [`Scaler`](crate::Scaler):
/// pause a direction ("hold scale-in during the release") and resume it,
/// protect a node from scale-in and take the protection away.
#[derive(Debug, Clone)]
pub struct ScalerControls {
    paused: Arc<[AtomicBool; 2]>,
    protect: mpsc::UnboundedSender<Protect>,
}

impl ScalerControls {
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<Protect>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                paused: Arc::new([AtomicBool::new(false), AtomicBool::new(false)]),
                protect: tx,
            },
            rx,
        )
    }

    /// Pauses `direction`: its triggers keep evaluating, but every decision
    /// in that direction is skipped (and reported) until [`resume`](Self::resume).
    pub fn pause(&self, direction: Direction) {
        self.paused[slot(direction)].store(true, Ordering::SeqCst);
    }

    /// Resumes `direction`.
    pub fn resume(&self, direction: Direction) {
        self.paused[slot(direction)].store(false, Ordering::SeqCst);
    }

    /// Whether `direction` is paused.
    pub fn is_paused(&self, direction: Direction) -> bool {
        self.paused[slot(direction)].load(Ordering::SeqCst)
    }

    /// Protects the node with id `node` from scale-in (it gets the
    /// [`PROTECTED_TAG`](crate::PROTECTED_TAG) in the scaler's view); takes
    /// effect before the next decision, or after the run in progress.
    pub fn protect(&self, node: impl Into<String>) {
        self.send(node.into(), true);
    }

    /// Takes the protection of `node` away, whichever set it, in the
    /// scaler's view (an EC2 tag comes back at the next discovery).
    pub fn unprotect(&self, node: impl Into<String>) {
        self.send(node.into(), false);
    }

    fn send(&self, node: String, protected: bool) {
        // The receiver lives as long as the scaler; after it, nothing is left to protect.
        let _ = self.protect.send(Protect { node, protected });
    }
}

pub(super) fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Out => 0,
        Direction::In => 1,
    }
}
