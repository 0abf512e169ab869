//! Which way a run scales the cluster.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which way a pipeline scales the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Adds nodes.
    Out,
    /// Removes nodes.
    In,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Out => "scale-out",
            Self::In => "scale-in",
        })
    }
}
