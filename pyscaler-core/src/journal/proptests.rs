//! Any prefix of a journal, cut at any byte (a controller that died
//! mid-write), replays to what the whole lines before the cut say: no
//! panic, no error, and the runs and steps it reports are a prefix of what
//! was written.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::*;
use crate::{Node, RunId, RunStatus, StepStatus, TriggerInfo};

/// Names with multi-byte characters, so cuts land inside them.
const STEPS: [&str; 4] = ["deploy", "déploiement", "設定", "mail-✉️"];
const STATUSES: [StepStatus; 3] = [
    StepStatus::Succeeded,
    StepStatus::Failed,
    StepStatus::Skipped,
];
const RUN_STATUSES: [RunStatus; 3] = [
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::CompletedWithFailures,
];

/// One event of a random journal: (kind, run, step or status, flag).
type Op = (u8, u8, u8, bool);

fn at(i: usize) -> DateTime<Utc> {
    DateTime::from_timestamp(1_760_000_000 + i as i64, 0).unwrap_or_default()
}

fn run_id(r: u8) -> RunId {
    RunId::new(format!("run-{r}-ü"))
}

/// The entry an op stands for (an op about a run that never started is
/// written too: replay must ignore it).
fn entry(i: usize, (kind, run, pick, flag): Op) -> JournalEntry {
    let run_id = run_id(run % 3);
    let step = STEPS[usize::from(pick) % STEPS.len()].to_owned();
    let nodes = vec![Node::new(format!("i-{i}"), format!("wéb-{i}"))];
    match kind % 7 {
        0 => JournalEntry::RunStarted {
            run_id,
            pipeline: "scale-out".into(),
            cluster: "wéb".into(),
            trigger: TriggerInfo::new("load-high", "avg 3.2 > 2 for 1m — ok"),
            at: at(i),
        },
        1 => JournalEntry::StepStarted {
            run_id,
            step,
            intent: vec![format!("launch {pick} nœuds")],
            at: at(i),
        },
        2 => JournalEntry::StepFinished {
            run_id,
            step,
            status: STATUSES[usize::from(pick) % STATUSES.len()],
            new_nodes: nodes,
            error: flag.then(|| "connexion refusée".to_owned()),
            outcomes: Vec::new(),
            removed_nodes: Vec::new(),
            at: at(i),
        },
        3 => JournalEntry::StepUndone {
            run_id,
            step,
            succeeded: flag,
            error: None,
            at: at(i),
        },
        4 => JournalEntry::StepsEnded {
            run_id,
            status: RUN_STATUSES[usize::from(pick) % RUN_STATUSES.len()],
            new_nodes: nodes,
            at: at(i),
        },
        5 => JournalEntry::RunFinished {
            run_id,
            status: RUN_STATUSES[usize::from(pick) % RUN_STATUSES.len()],
            new_nodes: nodes,
            at: at(i),
        },
        _ => JournalEntry::DecisionRepeated {
            cluster: "wéb".into(),
            trigger: "load-high".into(),
            count: u32::from(pick),
            last_at: at(i),
        },
    }
}

/// The journal the ops stand for: a run starts once (a second start of
/// the same run is a decision instead).
fn journal(ops: &[Op]) -> Vec<JournalEntry> {
    let mut started = [false; 3];
    ops.iter()
        .enumerate()
        .map(|(i, &(kind, run, pick, flag))| {
            let kind = match kind % 7 {
                0 if std::mem::replace(&mut started[usize::from(run % 3)], true) => 6,
                k => k,
            };
            entry(i, (kind, run, pick, flag))
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Writes `entries` through a [`FileJournal`] and returns the file's bytes.
fn written(entries: &[JournalEntry]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a folder");
    let journal = FileJournal::open(dir.path(), "web").expect("open");
    runtime().block_on(async {
        for e in entries {
            journal.append(e.clone()).await.expect("append");
        }
    });
    std::fs::read(journal.path()).expect("read back")
}

/// How many entries the first `cut` bytes hold whole: the lines ended
/// before the cut, and the line the cut ends just before its newline.
fn whole(bytes: &[u8], cut: usize) -> usize {
    let ended = bytes[..cut].iter().filter(|b| **b == b'\n').count();
    let torn_at_newline = cut > 0 && bytes[cut - 1] != b'\n' && bytes.get(cut) == Some(&b'\n');
    ended + usize::from(torn_at_newline)
}

fn step_names(run: &RunRecord) -> Vec<&str> {
    run.steps.iter().map(|(n, _)| n.as_str()).collect()
}

/// What replaying a prefix reports is a prefix of what the whole journal
/// reports: runs in the order they started, each run's steps in order.
fn assert_prefix_of(part: &[RunRecord], all: &[RunRecord]) {
    assert!(
        part.len() <= all.len(),
        "{} runs of {}",
        part.len(),
        all.len()
    );
    for (p, a) in part.iter().zip(all) {
        assert_eq!(p.run_id, a.run_id);
        let (ps, as_) = (step_names(p), step_names(a));
        assert!(as_.starts_with(&ps), "{ps:?} is not a prefix of {as_:?}");
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec((0u8..7, 0u8..4, any::<u8>(), any::<bool>()), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_journal_cut_at_any_byte_replays_its_whole_lines(
        ops in ops(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 16),
    ) {
        let entries = journal(&ops);
        let bytes = written(&entries);
        let all = replay(entries.clone());
        prop_assert_eq!(
            FileJournal::parse_entries(&bytes[..], "whole").expect("read"),
            entries.clone()
        );
        // Random cuts, and every cut inside a multi-byte character.
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.extend((0..bytes.len()).filter(|i| bytes[*i] & 0xC0 == 0x80).take(64));
        for cut in at {
            let read = FileJournal::parse_entries(&bytes[..cut], "cut").expect("a torn line is not fatal");
            let n = whole(&bytes, cut);
            prop_assert_eq!(&read, &entries[..n].to_vec(), "cut at byte {}", cut);
            let runs = replay(read);
            prop_assert_eq!(&runs, &replay(entries[..n].to_vec()));
            assert_prefix_of(&runs, &all);
        }
    }

    #[test]
    fn a_torn_journal_opens_replays_and_takes_new_entries(
        ops in ops(),
        cut in any::<prop::sample::Index>(),
    ) {
        let entries = journal(&ops);
        let bytes = written(&entries);
        let cut = cut.index(bytes.len() + 1);
        let n = whole(&bytes, cut);
        let dir = tempfile::tempdir().expect("a folder");
        std::fs::write(FileJournal::path_of(dir.path(), "web"), &bytes[..cut]).expect("write");
        let journal = Arc::new(FileJournal::open(dir.path(), "web").expect("a torn journal opens"));
        let next = JournalEntry::DecisionRepeated {
            cluster: "wéb".into(),
            trigger: "après".into(),
            count: 2,
            last_at: at(99),
        };
        let (runs, read) = runtime().block_on(async {
            let runs = journal.runs().await.expect("runs");
            journal.append(next.clone()).await.expect("append after the torn line");
            (runs, journal.entries().await.expect("entries"))
        });
        prop_assert_eq!(runs, replay(entries[..n].to_vec()));
        let mut expected = entries[..n].to_vec();
        expected.push(next);
        prop_assert_eq!(read, expected);
    }
}
