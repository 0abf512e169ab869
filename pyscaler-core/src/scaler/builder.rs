//! Builds a [`Scaler`]: triggers bound to pipelines, bounds, cooldowns and
//! caps per direction.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::controls::{slot, ScalerControls};
use super::{Binding, Scaler};
use crate::journal::Journal;
use crate::recovery::Recovery;
use crate::{Cluster, Direction, Error, HeldLease, Lease, LeaseTiming, Pipeline, Result, Trigger};

/// Builds a [`Scaler`].
pub struct ScalerBuilder {
    pub(super) recovery: Option<Recovery>,
    pub(super) cluster: Cluster,
    pub(super) bindings: Vec<Binding>,
    pub(super) min_nodes: usize,
    pub(super) max_nodes: usize,
    pub(super) cooldowns: [Duration; 2],
    pub(super) max_step: [Option<usize>; 2],
    pub(super) lease: Option<(Arc<dyn Lease>, LeaseTiming)>,
    pub(super) held: Option<HeldLease>,
    pub(super) stalled_after: Option<Duration>,
    pub(super) decisions: Option<Arc<dyn Journal>>,
}

impl fmt::Debug for ScalerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScalerBuilder")
            .field("cluster", &self.cluster.name())
            .field("bindings", &self.bindings.len())
            .field("min_nodes", &self.min_nodes)
            .field("max_nodes", &self.max_nodes)
            .finish_non_exhaustive()
    }
}

impl ScalerBuilder {
    /// Runs `pipeline` when `trigger` fires; `direction` says whether it
    /// adds or removes nodes (and gives the trigger its defaults for that
    /// direction, [`Trigger::bind`]).
    pub fn bind(
        mut self,
        trigger: impl Trigger + 'static,
        direction: Direction,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        let mut trigger: Box<dyn Trigger> = Box::new(trigger);
        trigger.bind(direction);
        self.bindings.push(Binding {
            trigger,
            direction,
            pipeline,
        });
        self
    }

    /// The fewest nodes the cluster may have: a scale-in at this size, or one
    /// whose pipeline would remove more nodes than are above it, is skipped
    /// (default 1). A trigger's step is capped to stay at or above it.
    pub fn min_nodes(mut self, n: usize) -> Self {
        self.min_nodes = n;
        self
    }

    /// The most nodes the cluster may have: a scale-out at this size, or one
    /// whose pipeline would add more nodes than fit under it, is skipped
    /// (default 10). A trigger's step is capped to stay at or below it.
    pub fn max_nodes(mut self, n: usize) -> Self {
        self.max_nodes = n;
        self
    }

    /// How long after a run in `direction` another run in that direction is
    /// skipped (defaults: 5 minutes out, 10 minutes in).
    pub fn cooldown(mut self, direction: Direction, d: Duration) -> Self {
        self.cooldowns[slot(direction)] = d;
        self
    }

    /// At most `k` nodes per decision in `direction`, when a trigger's
    /// step says how many (default: no cap but the bounds).
    pub fn max_step(mut self, direction: Direction, k: usize) -> Self {
        self.max_step[slot(direction)] = Some(k);
        self
    }

    /// A trigger that evaluates on a clock ([`Trigger::interval`]) and has
    /// not finished an evaluation for `bound` is stalled: the scaler sends
    /// an [`Event::EvaluationStalled`](crate::Event::EvaluationStalled)
    /// (once) and sets `pyscaler_evaluation_stalled` to 1, until it
    /// evaluates again. Default: 3 of the trigger's intervals.
    pub fn stalled_after(mut self, bound: Duration) -> Self {
        self.stalled_after = Some(bound);
        self
    }

    /// Writes every decision to `journal` (usually the pipelines' own), so
    /// a [`History`](crate::History) tells why each run happened or did
    /// not: a decision as it is taken ([`JournalEntry::Decided`](crate::JournalEntry::Decided),
    /// a run's with its run id), and a decision a trigger takes again and
    /// again (a cooldown skip, no data) once, with its count when the
    /// streak ends ([`JournalEntry::DecisionRepeated`](crate::JournalEntry::DecisionRepeated)).
    pub fn journal_decisions(mut self, journal: Arc<dyn Journal>) -> Self {
        self.decisions = Some(journal);
        self
    }

    /// Before watching triggers, recovers the runs a controller that died
    /// mid-run left unfinished with `recovery`, and takes the nodes of each
    /// run it undid out of the cluster. The pipelines bound to the scaler
    /// are added to the ones `recovery` dispatches to.
    pub fn recover_first(mut self, recovery: Recovery) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// Scales only while holding `lease`: [`Scaler::run`] first waits as a
    /// standby until the lease is free, then recovers the unfinished runs
    /// (after one lease duration when a predecessor held it, so its last
    /// call has landed), then scales. Losing the lease cancels the run in
    /// progress, which is abandoned rather than undone (the next holder
    /// recovers it), and ends `run`: an [`Event::LeaseLost`](crate::Event::LeaseLost)
    /// says so.
    pub fn lease(mut self, lease: Arc<dyn Lease>, timing: LeaseTiming) -> Self {
        self.lease = Some((lease, timing));
        self
    }

    /// Scales under `held`, a lease the application took already (it
    /// waited as a standby, then rebuilt its view of the cluster): as
    /// [`lease`](Self::lease), without the wait.
    pub fn held_lease(mut self, held: HeldLease) -> Self {
        self.held = Some(held);
        self
    }

    /// Checks and builds.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when no trigger is bound, two bound triggers
    /// share a name, `min_nodes > max_nodes`, a step cap is 0, or the
    /// stall bound is 0.
    pub fn build(self) -> Result<Scaler> {
        if self.bindings.is_empty() {
            return Err(Error::InvalidConfig(
                "the scaler has no trigger bound to a pipeline".into(),
            ));
        }
        if self.min_nodes > self.max_nodes {
            return Err(Error::InvalidConfig(format!(
                "min_nodes ({}) is above max_nodes ({})",
                self.min_nodes, self.max_nodes
            )));
        }
        if self.max_step.contains(&Some(0)) {
            return Err(Error::InvalidConfig(
                "a step cap of 0 nodes would skip every decision; pause the direction instead"
                    .into(),
            ));
        }
        if self.stalled_after == Some(Duration::ZERO) {
            return Err(Error::InvalidConfig(
                "a stall bound of 0 would find every trigger stalled".into(),
            ));
        }
        let watchers: Vec<(String, Direction)> = self
            .bindings
            .iter()
            .map(|b| (b.trigger.name().to_owned(), b.direction))
            .collect();
        for (i, (name, _)) in watchers.iter().enumerate() {
            if watchers[..i].iter().any(|(other, _)| other == name) {
                return Err(Error::InvalidConfig(format!(
                    "two triggers are called `{name}`; the scaler tells them apart by name"
                )));
            }
        }
        let (events, _) = broadcast::channel(1024);
        let (controls, protect) = ScalerControls::new();
        Ok(Scaler {
            recovery: self.recovery,
            lease: self.lease,
            held: self.held,
            cluster: self.cluster,
            bindings: self.bindings,
            watchers,
            min_nodes: self.min_nodes,
            max_nodes: self.max_nodes,
            cooldowns: self.cooldowns,
            max_step: self.max_step,
            stalled_after: self.stalled_after,
            decisions: self.decisions,
            events,
            controls,
            protect: Some(protect),
        })
    }
}
