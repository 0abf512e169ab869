//! The engine's own tests use the public testing helpers under their old names.

pub(crate) use crate::testing::{CallLog as Log, Probe};

use std::time::Duration;

use async_trait::async_trait;

use crate::trigger::{ClusterView, Opinion};
use crate::{Fire, Trigger};

/// A trigger on a clock that evaluates (leaves an opinion) after each
/// delay of its schedule, then hangs for ever: a loop stuck on its source.
#[derive(Debug)]
pub(crate) struct Scheduled {
    pub(crate) name: &'static str,
    pub(crate) interval: Duration,
    pub(crate) schedule: Vec<Duration>,
}

#[async_trait]
impl Trigger for Scheduled {
    fn name(&self) -> &str {
        self.name
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn next(&mut self, view: &ClusterView) -> Option<Fire> {
        for delay in std::mem::take(&mut self.schedule) {
            tokio::time::sleep(delay).await;
            view.observe(self.name, Opinion::default());
        }
        std::future::pending().await
    }
}
