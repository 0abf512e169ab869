//! The idle sessions (connected, no operation running) kept for reuse, in
//! the order they became idle. Beyond [`SshConfig::idle_sessions`] the least
//! recently used are closed, so a fan-out over 1,000 nodes holds its
//! concurrency's sessions plus that many, not one per node it has reached.
//!
//! Lock order: a node's session slot, then this; closing takes neither
//! while holding the other (the slot is only tried, never waited for).
//!
//! [`SshConfig::idle_sessions`]: crate::SshConfig::idle_sessions

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::NodeConn;

/// Idle sessions by the tick they became idle at (oldest first).
#[derive(Default)]
pub(super) struct IdleSessions {
    order: BTreeMap<u64, Arc<NodeConn>>,
    /// The last tick handed out; a node's `idle_since` of 0 means "not idle".
    tick: u64,
}

impl IdleSessions {
    /// The node's session is in use (or gone): no longer idle.
    pub(super) fn taken(&mut self, conn: &NodeConn) {
        let since = conn.idle_since.swap(0, Ordering::Relaxed);
        if since != 0 {
            self.order.remove(&since);
        }
    }

    /// The node's session is idle from now on, the most recently used.
    pub(super) fn released(&mut self, conn: &Arc<NodeConn>) {
        self.taken(conn);
        self.tick += 1;
        conn.idle_since.store(self.tick, Ordering::Relaxed);
        self.order.insert(self.tick, conn.clone());
    }

    /// How many sessions are idle.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// Takes the least recently used beyond `keep` out of the idle ones, for
    /// the caller to close with [`close_if_idle`] once this lock is released.
    pub(super) fn beyond(&mut self, keep: usize) -> Vec<Arc<NodeConn>> {
        let mut out = Vec::new();
        while self.order.len() > keep {
            let Some((_, conn)) = self.order.pop_first() else {
                break;
            };
            conn.idle_since.store(0, Ordering::Relaxed);
            out.push(conn);
        }
        out
    }
}

/// Closes the node's session, unless an operation took it in the meantime
/// (it is in use, or idle again and now the most recent). Returns whether
/// it closed one.
pub(super) fn close_if_idle(conn: &NodeConn) -> bool {
    let Ok(mut slot) = conn.session.try_lock() else {
        return false;
    };
    if conn.idle_since.load(Ordering::Relaxed) != 0 {
        return false;
    }
    // Dropping a session shuts its connection first (see `Live`'s Drop).
    slot.take().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh2::Endpoint;

    fn conn(host: &str) -> Arc<NodeConn> {
        Arc::new(NodeConn::new(Endpoint {
            host: host.into(),
            port: 22,
            user: "admin".into(),
            published: Vec::new(),
            known_as: host.into(),
        }))
    }

    fn hosts(conns: &[Arc<NodeConn>]) -> Vec<String> {
        conns.iter().map(|c| c.endpoint.host.clone()).collect()
    }

    #[test]
    fn the_least_recently_released_go_first_and_a_taken_one_is_not_idle() {
        let (a, b, c) = (conn("a"), conn("b"), conn("c"));
        let mut idle = IdleSessions::default();
        idle.released(&a);
        idle.released(&b);
        idle.released(&c);
        // `a` used again: now the most recent.
        idle.taken(&a);
        idle.released(&a);
        assert_eq!(idle.len(), 3);
        assert_eq!(hosts(&idle.beyond(2)), ["b"]);
        // `c` in use: not idle, not closed.
        idle.taken(&c);
        assert_eq!(idle.len(), 1);
        assert!(idle.beyond(1).is_empty());
        assert_eq!(hosts(&idle.beyond(0)), ["a"]);
        assert_eq!(idle.len(), 0);
    }

    #[test]
    fn a_session_taken_again_after_being_picked_is_not_closed() {
        let a = conn("a");
        let mut idle = IdleSessions::default();
        idle.released(&a);
        let picked = idle.beyond(0);
        // An operation took it, and released it again, before the close.
        idle.released(&a);
        assert!(!close_if_idle(&picked[0]));
        assert_eq!(idle.len(), 1);
        // Picked and not taken since: closed (there was no session: nothing to close).
        let picked = idle.beyond(0);
        assert!(!close_if_idle(&picked[0]));
        assert_eq!(a.idle_since.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_session_in_use_is_never_closed() {
        let a = conn("a");
        let mut idle = IdleSessions::default();
        idle.released(&a);
        let picked = idle.beyond(0);
        let _in_use = a.session.lock().expect("lock");
        assert!(!close_if_idle(&picked[0]));
    }
}
