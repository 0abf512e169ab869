//! Helpers to unit-test actions, behind the `mocks` feature: run one action
//! as a pipeline step ([`run_step`]), and a configurable fake action
//! ([`Probe`]) that records what it was asked to do in a [`CallLog`].
//!
//! ```
//! use pyscaler_core::testing::{run_step, CallLog, Probe};
//! use pyscaler_core::{Cluster, Context, ErrorKind, Target};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let log = CallLog::default();
//! let flaky = Probe::new("register", &log).failing(1, ErrorKind::RemoteCommandFailed);
//! let report = run_step(flaky, Target::None, &mut Context::new(Cluster::new("web"))).await;
//! assert!(!report.is_success());
//! assert_eq!(log.entries(), ["run register", "undo register"]);
//! # }
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Action, ActionExt, Context, Effects, Error, ErrorKind, Node, NodeAddress, Pipeline, Result,
    RunReport, Target,
};

/// The name of the step [`run_step`] puts before one that targets
/// [`Target::NewNodes`]; it does nothing and is left out of the report.
const GIVEN: &str = "given-new-nodes";

/// Runs `action` as the one step of a pipeline, on `target`, and returns
/// the run's report: its outcome per node, its error, and what was undone
/// after a failure (the step's own compensation runs, as in a real pipeline).
///
/// The targets come from `ctx` as a pipeline resolves them:
/// [`Target::Cluster`] is every node of `ctx.cluster()`, and
/// [`Target::NewNodes`] the nodes recorded with
/// [`Context::add_new_nodes`] before the call.
///
/// # Panics
/// When the step does not make a valid pipeline (a zero timeout, say):
/// a mistake in the test itself.
pub async fn run_step(
    action: impl Action + 'static,
    target: Target,
    ctx: &mut Context,
) -> RunReport {
    let mut pipeline = Pipeline::builder("test");
    if target == Target::NewNodes {
        // A pipeline refuses a step on the new nodes with no creating step before it.
        pipeline = pipeline.step(Given.on(Target::None));
    }
    let pipeline = match pipeline.step(action.on(target)).build() {
        Ok(p) => p,
        Err(e) => panic!("run_step: the step does not make a valid pipeline: {e}"),
    };
    let mut report = pipeline.run(ctx).await;
    report.steps.retain(|s| s.name != GIVEN);
    report.undone.retain(|u| u.step != GIVEN);
    report
}

/// Stands for the step that created the nodes a test put in the context.
struct Given;

#[async_trait]
impl Action for Given {
    fn name(&self) -> &str {
        GIVEN
    }
    fn describe(&self) -> Effects {
        Effects::none().creating_nodes()
    }
    async fn run(&self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }
}

/// A shared, ordered log of what [`Probe`]s did: `run deploy`,
/// `run puppet on web-03,web-04`, `undo deploy`.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<String>>>);

impl CallLog {
    /// Adds an entry.
    pub fn push(&self, entry: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry.into());
    }

    /// The entries so far, in order.
    pub fn entries(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A configurable fake action: it logs `run <name>` (with ` on <nodes>` when
/// it has targets) and `undo <name>` in a [`CallLog`], can fail its first
/// runs with an error of a given kind, take time, and add nodes to the run
/// (which its undo takes back).
///
/// ```
/// use pyscaler_core::testing::{CallLog, Probe};
/// use pyscaler_core::{ErrorKind, Node};
///
/// let log = CallLog::default();
/// let launch = Probe::new("deploy-ec2-node", &log).adding([Node::new("i-0aaa", "web-03")]);
/// let puppet = Probe::new("puppet", &log)
///     .failing(u32::MAX, ErrorKind::RemoteCommandFailed)
///     .failing_with("puppet exited 4")
///     .failing_on("web-03");
/// # let _ = (launch, puppet);
/// ```
#[derive(Debug, Clone)]
pub struct Probe {
    name: String,
    log: CallLog,
    effects: Option<Effects>,
    failures: u32,
    kind: ErrorKind,
    message: Option<String>,
    node: Option<String>,
    delay: Duration,
    undo_delay: Duration,
    creates: usize,
    nodes: Vec<Node>,
    runs: Arc<AtomicU32>,
    undos: Arc<AtomicU32>,
}

impl Probe {
    /// A probe named `name` that logs to `log` and succeeds.
    pub fn new(name: impl Into<String>, log: &CallLog) -> Self {
        Self {
            name: name.into(),
            log: log.clone(),
            effects: None,
            failures: 0,
            kind: ErrorKind::Transient,
            message: None,
            node: None,
            delay: Duration::ZERO,
            undo_delay: Duration::ZERO,
            creates: 0,
            nodes: Vec::new(),
            runs: Arc::default(),
            undos: Arc::default(),
        }
    }

    /// Says this instead of `probe <name>` when described (a plan, a journal intent).
    pub fn effects(mut self, effects: Effects) -> Self {
        self.effects = Some(effects);
        self
    }

    /// Fails its first `times` runs (`u32::MAX`: every run) with an error of `kind`.
    pub fn failing(mut self, times: u32, kind: ErrorKind) -> Self {
        self.failures = times;
        self.kind = kind;
        self
    }

    /// The message of its failures (default `<name> failed (attempt <n>)`).
    pub fn failing_with(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Its failures name this node ([`Error::on_node`]).
    pub fn failing_on(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Each run takes `d` (in tokio's time, so paused-clock tests are instant).
    pub fn slow(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Each undo takes `d`.
    pub fn slow_undo(mut self, d: Duration) -> Self {
        self.undo_delay = d;
        self
    }

    /// Each successful run adds `n` nodes, `<name>-0`.. at 127.0.0.1 (with
    /// ids `<run id>/<name>-<i>`); it says it adds them when described. A
    /// run whose decision asks for a number ([`TriggerInfo::nodes`](crate::TriggerInfo::nodes))
    /// adds that many instead.
    pub fn creating(mut self, n: usize) -> Self {
        self.creates = n;
        self
    }

    /// Each successful run adds these nodes; it says it adds them when described.
    pub fn adding(mut self, nodes: impl IntoIterator<Item = Node>) -> Self {
        self.nodes.extend(nodes);
        self
    }

    /// How many times it was run (each attempt counts).
    pub fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }

    /// How many times it was undone.
    pub fn undos(&self) -> u32 {
        self.undos.load(Ordering::SeqCst)
    }

    /// The nodes a run of it adds in `ctx`'s run.
    fn nodes_for(&self, ctx: &Context) -> Vec<Node> {
        let creates = match (self.creates, ctx.trigger().nodes) {
            (0, _) => 0,
            (_, Some(asked)) => asked,
            (n, None) => n,
        };
        let made = (0..creates).map(|i| {
            let name = format!("{}-{i}", self.name);
            Node::new(format!("{}/{name}", ctx.run_id()), name)
                .with_address(NodeAddress::new("127.0.0.1"))
        });
        made.chain(self.nodes.iter().cloned()).collect()
    }
}

#[async_trait]
impl Action for Probe {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> Effects {
        if let Some(e) = &self.effects {
            return e.clone();
        }
        let e = Effects::says(format!("probe {}", self.name));
        match self.creates + self.nodes.len() {
            0 => e,
            n => e.adding(n),
        }
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let on: Vec<String> = ctx.targets().iter().map(|n| n.name.clone()).collect();
        let asked = ctx
            .trigger()
            .nodes
            .map(|k| format!(" ({k} asked)"))
            .unwrap_or_default();
        self.log.push(if on.is_empty() {
            format!("run {}{asked}", self.name)
        } else {
            format!("run {} on {}{asked}", self.name, on.join(","))
        });
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if n <= self.failures {
            let message = self
                .message
                .clone()
                .unwrap_or_else(|| format!("{} failed (attempt {n})", self.name));
            let error = Error::other(self.kind, message);
            return Err(match &self.node {
                Some(node) => error.on_node(node.clone()),
                None => error,
            });
        }
        let nodes = self.nodes_for(ctx);
        ctx.add_new_nodes(nodes);
        Ok(())
    }

    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        self.undos.fetch_add(1, Ordering::SeqCst);
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
        let mine: Vec<String> = self.nodes_for(ctx).into_iter().map(|n| n.id).collect();
        let mine: Vec<String> = ctx
            .new_nodes()
            .iter()
            .filter(|n| mine.contains(&n.id))
            .map(|n| n.id.clone())
            .collect();
        ctx.forget_new_nodes(&mine);
        Ok(())
    }
}
