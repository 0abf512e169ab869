//! The scaler's liveness check: every trigger that evaluates on a clock
//! leaves a heartbeat on the [`ClusterView`] each time round its loop; a
//! trigger whose last heartbeat is older than its bound is stalled (its
//! loop is stuck on a source, or its task died), which is reported once,
//! as an event and a metric, until it beats again.

use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::trigger::ClusterView;
use crate::Event;

/// Watches the heartbeats of the triggers it is given.
#[derive(Debug)]
pub(super) struct Watchdog {
    /// Each watched trigger's name and bound, and whether it is stalled now.
    triggers: Vec<(String, Duration, bool)>,
    events: broadcast::Sender<Event>,
}

impl Watchdog {
    /// A watchdog of `triggers` (name, bound) reporting to `events`; `None`
    /// when there is nothing to watch.
    pub(super) fn new(
        triggers: Vec<(String, Duration)>,
        events: broadcast::Sender<Event>,
    ) -> Option<Self> {
        if triggers.is_empty() {
            return None;
        }
        Some(Self {
            triggers: triggers.into_iter().map(|(n, b)| (n, b, false)).collect(),
            events,
        })
    }

    /// Checks the heartbeats on `view` until aborted, a few times per
    /// smallest bound. A trigger that never beat counts from now.
    pub(super) async fn run(mut self, view: ClusterView) {
        let cluster = view.snapshot().name().to_owned();
        let started = Instant::now();
        for (name, _, _) in &self.triggers {
            crate::observe::stalled(&cluster, name, false);
        }
        let smallest = self
            .triggers
            .iter()
            .map(|(_, bound, _)| *bound)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let mut ticks = tokio::time::interval((smallest / 4).max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = Instant::now();
            for (name, bound, stalled) in &mut self.triggers {
                let last = view.last_heartbeat(name).unwrap_or(started).max(started);
                let since = now.duration_since(last);
                if since > *bound && !*stalled {
                    *stalled = true;
                    warn!(trigger = %name, since = %humantime::format_duration(Duration::from_secs(since.as_secs())), bound = %humantime::format_duration(*bound), "Trigger stalled: no evaluation finished within its bound.");
                    crate::observe::stalled(&cluster, name, true);
                    let _ = self.events.send(Event::EvaluationStalled {
                        trigger: name.clone(),
                        since,
                        bound: *bound,
                    });
                } else if since <= *bound && *stalled {
                    *stalled = false;
                    info!(trigger = %name, "Trigger evaluates again.");
                    crate::observe::stalled(&cluster, name, false);
                    let _ = self.events.send(Event::EvaluationResumed {
                        trigger: name.clone(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
