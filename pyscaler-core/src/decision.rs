//! The vocabulary of automatic scaling decisions: what missing data counts
//! as ([`MissingData`]), how many nodes a decision asks for ([`NodeStep`]),
//! and the record of every decision, taken or not ([`Decision`]).

use serde::{Deserialize, Serialize};

use crate::{Direction, RunId};

/// What a trigger does when it has no data: its source is down or too slow,
/// the answer is empty, a value is not a number, or every sample is older
/// than the staleness bound.
///
/// The default holds, because no data is not zero: KEDA once turned an
/// empty Prometheus answer into 0 and scaled services to their minimum
/// during a monitoring outage (kedacore/keda#3065).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MissingData {
    /// No decision: the sustained window restarts (the default).
    #[default]
    Hold,
    /// Take the missing value as this one (CloudWatch's "breaching" or
    /// "not breaching", chosen by the value).
    Value(f64),
    /// No decision, and the trigger fails loudly: a [`Verdict::Failed`]
    /// decision event (warn level) that a subscriber can mail.
    Fail,
}

/// How many nodes a trigger's decision asks for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeStep {
    /// This many nodes each time.
    Fixed(usize),
    /// Toward a target value, as target tracking and the Kubernetes HPA do:
    /// `desired = ceil(nodes * value / target)`, nothing while `value / target`
    /// is within `1 ± tolerance`.
    Proportional {
        /// The value per node the cluster should have.
        target: f64,
        /// The band around the target within which nothing changes (0.1 = 10 %).
        tolerance: f64,
    },
}

impl NodeStep {
    /// A proportional step toward `target`, with the usual 10 % tolerance.
    pub fn toward(target: f64) -> Self {
        Self::Proportional {
            target,
            tolerance: 0.1,
        }
    }
}

/// What became of one decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// A run starts.
    Scale,
    /// No run, and why.
    Skipped(Skip),
    /// The trigger had no data and held (or took the value its policy names).
    NoData,
    /// The trigger had no data and its policy is [`MissingData::Fail`].
    Failed,
}

/// Why a decision did not start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Skip {
    /// The direction is cooling down after a run.
    Cooldown,
    /// An operator paused the direction.
    Paused,
    /// The cluster is at (or the step would pass) its maximum.
    AtMaximum,
    /// The cluster is at (or the step would pass) its minimum.
    AtMinimum,
    /// A run was in progress when the trigger fired.
    RunInProgress,
    /// Another trigger watching the cluster does not agree (a scale-in needs
    /// every scale-in trigger to agree and no scale-out trigger to breach).
    NotAgreed,
    /// Every node that could be removed is protected.
    NoEligibleNode,
}

impl Skip {
    /// Its name in snake case, as in JSON and metric labels (`cooldown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cooldown => "cooldown",
            Self::Paused => "paused",
            Self::AtMaximum => "at_maximum",
            Self::AtMinimum => "at_minimum",
            Self::RunInProgress => "run_in_progress",
            Self::NotAgreed => "not_agreed",
            Self::NoEligibleNode => "no_eligible_node",
        }
    }
}

/// One decision, taken or skipped, with the values that led to it; sent as
/// [`Event::Decided`](crate::Event::Decided).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// The trigger that asked.
    pub trigger: String,
    /// The way it asked to scale.
    pub direction: Direction,
    /// What became of it.
    pub verdict: Verdict,
    /// The trigger's value, when it had one.
    pub value: Option<f64>,
    /// The threshold (or target) it was compared with.
    pub threshold: Option<f64>,
    /// The cluster's size when decided.
    pub nodes: usize,
    /// How many nodes the run adds or removes (0 when skipped, or when the
    /// pipeline decides).
    pub change: usize,
    /// The triggers whose opinions made the decision (for a scale-in, every
    /// scale-in trigger that agreed).
    pub triggers: Vec<String>,
    /// Why, in words.
    pub reason: String,
    /// The run it started, when it started one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
}

impl Decision {
    /// A decision of `trigger` in `direction` on a cluster of `nodes` nodes.
    pub fn new(
        trigger: impl Into<String>,
        direction: Direction,
        verdict: Verdict,
        nodes: usize,
        reason: impl Into<String>,
    ) -> Self {
        let trigger = trigger.into();
        Self {
            triggers: vec![trigger.clone()],
            trigger,
            direction,
            verdict,
            value: None,
            threshold: None,
            nodes,
            change: 0,
            reason: reason.into(),
            run_id: None,
        }
    }

    /// With the value and threshold that led to it.
    #[must_use]
    pub fn with_values(mut self, value: Option<f64>, threshold: Option<f64>) -> Self {
        self.value = value;
        self.threshold = threshold;
        self
    }
}
