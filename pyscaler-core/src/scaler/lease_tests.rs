//! The scaler under a lease: a standby waits, a lost lease stops it and
//! abandons the run in progress (in virtual time, with a scripted store).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::test_support::{Log, Probe};
use crate::{ActionExt, Error, LeaseGrant, ManualTrigger, Node, Result, RunStatus, Target};

/// Free after `free_after` asks; renewals answer as `renewals` says
/// (true: renewed, false: refused), then always renewed.
#[derive(Debug)]
struct Scripted {
    free_after: usize,
    asked: Arc<AtomicUsize>,
    renewals: Mutex<Vec<bool>>,
}

#[async_trait::async_trait]
impl Lease for Scripted {
    fn owner(&self) -> &str {
        "controller-b"
    }
    fn duration(&self) -> Duration {
        Duration::from_secs(20)
    }
    async fn try_acquire(&self) -> Result<Option<LeaseGrant>> {
        let n = self.asked.fetch_add(1, Ordering::SeqCst);
        Ok((n >= self.free_after).then(|| LeaseGrant {
            owner: "controller-b".into(),
            epoch: 2,
            expires_at: chrono::Utc::now(),
        }))
    }
    async fn renew(&self, g: &LeaseGrant) -> Result<LeaseGrant> {
        let ok = {
            let mut r = self.renewals.lock().expect("lock");
            if r.is_empty() {
                true
            } else {
                r.remove(0)
            }
        };
        if ok {
            Ok(g.clone())
        } else {
            Err(Error::LeaseLost {
                message: "held by controller-c".into(),
            })
        }
    }
    async fn release(&self, _g: &LeaseGrant) -> Result<()> {
        Ok(())
    }
}

fn scaler(log: &Log, manual: &ManualTrigger, store: Scripted, delay: Duration) -> Scaler {
    let pipeline = Arc::new(
        Pipeline::builder("scale-out")
            .step(
                Probe::new("deploy", log)
                    .creating(1)
                    .slow(delay)
                    .on(Target::None),
            )
            .step(Probe::new("configure", log).on(Target::NewNodes))
            .build()
            .expect("pipeline"),
    );
    Scaler::builder(Cluster::new("web").with_nodes([Node::new("i-1", "web-01")]))
        .bind(manual.clone(), Direction::Out, pipeline)
        .lease(Arc::new(store), LeaseTiming::default())
        .build()
        .expect("scaler")
}

#[tokio::test(start_paused = true)]
async fn a_standby_scales_only_once_it_holds_the_lease() {
    let log = Log::default();
    let manual = ManualTrigger::new("manual");
    let asked = Arc::new(AtomicUsize::new(0));
    let store = Scripted {
        free_after: 3,
        asked: asked.clone(),
        renewals: Mutex::new(Vec::new()),
    };
    let mut scaler = scaler(&log, &manual, store, Duration::ZERO);
    let mut events = scaler.subscribe();
    let stop = CancellationToken::new();
    let (s, m) = (stop.clone(), manual.clone());
    let driver = async move {
        // The lease is free at 15 s: a fire at 20 s runs.
        tokio::time::sleep(Duration::from_secs(20)).await;
        m.fire("asked by alice");
        tokio::time::sleep(Duration::from_secs(10)).await;
        s.cancel();
    };
    let (outcomes, ()) = tokio::join!(scaler.run(stop), driver);
    assert_eq!(outcomes.len(), 1);
    let ScalerOutcome::Ran(report) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(log.entries(), ["run deploy", "run configure on deploy-0"]);
    // Asked at 0, 5, 10 s as a standby; granted at the fourth ask (15 s).
    assert_eq!(asked.load(Ordering::SeqCst), 4);
    let mut acquired = None;
    while let Ok(e) = events.try_recv() {
        if let Event::LeaseAcquired { owner, epoch } = e {
            acquired = Some((owner, epoch));
        }
    }
    assert_eq!(acquired, Some(("controller-b".to_owned(), 2)));
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_abandons_the_run_in_progress_and_stops_the_scaler() {
    let log = Log::default();
    let manual = ManualTrigger::new("manual");
    // Renewed at 5 s, refused at 10 s: the deploy step (30 s) is under way.
    let store = Scripted {
        free_after: 0,
        asked: Arc::default(),
        renewals: Mutex::new(vec![true, false]),
    };
    let mut scaler = scaler(&log, &manual, store, Duration::from_secs(30));
    let mut events = scaler.subscribe();
    let stop = CancellationToken::new();
    manual.fire("asked by alice");
    let started = Instant::now();
    let outcomes = scaler.run(stop).await;
    // It stopped by itself: the lease is lost, not shut down.
    assert!(started.elapsed() < Duration::from_secs(60));
    let ScalerOutcome::Ran(report) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(report.status, RunStatus::Cancelled);
    assert!(
        report
            .error
            .as_ref()
            .is_some_and(|e| e.message.contains("abandoned unfinished")),
        "{report}"
    );
    // The step under way finished; nothing after it ran, nothing was undone.
    assert_eq!(log.entries(), ["run deploy"]);
    let mut lost = false;
    while let Ok(e) = events.try_recv() {
        lost |= matches!(e, Event::LeaseLost { epoch: 2, .. });
    }
    assert!(lost, "no LeaseLost event");
}

#[tokio::test(start_paused = true)]
async fn under_a_lease_taken_from_a_predecessor_recovery_waits_one_lease_duration() {
    use crate::journal::JournalEntry;
    use crate::{Journal, MemoryJournal, Recovery, RunId};
    let log = Log::default();
    let manual = ManualTrigger::new("manual");
    // A predecessor's run, unfinished.
    let journal = Arc::new(MemoryJournal::new());
    journal
        .append(JournalEntry::RunStarted {
            run_id: RunId::new("run-old"),
            pipeline: "scale-out".into(),
            cluster: "web".into(),
            trigger: TriggerInfo::new("manual", "before the crash"),
            at: chrono::Utc::now(),
        })
        .await
        .expect("write");
    let store: Arc<dyn Lease> = Arc::new(Scripted {
        free_after: 0,
        asked: Arc::default(),
        renewals: Mutex::new(Vec::new()),
    });
    let held = HeldLease::acquire(store, LeaseTiming::default(), &CancellationToken::new())
        .await
        .expect("acquired")
        .expect("held");
    assert_eq!(held.epoch(), 2, "a predecessor held epoch 1");
    let pipeline = Arc::new(
        Pipeline::builder("scale-out")
            .journal(journal.clone())
            .step(Probe::new("deploy", &log).on(Target::None))
            .build()
            .expect("pipeline"),
    );
    let mut scaler = Scaler::builder(Cluster::new("web"))
        .bind(manual.clone(), Direction::Out, pipeline)
        .recover_first(Recovery::new(journal.clone()))
        .held_lease(held)
        .build()
        .expect("scaler");
    let stop = CancellationToken::new();
    let s = stop.clone();
    let started = Instant::now();
    let watcher = {
        let journal = journal.clone();
        async move {
            // Still unfinished before the lease duration (20 s) has passed.
            tokio::time::sleep(Duration::from_secs(19)).await;
            let before = journal.unfinished_runs().await.expect("read").len();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = journal.unfinished_runs().await.expect("read").len();
            s.cancel();
            (before, after)
        }
    };
    let (_, (before, after)) = tokio::join!(scaler.run(stop), watcher);
    assert_eq!((before, after), (1, 0));
    assert!(started.elapsed() >= Duration::from_secs(20));
}
