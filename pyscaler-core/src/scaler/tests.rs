use std::time::Duration;

use super::*;
use crate::journal::JournalEntry;
use crate::test_support::{Log, Probe};
use crate::{
    ActionExt, Error, Journal, ManualTrigger, MemoryJournal, Node, Recovery, Result, RunCleanup,
    RunStatus, Target,
};

fn cluster(n: usize) -> Cluster {
    Cluster::new("web")
        .with_nodes((1..=n).map(|i| Node::new(format!("i-{i}"), format!("web-0{i}"))))
}

fn out_pipeline(log: &Log, delay: Duration) -> Arc<Pipeline> {
    Arc::new(
        Pipeline::builder("scale-out")
            .step(
                Probe::new("deploy", log)
                    .creating(1)
                    .slow(delay)
                    .on(Target::None),
            )
            .build()
            .unwrap(),
    )
}

/// Runs the scaler until `for_` of virtual time has passed, firing as `script` says.
async fn drive(
    mut scaler: Scaler,
    script: Vec<(Duration, ManualTrigger, &'static str)>,
    for_: Duration,
) -> (Scaler, Vec<ScalerOutcome>) {
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    let firing = async move {
        let start = Instant::now();
        for (at, trigger, reason) in script {
            tokio::time::sleep_until(start + at).await;
            trigger.fire(reason);
        }
        tokio::time::sleep_until(start + for_).await;
        stopper.cancel();
    };
    let (outcomes, ()) = tokio::join!(scaler.run(stop), firing);
    (scaler, outcomes)
}

fn summary(outcomes: &[ScalerOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| match o {
            ScalerOutcome::Ran(r) => format!("ran {}", r.status),
            ScalerOutcome::Skipped { reason, .. } => format!("skipped: {reason}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_manual_fire_runs_the_pipeline_and_grows_the_cluster() {
    let log = Log::default();
    let manual = ManualTrigger::new("manual");
    let scaler = Scaler::builder(cluster(2))
        .bind(
            manual.clone(),
            Direction::Out,
            out_pipeline(&log, Duration::ZERO),
        )
        .build()
        .unwrap();
    let (scaler, outcomes) = drive(
        scaler,
        vec![(Duration::ZERO, manual, "asked by alice")],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(summary(&outcomes), ["ran succeeded"]);
    let ScalerOutcome::Ran(report) = &outcomes[0] else {
        unreachable!()
    };
    assert_eq!(report.trigger.reason, "asked by alice");
    assert_eq!(scaler.cluster().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn scale_out_at_the_maximum_and_scale_in_at_the_minimum_are_skipped() {
    let log = Log::default();
    let out = ManualTrigger::new("out");
    let inward = ManualTrigger::new("in");
    let scale_in = Arc::new(
        Pipeline::builder("scale-in")
            .step(Probe::new("remove", &log).on(Target::None))
            .build()
            .unwrap(),
    );
    let scaler = Scaler::builder(cluster(2))
        .min_nodes(2)
        .max_nodes(2)
        .bind(
            out.clone(),
            Direction::Out,
            out_pipeline(&log, Duration::ZERO),
        )
        .bind(inward.clone(), Direction::In, scale_in)
        .build()
        .unwrap();
    let (scaler, outcomes) = drive(
        scaler,
        vec![
            (Duration::ZERO, out, "busy"),
            (Duration::from_secs(1), inward, "idle"),
        ],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        summary(&outcomes),
        [
            "skipped: the cluster is at its maximum of 2 nodes",
            "skipped: the cluster is at its minimum of 2 nodes"
        ]
    );
    assert!(log.entries().is_empty(), "nothing ran: {:?}", log.entries());
    assert_eq!(scaler.cluster().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_scale_out_that_would_go_past_the_maximum_is_skipped() {
    let log = Log::default();
    let manual = ManualTrigger::new("manual");
    let adds_two = Arc::new(
        Pipeline::builder("scale-out-by-2")
            .step(Probe::new("deploy", &log).creating(2).on(Target::None))
            .build()
            .unwrap(),
    );
    let scaler = Scaler::builder(cluster(2))
        .max_nodes(3)
        .bind(manual.clone(), Direction::Out, adds_two)
        .build()
        .unwrap();
    let (scaler, outcomes) = drive(
        scaler,
        vec![(Duration::ZERO, manual, "busy")],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        summary(&outcomes),
        ["skipped: adding 2 nodes to 2 would go past the maximum of 3"]
    );
    assert!(log.entries().is_empty());
    assert_eq!(scaler.cluster().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn two_triggers_firing_together_give_one_run() {
    let log = Log::default();
    let a = ManualTrigger::new("a");
    let b = ManualTrigger::new("b");
    let pipeline = out_pipeline(&log, Duration::from_secs(30));
    let scaler = Scaler::builder(cluster(2))
        .cooldown(Direction::Out, Duration::ZERO)
        .bind(a.clone(), Direction::Out, pipeline.clone())
        .bind(b.clone(), Direction::Out, pipeline)
        .build()
        .unwrap();
    let (_, outcomes) = drive(
        scaler,
        vec![(Duration::ZERO, a, "cpu"), (Duration::ZERO, b, "queue")],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        summary(&outcomes),
        [
            "ran succeeded",
            "skipped: a run was in progress when it fired"
        ]
    );
    assert_eq!(log.entries(), ["run deploy"]);
}

#[tokio::test(start_paused = true)]
async fn cooldown_skips_a_second_run_until_it_is_over() {
    let log = Log::default();
    let manual = ManualTrigger::new("manual");
    let scaler = Scaler::builder(cluster(1))
        .cooldown(Direction::Out, Duration::from_secs(60))
        .bind(
            manual.clone(),
            Direction::Out,
            out_pipeline(&log, Duration::ZERO),
        )
        .build()
        .unwrap();
    let (scaler, outcomes) = drive(
        scaler,
        vec![
            (Duration::ZERO, manual.clone(), "1"),
            (Duration::from_secs(30), manual.clone(), "2"),
            (Duration::from_secs(61), manual, "3"),
        ],
        Duration::from_secs(90),
    )
    .await;
    let s = summary(&outcomes);
    assert_eq!(s.len(), 3);
    assert_eq!(s[0], "ran succeeded");
    assert!(
        s[1].starts_with("skipped: scale-out is cooling down"),
        "{}",
        s[1]
    );
    assert_eq!(s[2], "ran succeeded");
    assert_eq!(scaler.cluster().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_run_lets_the_step_finish_then_undoes_it() {
    let log = Log::default();
    let manual = ManualTrigger::new("manual");
    let pipeline = Arc::new(
        Pipeline::builder("scale-out")
            .step(Probe::new("deploy", &log).creating(1).on(Target::None))
            .step(
                Probe::new("puppet", &log)
                    .slow(Duration::from_secs(60))
                    .on(Target::NewNodes),
            )
            .step(Probe::new("script", &log).on(Target::NewNodes))
            .build()
            .unwrap(),
    );
    let scaler = Scaler::builder(cluster(1))
        .bind(manual.clone(), Direction::Out, pipeline)
        .build()
        .unwrap();
    let (scaler, outcomes) = drive(
        scaler,
        vec![(Duration::ZERO, manual, "go")],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        summary(&outcomes),
        [format!("ran {}", RunStatus::Cancelled)]
    );
    assert_eq!(
        log.entries(),
        [
            "run deploy",
            "run puppet on deploy-0",
            "undo puppet",
            "undo deploy"
        ]
    );
    assert_eq!(scaler.cluster().len(), 1);
}

#[test]
fn a_scaler_needs_a_trigger_and_sane_bounds() {
    let err = Scaler::builder(cluster(1)).build().unwrap_err();
    assert!(err.to_string().contains("no trigger"), "{err}");
    let log = Log::default();
    let err = Scaler::builder(cluster(1))
        .min_nodes(5)
        .max_nodes(2)
        .bind(
            ManualTrigger::new("m"),
            Direction::Out,
            out_pipeline(&log, Duration::ZERO),
        )
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("min_nodes (5) is above max_nodes (2)"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fire_during_a_run_is_skipped_with_its_own_direction() {
    let log = Log::default();
    let out = ManualTrigger::new("cpu-high");
    let inward = ManualTrigger::new("cpu-low");
    let scale_in = Arc::new(
        Pipeline::builder("scale-in")
            .step(Probe::new("remove", &log).on(Target::None))
            .build()
            .unwrap(),
    );
    let scaler = Scaler::builder(cluster(3))
        .bind(
            out.clone(),
            Direction::Out,
            out_pipeline(&log, Duration::from_secs(30)),
        )
        .bind(inward.clone(), Direction::In, scale_in)
        .build()
        .unwrap();
    let (_, outcomes) = drive(
        scaler,
        vec![
            (Duration::ZERO, out, "busy"),
            (Duration::from_secs(5), inward, "idle"),
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        summary(&outcomes),
        [
            "ran succeeded",
            "skipped: a run was in progress when it fired"
        ]
    );
    let ScalerOutcome::Skipped {
        trigger, direction, ..
    } = &outcomes[1]
    else {
        unreachable!()
    };
    assert_eq!((trigger.as_str(), *direction), ("cpu-low", Direction::In));
    assert_eq!(log.entries(), ["run deploy"]);
}

#[tokio::test(start_paused = true)]
async fn a_counter_that_cannot_be_read_is_reported_to_scaler_subscribers() {
    let mut source = crate::MockMetricSource::new();
    source.expect_name().return_const("load1".to_string());
    source.expect_sample().returning(|_| {
        Err(Error::other(crate::ErrorKind::Transient, "connection refused").on_node("web-02"))
    });
    let trigger = crate::ThresholdTrigger::builder("load-high", Arc::new(source))
        .when(crate::Comparison::Greater, 2.0)
        .interval(Duration::from_secs(10))
        .build()
        .unwrap();
    let log = Log::default();
    let scaler = Scaler::builder(cluster(2))
        .bind(trigger, Direction::Out, out_pipeline(&log, Duration::ZERO))
        .build()
        .unwrap();
    let mut events = scaler.subscribe();
    let (_, outcomes) = drive(scaler, Vec::new(), Duration::from_secs(5)).await;
    assert!(outcomes.is_empty(), "{:?}", summary(&outcomes));
    let Ok(Event::SampleFailed {
        trigger,
        metric,
        node,
        error,
    }) = events.try_recv()
    else {
        panic!("no SampleFailed event");
    };
    assert_eq!(
        (trigger.as_str(), metric.as_str(), node.as_deref()),
        ("load-high", "load1", Some("web-02"))
    );
    assert_eq!(error, "on node web-02: connection refused");
}

/// Cleans up every run but `stuck`, saying what it terminated.
struct TerminateAll {
    stuck: &'static str,
}

#[async_trait::async_trait]
impl RunCleanup for TerminateAll {
    async fn cleanup(&self, run: &crate::RunRecord) -> Result<Vec<String>> {
        if run.run_id.as_str() == self.stuck {
            return Err(Error::other(
                crate::ErrorKind::Transient,
                "the EC2 API is throttling",
            ));
        }
        Ok(run
            .new_nodes
            .iter()
            .map(|n| format!("terminated {}", n.id))
            .collect())
    }
}

/// A run that died after its deploy step had created `node`.
fn died_after_deploy(run: &str, node: &Node) -> Vec<JournalEntry> {
    let run_id = crate::RunId::new(run);
    let at = chrono::Utc::now();
    vec![
        JournalEntry::RunStarted {
            run_id: run_id.clone(),
            pipeline: "scale-out".into(),
            cluster: "web".into(),
            trigger: TriggerInfo::new("manual", "busy"),
            at,
        },
        JournalEntry::StepStarted {
            run_id: run_id.clone(),
            step: "deploy".into(),
            intent: vec!["launch 1 node".into()],
            at,
        },
        JournalEntry::StepFinished {
            run_id,
            step: "deploy".into(),
            status: crate::StepStatus::Succeeded,
            new_nodes: vec![node.clone()],
            error: None,
            outcomes: Vec::new(),
            removed_nodes: Vec::new(),
            at,
        },
    ]
}

#[tokio::test(start_paused = true)]
async fn recovery_takes_the_nodes_of_cleaned_up_runs_out_of_the_cluster() {
    // The cluster was discovered with the nodes the dead runs had launched.
    let (orphan, stuck) = (Node::new("i-9", "web-09"), Node::new("i-8", "web-08"));
    let journal = Arc::new(MemoryJournal::with_entries(
        died_after_deploy("run-dead", &orphan)
            .into_iter()
            .chain(died_after_deploy("run-stuck", &stuck)),
    ));
    let log = Log::default();
    let scaler = Scaler::builder(cluster(2).with_nodes([orphan, stuck]))
        // The scaler adds its bound pipeline (`scale-out`) to the recovery.
        .recover_first(Recovery::new(journal.clone()).then(TerminateAll { stuck: "run-stuck" }))
        .bind(
            ManualTrigger::new("manual"),
            Direction::Out,
            out_pipeline(&log, Duration::ZERO),
        )
        .build()
        .unwrap();
    let mut events = scaler.subscribe();
    let (scaler, outcomes) = drive(scaler, Vec::new(), Duration::from_secs(1)).await;
    assert!(outcomes.is_empty(), "{:?}", summary(&outcomes));

    // The cleaned-up run's node is gone; the one whose clean-up failed stays.
    let ids: Vec<&str> = scaler
        .cluster()
        .nodes()
        .iter()
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(ids, ["i-1", "i-2", "i-8"]);
    let Ok(Event::NodeRemoved { run_id, node }) = events.try_recv() else {
        panic!("no NodeRemoved event");
    };
    assert_eq!((run_id.as_str(), node.id.as_str()), ("run-dead", "i-9"));
    assert!(events.try_recv().is_err(), "one node left the cluster");

    // The journal says so too: one run recovered, the other left for next time.
    let unfinished: Vec<String> = journal
        .unfinished_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id.as_str().to_owned())
        .collect();
    assert_eq!(unfinished, ["run-stuck"]);
}
