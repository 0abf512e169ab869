use std::time::Duration;

use super::*;
use crate::test_support::{Log, Probe};
use crate::{ActionExt, ManualTrigger, Node, RunStatus, Target};

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
