//! `RemoveEc2Node`: take nodes out of the load balancer and terminate them.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{Action, Context, Effects, Error, ErrorKind, Node, NodeOutcome, Result};
use tracing::{info, warn};

use crate::terminate::{terminate_and_wait, until_drained, DRAINING_MARGIN, MAX_DRAINING};
use crate::wait::{default_poll, Backoff};
use crate::{Aws, AwsError, LoadBalancer};

mod victims;

use victims::{victims, Order};

/// How long a classic ELB is given to drain, unless set.
const CLASSIC_DRAINING: Duration = Duration::from_secs(30);

/// Which nodes [`RemoveEc2Node`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pick {
    /// The step's target nodes, all of them.
    Target,
    /// The most recently launched nodes of the cluster, keeping its
    /// Availability Zones balanced first: the zone with the most nodes loses
    /// one, its newest, and again ([`TAG_AZ`](crate::TAG_AZ); nodes without
    /// a zone count as one zone of their own).
    #[default]
    Newest,
    /// The longest-running nodes of the cluster, keeping its Availability
    /// Zones balanced first, as for [`Pick::Newest`].
    Oldest,
}

/// How far a `RemoveEc2Node` step got, kept as the step's output
/// ([`Context::step_output_mut`]) for its compensation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Removal {
    instance_ids: Vec<String>,
    /// The load balancers the nodes were (being) deregistered from.
    load_balancers: Vec<String>,
    terminating: bool,
}

/// Removes nodes from the cluster: picks them (the step's target, or the
/// newest / oldest), refuses to go below the cluster's minimum, deregisters
/// them from the load balancer in one call, waits for connection draining,
/// terminates them, waits until terminated, removes them from the cluster and
/// reports each.
///
/// A termination cannot be undone. Compensation registers the nodes with the
/// load balancer again only when the step stopped before terminating them.
pub struct RemoveEc2Node {
    aws: Aws,
    pick: Pick,
    count: usize,
    min_nodes: usize,
    draining: Option<Duration>,
    poll: Backoff,
    terminated_within: Duration,
}

impl fmt::Debug for RemoveEc2Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoveEc2Node")
            .field("load_balancers", &self.aws.load_balancer_names())
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
    /// Starts building: the cluster's providers and profile ([`Aws`]).
    pub fn builder(aws: &Aws) -> RemoveEc2NodeBuilder {
        RemoveEc2NodeBuilder {
            inner: RemoveEc2Node {
                aws: aws.clone(),
                pick: Pick::default(),
                count: 1,
                min_nodes: 1,
                draining: None,
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

    /// Bounds connection draining after deregistering. A target group is
    /// asked until its targets leave `draining`, by default within its own
    /// `deregistration_delay.timeout_seconds` plus 10 s; a classic ELB cannot
    /// be asked, so this long is waited (30 s by default; match its
    /// connection draining timeout). Either way, the nodes are terminated
    /// after it.
    pub fn draining(mut self, d: Duration) -> Self {
        self.inner.draining = Some(d);
        self
    }

    /// How polls are spaced.
    pub fn poll(mut self, policy: Backoff) -> Self {
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
    /// [`AwsError::InvalidSetting`] for a zero count or a zero bound.
    pub fn build(self) -> Result<RemoveEc2Node, AwsError> {
        let a = self.inner;
        if a.count == 0 {
            return Err(AwsError::invalid("count", "is 0: remove at least one node"));
        }
        if a.terminated_within.is_zero() {
            return Err(AwsError::invalid("terminated_within", "is 0"));
        }
        Ok(a)
    }
}

impl RemoveEc2Node {
    /// Waits until `lb` no longer serves `ids`' connections: while a target
    /// group says they are draining (bounded), or a set time for a classic ELB.
    async fn drain(
        &self,
        ctx: &Context,
        elb: &dyn LoadBalancer,
        lb: &str,
        ids: &[String],
    ) -> Result<()> {
        // The deregistration went through: a load balancer that cannot be
        // asked about draining (a refusal, a missing permission) gets the set
        // wait, as a classic ELB does, rather than failing the scale-in.
        let delay = match elb.draining_timeout(lb).await {
            Ok(delay) => delay,
            Err(e) => {
                warn!(load_balancer = %lb, error = %e, "Cannot read the draining timeout; waiting the set time.");
                None
            }
        };
        let Some(delay) = delay else {
            tokio::select! {
                _ = tokio::time::sleep(self.draining.unwrap_or(CLASSIC_DRAINING)) => {}
                _ = ctx.cancellation().cancelled() => return Err(Error::Cancelled),
            }
            return Ok(());
        };
        let within = self
            .draining
            .unwrap_or(delay.saturating_add(DRAINING_MARGIN))
            .min(MAX_DRAINING);
        let left = until_drained(elb, lb, ids, &self.poll, within, ctx.cancellation()).await?;
        if !left.is_empty() {
            warn!(load_balancer = %lb, instances = ?left, within = ?within,
                "Still draining at the bound; terminating them anyway.");
        }
        Ok(())
    }

    /// The nodes to remove: the step's targets, or the newest / oldest of
    /// the unprotected EC2 nodes with the zones kept balanced first
    /// ([`victims`]), as many as the scaler's decision asked for
    /// ([`TriggerInfo::nodes`](pyscaler_core::TriggerInfo::nodes)) or the
    /// step's count. A protected node ([`Node::is_protected`]) is never
    /// picked, nor counted in its zone.
    fn choose(&self, ctx: &Context) -> Vec<Node> {
        let order = match self.pick {
            Pick::Target => return ctx.targets().to_vec(),
            Pick::Newest => Order::Newest,
            Pick::Oldest => Order::Oldest,
        };
        let nodes: Vec<Node> = ctx
            .cluster()
            .nodes()
            .iter()
            .filter(|n| n.instance_id.is_some() && !n.is_protected())
            .cloned()
            .collect();
        victims(nodes, ctx.trigger().nodes.unwrap_or(self.count), order)
    }

    /// The nodes a run removes: [`choose`](Self::choose)'s, once checked.
    ///
    /// # Errors
    /// When there is none, one is protected or not an EC2 instance, or
    /// removing them would leave the cluster below its minimum: the run then
    /// removes nothing.
    fn checked(&self, ctx: &Context) -> Result<Vec<Node>> {
        let chosen = self.choose(ctx);
        if chosen.is_empty() {
            return Err(Error::other(
                ErrorKind::InvalidInput,
                format!(
                    "no EC2 node to remove in cluster {} (protected nodes are never picked)",
                    ctx.cluster().name()
                ),
            ));
        }
        if let Some(n) = chosen.iter().find(|n| n.is_protected()) {
            return Err(Error::other(
                ErrorKind::InvalidInput,
                format!("node {} is protected from scale-in", n.name),
            )
            .on_node(n.name.clone()));
        }
        if let Some(n) = chosen.iter().find(|n| n.instance_id.is_none()) {
            return Err(Error::other(
                ErrorKind::InvalidInput,
                format!("node {} is not an EC2 instance", n.name),
            )
            .on_node(n.name.clone()));
        }
        let size = ctx.cluster().len();
        // Saturating: a minimum read from a file may be as large as it likes.
        if size < chosen.len().saturating_add(self.min_nodes) {
            return Err(AwsError::BelowMinimum {
                cluster: ctx.cluster().name().to_owned(),
                size,
                removing: chosen.len(),
                minimum: self.min_nodes,
            }
            .into());
        }
        Ok(chosen)
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
            Pick::Newest => format!(
                "the {} newest node(s), the Availability Zones kept balanced first",
                self.count
            ),
            Pick::Oldest => format!(
                "the {} oldest node(s), the Availability Zones kept balanced first",
                self.count
            ),
        };
        let lb = self
            .aws
            .load_balancers_text()
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

    /// What a run would remove: none when it would refuse (below the
    /// cluster's minimum, a protected target), as the run does.
    fn nodes_to_remove(&self, ctx: &Context) -> Vec<Node> {
        self.checked(ctx).unwrap_or_default()
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let started = tokio::time::Instant::now();
        let step = ctx.step_name().to_owned();
        let chosen = self.checked(ctx)?;
        let ids: Vec<String> = chosen
            .iter()
            .filter_map(|n| n.instance_id.clone())
            .collect();
        let mut record = Removal {
            instance_ids: ids.clone(),
            ..Removal::default()
        };

        // Out of every load balancer first, so they drain side by side.
        for (elb, lb) in self.aws.load_balancers() {
            record.load_balancers.push(lb.to_owned());
            *ctx.step_output_mut::<Removal>() = record.clone();
            elb.deregister(lb, &ids).await?;
            info!(step = %step, load_balancer = %lb, instances = ?ids, "Deregistered; draining.");
        }
        for (elb, lb) in self.aws.load_balancers() {
            self.drain(ctx, elb, lb, &ids).await?;
        }

        record.terminating = true;
        *ctx.step_output_mut::<Removal>() = record;
        terminate_and_wait(
            self.aws.ec2(),
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
                .aws
                .load_balancers_text()
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
        let Some(record) = ctx.step_output::<Removal>(&step).cloned() else {
            return Ok(());
        };
        if record.terminating {
            warn!(step = %step, instances = ?record.instance_ids, "Terminated instances cannot be brought back.");
            return Ok(());
        }
        for (elb, lb) in self.aws.load_balancers() {
            if record.load_balancers.iter().any(|l| l == lb) {
                elb.register(lb, &record.instance_ids).await?;
                info!(step = %step, load_balancer = %lb, instances = ?record.instance_ids, "Registered again.");
            }
        }
        // Done: a second undo has nothing left to register.
        *ctx.step_output_mut::<Removal>() = Removal::default();
        Ok(())
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
