//! A scripted sequence on a journal (a scale-out, decisions skipped for
//! the cooldown, a failed run that was undone), told back as a history.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::test_support::{Log, Probe};
use crate::{
    ActionExt, CancellationToken, Cluster, Direction, ErrorKind, FailurePolicy, Journal,
    ManualTrigger, MemoryJournal, Pipeline, RunStatus, Scaler, Skip, Target,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs the sequence and returns the journal's entries.
async fn scripted() -> Vec<JournalEntry> {
    let log = Log::default();
    let journal = Arc::new(MemoryJournal::new());
    let good = Pipeline::builder("scale-out")
        .journal(journal.clone())
        .step(Probe::new("deploy", &log).creating(1).on(Target::None))
        .build()
        .expect("a valid pipeline");
    let broken = Pipeline::builder("broken-scale-out")
        .journal(journal.clone())
        .step(Probe::new("launch", &log).creating(1).on(Target::None))
        .step(
            Probe::new("configure", &log)
                .failing(u32::MAX, ErrorKind::RemoteCommandFailed)
                .failing_with("puppet exited 6")
                .on(Target::NewNodes)
                .on_failure(FailurePolicy::Compensate),
        )
        .build()
        .expect("a valid pipeline");
    let (by_hand, second) = (ManualTrigger::new("by-hand"), ManualTrigger::new("broken"));
    let mut scaler = Scaler::builder(Cluster::new("web"))
        .cooldown(Direction::Out, secs(60))
        .bind(by_hand.clone(), Direction::Out, Arc::new(good))
        .bind(second.clone(), Direction::Out, Arc::new(broken))
        .journal_decisions(journal.clone())
        .build()
        .expect("a valid scaler");
    let stop = CancellationToken::new();
    let script = async {
        by_hand.fire("first");
        for _ in 0..3 {
            tokio::time::sleep(secs(10)).await;
            by_hand.fire("again");
        }
        tokio::time::sleep(secs(70)).await;
        second.fire("second");
        tokio::time::sleep(secs(10)).await;
        stop.cancel();
    };
    tokio::join!(scaler.run(stop.clone()), script);
    Journal::entries(journal.as_ref())
        .await
        .expect("the entries")
}

#[tokio::test(start_paused = true)]
async fn the_history_holds_each_run_with_its_decision_and_the_skips_as_one_entry() {
    let entries = scripted().await;
    // Three cooldown skips in a row: one decision entry and its count.
    let decided = entries
        .iter()
        .filter(|e| matches!(e, JournalEntry::Decided { .. }))
        .count();
    assert_eq!(decided, 3, "two runs' decisions and one skip: {entries:#?}");
    assert!(entries.iter().any(|e| matches!(
        e,
        JournalEntry::DecisionRepeated { trigger, count: 3, .. } if trigger == "by-hand"
    )));

    let history = History::from_entries(entries.clone(), "web", None);
    assert_eq!(history.runs.len(), 2);
    let (first, failed) = (&history.runs[0], &history.runs[1]);
    assert_eq!(first.state, RunState::Finished(RunStatus::Succeeded));
    let decision = first.decision.as_ref().expect("the run's decision");
    assert_eq!(decision.trigger, "by-hand");
    assert_eq!(decision.run_id.as_ref(), Some(&first.run_id));
    assert_eq!(first.nodes_kept.len(), 1);

    assert_eq!(failed.state, RunState::Finished(RunStatus::Failed));
    let steps: Vec<(&str, Option<StepStatus>)> = failed
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    assert_eq!(
        steps,
        [
            ("launch", Some(StepStatus::Compensated)),
            ("configure", Some(StepStatus::Failed))
        ]
    );
    assert!(failed.steps.iter().all(|s| s.duration.is_some()));
    let undone: Vec<(&str, bool)> = failed
        .undone
        .iter()
        .map(|u| (u.step.as_str(), u.succeeded))
        .collect();
    assert_eq!(undone, [("configure", true), ("launch", true)]);
    assert_eq!(failed.nodes_added.len(), 1);
    assert!(failed.nodes_kept.is_empty(), "the undo took the node away");

    let [skip] = history.skipped.as_slice() else {
        panic!("one skipped decision: {:#?}", history.skipped);
    };
    assert_eq!(skip.count, 3);
    assert_eq!(skip.decision.verdict, Verdict::Skipped(Skip::Cooldown));
    assert!(skip.last_at >= skip.at);

    // Another cluster's history is empty; `since` leaves out what is older.
    let other = History::from_entries(entries.clone(), "db", None);
    assert!(other.runs.is_empty() && other.skipped.is_empty());
    let later = History::from_entries(entries, "web", Some(failed.started_at));
    assert_eq!(later.runs.len(), 1);
    assert_eq!(later.runs[0].run_id, failed.run_id);
}

/// The cells of a table line (columns are two spaces or more apart).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_table_has_a_line_per_run_and_per_streak_of_skips() {
    let history = History::from_entries(scripted().await, "web", None);
    let (first, failed, skip) = (&history.runs[0], &history.runs[1], &history.skipped[0]);
    let at = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let table = history.table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "History of cluster web: 2 run(s), 1 skipped decision(s)"
    );
    assert_eq!(
        cells(lines[1]),
        [
            "WHEN",
            "RUN OR DECISION",
            "PIPELINE",
            "OUTCOME",
            "TOOK",
            "NODES",
            "WHY"
        ]
    );
    assert_eq!(
        cells(lines[2]),
        [
            at(&first.started_at),
            first.run_id.to_string(),
            "scale-out".into(),
            "succeeded".into(),
            "0s".into(),
            "+1 -0".into(),
            "by-hand: first".into()
        ]
    );
    assert_eq!(
        cells(lines[3]),
        [
            at(&skip.at),
            "decision of by-hand".into(),
            "scale-out".into(),
            "skipped: cooldown x3".into(),
            "-".into(),
            "-".into(),
            format!(
                "scale-out is cooling down (50s of 1m left); last at {}",
                at(&skip.last_at)
            )
        ]
    );
    assert_eq!(
        cells(lines[4]),
        [
            at(&failed.started_at),
            failed.run_id.to_string(),
            "broken-scale-out".into(),
            "failed".into(),
            "0s".into(),
            "+0 -0".into(),
            "broken: second".into()
        ]
    );
    assert_eq!(lines.len(), 5, "{table}");
}

#[tokio::test(start_paused = true)]
async fn explain_tells_a_failed_run_s_story_line_by_line() {
    let history = History::from_entries(scripted().await, "web", None);
    let failed = &history.runs[1];
    let at = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let node = &failed.nodes_added[0].name;
    let story = failed.explain();
    let expected = [
        format!("Run {} of broken-scale-out, started {} UTC.", failed.run_id, at(&failed.started_at)),
        "Why: trigger broken fired: second.".to_owned(),
        "The decision: broken had no value to show; with 1 node(s) in the cluster, the scaler chose a scale-out (its steps say how many nodes).".to_owned(),
        "Steps:".to_owned(),
        "  1. launch (probe launch): compensated in 0s.".to_owned(),
        "  2. configure (probe configure): failed in 0s.".to_owned(),
        "       error: puppet exited 6".to_owned(),
        "Undone, because configure failed (puppet exited 6): the last step first.".to_owned(),
        "  configure: undone.".to_owned(),
        "  launch: undone.".to_owned(),
        format!("Added {node}, then took it away again."),
        format!(
            "Ended failed at {} UTC, after 0s.",
            at(&failed.ended_at.expect("it ended"))
        ),
    ];
    let lines: Vec<&str> = story.lines().collect();
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(
            lines.get(i).copied(),
            Some(want.as_str()),
            "line {}:\n{story}",
            i + 1
        );
    }
    assert_eq!(lines.len(), expected.len(), "{story}");

    let first = &history.runs[0];
    let story = first.explain();
    assert!(story.contains("Nothing was undone.\n"), "{story}");
    assert!(
        story.contains(&format!(
            "Added {} and kept it.\n",
            first.nodes_kept[0].name
        )),
        "{story}"
    );
}
