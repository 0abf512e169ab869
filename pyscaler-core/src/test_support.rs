//! Actions and sources for the engine's own tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Action, Context, Effects, Error, ErrorKind, Node, NodeAddress, Result};

/// A shared log of what test actions did, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub(crate) fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    pub(crate) fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A test action: logs `run <name>` / `undo <name>`, can fail its first
/// `failures` runs with `kind`, can take `delay`, can create nodes.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) name: String,
    pub(crate) log: Log,
    pub(crate) failures: u32,
    pub(crate) kind: ErrorKind,
    pub(crate) delay: Duration,
    pub(crate) creates: usize,
    pub(crate) undo_delay: Duration,
    pub(crate) runs: Arc<Mutex<u32>>,
}

impl Probe {
    pub(crate) fn new(name: &str, log: &Log) -> Self {
        Self {
            name: name.into(),
            log: log.clone(),
            failures: 0,
            kind: ErrorKind::Transient,
            delay: Duration::ZERO,
            creates: 0,
            undo_delay: Duration::ZERO,
            runs: Arc::default(),
        }
    }
    pub(crate) fn failing(mut self, times: u32, kind: ErrorKind) -> Self {
        self.failures = times;
        self.kind = kind;
        self
    }
    pub(crate) fn slow(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    pub(crate) fn slow_undo(mut self, d: Duration) -> Self {
        self.undo_delay = d;
        self
    }
    pub(crate) fn creating(mut self, n: usize) -> Self {
        self.creates = n;
        self
    }
    pub(crate) fn runs(&self) -> u32 {
        *self.runs.lock().unwrap()
    }
}

#[async_trait]
impl Action for Probe {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> Effects {
        let e = Effects::says(format!("probe {}", self.name));
        if self.creates > 0 {
            e.adding(self.creates)
        } else {
            e
        }
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let n = {
            let mut runs = self.runs.lock().unwrap();
            *runs += 1;
            *runs
        };
        let on: Vec<String> = ctx.targets().iter().map(|n| n.name.clone()).collect();
        self.log.push(if on.is_empty() {
            format!("run {}", self.name)
        } else {
            format!("run {} on {}", self.name, on.join(","))
        });
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if n <= self.failures {
            return Err(Error::other(
                self.kind,
                format!("{} failed (attempt {n})", self.name),
            ));
        }
        let nodes: Vec<Node> = (0..self.creates)
            .map(|i| {
                let name = format!("{}-{i}", self.name);
                Node::new(format!("{}/{name}", ctx.run_id()), name)
                    .with_address(NodeAddress::new("127.0.0.1"))
            })
            .collect();
        ctx.add_new_nodes(nodes);
        Ok(())
    }

    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        // Undo runs with a token of its own: it sees no cancellation.
        let cancelled = if ctx.is_cancelled() {
            " (cancelled!)"
        } else {
            ""
        };
        self.log.push(format!("undo {}{cancelled}", self.name));
        if !self.undo_delay.is_zero() {
            tokio::time::sleep(self.undo_delay).await;
        }
        let mine: Vec<String> = ctx
            .new_nodes()
            .iter()
            .filter(|n| n.name.starts_with(&format!("{}-", self.name)))
            .map(|n| n.id.clone())
            .collect();
        ctx.forget_new_nodes(&mine);
        Ok(())
    }
}
