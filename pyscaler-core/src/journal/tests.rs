use std::sync::Arc;

use super::*;
use crate::test_support::{Log, Probe};
use crate::{ActionExt, Cluster, Context, Error, ErrorKind, Pipeline, Target};

fn pipeline(log: &Log, journal: Arc<dyn Journal>, fail_puppet: bool) -> Pipeline {
    Pipeline::builder("scale-out")
        .journal(journal)
        .step(Probe::new("deploy", log).creating(2).on(Target::None))
        .step(
            Probe::new("puppet", log)
                .failing(u32::from(fail_puppet), ErrorKind::RemoteCommandFailed)
                .on(Target::NewNodes),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_run_is_written_down_step_by_step_with_its_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());
    let log = Log::default();
    let report = pipeline(&log, journal.clone(), false)
        .run(&mut Context::new(Cluster::new("web")))
        .await;
    assert!(report.is_success());

    let runs = journal.runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.run_id, report.run_id);
    assert_eq!(run.state, RunState::Finished(RunStatus::Succeeded));
    assert!(run.succeeded());
    assert_eq!(run.new_nodes.len(), 2);
    assert_eq!(
        run.steps,
        [
            ("deploy".to_string(), Some(StepStatus::Succeeded)),
            ("puppet".to_string(), Some(StepStatus::Succeeded))
        ]
    );
    assert!(journal.unfinished_runs().await.unwrap().is_empty());

    // Each entry is one JSON line: the run, two steps' intent and end, the
    // end of the steps, the end of the run. The intent names what the step
    // was about to do.
    let text = std::fs::read_to_string(journal.path()).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["entry"].to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "\"run_started\"",
            "\"step_started\"",
            "\"step_finished\"",
            "\"step_started\"",
            "\"step_finished\"",
            "\"steps_ended\"",
            "\"run_finished\""
        ]
    );
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .contains(r#""intent":["probe deploy"]"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_run_is_journaled_as_failed_and_compensated() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), "web").unwrap());
    let log = Log::default();
    let report = pipeline(&log, journal.clone(), true)
        .run(&mut Context::new(Cluster::new("web")))
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let run = &journal.runs().await.unwrap()[0];
    assert_eq!(run.state, RunState::Finished(RunStatus::Failed));
    assert!(
        run.new_nodes.is_empty(),
        "the undo took the nodes back: {:?}",
        run.new_nodes
    );
    assert_eq!(
        run.steps[0],
        ("deploy".to_string(), Some(StepStatus::Compensated))
    );
}

#[test]
fn a_second_controller_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = FileJournal::open(dir.path(), "web").unwrap();
    let err = FileJournal::open(dir.path(), "web").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.to_string()
            .contains("another controller is running cluster `web`"),
        "{err}"
    );
    // Another cluster has its own journal and lock.
    assert!(FileJournal::open(dir.path(), "api").is_ok());
    drop(_first);
    assert!(FileJournal::open(dir.path(), "web").is_ok());
}

#[test]
fn a_cluster_name_that_is_a_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        FileJournal::open(dir.path(), "../etc").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

/// A journal that refuses every write.
#[derive(Debug)]
struct FullDisk;

#[async_trait]
impl Journal for FullDisk {
    async fn append(&self, _entry: JournalEntry) -> Result<()> {
        Err(Error::other(
            ErrorKind::Unexpected,
            "No space left on device",
        ))
    }
    async fn runs(&self) -> Result<Vec<RunRecord>> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn no_step_starts_when_its_intent_cannot_be_written() {
    let log = Log::default();
    let report = pipeline(&log, Arc::new(FullDisk), false)
        .run(&mut Context::new(Cluster::new("web")))
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(
        log.entries().iter().all(|e| !e.starts_with("run")),
        "{:?}",
        log.entries()
    );
    assert!(report
        .error
        .unwrap()
        .message
        .contains("No space left on device"));
}

#[tokio::test]
async fn a_line_torn_inside_a_multibyte_character_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), "web").unwrap();
    let at = chrono::DateTime::from_timestamp(1_760_000_000, 0).unwrap();
    let started = JournalEntry::RunStarted {
        run_id: RunId::new("run-1"),
        pipeline: "scale-out".into(),
        cluster: "web".into(),
        trigger: TriggerInfo::default(),
        at,
    };
    journal.append(started.clone()).await.unwrap();
    journal
        .append(JournalEntry::StepStarted {
            run_id: RunId::new("run-1"),
            step: "déploiement".into(),
            intent: Vec::new(),
            at,
        })
        .await
        .unwrap();
    drop(journal);
    // The controller died in the middle of `é` (two bytes: C3 A9).
    let mut bytes = std::fs::read(FileJournal::path_of(dir.path(), "web")).unwrap();
    let e_acute = bytes.windows(2).position(|w| w == [0xC3, 0xA9]).unwrap();
    bytes.truncate(e_acute + 1);
    std::fs::write(FileJournal::path_of(dir.path(), "web"), &bytes).unwrap();

    assert_eq!(FileJournal::read(dir.path(), "web").unwrap(), [started]);
    let journal = FileJournal::open(dir.path(), "web").unwrap();
    let runs = journal.runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, RunState::Unfinished);
    assert!(runs[0].steps.is_empty(), "{:?}", runs[0].steps);
}
