//! Helpers shared by pyscaler's benchmarks.

use pyscaler_core::{async_trait, Action, Cluster, Context, MetricSource, Result, Sample};

/// An action that does nothing: measures the engine alone.
#[derive(Debug, Clone, Copy)]
pub struct NoOp;

#[async_trait]
impl Action for NoOp {
    fn name(&self) -> &str {
        "noop"
    }

    async fn run(&self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }
}

/// A metric source with no samples (benchmarks call `evaluate` directly).
#[derive(Debug, Clone, Copy)]
pub struct Silent;

#[async_trait]
impl MetricSource for Silent {
    fn name(&self) -> &str {
        "silent"
    }

    async fn sample(&self, _cluster: &Cluster) -> Result<Vec<Sample>> {
        Ok(Vec::new())
    }
}
