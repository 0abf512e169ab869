//! The scaler's decisions, written to the journal so a history can tell
//! why a run happened or did not: each decision as it is taken, with its
//! values; a decision a trigger takes again and again (a cooldown skip, no
//! data, every interval) as one entry and, when the streak ends, its count.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::journal::{Journal, JournalEntry};
use crate::{Decision, Event, Verdict};

/// A decision taken again since it was written.
#[derive(Debug)]
struct Streak {
    verdict: Verdict,
    count: u32,
    last_at: DateTime<Utc>,
}

/// Writes the decisions of one scaler's events to its journal.
#[derive(Debug)]
pub(super) struct DecisionLog {
    journal: Arc<dyn Journal>,
    cluster: String,
    /// The running streak of each trigger.
    streaks: HashMap<String, Streak>,
}

impl DecisionLog {
    pub(super) fn new(journal: Arc<dyn Journal>, cluster: String) -> Self {
        Self {
            journal,
            cluster,
            streaks: HashMap::new(),
        }
    }

    /// Writes the decisions of `events` until `stop`, then those still
    /// queued, and the counts of the streaks still running.
    pub(super) async fn run(
        mut self,
        mut events: broadcast::Receiver<Event>,
        stop: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                biased;
                event = events.recv() => event,
                _ = stop.cancelled() => break,
            };
            match event {
                Ok(Event::Decided(d)) => self.note(*d).await,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "The decision log fell behind; some decisions are not journaled."
                    );
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        while let Ok(event) = events.try_recv() {
            if let Event::Decided(d) = event {
                self.note(*d).await;
            }
        }
        let triggers: Vec<String> = self.streaks.keys().cloned().collect();
        for trigger in triggers {
            self.end_streak(&trigger).await;
        }
    }

    async fn note(&mut self, decision: Decision) {
        let now = Utc::now();
        if decision.verdict != Verdict::Scale {
            if let Some(streak) = self.streaks.get_mut(&decision.trigger) {
                if streak.verdict == decision.verdict {
                    streak.count += 1;
                    streak.last_at = now;
                    return;
                }
            }
        }
        self.end_streak(&decision.trigger).await;
        if decision.verdict != Verdict::Scale {
            self.streaks.insert(
                decision.trigger.clone(),
                Streak {
                    verdict: decision.verdict.clone(),
                    count: 1,
                    last_at: now,
                },
            );
        }
        self.write(JournalEntry::Decided {
            cluster: self.cluster.clone(),
            decision,
            at: now,
        })
        .await;
    }

    /// Writes how often `trigger`'s streak repeated, when it did.
    async fn end_streak(&mut self, trigger: &str) {
        let Some(streak) = self.streaks.remove(trigger) else {
            return;
        };
        if streak.count > 1 {
            self.write(JournalEntry::DecisionRepeated {
                cluster: self.cluster.clone(),
                trigger: trigger.to_owned(),
                count: streak.count,
                last_at: streak.last_at,
            })
            .await;
        }
    }

    async fn write(&self, entry: JournalEntry) {
        if let Err(e) = crate::journal::write(self.journal.as_ref(), entry).await {
            warn!(error = %e, "Could not journal a decision.");
        }
    }
}
