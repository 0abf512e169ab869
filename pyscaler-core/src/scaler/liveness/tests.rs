use std::sync::Arc;

use super::*;
use crate::test_support::{Log, Probe, Scheduled};
use crate::{
    ActionExt, CancellationToken, Cluster, Direction, Error, ManualTrigger, Pipeline, Scaler,
    ScalerBuilder, Target, Trigger,
};

fn pipeline() -> Arc<Pipeline> {
    let log = Log::default();
    Arc::new(
        Pipeline::builder("scale-out")
            .step(Probe::new("deploy", &log).on(Target::None))
            .build()
            .expect("a valid pipeline"),
    )
}

fn builder(trigger: impl Trigger + 'static) -> ScalerBuilder {
    Scaler::builder(Cluster::new("web")).bind(trigger, Direction::Out, pipeline())
}

/// The liveness events of `scaler` in `for_` of virtual time.
async fn liveness_events(mut scaler: Scaler, for_: Duration) -> Vec<Event> {
    let mut events = scaler.subscribe();
    let stop = CancellationToken::new();
    let stopping = async {
        tokio::time::sleep(for_).await;
        stop.cancel();
    };
    tokio::join!(scaler.run(stop.clone()), stopping);
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if matches!(
            event,
            Event::EvaluationStalled { .. } | Event::EvaluationResumed { .. }
        ) {
            seen.push(event);
        }
    }
    seen
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn a_trigger_that_stops_evaluating_is_reported_stalled_once_then_resumed() {
    // Every 10 s, then a gap of 60 s (past 3 intervals), then every 10 s again.
    let trigger = Scheduled {
        name: "load-high",
        interval: secs(10),
        schedule: vec![secs(10), secs(10), secs(60), secs(10)],
    };
    let scaler = builder(trigger).build().expect("a valid scaler");
    let events = liveness_events(scaler, secs(100)).await;
    let [Event::EvaluationStalled {
        trigger,
        since,
        bound,
    }, Event::EvaluationResumed { trigger: resumed }] = events.as_slice()
    else {
        panic!("one stall, then its end: {events:#?}");
    };
    assert_eq!(
        (trigger.as_str(), resumed.as_str()),
        ("load-high", "load-high")
    );
    assert_eq!(*bound, secs(30), "3 intervals by default");
    // Checked four times per bound: reported within a quarter of it.
    assert!(
        *since > secs(30) && *since <= secs(38),
        "reported just past the bound: {since:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_bound_is_set_on_the_builder() {
    let every_20s = || Scheduled {
        name: "load-high",
        interval: secs(10),
        schedule: vec![secs(20); 5],
    };
    // 20 s between evaluations is within 3 intervals of 10 s...
    let scaler = builder(every_20s()).build().expect("a valid scaler");
    assert!(liveness_events(scaler, secs(100)).await.is_empty());
    // ... but not within a bound of 15 s.
    let scaler = builder(every_20s())
        .stalled_after(secs(15))
        .build()
        .expect("a valid scaler");
    // Stalled past 15 s, then evaluating again at 20 s.
    let events = liveness_events(scaler, secs(30)).await;
    assert!(
        matches!(
            events.as_slice(),
            [Event::EvaluationStalled { bound, .. }, Event::EvaluationResumed { .. }] if *bound == secs(15)
        ),
        "{events:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_trigger_that_never_evaluates_counts_from_the_start_and_a_manual_one_never_stalls() {
    let silent = Scheduled {
        name: "silent",
        interval: secs(10),
        schedule: Vec::new(),
    };
    let scaler = builder(silent).build().expect("a valid scaler");
    let events = liveness_events(scaler, secs(40)).await;
    assert!(
        matches!(events.as_slice(), [Event::EvaluationStalled { trigger, .. }] if trigger == "silent"),
        "{events:#?}"
    );
    let scaler = builder(ManualTrigger::new("by-hand"))
        .build()
        .expect("a valid scaler");
    assert!(liveness_events(scaler, secs(3600)).await.is_empty());
}

/// A source whose every reading takes an hour.
#[derive(Debug)]
struct Slow;

#[async_trait::async_trait]
impl crate::MetricSource for Slow {
    fn name(&self) -> &str {
        "load"
    }

    async fn sample(&self, _cluster: &Cluster) -> crate::Result<Vec<crate::Sample>> {
        tokio::time::sleep(secs(3600)).await;
        Ok(Vec::new())
    }
}

#[tokio::test(start_paused = true)]
async fn a_threshold_trigger_on_a_source_slower_than_its_interval_is_not_stalled() {
    use crate::{Comparison, ThresholdTrigger};
    // Each reading times out at the interval and is no data: the loop goes on.
    let trigger = ThresholdTrigger::builder("load-high", Arc::new(Slow))
        .when(Comparison::Greater, 2.0)
        .interval(secs(10))
        .build()
        .expect("a valid trigger");
    let scaler = builder(trigger).build().expect("a valid scaler");
    assert!(liveness_events(scaler, secs(300)).await.is_empty());
}

#[test]
fn a_bound_of_zero_is_refused() {
    let e = builder(ManualTrigger::new("by-hand"))
        .stalled_after(Duration::ZERO)
        .build()
        .expect_err("refused");
    assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
}
