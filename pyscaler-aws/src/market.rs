//! How new instances are bought: On-Demand, or Spot with an optional
//! fall-back on On-Demand.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How new instances are bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Market {
    /// On-Demand instances (`on-demand`, the default).
    #[default]
    OnDemand,
    /// One-time Spot Instances (`spot`), through RunInstances'
    /// `InstanceMarketOptions`; terminated when EC2 takes them back.
    Spot,
}

impl Market {
    /// As the profile and the report write it: `on-demand`, `spot`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnDemand => "on-demand",
            Self::Spot => "spot",
        }
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a Spot launch does when EC2 has no Spot capacity for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SpotFallback {
    /// Nothing: the zone counts as refused, as for On-Demand (`none`, the default).
    #[default]
    None,
    /// The same call again, for On-Demand instances, in the same zone (`on-demand`).
    OnDemand,
}
