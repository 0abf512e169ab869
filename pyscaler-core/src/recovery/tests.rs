use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::*;
use crate::test_support::{Log, Probe};
use crate::{
    Action, ActionExt, ErrorKind, FileJournal, MemoryJournal, MockRunCleanup, RunState, RunStatus,
    Step, StepStatus, Target, TriggerInfo,
};

/// Records what it was asked to clean up; fails the first `failures` times.
#[derive(Default)]
struct Cleaner {
    seen: StdMutex<Vec<RunId>>,
    failures: AtomicUsize,
}

#[async_trait]
impl RunCleanup for Cleaner {
    async fn cleanup(&self, run: &RunRecord) -> Result<Vec<String>> {
        self.seen.lock().unwrap().push(run.run_id.clone());
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::other(ErrorKind::Transient, "EC2 unavailable"));
        }
        Ok(run
            .new_nodes
            .iter()
            .map(|n| format!("terminated {}", n.id))
            .collect())
    }
}

#[tokio::test]
async fn recover_cleans_up_runs_that_never_finished_once() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), "web").unwrap();
    crashed_during_puppet_with(
        &journal,
        TriggerInfo::default(),
        vec![Node::new("i-1", "web-01")],
    )
    .await;
    // The controller dies mid-write: a half line is left. A new controller
    // opens the journal; the cut line is skipped, not fatal.
    let path = journal.path().to_path_buf();
    drop(journal);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"entry\":\"step_fini"))
        .unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());

    let unfinished = journal.unfinished_runs().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].interrupted_step(), Some("puppet"));

    let cleaner = Arc::new(Cleaner {
        failures: AtomicUsize::new(1),
        ..Cleaner::default()
    });
    let log = Log::default();
    let recovery = Recovery::new(journal.clone())
        .pipeline(Arc::new(resumable(&log, journal.clone(), false, 0)))
        .then(cleaner.clone());
    let web = Cluster::new("web");
    let first = recovery.run(&web).await.unwrap().runs;
    assert_eq!(first[0].error.as_deref(), Some("EC2 unavailable"));
    assert_eq!(
        journal.unfinished_runs().await.unwrap().len(),
        1,
        "a failed clean-up is tried again"
    );

    let second = recovery.run(&web).await.unwrap().runs;
    assert_eq!(second[0].cleanup, ["terminated i-1"]);
    assert_eq!(second[0].interrupted_step.as_deref(), Some("puppet"));
    assert!(journal.unfinished_runs().await.unwrap().is_empty());
    assert!(recovery.run(&web).await.unwrap().runs.is_empty());
    assert_eq!(cleaner.seen.lock().unwrap().len(), 2);
    assert_eq!(
        journal.runs().await.unwrap()[0].state,
        RunState::Recovered { succeeded: true }
    );
}

/// Writes what a controller that died during `puppet` leaves in the journal:
/// `deploy` finished with two nodes, `puppet` started.
async fn crashed_during_puppet(journal: &dyn Journal) -> RunId {
    crashed_during_puppet_with(
        journal,
        TriggerInfo::new("manual", "asked by alice"),
        vec![
            Node::new("run-crashed/deploy-0", "deploy-0"),
            Node::new("run-crashed/deploy-1", "deploy-1"),
        ],
    )
    .await
}

/// Writes run `run-crashed`, started by `trigger`, as a controller that died
/// during `puppet` leaves it: `deploy` finished with `nodes`, `puppet` started.
async fn crashed_during_puppet_with(
    journal: &dyn Journal,
    trigger: TriggerInfo,
    nodes: Vec<Node>,
) -> RunId {
    let now = Utc::now();
    let crashed = RunId::new("run-crashed");
    for entry in [
        JournalEntry::RunStarted {
            run_id: crashed.clone(),
            pipeline: "scale-out".into(),
            cluster: "web".into(),
            trigger,
            at: now,
        },
        JournalEntry::StepStarted {
            run_id: crashed.clone(),
            step: "deploy".into(),
            intent: vec![],
            at: now,
        },
        JournalEntry::StepFinished {
            run_id: crashed.clone(),
            step: "deploy".into(),
            status: StepStatus::Succeeded,
            new_nodes: nodes,
            error: None,
            outcomes: Vec::new(),
            removed_nodes: Vec::new(),
            at: now,
        },
        JournalEntry::StepStarted {
            run_id: crashed.clone(),
            step: "puppet".into(),
            intent: vec![],
            at: now,
        },
    ] {
        journal.append(entry).await.unwrap();
    }
    crashed
}

/// deploy (creates 2 nodes) -> puppet (on them) -> notify; `repeatable` marks
/// puppet and notify safe to repeat; puppet fails `puppet_failures` times.
fn resumable(
    log: &Log,
    journal: Arc<dyn Journal>,
    repeatable: bool,
    puppet_failures: u32,
) -> Pipeline {
    Pipeline::builder("scale-out")
        .journal(journal)
        .step(Probe::new("deploy", log).creating(2).on(Target::None))
        .step(
            Probe::new("puppet", log)
                .failing(puppet_failures, ErrorKind::RemoteCommandFailed)
                .on(Target::NewNodes)
                .repeatable(repeatable),
        )
        .step(Probe::new("notify", log).on(Target::None).repeatable(true))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_run_is_resumed_from_its_interrupted_step_with_its_id_and_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());
    let crashed = crashed_during_puppet(journal.as_ref()).await;
    let run = journal.unfinished_runs().await.unwrap().remove(0);
    let log = Log::default();
    let mut ctx = Context::new(Cluster::new("web"));
    let report = resumable(&log, journal.clone(), true, 0)
        .resume(&run, &mut ctx)
        .await
        .unwrap();

    assert!(report.is_success(), "{report}");
    assert_eq!(report.run_id, crashed);
    assert_eq!(report.trigger.reason, "asked by alice");
    assert_eq!(report.resumed_from.as_deref(), Some("puppet"));
    assert!(ctx.is_resumed());
    // deploy is not run again; puppet runs on the nodes the journal names.
    assert_eq!(
        log.entries(),
        ["run puppet on deploy-0,deploy-1", "run notify"]
    );
    assert_eq!(report.nodes_added.len(), 2);
    assert_eq!(report.steps[0].status, StepStatus::Succeeded);
    assert_eq!(report.steps[0].attempts, 0, "not run in this life");

    let runs = journal.runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].succeeded());
    assert_eq!(
        runs[0].steps,
        [
            ("deploy".to_string(), Some(StepStatus::Succeeded)),
            ("puppet".to_string(), Some(StepStatus::Succeeded)),
            ("notify".to_string(), Some(StepStatus::Succeeded)),
        ]
    );
    assert!(journal.unfinished_runs().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_run_with_a_step_left_that_is_not_safe_to_repeat_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());
    crashed_during_puppet(journal.as_ref()).await;
    let run = journal.unfinished_runs().await.unwrap().remove(0);
    let lines = std::fs::read_to_string(journal.path()).unwrap();
    let log = Log::default();
    let err = resumable(&log, journal.clone(), false, 0)
        .resume(&run, &mut Context::new(Cluster::new("web")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotResumable { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .contains("step `puppet` is left to run and is not safe to repeat"),
        "{err}"
    );
    assert!(log.entries().is_empty(), "nothing ran: {:?}", log.entries());
    assert_eq!(
        std::fs::read_to_string(journal.path()).unwrap(),
        lines,
        "nothing written"
    );

    // A run of another pipeline is refused too.
    let other = Pipeline::builder("scale-in")
        .step(Probe::new("deploy", &log).on(Target::None).repeatable(true))
        .build()
        .unwrap();
    let err = other
        .resume(&run, &mut Context::new(Cluster::new("web")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pipeline `scale-out`"), "{err}");
}

#[tokio::test]
async fn a_resumed_run_that_fails_undoes_the_steps_of_its_earlier_life_too() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());
    crashed_during_puppet(journal.as_ref()).await;
    let run = journal.unfinished_runs().await.unwrap().remove(0);
    let log = Log::default();
    let mut ctx = Context::new(Cluster::new("web"));
    let report = resumable(&log, journal.clone(), true, 1)
        .resume(&run, &mut ctx)
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(
        log.entries(),
        [
            "run puppet on deploy-0,deploy-1",
            "undo puppet",
            "undo deploy"
        ]
    );
    assert!(ctx.new_nodes().is_empty(), "{:?}", ctx.new_nodes());
    let runs = journal.runs().await.unwrap();
    assert_eq!(runs[0].state, RunState::Finished(RunStatus::Failed));
    assert_eq!(
        runs[0].steps[0],
        ("deploy".to_string(), Some(StepStatus::Compensated))
    );
}

#[tokio::test]
async fn recovery_with_the_pipeline_undoes_every_started_step_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());
    let crashed = crashed_during_puppet(journal.as_ref()).await;
    let log = Log::default();
    let pipeline = Arc::new(resumable(&log, journal.clone(), true, 0));
    let recovered = Recovery::new(journal.clone())
        .pipeline(pipeline)
        .run(&Cluster::new("web"))
        .await
        .unwrap()
        .runs;
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].run_id, crashed);
    assert_eq!(recovered[0].error, None);
    assert_eq!(
        recovered[0].undone,
        ["undid step puppet", "undid step deploy"]
    );
    assert_eq!(recovered[0].nodes.len(), 2);
    assert_eq!(log.entries(), ["undo puppet", "undo deploy"]);
    let runs = journal.runs().await.unwrap();
    assert_eq!(runs[0].state, RunState::Recovered { succeeded: true });
    assert_eq!(
        runs[0].steps[0],
        ("deploy".to_string(), Some(StepStatus::Compensated))
    );
}

#[tokio::test]
async fn a_cleanup_chain_runs_every_cleanup_and_fails_when_one_did() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());
    crashed_during_puppet(journal.as_ref()).await;
    let log = Log::default();
    let pipeline = Arc::new(resumable(&log, journal.clone(), false, 0));
    let web = Cluster::new("web");
    let mut failing = MockRunCleanup::new();
    failing
        .expect_cleanup()
        .times(1)
        .returning(|_| Err(Error::other(ErrorKind::Transient, "EC2 unavailable")));
    let mut sweeping = MockRunCleanup::new();
    sweeping
        .expect_cleanup()
        .times(1)
        .returning(|run| Ok(vec![format!("swept {}", run.run_id)]));
    let chain = Recovery::new(journal.clone())
        .pipeline(pipeline.clone())
        .then(failing)
        .then(sweeping);
    let first = chain.run(&web).await.unwrap().runs;
    assert_eq!(first[0].error.as_deref(), Some("EC2 unavailable"));
    assert_eq!(journal.unfinished_runs().await.unwrap().len(), 1);

    let chain = Recovery::new(journal.clone()).pipeline(pipeline).then({
        let mut ok = MockRunCleanup::new();
        ok.expect_cleanup().returning(|_| Ok(vec!["undid".into()]));
        ok
    });
    let second = chain.run(&web).await.unwrap().runs;
    assert_eq!(second[0].cleanup, ["undid"]);
    assert!(journal.unfinished_runs().await.unwrap().is_empty());
}

/// A `finally` step that never returns: the mail server hangs and the
/// controller is killed while waiting.
struct Hangs;

#[async_trait]
impl Action for Hangs {
    fn name(&self) -> &str {
        "email"
    }
    async fn run(&self, _ctx: &mut Context) -> Result<()> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_run_killed_in_its_finally_step_is_marked_finished_not_undone() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());
    let log = Log::default();
    let pipeline = Arc::new(
        Pipeline::builder("scale-out")
            .journal(journal.clone())
            .step(Probe::new("deploy", &log).creating(2).on(Target::None))
            .step(Probe::new("puppet", &log).on(Target::NewNodes))
            .finally(Hangs.on(Target::None))
            .build()
            .unwrap(),
    );
    let mut ctx = Context::new(Cluster::new("web"));
    // The controller dies while the finally step waits.
    let killed = tokio::time::timeout(Duration::from_millis(200), pipeline.run(&mut ctx)).await;
    assert!(killed.is_err(), "the run was cut in its finally step");

    let unfinished = journal.unfinished_runs().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].steps_ended, Some(RunStatus::Succeeded));
    assert_eq!(unfinished[0].new_nodes.len(), 2);

    // Recovery does not undo a scale-out whose steps all succeeded.
    let mut cleanup = MockRunCleanup::new();
    cleanup.expect_cleanup().never();
    let recovered = Recovery::new(journal.clone())
        .pipeline(pipeline)
        .then(cleanup)
        .run(&Cluster::new("web"))
        .await
        .unwrap()
        .runs;
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].error, None);
    assert_eq!(recovered[0].action, RecoveryAction::MarkedFinished);
    assert!(recovered[0].nodes.is_empty(), "its nodes stay");
    assert!(
        recovered[0].undone[0].starts_with("nothing: its steps had ended (succeeded)"),
        "{:?}",
        recovered[0].undone
    );
    let runs = journal.runs().await.unwrap();
    assert_eq!(runs[0].state, RunState::Finished(RunStatus::Succeeded));
    assert!(
        runs[0].succeeded(),
        "the orphan sweep leaves its nodes alone"
    );
    assert_eq!(runs[0].new_nodes.len(), 2);
    assert!(!log.entries().iter().any(|e| e.starts_with("undo")));
}

#[tokio::test]
async fn a_run_killed_in_its_finally_step_can_be_resumed_to_run_only_that() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());
    let log = Log::default();
    let build = |finally: Step| {
        Pipeline::builder("scale-out")
            .journal(journal.clone())
            .step(Probe::new("deploy", &log).creating(2).on(Target::None))
            .finally(finally)
            .build()
            .unwrap()
    };
    let first = build(Hangs.on(Target::None));
    let killed = tokio::time::timeout(
        Duration::from_millis(200),
        first.run(&mut Context::new(Cluster::new("web"))),
    )
    .await;
    assert!(killed.is_err());
    let run = journal.unfinished_runs().await.unwrap().remove(0);

    let again = build(Probe::new("email", &log).on(Target::None));
    let mut ctx = Context::new(Cluster::new("web"));
    let report = again.resume(&run, &mut ctx).await.unwrap();
    assert!(report.is_success(), "{report}");
    assert_eq!(report.resumed_from.as_deref(), Some("finally"));
    assert_eq!(report.nodes_added.len(), 2);
    // deploy ran once, in the first life; only the email now.
    assert_eq!(log.entries(), ["run deploy", "run email"]);
    assert!(journal.unfinished_runs().await.unwrap().is_empty());
}

/// A controller died during `puppet` of a `scale-out` run; the cluster was
/// then discovered with the dead run's two nodes in it.
async fn after_a_crash() -> (Arc<MemoryJournal>, RunId, Cluster) {
    let journal = Arc::new(MemoryJournal::new());
    let crashed = crashed_during_puppet(journal.as_ref()).await;
    let cluster = Cluster::new("web").with_nodes([
        Node::new("i-1", "web-01"),
        Node::new("run-crashed/deploy-0", "deploy-0"),
        Node::new("run-crashed/deploy-1", "deploy-1"),
    ]);
    (journal, crashed, cluster)
}

#[tokio::test]
async fn a_run_over_an_unfinished_run_of_the_cluster_is_refused_before_any_step() {
    let (journal, crashed, cluster) = after_a_crash().await;
    let written = journal.entries().len();
    let log = Log::default();
    let pipeline = resumable(&log, journal.clone(), true, 0);
    let report = pipeline.run(&mut Context::new(cluster)).await;

    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.expect("the refusal");
    assert_eq!(error.kind, ErrorKind::Conflict);
    assert_eq!(
        error.message,
        format!(
            "cluster `web` has an unfinished run {crashed} of pipeline `scale-out`: recover it \
             first (Recovery::new(journal).pipeline(..).run(&cluster), or \
             PipelineBuilder::recover_first)"
        )
    );
    assert!(log.entries().is_empty(), "a step ran: {:?}", log.entries());
    assert!(report.steps.iter().all(|s| s.status == StepStatus::Skipped));
    assert_eq!(journal.entries().len(), written, "nothing journaled");

    // A run of another cluster in the same journal does not stop this one.
    let report = pipeline.run(&mut Context::new(Cluster::new("api"))).await;
    assert!(report.is_success(), "{report}");
}

#[tokio::test]
async fn a_pipeline_built_to_recover_first_undoes_the_dead_run_then_runs() {
    let (journal, crashed, cluster) = after_a_crash().await;
    let log = Log::default();
    let pipeline = Pipeline::builder("scale-out")
        .journal(journal.clone())
        .recover_first(Recovery::new(journal.clone()))
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .step(Probe::new("puppet", &log).on(Target::NewNodes))
        .build()
        .unwrap();
    let mut ctx = Context::new(cluster);
    let report = pipeline.run(&mut ctx).await;

    assert!(report.is_success(), "{report}");
    // The dead run is undone with the pipeline's own steps, then this run goes.
    assert_eq!(
        log.entries(),
        [
            "undo puppet",
            "undo deploy",
            "run deploy",
            "run puppet on deploy-0"
        ]
    );
    // Its nodes are not members of the cluster this run scaled.
    let names: Vec<&str> = ctx
        .cluster()
        .nodes()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, ["web-01", "deploy-0"]);
    assert!(!ctx
        .cluster()
        .nodes()
        .iter()
        .any(|n| n.id.starts_with("run-crashed")));
    let runs = journal.runs().await.unwrap();
    assert_eq!(runs[0].run_id, crashed);
    assert_eq!(runs[0].state, RunState::Recovered { succeeded: true });
    assert_eq!(runs[1].state, RunState::Finished(RunStatus::Succeeded));
}

#[tokio::test]
async fn recovery_dispatches_each_run_to_its_own_pipeline() {
    let (journal, crashed, cluster) = after_a_crash().await;
    // A scale-in run died too, in its only step.
    let now = Utc::now();
    let shrink = RunId::new("run-shrink");
    for entry in [
        JournalEntry::RunStarted {
            run_id: shrink.clone(),
            pipeline: "scale-in".into(),
            cluster: "web".into(),
            trigger: TriggerInfo::default(),
            at: now,
        },
        JournalEntry::StepStarted {
            run_id: shrink.clone(),
            step: "remove".into(),
            intent: vec![],
            at: now,
        },
    ] {
        journal.append(entry).await.unwrap();
    }
    let (out_log, in_log) = (Log::default(), Log::default());
    let scale_in = Pipeline::builder("scale-in")
        .journal(journal.clone())
        .step(Probe::new("remove", &in_log).on(Target::None))
        .build()
        .unwrap();
    let report = Recovery::new(journal.clone())
        .pipeline(Arc::new(resumable(&out_log, journal.clone(), true, 0)))
        .pipeline(Arc::new(scale_in))
        .run(&cluster)
        .await
        .unwrap();
    assert!(report.is_success(), "{report}");
    assert_eq!(out_log.entries(), ["undo puppet", "undo deploy"]);
    assert_eq!(in_log.entries(), ["undo remove"]);
    assert_eq!(
        report.to_string(),
        format!(
            "Recovered run {crashed} (interrupted in puppet): undid step puppet; undid step deploy\n\
             Recovered run {shrink} (interrupted in remove): undid step remove\n"
        )
    );
    let names: Vec<&str> = report
        .cluster
        .nodes()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, ["web-01"], "the undone run's nodes are gone");
    assert!(journal.unfinished_runs().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_run_of_a_pipeline_the_recovery_was_not_given_is_a_typed_error() {
    let (journal, crashed, cluster) = after_a_crash().await;
    let log = Log::default();
    let scale_in = Pipeline::builder("scale-in")
        .step(Probe::new("remove", &log).on(Target::None))
        .build()
        .unwrap();
    let err = Recovery::new(journal.clone())
        .pipeline(Arc::new(scale_in))
        .run(&cluster)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownPipeline { run_id, pipeline }
            if *run_id == crashed.to_string() && pipeline == "scale-out"),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("Recovery::pipeline"), "{err}");
    assert!(log.entries().is_empty());
    assert_eq!(journal.unfinished_runs().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_resume_is_undone_and_the_report_says_why() {
    let (journal, crashed, cluster) = after_a_crash().await;
    let log = Log::default();
    let report = Recovery::new(journal.clone())
        .pipeline(Arc::new(resumable(&log, journal.clone(), false, 0)))
        .resume(true)
        .run(&cluster)
        .await
        .unwrap();
    let run = &report.runs[0];
    assert_eq!(run.action, RecoveryAction::Undone);
    assert!(
        run.not_resumed.as_deref().is_some_and(
            |why| why.contains("step `puppet` is left to run and is not safe to repeat")
        ),
        "{run:?}"
    );
    assert_eq!(log.entries(), ["undo puppet", "undo deploy"]);
    assert!(report
        .to_string()
        .starts_with(&format!("Not resuming run {crashed}: ")));

    // With every step left repeatable, the same run is finished instead.
    let (journal, crashed, cluster) = after_a_crash().await;
    let log = Log::default();
    let report = Recovery::new(journal.clone())
        .pipeline(Arc::new(resumable(&log, journal.clone(), true, 0)))
        .resume(true)
        .run(&cluster)
        .await
        .unwrap();
    assert!(report.is_success(), "{report}");
    assert_eq!(report.runs[0].action, RecoveryAction::Resumed);
    assert_eq!(
        report.to_string(),
        format!("Resumed run {crashed} from puppet: succeeded\n")
    );
    assert_eq!(
        log.entries(),
        ["run puppet on deploy-0,deploy-1", "run notify"]
    );
    assert_eq!(report.resumed().count(), 1);
}
