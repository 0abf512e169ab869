//! The metrics as an exporter would see them: names, labels and values
//! read back with metrics-util's debugging recorder.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use super::names;
use super::*;
use crate::test_support::{Log, Probe};
use crate::{
    ActionExt, CancellationToken, Cluster, Context, Direction, ErrorKind, FailurePolicy,
    ManualTrigger, MemoryJournal, Node, Pipeline, RetryPolicy, Scaler, Target,
};

/// One series: its name and labels, and its value.
type Series = BTreeMap<(String, BTreeSet<(String, String)>), DebugValue>;

/// Runs `f` on a current-thread runtime with paused time, with a recorder
/// of its own (so tests running side by side do not mix their counts), and
/// returns what was recorded.
fn recorded<F: Future>(f: impl FnOnce() -> F) -> (F::Output, Series) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let out = metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime")
            .block_on(f())
    });
    let series = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            ((key.name().to_owned(), labels), value)
        })
        .collect();
    (out, series)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn counter(series: &Series, name: &str, pairs: &[(&str, &str)]) -> u64 {
    match series.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {pairs:?} is not a counter: {other:?}\n{series:#?}"),
    }
}

fn gauge(series: &Series, name: &str, pairs: &[(&str, &str)]) -> f64 {
    match series.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name} {pairs:?} is not a gauge: {other:?}\n{series:#?}"),
    }
}

fn observations(series: &Series, name: &str, pairs: &[(&str, &str)]) -> Vec<f64> {
    match series.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        other => panic!("{name} {pairs:?} is not a histogram: {other:?}\n{series:#?}"),
    }
}

const RUN: &[(&str, &str)] = &[("cluster", "web"), ("pipeline", "scale-out")];

/// A scale-out whose launch is retried once, then whose configuration
/// fails: the launch is undone.
fn failing_scale_out(log: &Log, journal: Arc<MemoryJournal>) -> Pipeline {
    Pipeline::builder("scale-out")
        .journal(journal)
        .step(
            Probe::new("launch", log)
                .creating(1)
                .failing(1, ErrorKind::Throttled)
                .on(Target::None)
                .retry(RetryPolicy::attempts(3).initial_delay(Duration::from_secs(1)))
                .timeout(Duration::from_secs(60)),
        )
        .step(
            Probe::new("configure", log)
                .slow(Duration::from_secs(2))
                .failing(u32::MAX, ErrorKind::RemoteCommandFailed)
                .on(Target::NewNodes)
                .on_failure(FailurePolicy::Compensate),
        )
        .build()
        .expect("a valid pipeline")
}

#[test]
fn a_failed_run_is_counted_step_by_step_with_its_retry_and_undo() {
    let log = Log::default();
    let journal = Arc::new(MemoryJournal::new());
    let (report, series) = recorded(|| async {
        let pipeline = failing_scale_out(&log, journal.clone());
        let mut ctx = Context::new(Cluster::new("web").with_nodes([Node::new("i-1", "web-01")]));
        pipeline.run(&mut ctx).await
    });
    assert_eq!(report.status, crate::RunStatus::Failed, "{report}");

    assert_eq!(counter(&series, names::RUNS_STARTED, RUN), 1);
    let failed = [RUN, &[("status", "failed")]].concat();
    assert_eq!(counter(&series, names::RUNS_FINISHED, &failed), 1);
    assert_eq!(observations(&series, names::RUN_DURATION, &failed).len(), 1);
    assert_eq!(gauge(&series, names::RUNS_IN_PROGRESS, RUN), 0.0);

    let launch_ok = [RUN, &[("step", "launch"), ("status", "succeeded")]].concat();
    let configure_failed = [RUN, &[("step", "configure"), ("status", "failed")]].concat();
    assert_eq!(counter(&series, names::STEPS, &launch_ok), 1);
    assert_eq!(counter(&series, names::STEPS, &configure_failed), 1);
    // The step's duration is its own (2 s of virtual time), not the run's.
    assert_eq!(
        observations(&series, names::STEP_DURATION, &configure_failed),
        [2.0]
    );
    let retried = [RUN, &[("step", "launch"), ("error_kind", "throttled")]].concat();
    assert_eq!(counter(&series, names::STEP_RETRIES, &retried), 1);

    // Undone in reverse order, both succeeded; the node it added left again.
    for step in ["launch", "configure"] {
        let undone = [RUN, &[("step", step), ("status", "succeeded")]].concat();
        assert_eq!(counter(&series, names::UNDOS, &undone), 1, "{step}");
        assert_eq!(counter(&series, names::WITHDRAWALS, &undone), 1, "{step}");
    }
    assert_eq!(counter(&series, names::NODES_ADDED, RUN), 1);
    assert_eq!(counter(&series, names::NODES_REMOVED, RUN), 1);
    assert_eq!(
        gauge(&series, names::CLUSTER_NODES, &[("cluster", "web")]),
        1.0
    );

    // Every journal write was timed, by entry.
    for (entry, writes) in [
        ("run_started", 1),
        ("step_started", 2),
        ("step_finished", 2),
        ("step_undone", 2),
        ("steps_ended", 1),
        ("run_finished", 1),
    ] {
        let took = observations(&series, names::JOURNAL_WRITE, &[("entry", entry)]);
        assert_eq!(took.len(), writes, "{entry}");
    }
    assert!(
        !series
            .keys()
            .any(|(name, _)| name == names::JOURNAL_WRITE_ERRORS),
        "no journal write failed"
    );
}

fn manual_scaler(log: &Log) -> (Scaler, ManualTrigger) {
    let pipeline = Arc::new(
        Pipeline::builder("scale-out")
            .step(Probe::new("deploy", log).creating(1).on(Target::None))
            .build()
            .expect("a valid pipeline"),
    );
    let trigger = ManualTrigger::new("by-hand");
    let scaler = Scaler::builder(Cluster::new("web").with_nodes([Node::new("i-1", "web-01")]))
        .max_nodes(3)
        .cooldown(Direction::Out, Duration::from_secs(300))
        .bind(trigger.clone(), Direction::Out, pipeline)
        .build()
        .expect("a valid scaler");
    (scaler, trigger)
}

#[test]
fn decisions_are_counted_by_kind_and_the_cluster_size_follows_the_runs() {
    let log = Log::default();
    let ((), series) = recorded(|| async {
        let (mut scaler, trigger) = manual_scaler(&log);
        let stop = CancellationToken::new();
        let script = async {
            trigger.fire("first");
            tokio::time::sleep(Duration::from_secs(10)).await;
            // Within the 5-minute cooldown: skipped.
            trigger.fire("second");
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();
        };
        tokio::join!(scaler.run(stop.clone()), script);
    });
    let decided = |kind| {
        let pairs = [
            ("cluster", "web"),
            ("trigger", "by-hand"),
            ("direction", "out"),
            ("kind", kind),
        ];
        counter(&series, names::DECISIONS, &pairs)
    };
    assert_eq!(decided("scale"), 1);
    assert_eq!(decided("cooldown"), 1);
    assert_eq!(
        gauge(&series, names::CLUSTER_NODES, &[("cluster", "web")]),
        2.0
    );
    assert_eq!(counter(&series, names::RUNS_STARTED, RUN), 1);
}

#[test]
fn a_threshold_trigger_s_evaluations_value_and_threshold_are_recorded() {
    use crate::{Comparison, MockMetricSource, Sample, ThresholdTrigger};
    let mut source = MockMetricSource::new();
    source.expect_name().return_const("load".to_owned());
    let mut n = 0;
    source.expect_sample().returning(move |_| {
        n += 1;
        // Two readings below, then the counter cannot be read.
        match n {
            1 | 2 => Ok(vec![Sample::new("web-01", 0.5)]),
            _ => Err(crate::Error::other(ErrorKind::Transient, "down")),
        }
    });
    let source: Arc<dyn crate::MetricSource> = Arc::new(source);
    let ((), series) = recorded(|| async {
        let trigger = ThresholdTrigger::builder("load-high", source)
            .when(Comparison::Greater, 2.0)
            .interval(Duration::from_secs(10))
            .build()
            .expect("a valid trigger");
        let (_tx, view) = crate::ClusterView::new(Cluster::new("web"));
        let mut trigger = trigger;
        let _ = tokio::time::timeout(
            Duration::from_secs(35),
            crate::Trigger::next(&mut trigger, &view),
        )
        .await;
    });
    let t = [("cluster", "web"), ("trigger", "load-high")];
    let result = |r| {
        counter(
            &series,
            names::TRIGGER_EVALUATIONS,
            &[t.as_slice(), &[("result", r)]].concat(),
        )
    };
    assert_eq!(result("not_breaching"), 2);
    assert_eq!(result("no_data"), 2);
    assert_eq!(gauge(&series, names::TRIGGER_VALUE, &t), 0.5);
    assert_eq!(gauge(&series, names::TRIGGER_THRESHOLD, &t), 2.0);
    assert_eq!(counter(&series, names::SAMPLE_FAILURES, &t), 2);
    let no_data = [t.as_slice(), &[("direction", "out"), ("kind", "no_data")]].concat();
    assert_eq!(counter(&series, names::DECISIONS, &no_data), 2);
    assert!(gauge(&series, names::LAST_EVALUATION, &t) > 1.0e9);
}

#[test]
fn provider_calls_are_counted_by_error_kind_and_retries_beyond_the_first_attempt() {
    let ((), series) = recorded(|| async {
        for (attempts, error) in [(1, None), (3, None), (2, Some(ErrorKind::Throttled))] {
            record_provider_call(ProviderCall {
                provider: "ec2",
                operation: "RunInstances",
                attempts,
                error,
            });
        }
    });
    let op = [("provider", "ec2"), ("operation", "RunInstances")];
    let calls = |kind| {
        counter(
            &series,
            names::PROVIDER_CALLS,
            &[op.as_slice(), &[("error_kind", kind)]].concat(),
        )
    };
    assert_eq!(calls("none"), 2);
    assert_eq!(calls("throttled"), 1);
    assert_eq!(counter(&series, names::PROVIDER_RETRIES, &op), 3);
}

#[test]
fn a_thousand_runs_add_no_series_and_no_label_names_a_run_or_a_node() {
    let log = Log::default();
    let journal = Arc::new(MemoryJournal::new());
    let series_after = |runs: usize| {
        let (ids, series) = recorded(|| async {
            let pipeline = failing_scale_out(&log, journal.clone());
            let mut ids = Vec::new();
            for _ in 0..runs {
                let mut ctx = Context::new(Cluster::new("web"));
                let report = pipeline.run(&mut ctx).await;
                ids.push(report.run_id.to_string());
            }
            ids
        });
        (ids, series)
    };
    let (_, one) = series_after(1);
    let (ids, thousand) = series_after(1000);
    let keys = |s: &Series| s.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        keys(&one),
        keys(&thousand),
        "the same series, whatever the runs"
    );
    assert_eq!(counter(&thousand, names::RUNS_STARTED, RUN), 1000);
    for (name, labels) in thousand.keys() {
        for (key, value) in labels {
            assert!(
                !ids.iter().any(|id| value.contains(id.as_str())),
                "{name} has a run id in its label {key}={value}"
            );
        }
    }
}

#[test]
fn every_recorded_metric_is_documented_with_its_labels_and_named_by_convention() {
    let log = Log::default();
    let journal = Arc::new(MemoryJournal::new());
    let ((), series) = recorded(|| async {
        let pipeline = failing_scale_out(&log, journal.clone());
        pipeline.run(&mut Context::new(Cluster::new("web"))).await;
        let (mut scaler, trigger) = manual_scaler(&log);
        let stop = CancellationToken::new();
        trigger.fire("now");
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        };
        tokio::join!(scaler.run(stop.clone()), stopping);
    });
    for (name, labels) in series.keys() {
        let info = METRICS
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} is not in METRICS"));
        let names: BTreeSet<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        let documented: BTreeSet<&str> = info.labels.iter().copied().collect();
        assert_eq!(names, documented, "{name}'s labels");
    }
    let mut seen = BTreeSet::new();
    for m in METRICS {
        assert!(seen.insert(m.name), "{} is listed twice", m.name);
        assert!(m.name.starts_with("pyscaler_"), "{}", m.name);
        match m.kind {
            MetricType::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
            MetricType::Histogram => assert!(m.name.ends_with("_seconds"), "{}", m.name),
            MetricType::Gauge => assert!(!m.name.ends_with("_total"), "{}", m.name),
        }
        assert!(
            include_str!("mod.rs").contains(&format!("| `{}` | {} |", m.name, m.kind)),
            "{} is in the table of the module's docs",
            m.name
        );
    }
}

#[test]
fn a_stalled_trigger_sets_its_gauge_until_it_evaluates_again() {
    use crate::test_support::Scheduled;
    let log = Log::default();
    let stalled_at = |for_: u64| {
        let ((), series) = recorded(|| async {
            let trigger = Scheduled {
                name: "load-high",
                interval: Duration::from_secs(10),
                schedule: vec![Duration::from_secs(10), Duration::from_secs(60)],
            };
            let pipeline = Arc::new(
                Pipeline::builder("scale-out")
                    .step(Probe::new("deploy", &log).on(Target::None))
                    .build()
                    .expect("a valid pipeline"),
            );
            let mut scaler = Scaler::builder(Cluster::new("web"))
                .bind(trigger, Direction::Out, pipeline)
                .build()
                .expect("a valid scaler");
            let stop = CancellationToken::new();
            let stopping = async {
                tokio::time::sleep(Duration::from_secs(for_)).await;
                stop.cancel();
            };
            tokio::join!(scaler.run(stop.clone()), stopping);
        });
        let t = [("cluster", "web"), ("trigger", "load-high")];
        gauge(&series, names::EVALUATION_STALLED, &t)
    };
    // Evaluations at 10 s and 70 s: stalled past 40 s, not before, nor after 70 s.
    assert_eq!(stalled_at(30), 0.0);
    assert_eq!(stalled_at(60), 1.0);
    assert_eq!(stalled_at(80), 0.0);
}

#[test]
fn the_lease_gauge_is_one_while_the_scaler_holds_the_lease_and_zero_once_lost() {
    let held_after = |lose: bool| {
        let ((), series) = recorded(|| async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let lease = Arc::new(crate::FileLease::new(
                dir.path(),
                "web",
                Duration::from_secs(20),
            ));
            let pipeline = Arc::new(
                Pipeline::builder("scale-out")
                    .step(Probe::new("deploy", &Log::default()).on(Target::None))
                    .build()
                    .expect("a valid pipeline"),
            );
            let mut scaler = Scaler::builder(Cluster::new("web"))
                .bind(ManualTrigger::new("manual"), Direction::Out, pipeline)
                .lease(lease.clone(), crate::LeaseTiming::default())
                .build()
                .expect("a valid scaler");
            let stop = CancellationToken::new();
            let run = scaler.run(stop.clone());
            tokio::pin!(run);
            // Three seconds in, the lease is held.
            tokio::select! {
                _ = &mut run => panic!("the scaler stopped by itself"),
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            }
            if lose {
                // The file lock goes (as when another process broke it):
                // the next renewal is refused and the scaler stops.
                let grant = crate::Lease::try_acquire(lease.as_ref()).await;
                assert!(matches!(grant, Ok(None)), "still held by the scaler");
                let any = crate::LeaseGrant {
                    owner: crate::Lease::owner(lease.as_ref()).to_owned(),
                    epoch: 0,
                    expires_at: chrono::Utc::now(),
                };
                crate::Lease::release(lease.as_ref(), &any)
                    .await
                    .expect("released");
                run.await;
            }
        });
        gauge(&series, names::LEASE_HELD, &[("cluster", "web")])
    };
    assert_eq!(held_after(false), 1.0);
    assert_eq!(held_after(true), 0.0);
}
