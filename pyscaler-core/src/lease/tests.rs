//! HeldLease over a scripted store, in virtual time; FileLease for real.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;

/// A store whose answers the test scripts: `free_after` refusals before a
/// grant, then renewals as `renewals` says (`Ok` grants, `Err` refuses, a
/// `None` hangs).
#[derive(Debug)]
struct Scripted {
    free_after: usize,
    asked: AtomicUsize,
    renewals: Mutex<Vec<Option<bool>>>,
    released: AtomicUsize,
}

impl Scripted {
    fn new(free_after: usize, renewals: Vec<Option<bool>>) -> Arc<Self> {
        Arc::new(Self {
            free_after,
            asked: AtomicUsize::new(0),
            renewals: Mutex::new(renewals),
            released: AtomicUsize::new(0),
        })
    }
}

fn grant(epoch: u64) -> LeaseGrant {
    LeaseGrant {
        owner: "me".into(),
        epoch,
        expires_at: Utc::now(),
    }
}

#[async_trait]
impl Lease for Scripted {
    fn owner(&self) -> &str {
        "me"
    }
    fn duration(&self) -> Duration {
        Duration::from_secs(20)
    }
    async fn try_acquire(&self) -> Result<Option<LeaseGrant>> {
        let n = self.asked.fetch_add(1, Ordering::SeqCst);
        Ok((n >= self.free_after).then(|| grant(7)))
    }
    async fn renew(&self, g: &LeaseGrant) -> Result<LeaseGrant> {
        let next = {
            let mut r = self.renewals.lock().expect("lock");
            if r.is_empty() {
                Some(true)
            } else {
                r.remove(0)
            }
        };
        match next {
            Some(true) => Ok(grant(g.epoch)),
            Some(false) => Err(Error::LeaseLost {
                message: "taken by another".into(),
            }),
            None => std::future::pending().await,
        }
    }
    async fn release(&self, _g: &LeaseGrant) -> Result<()> {
        self.released.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_standby_waits_until_the_lease_is_free_then_renews_it_keeping_the_epoch() {
    let store = Scripted::new(3, vec![]);
    let started = Instant::now();
    let held = HeldLease::acquire(
        store.clone(),
        LeaseTiming::default(),
        &CancellationToken::new(),
    )
    .await
    .expect("acquired")
    .expect("not shut down");
    // Asked at 0, 5 and 10 s; granted at 15 s.
    assert_eq!(store.asked.load(Ordering::SeqCst), 4);
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    assert_eq!(held.epoch(), 7);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(held.is_held());
    assert_eq!(held.epoch(), 7, "a renewal never moves the epoch");
    held.release().await;
    assert_eq!(store.released.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_renewal_loses_the_lease_at_once() {
    let store = Scripted::new(0, vec![Some(true), Some(false)]);
    let held = HeldLease::acquire(
        store.clone(),
        LeaseTiming::default(),
        &CancellationToken::new(),
    )
    .await
    .expect("acquired")
    .expect("held");
    let lost = held.lost().clone();
    let started = Instant::now();
    lost.cancelled().await;
    // The second heartbeat's renewal was refused.
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert!(!held.is_held());
    // A lost lease is not released: it is someone else's now.
    held.release().await;
    assert_eq!(store.released.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_renewal_not_confirmed_before_the_lease_lapses_minus_the_margin_loses_it() {
    // The first renewal hangs: the lease (20 s) is lost at 18 s, the margin
    // (2 s) before it lapses, not later.
    let store = Scripted::new(0, vec![None]);
    let held = HeldLease::acquire(store, LeaseTiming::default(), &CancellationToken::new())
        .await
        .expect("acquired")
        .expect("held");
    let started = Instant::now();
    held.lost().cancelled().await;
    assert_eq!(started.elapsed(), Duration::from_secs(18));
}

#[tokio::test(start_paused = true)]
async fn a_standby_stops_waiting_at_shutdown_and_bad_timings_are_refused() {
    let store = Scripted::new(usize::MAX, vec![]);
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(12)).await;
        s.cancel();
    });
    let none = HeldLease::acquire(store.clone(), LeaseTiming::default(), &shutdown)
        .await
        .expect("no error");
    assert!(none.is_none());
    let slow = LeaseTiming {
        heartbeat: Duration::from_secs(10),
        margin: Duration::from_secs(2),
    };
    let e = HeldLease::acquire(store.clone(), slow, &CancellationToken::new())
        .await
        .expect_err("heartbeat too slow for a 20 s lease");
    assert!(e.to_string().contains("three times"), "{e}");
}

#[tokio::test]
async fn the_file_lease_is_one_holders_at_a_time_and_its_epoch_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = FileLease::new(dir.path(), "web", Duration::from_secs(20));
    let b = FileLease::new(dir.path(), "web", Duration::from_secs(20));
    let first = a.try_acquire().await.expect("asked").expect("free");
    assert_eq!(first.epoch, 1);
    assert!(b.try_acquire().await.expect("asked").is_none(), "held by a");
    assert_eq!(a.renew(&first).await.expect("renewed").epoch, 1);
    a.release(&first).await.expect("released");
    assert!(a.renew(&first).await.is_err(), "released: no longer held");
    let second = b.try_acquire().await.expect("asked").expect("free again");
    assert_eq!(second.epoch, 2);
}
