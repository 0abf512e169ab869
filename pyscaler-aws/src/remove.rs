//! `RemoveEc2Node`: take nodes out of the load balancer and terminate them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{
    Action, Context, Effects, Error, ErrorKind, Node, NodeOutcome, Result, RetryPolicy,
};
use tracing::{info, warn};

use crate::terminate::terminate_and_wait;
use crate::wait::default_poll;
use crate::{AwsError, Ec2, Ec2Profile, LoadBalancer};

/// Which nodes [`RemoveEc2Node`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pick {
    /// The step's target nodes, all of them.
    Target,
    /// The most recently launched nodes of the cluster.
    #[default]
    Newest,
    /// The longest-running nodes of the cluster.
    Oldest,
}

/// How far a `RemoveEc2Node` step got, kept in the outputs (by step) for its compensation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Removal {
    instance_ids: Vec<String>,
    load_balancer: Option<String>,
    terminating: bool,
}

#[derive(Debug, Clone, Default)]
struct Removals(BTreeMap<String, Removal>);

/// Removes nodes from the cluster: picks them (the step's target, or the
/// newest / oldest), refuses to go below the cluster's minimum, deregisters
/// them from the load balancer in one call, waits for connection draining,
/// terminates them, waits until terminated, removes them from the cluster and
/// reports each.
///
/// A termination cannot be undone. Compensation registers the nodes with the
/// load balancer again only when the step stopped before terminating them.
pub struct RemoveEc2Node {
    ec2: Arc<dyn Ec2>,
    elb: Option<Arc<dyn LoadBalancer>>,
    load_balancer: Option<String>,
    pick: Pick,
    count: usize,
    min_nodes: usize,
    draining: Duration,
    poll: RetryPolicy,
    terminated_within: Duration,
}

impl fmt::Debug for RemoveEc2Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoveEc2Node")
            .field("load_balancer", &self.load_balancer)
            .field("pick", &self.pick)
            .field("count", &self.count)
            .field("min_nodes", &self.min_nodes)
            .field("draining", &self.draining)
            .field("terminated_within", &self.terminated_within)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RemoveEc2Node`]; [`RemoveEc2NodeBuilder::build`] reports the first mistake.
#[derive(Debug)]
pub struct RemoveEc2NodeBuilder {
    inner: RemoveEc2Node,
}

impl RemoveEc2Node {
    /// Starts building: the EC2 provider, the load balancer provider (needed
    /// when the profile names a load balancer), and the cluster's profile.
    pub fn builder(
        ec2: Arc<dyn Ec2>,
        elb: Option<Arc<dyn LoadBalancer>>,
        profile: &Ec2Profile,
    ) -> RemoveEc2NodeBuilder {
        RemoveEc2NodeBuilder {
            inner: RemoveEc2Node {
                ec2,
                elb,
                load_balancer: profile.load_balancer().map(str::to_owned),
                pick: Pick::default(),
                count: 1,
                min_nodes: 1,
                draining: Duration::from_secs(30),
                poll: default_poll(),
                terminated_within: Duration::from_secs(300),
            },
        }
    }
}

impl RemoveEc2NodeBuilder {
    /// Which nodes to remove ([`Pick::Newest`] by default).
    pub fn pick(mut self, pick: Pick) -> Self {
        self.inner.pick = pick;
        self
    }

    /// How many nodes to remove with [`Pick::Newest`] / [`Pick::Oldest`] (1 by default).
    pub fn count(mut self, n: usize) -> Self {
        self.inner.count = n;
        self
    }

    /// The fewest nodes the cluster may keep (1 by default).
    pub fn min_nodes(mut self, n: usize) -> Self {
        self.inner.min_nodes = n;
        self
    }

    /// How long to let the load balancer drain connections after deregistering
    /// (30 s by default; match the load balancer's connection draining timeout).
    pub fn draining(mut self, d: Duration) -> Self {
        self.inner.draining = d;
        self
    }

    /// How polls are spaced.
    pub fn poll(mut self, policy: RetryPolicy) -> Self {
        self.inner.poll = policy;
        self
    }

    /// Bounds the wait until the instances are terminated (5 min by default).
    pub fn terminated_within(mut self, d: Duration) -> Self {
        self.inner.terminated_within = d;
        self
    }

    /// Checks the settings and builds the action.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] for a zero count, a zero bound, or a
    /// profile naming a load balancer without a load balancer provider (or the reverse).
    pub fn build(self) -> Result<RemoveEc2Node, AwsError> {
        let a = self.inner;
        if a.count == 0 {
            return Err(AwsError::invalid("count", "is 0: remove at least one node"));
        }
        if a.terminated_within.is_zero() {
            return Err(AwsError::invalid("terminated_within", "is 0"));
        }
        if a.load_balancer.is_some() != a.elb.is_some() {
            return Err(AwsError::invalid(
                "load balancer",
                "give a LoadBalancer provider exactly when the profile names a load balancer",
            ));
        }
        Ok(a)
    }
}

impl RemoveEc2Node {
    fn choose(&self, ctx: &Context) -> Vec<Node> {
        match self.pick {
            Pick::Target => ctx.targets().to_vec(),
            Pick::Newest | Pick::Oldest => {
                let mut nodes: Vec<Node> = ctx
                    .cluster()
                    .nodes()
                    .iter()
                    .filter(|n| n.instance_id.is_some())
                    .cloned()
                    .collect();
                // Oldest first; nodes with no launch time count as oldest.
                nodes.sort_by(|a, b| a.launched_at.cmp(&b.launched_at).then(a.name.cmp(&b.name)));
                if self.pick == Pick::Newest {
                    nodes.reverse();
                }
                nodes.truncate(self.count);
                nodes
            }
        }
    }
}

#[async_trait]
impl Action for RemoveEc2Node {
    fn name(&self) -> &str {
        "remove-ec2-node"
    }

    fn describe(&self) -> Effects {
        let which = match self.pick {
            Pick::Target => "the step's target nodes".to_owned(),
            Pick::Newest => format!("the {} newest node(s)", self.count),
            Pick::Oldest => format!("the {} oldest node(s)", self.count),
        };
        let lb = self
            .load_balancer
            .as_ref()
            .map(|lb| format!(", deregistered from {lb}"))
            .unwrap_or_default();
        let effects = Effects::says(format!(
            "terminate {which}{lb}, keeping at least {} node(s)",
            self.min_nodes
        ));
        match self.pick {
            // As many as the step targets: not known before the run.
            Pick::Target => effects.removing_nodes(),
            Pick::Newest | Pick::Oldest => effects.removing(self.count),
        }
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let started = tokio::time::Instant::now();
        let step = ctx.step_name().to_owned();
        let chosen = self.choose(ctx);
        if chosen.is_empty() {
            return Err(Error::other(
                ErrorKind::InvalidInput,
                format!("no EC2 node to remove in cluster {}", ctx.cluster().name()),
            ));
        }
        if let Some(n) = chosen.iter().find(|n| n.instance_id.is_none()) {
            return Err(Error::other(
                ErrorKind::InvalidInput,
                format!("node {} is not an EC2 instance", n.name),
            )
            .on_node(n.name.clone()));
        }
        let size = ctx.cluster().len();
        if size < chosen.len() + self.min_nodes {
            return Err(AwsError::BelowMinimum {
                cluster: ctx.cluster().name().to_owned(),
                size,
                removing: chosen.len(),
                minimum: self.min_nodes,
            }
            .into());
        }
        let ids: Vec<String> = chosen
            .iter()
            .filter_map(|n| n.instance_id.clone())
            .collect();
        let mut record = Removal {
            instance_ids: ids.clone(),
            ..Removal::default()
        };

        if let (Some(elb), Some(lb)) = (&self.elb, &self.load_balancer) {
            record.load_balancer = Some(lb.clone());
            store(ctx, &step, record.clone());
            elb.deregister(lb, &ids).await?;
            info!(step = %step, load_balancer = %lb, instances = ?ids, "Deregistered; draining.");
            tokio::select! {
                _ = tokio::time::sleep(self.draining) => {}
                _ = ctx.cancellation().cancelled() => return Err(Error::Cancelled),
            }
        }

        record.terminating = true;
        store(ctx, &step, record);
        terminate_and_wait(
            self.ec2.as_ref(),
            &self.poll,
            self.terminated_within,
            ctx.cancellation(),
            &ids,
        )
        .await?;
        let took = started.elapsed();
        for node in &chosen {
            info!(step = %step, node = %node, "Terminated and removed from the cluster.");
            let lb = self
                .load_balancer
                .as_ref()
                .map(|lb| format!("deregistered from {lb}, "))
                .unwrap_or_default();
            ctx.record_node(
                NodeOutcome::ok(
                    node.name.clone(),
                    format!(
                        "{lb}terminated {}",
                        node.instance_id.as_deref().unwrap_or("")
                    ),
                )
                .with_duration(took),
            );
            ctx.remove_node(&node.id);
        }
        Ok(())
    }

    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let step = ctx.step_name().to_owned();
        let record = ctx
            .outputs()
            .get::<Removals>()
            .and_then(|r| r.0.get(&step))
            .cloned();
        let Some(record) = record else { return Ok(()) };
        if record.terminating {
            warn!(step = %step, instances = ?record.instance_ids, "Terminated instances cannot be brought back.");
            return Ok(());
        }
        if let (Some(elb), Some(lb)) = (&self.elb, &record.load_balancer) {
            elb.register(lb, &record.instance_ids).await?;
            info!(step = %step, load_balancer = %lb, instances = ?record.instance_ids, "Registered again.");
        }
        if let Some(r) = ctx.outputs_mut().get_mut::<Removals>() {
            r.0.remove(&step);
        }
        Ok(())
    }
}

fn store(ctx: &mut Context, step: &str, record: Removal) {
    if ctx.outputs().get::<Removals>().is_none() {
        ctx.outputs_mut().insert(Removals::default());
    }
    if let Some(r) = ctx.outputs_mut().get_mut::<Removals>() {
        r.0.insert(step.to_owned(), record);
    }
}

#[cfg(test)]
mod tests;
