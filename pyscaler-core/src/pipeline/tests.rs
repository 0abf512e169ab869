use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::test_support::{Log, Probe};
use crate::{
    ActionExt, CancellationToken, Cluster, Context, Effects, ErrorKind, FailurePolicy, MockAction,
    Node, RetryPolicy, RunStatus, StepStatus, Target,
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

/// Logs `run`, `withdraw` and `undo`; `fails` makes its run fail, and
/// `withdraw_fails` its withdrawal.
struct Serving {
    name: &'static str,
    log: Log,
    fails: bool,
    withdraw_fails: bool,
}

#[async_trait::async_trait]
impl crate::Action for Serving {
    fn name(&self) -> &str {
        self.name
    }
    async fn run(&self, _ctx: &mut Context) -> crate::Result<()> {
        self.log.push(format!("run {}", self.name));
        if self.fails {
            return Err(crate::Error::other(
                ErrorKind::RemoteCommandFailed,
                "exit 1",
            ));
        }
        Ok(())
    }
    async fn withdraw(&self, ctx: &mut Context) -> crate::Result<()> {
        let on: Vec<&str> = ctx.targets().iter().map(|n| n.name.as_str()).collect();
        self.log
            .push(format!("withdraw {} on {}", self.name, on.join(",")));
        if self.withdraw_fails {
            return Err(crate::Error::other(ErrorKind::Transient, "ELB unavailable"));
        }
        Ok(())
    }
    async fn compensate(&self, _ctx: &mut Context) -> crate::Result<()> {
        self.log.push(format!("undo {}", self.name));
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_takes_every_started_step_out_of_service_before_the_first_undo() {
    let log = Log::default();
    let serving = |name, fails, withdraw_fails| Serving {
        name,
        log: log.clone(),
        fails,
        withdraw_fails,
    };
    let mut events = None;
    let p = Pipeline::builder("out")
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .step(serving("register", false, true).on(Target::NewNodes))
        .step(serving("script", true, false).on(Target::NewNodes))
        .step(serving("never", false, false).on(Target::NewNodes))
        .build()
        .unwrap();
    events.get_or_insert(p.subscribe());
    let report = p.run(&mut ctx()).await;

    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(
        log.entries(),
        [
            "run deploy",
            "run register",
            "run script",
            // Out of service first, last started first...
            "withdraw script on deploy-0",
            "withdraw register on deploy-0",
            // ...then the slower undos.
            "undo script",
            "undo register",
            "undo deploy",
        ]
    );
    // A failed withdrawal is in the report; its undo still ran.
    let register = &report.steps[1].undo.as_ref().expect("undone");
    assert!(register.succeeded);
    assert_eq!(
        register.withdraw_error.as_ref().map(|e| e.message.as_str()),
        Some("ELB unavailable")
    );
    assert_eq!(report.steps[2].undo.as_ref().unwrap().withdraw_error, None);
    let mut withdrawn = Vec::new();
    let mut events = events.unwrap();
    while let Ok(e) = events.try_recv() {
        if let crate::Event::Withdrawn {
            step, succeeded, ..
        } = e
        {
            withdrawn.push((step, succeeded));
        }
    }
    assert_eq!(
        withdrawn,
        [
            ("script".to_string(), true),
            ("register".to_string(), false),
            ("deploy".to_string(), true)
        ]
    );
}

/// Hangs in `run`; a task it started notes when the step's token is cancelled.
struct HangsOnNodes {
    cancelled_at: Arc<std::sync::Mutex<Option<Duration>>>,
}

#[async_trait::async_trait]
impl crate::Action for HangsOnNodes {
    fn name(&self) -> &str {
        "script"
    }
    async fn run(&self, ctx: &mut Context) -> crate::Result<()> {
        let (token, at, start) = (
            ctx.cancellation().clone(),
            self.cancelled_at.clone(),
            tokio::time::Instant::now(),
        );
        // What a provider does with a remote command: end it when told to.
        tokio::spawn(async move {
            token.cancelled().await;
            *at.lock().unwrap() = Some(start.elapsed());
        });
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_step_names_its_nodes_and_its_work_is_told_to_stop_at_once() {
    let cancelled_at = Arc::default();
    let p = Pipeline::builder("update")
        .step(
            HangsOnNodes {
                cancelled_at: Arc::clone(&cancelled_at),
            }
            .on(Target::Cluster)
            .timeout(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let run_token = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let report = p.run(&mut ctx().with_cancellation(run_token.clone())).await;
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    let error = report.error.expect("timed out");
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(
        error
            .message
            .contains("step `script` timed out after 10s on web-01, web-02"),
        "{}",
        error.message
    );
    tokio::task::yield_now().await;
    assert_eq!(
        *cancelled_at.lock().unwrap(),
        Some(Duration::from_secs(10)),
        "the step's work was told to stop when the timeout fired"
    );
    assert!(!run_token.is_cancelled(), "only the step's own token");
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_run_tells_the_running_step_to_stop() {
    let cancelled_at = Arc::default();
    let p = Pipeline::builder("update")
        .step(
            HangsOnNodes {
                cancelled_at: Arc::clone(&cancelled_at),
            }
            .on(Target::Cluster)
            .timeout(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let run_token = CancellationToken::new();
    let cancel = run_token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        cancel.cancel();
    });
    let _ = p.run(&mut ctx().with_cancellation(run_token)).await;
    assert_eq!(*cancelled_at.lock().unwrap(), Some(Duration::from_secs(3)));
}

/// Removes the last node of the cluster (as a scale-in's `Pick::Newest` does).
struct RemoveLast;

#[async_trait::async_trait]
impl crate::Action for RemoveLast {
    fn name(&self) -> &str {
        "remove"
    }
    fn describe(&self) -> Effects {
        Effects::says("terminate the newest node").removing(1)
    }
    fn nodes_to_remove(&self, ctx: &Context) -> Vec<Node> {
        ctx.cluster().nodes().last().cloned().into_iter().collect()
    }
    async fn run(&self, ctx: &mut Context) -> crate::Result<()> {
        if let Some(last) = self.nodes_to_remove(ctx).pop() {
            ctx.remove_node(&last.id);
        }
        Ok(())
    }
}

#[test]
fn a_scale_in_plan_does_not_list_the_node_it_removes_among_later_targets() {
    let log = Log::default();
    let p = Pipeline::builder("in")
        .step(Probe::new("drain", &log).on(Target::Cluster))
        .step(RemoveLast.on(Target::None))
        .step(Probe::new("cluster-update", &log).on(Target::Cluster))
        .build()
        .unwrap();
    let ctx = ctx();
    let plan = p.plan(&ctx);
    let nodes: Vec<&[String]> = plan.steps.iter().map(|s| s.nodes.as_slice()).collect();
    assert_eq!(
        nodes,
        [&["web-01", "web-02"][..], &[][..], &["web-01"][..]],
        "{plan}"
    );
    assert!(
        plan.to_string()
            .contains("3. cluster-update -> cluster [web-01]\n"),
        "{plan}"
    );
    assert_eq!(ctx.cluster().len(), 2, "the plan touches nothing");
}

/// Cancels the lease's token when it runs: a renewal refused mid-run.
struct LoseLease(CancellationToken, crate::testing::CallLog);

#[async_trait::async_trait]
impl crate::Action for LoseLease {
    fn name(&self) -> &str {
        "lose-lease"
    }
    async fn run(&self, _ctx: &mut Context) -> crate::Result<()> {
        self.1.push("run lose-lease");
        self.0.cancel();
        Ok(())
    }
}

#[tokio::test]
async fn a_run_whose_lease_is_lost_is_abandoned_not_undone() {
    use crate::testing::{CallLog, Probe};
    let calls = CallLog::default();
    let lost = CancellationToken::new();
    // The second step loses the lease (a renewal refused while it ran):
    // nothing is undone, no later step nor finally step runs.
    let journal = Arc::new(crate::MemoryJournal::new());
    let pipeline = Pipeline::builder("scale-out")
        .journal(journal.clone())
        .step(Probe::new("launch", &calls).on(Target::None))
        .step(LoseLease(lost.clone(), calls.clone()).on(Target::None))
        .step(Probe::new("configure", &calls).on(Target::None))
        .finally(Probe::new("notify", &calls).on(Target::None))
        .build()
        .expect("pipeline");
    let mut ctx = Context::new(Cluster::new("web")).with_lease(lost);
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::Cancelled);
    let err = report.error.clone().expect("lease lost");
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(
        err.message.contains("abandoned unfinished"),
        "{}",
        err.message
    );
    assert_eq!(calls.entries(), ["run launch", "run lose-lease"]);
    assert!(report.undone.is_empty());
    // The journal still shows it unfinished: the new holder recovers it.
    let unfinished = journal.unfinished_runs().await.expect("read");
    assert_eq!(unfinished.len(), 1);
}
