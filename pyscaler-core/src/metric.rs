//! Where a trigger's numbers come from: [`MetricSource`] gives [`Sample`]s,
//! which a [`Comparison`] and an [`Aggregation`] turn into a verdict.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Cluster, Result};

/// One sample of a counter on one node (or, for a cluster-wide value, on the cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The node's name (the cluster's name for a cluster-wide value).
    pub node: String,
    /// The value read.
    pub value: f64,
    /// When the value was measured, when the source says; `None` means now.
    /// A trigger takes a sample older than its staleness bound as no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

impl Sample {
    /// A value of `node` measured now.
    pub fn new(node: impl Into<String>, value: f64) -> Self {
        Self {
            node: node.into(),
            value,
            at: None,
        }
    }

    /// The same value, measured at `at`.
    #[must_use]
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = Some(at);
        self
    }
}

/// Where counters come from: per-node samples for a cluster (load average over SSH, a JVM counter).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait MetricSource: Send + Sync {
    /// The counter's name (`load1`).
    fn name(&self) -> &str;

    /// One sample per node that could be read (or one for the cluster).
    ///
    /// An empty list, a value that is not a number or a sample older than
    /// the trigger's staleness bound is no data, never zero.
    ///
    /// # Errors
    /// When no sample could be taken; the trigger takes it as no data.
    async fn sample(&self, cluster: &Cluster) -> Result<Vec<Sample>>;
}

/// How a value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Comparison {
    /// `<`
    #[serde(rename = "<")]
    Less,
    /// `<=`
    #[serde(rename = "<=")]
    LessOrEqual,
    /// `==`
    #[serde(rename = "==")]
    Equal,
    /// `>=`
    #[serde(rename = ">=")]
    GreaterOrEqual,
    /// `>`
    #[serde(rename = ">")]
    Greater,
}

impl Comparison {
    /// Whether `value <op> threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Less => value < threshold,
            Self::LessOrEqual => value <= threshold,
            Self::Equal => value == threshold,
            Self::GreaterOrEqual => value >= threshold,
            Self::Greater => value > threshold,
        }
    }

    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Equal => "==",
            Self::GreaterOrEqual => ">=",
            Self::Greater => ">",
        }
    }
}

impl fmt::Debug for dyn MetricSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetricSource({})", self.name())
    }
}

/// How per-node samples become one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Aggregation {
    /// Breaching when any node breaches.
    AnyNode,
    /// Breaching when every node breaches.
    AllNodes,
    /// The average across nodes is compared.
    Average,
    /// The largest value is compared.
    Max,
}
