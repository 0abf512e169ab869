//! `tomcat_cluster history` and `explain` on the journal a scripted
//! sequence left (a scale-out, three decisions skipped for the cooldown, a
//! failed run that was undone), checked line by line; `--json` parses.
//!
//! The sequence runs through the engine in virtual time against an
//! in-memory journal, whose entries are then written to the cluster's
//! journal file, entry by entry, as a controller would have.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use pyscaler_core::testing::{CallLog, Probe};
use pyscaler_core::{
    ActionExt, CancellationToken, Cluster, Direction, ErrorKind, FailurePolicy, FileJournal,
    History, Journal, ManualTrigger, MemoryJournal, Pipeline, Scaler, Target,
};

const CLUSTER: &str = "web";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The sequence, in virtual time; its journal's entries.
fn scripted() -> Vec<pyscaler_core::JournalEntry> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let log = CallLog::default();
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
        let mut scaler = Scaler::builder(Cluster::new(CLUSTER))
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
        journal.entries()
    })
}

/// The example's config with the journal in `dir` and no key file to check.
fn config(dir: &Path) -> std::path::PathBuf {
    let shipped = include_str!("../tomcat/aws.toml");
    let text = shipped
        .replace(
            "journal_dir = \"/var/lib/pyscaler/journal\"",
            &format!(
                "journal_dir = {:?}",
                dir.join("journal").display().to_string()
            ),
        )
        .replace(
            "auth = { method = \"key-file\", path = \"/home/ops/.ssh/id_ed25519\" }",
            "auth = { method = \"agent\" }",
        );
    assert!(text.contains("method = \"agent\"") && !text.contains("/var/lib/pyscaler"));
    let path = dir.join("tomcat.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

fn tomcat_cluster(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tomcat_cluster"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run tomcat_cluster");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The cells of a table line (columns are two spaces or more apart).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn at(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[test]
fn history_and_explain_tell_what_the_journal_holds() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = config(dir.path());
    let entries = scripted();
    let journal = FileJournal::open(dir.path().join("journal"), CLUSTER).expect("open");
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            for entry in entries {
                journal.append(entry).await.expect("append");
            }
        });
    drop(journal);
    // What the lines must say, from the journal file itself.
    let entries = FileJournal::read(dir.path().join("journal"), CLUSTER).expect("read");
    let known = History::from_entries(entries, CLUSTER, None);
    let (first, failed, skip) = (&known.runs[0], &known.runs[1], &known.skipped[0]);

    // The table: a line per run and per streak of skips, in order.
    let out = tomcat_cluster(&config, &["history", "--since", "1h"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).to_string();
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
    let run =
        |r: &pyscaler_core::RunStory, pipeline: &str, outcome: &str, nodes: &str, why: &str| {
            vec![
                at(&r.started_at),
                r.run_id.to_string(),
                pipeline.to_owned(),
                outcome.to_owned(),
                "0s".to_owned(),
                nodes.to_owned(),
                why.to_owned(),
            ]
        };
    assert_eq!(
        cells(lines[2]),
        run(first, "scale-out", "succeeded", "+1 -0", "by-hand: first")
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
        run(
            failed,
            "broken-scale-out",
            "failed",
            "+0 -0",
            "broken: second"
        )
    );
    assert_eq!(lines.len(), 5, "{table}");

    // --json parses, and holds the same.
    let out = tomcat_cluster(&config, &["history", "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["cluster"], "web");
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["runs"][1]["run_id"], failed.run_id.as_str());
    assert_eq!(json["runs"][1]["undone"][0]["step"], "configure");
    assert_eq!(json["runs"][0]["decision"]["trigger"], "by-hand");
    assert_eq!(json["skipped"][0]["count"], 3);
    assert_eq!(
        json["skipped"][0]["decision"]["verdict"]["skipped"],
        "cooldown"
    );

    // The failed run's story, line by line.
    let out = tomcat_cluster(&config, &["explain", failed.run_id.as_str()]);
    assert!(out.status.success());
    let story = String::from_utf8_lossy(&out.stdout).to_string();
    let expected = [
        format!(
            "Run {} of broken-scale-out, started {} UTC.",
            failed.run_id,
            at(&failed.started_at)
        ),
        "Why: trigger broken fired: second.".to_owned(),
        "The decision: broken had no value to show; with 1 node(s) in the cluster, the scaler chose a scale-out (its steps say how many nodes).".to_owned(),
        "Steps:".to_owned(),
        "  1. launch (probe launch): compensated in 0s.".to_owned(),
        "  2. configure (probe configure): failed in 0s.".to_owned(),
        "       error: puppet exited 6".to_owned(),
        "Undone, because configure failed (puppet exited 6): the last step first.".to_owned(),
        "  configure: undone.".to_owned(),
        "  launch: undone.".to_owned(),
        format!("Added {}, then took it away again.", failed.nodes_added[0].name),
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

    // A run the journal does not know is an error that says where to look.
    let out = tomcat_cluster(&config, &["explain", "run-nope"]);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("has no run run-nope"), "{said}");

    // --since leaves out what is older: nothing happened in the last 0 s.
    let out = tomcat_cluster(&config, &["history", "--since", "0s"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.starts_with("History of cluster web: 0 run(s), 0 skipped decision(s)\n"),
        "{table}"
    );
}
