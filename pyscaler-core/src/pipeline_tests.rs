use std::time::Duration;

use super::*;
use crate::test_support::{Log, Probe};
use crate::{
    ActionExt, CancellationToken, Cluster, Effects, ErrorKind, MockAction, Node, RunStatus,
};

fn ctx() -> Context {
    Context::new(
        Cluster::new("web")
            .with_nodes([Node::new("old-1", "web-01"), Node::new("old-2", "web-02")]),
    )
}

#[tokio::test(start_paused = true)]
async fn compensation_runs_in_reverse_order_for_started_steps_only() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .step(Probe::new("puppet", &log).on(Target::NewNodes))
        .step(
            Probe::new("script", &log)
                .failing(1, ErrorKind::RemoteCommandFailed)
                .on(Target::NewNodes),
        )
        .step(Probe::new("notify-cluster", &log).on(Target::Cluster))
        .build()
        .unwrap();
    let mut c = ctx();
    let report = p.run(&mut c).await;

    assert_eq!(
        log.entries(),
        [
            "run deploy",
            "run puppet on deploy-0",
            "run script on deploy-0",
            "undo script",
            "undo puppet",
            "undo deploy",
        ]
    );
    assert_eq!(report.status, RunStatus::Failed);
    let statuses: Vec<StepStatus> = report.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Failed,
            StepStatus::Skipped
        ]
    );
    let err = report.error.as_ref().unwrap();
    assert!(
        err.message.starts_with("step `script` failed"),
        "{}",
        err.message
    );
    assert!(err.message.contains("deploy (undone)"), "{}", err.message);
    assert_eq!(err.kind, ErrorKind::RemoteCommandFailed);
    assert!(report.undo_succeeded());
    assert_eq!(
        report
            .undone
            .iter()
            .map(|u| u.step.as_str())
            .collect::<Vec<_>>(),
        ["script", "puppet", "deploy"]
    );
    // The node the run created was taken back: nothing is left in the cluster or the report.
    assert_eq!(c.cluster().len(), 2);
    assert!(report.nodes_added.is_empty());
}

#[tokio::test(start_paused = true)]
async fn continue_records_the_failure_and_goes_on() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(
            Probe::new("a", &log)
                .failing(1, ErrorKind::RemoteCommandFailed)
                .on(Target::None)
                .on_failure(FailurePolicy::Continue),
        )
        .step(Probe::new("b", &log).on(Target::None))
        .build()
        .unwrap();
    let report = p.run(&mut ctx()).await;
    assert_eq!(log.entries(), ["run a", "run b"]);
    assert_eq!(report.status, RunStatus::CompletedWithFailures);
    assert_eq!(report.steps[0].status, StepStatus::Failed);
    assert_eq!(report.steps[1].status, StepStatus::Succeeded);
    assert!(report.undone.is_empty());
}

#[tokio::test(start_paused = true)]
async fn abort_stops_and_undoes_nothing() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(Probe::new("a", &log).on(Target::None))
        .step(
            Probe::new("b", &log)
                .failing(1, ErrorKind::RemoteCommandFailed)
                .on(Target::None)
                .on_failure(FailurePolicy::Abort),
        )
        .step(Probe::new("c", &log).on(Target::None))
        .build()
        .unwrap();
    let report = p.run(&mut ctx()).await;
    assert_eq!(log.entries(), ["run a", "run b"]);
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.steps[0].status, StepStatus::Succeeded);
    assert_eq!(report.steps[2].status, StepStatus::Skipped);
    assert!(report.undone.is_empty());
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_backoff_until_success() {
    let log = Log::default();
    let probe = Probe::new("launch", &log).failing(2, ErrorKind::Throttled);
    let policy = RetryPolicy::attempts(5)
        .initial_delay(Duration::from_secs(2))
        .jitter(false);
    let p = Pipeline::builder("out")
        .step(probe.clone().on(Target::None).retry(policy))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let report = p.run(&mut ctx()).await;
    assert!(report.is_success());
    assert_eq!(probe.runs(), 3);
    assert_eq!(report.steps[0].attempts, 3);
    // Backed off 2 s, then 4 s, on the paused clock.
    assert_eq!(start.elapsed(), Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_limit() {
    let log = Log::default();
    let probe = Probe::new("launch", &log).failing(10, ErrorKind::Transient);
    let p = Pipeline::builder("out")
        .step(
            probe
                .clone()
                .on(Target::None)
                .retry(RetryPolicy::attempts(3)),
        )
        .build()
        .unwrap();
    let report = p.run(&mut ctx()).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(probe.runs(), 3);
    assert_eq!(report.steps[0].attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn errors_that_are_not_retryable_are_not_retried() {
    let log = Log::default();
    let probe = Probe::new("launch", &log).failing(10, ErrorKind::InvalidInput);
    let p = Pipeline::builder("out")
        .step(
            probe
                .clone()
                .on(Target::None)
                .retry(RetryPolicy::attempts(5)),
        )
        .build()
        .unwrap();
    let report = p.run(&mut ctx()).await;
    assert_eq!(probe.runs(), 1);
    assert_eq!(report.steps[0].attempts, 1);
    assert_eq!(report.error.unwrap().kind, ErrorKind::InvalidInput);
}

#[tokio::test(start_paused = true)]
async fn a_step_timeout_fires_and_leads_to_compensation() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .step(
            Probe::new("puppet", &log)
                .slow(Duration::from_secs(600))
                .on(Target::NewNodes)
                .timeout(Duration::from_secs(30)),
        )
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let report = p.run(&mut ctx()).await;
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.steps[1].error.as_ref().unwrap();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(
        err.message.contains("timed out after 30s"),
        "{}",
        err.message
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
}

#[tokio::test(start_paused = true)]
async fn a_timeout_inside_a_retry_bounds_each_attempt() {
    let log = Log::default();
    let probe = Probe::new("slow", &log).slow(Duration::from_secs(100));
    let p = Pipeline::builder("out")
        .step(
            probe
                .clone()
                .on(Target::None)
                .timeout(Duration::from_secs(10))
                .retry(
                    RetryPolicy::attempts(3)
                        .initial_delay(Duration::from_secs(1))
                        .jitter(false),
                ),
        )
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let report = p.run(&mut ctx()).await;
    assert_eq!(probe.runs(), 3);
    // 3 attempts of 10 s, and 1 s + 2 s of backoff.
    assert_eq!(start.elapsed(), Duration::from_secs(33));
    assert_eq!(report.steps[0].attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn finally_runs_after_success_and_after_failure_and_sees_the_outcome() {
    for fail in [false, true] {
        let log = Log::default();
        let mut mail = MockAction::new();
        mail.expect_name().return_const("email".to_string());
        mail.expect_describe().returning(Effects::none);
        let expected = if fail {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        mail.expect_run()
            .times(1)
            .withf(move |ctx: &Context| ctx.report().map(|r| r.status) == Some(expected))
            .returning(|_| Ok(()));
        mail.expect_compensate().never();
        let failures = u32::from(fail);
        let p = Pipeline::builder("out")
            .step(
                Probe::new("a", &log)
                    .failing(failures, ErrorKind::RemoteCommandFailed)
                    .on(Target::None),
            )
            .finally(mail.on(Target::None))
            .build()
            .unwrap();
        let report = p.run(&mut ctx()).await;
        assert_eq!(report.status, expected);
        assert_eq!(report.finally[0].status, StepStatus::Succeeded);
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_finally_step_does_not_undo_the_run() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .finally(
            Probe::new("email", &log)
                .failing(1, ErrorKind::Transient)
                .on(Target::None),
        )
        .build()
        .unwrap();
    let mut c = ctx();
    let report = p.run(&mut c).await;
    assert_eq!(report.status, RunStatus::CompletedWithFailures);
    assert_eq!(report.finally[0].status, StepStatus::Failed);
    assert_eq!(report.nodes_added.len(), 1);
    assert_eq!(c.cluster().len(), 3);
    assert!(!log.entries().iter().any(|e| e.starts_with("undo")));
}

#[tokio::test(start_paused = true)]
async fn cancellation_mid_run_finishes_the_step_then_compensates() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .step(
            Probe::new("puppet", &log)
                .slow(Duration::from_secs(60))
                .on(Target::NewNodes),
        )
        .step(Probe::new("script", &log).on(Target::NewNodes))
        .build()
        .unwrap();
    let token = CancellationToken::new();
    let mut c = ctx().with_cancellation(token.clone());
    let cancel = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        token.cancel();
    };
    let (report, ()) = tokio::join!(p.run(&mut c), cancel);
    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(
        log.entries(),
        [
            "run deploy",
            "run puppet on deploy-0",
            "undo puppet",
            "undo deploy"
        ]
    );
    assert_eq!(report.steps[2].status, StepStatus::Skipped);
    assert_eq!(c.cluster().len(), 2);
    // The run's own token is given back after the undo.
    assert!(c.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_step_timeout_does_not_cut_the_undo_short() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .step(
            Probe::new("puppet", &log)
                .failing(1, ErrorKind::RemoteCommandFailed)
                .slow_undo(Duration::from_secs(60))
                .on(Target::NewNodes)
                .timeout(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let report = p.run(&mut ctx()).await;
    // The undo took its 60 s, past the step's 10 s timeout, and succeeded.
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert_eq!(report.undone.len(), 2);
    assert!(report.undo_succeeded(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn steps_apply_to_the_targets_they_name() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .step(Probe::new("new", &log).on(Target::NewNodes))
        .step(Probe::new("existing", &log).on(Target::Existing))
        .step(Probe::new("all", &log).on(Target::Cluster))
        .build()
        .unwrap();
    let report = p.run(&mut ctx()).await;
    assert!(report.is_success());
    assert_eq!(
        log.entries(),
        [
            "run deploy",
            "run new on deploy-0",
            "run existing on web-01,web-02",
            "run all on web-01,web-02,deploy-0",
        ]
    );
    assert_eq!(report.nodes_added.len(), 1);
}

#[test]
fn invalid_pipelines_are_refused_before_anything_runs() {
    let log = Log::default();
    let msg = |b: PipelineBuilder| b.build().unwrap_err().to_string();
    assert!(msg(Pipeline::builder("p")).contains("no steps"));
    assert!(msg(Pipeline::builder("p")
        .step(Probe::new("a", &log).on(Target::None))
        .step(Probe::new("a", &log).on(Target::None)))
    .contains("two steps are named `a`"));
    assert!(msg(Pipeline::builder("p")
        .step(Probe::new("puppet", &log).on(Target::NewNodes))
        .step(Probe::new("deploy", &log).creating(1).on(Target::None)))
    .contains("step `puppet` targets the new nodes, but no step before it creates nodes"));
    assert!(msg(Pipeline::builder("p").step(
        Probe::new("a", &log)
            .on(Target::None)
            .timeout(Duration::ZERO)
    ))
    .contains("zero timeout"));
    // Naming one of two uses of an action makes it valid.
    assert!(Pipeline::builder("p")
        .step(Probe::new("a", &log).on(Target::None))
        .step(Probe::new("a", &log).on(Target::None).named("a-again"))
        .build()
        .is_ok());
}

#[test]
fn plan_lists_steps_targets_and_effects_without_running_anything() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .step(
            Probe::new("puppet", &log)
                .on(Target::NewNodes)
                .timeout(Duration::from_secs(600)),
        )
        .step(Probe::new("update", &log).on(Target::Cluster))
        .build()
        .unwrap();
    let plan = p.plan(&ctx());
    assert!(log.entries().is_empty());
    assert_eq!(plan.steps[1].nodes_from.as_deref(), Some("deploy"));
    assert_eq!(plan.steps[2].nodes, ["web-01", "web-02"]);
    let text = plan.to_string();
    assert!(
        text.contains("2. puppet -> new nodes (+ nodes created by `deploy`), timeout 10m"),
        "{text}"
    );
    assert!(text.contains("- probe update"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn events_follow_the_run() {
    let log = Log::default();
    let p = Pipeline::builder("out")
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .build()
        .unwrap();
    let mut rx = p.subscribe();
    let report = p.run(&mut ctx()).await;
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        kinds.push(match e {
            Event::RunStarted { .. } => "run-started",
            Event::StepStarted { .. } => "step-started",
            Event::NodeAdded { .. } => "node-added",
            Event::StepFinished { .. } => "step-finished",
            Event::RunFinished { .. } => "run-finished",
            _ => "other",
        });
    }
    assert_eq!(
        kinds,
        [
            "run-started",
            "step-started",
            "node-added",
            "step-finished",
            "run-finished"
        ]
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["steps"][0]["status"], "succeeded");
    assert!(report.to_string().contains("added: deploy-0"));
}
