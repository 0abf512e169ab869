//! Withdrawing a failed run's new nodes: out of the load balancer first, in
//! one bounded call, before the slower undos of later steps run.

use pyscaler_core::{Context, Result};
use tracing::info;

use super::{adopt, DeployEc2Node, Launched};
use crate::terminate::deregister_all;
use crate::{AwsError, InstanceState};

impl DeployEc2Node {
    /// Deregisters the instances this step registered (or, when this
    /// controller did not see the step register them, every live instance of
    /// the step's tags) from the load balancer, within
    /// [`DeployEc2NodeBuilder::withdrawn_within`](super::DeployEc2NodeBuilder::withdrawn_within),
    /// without waiting for draining, and records them as withdrawn so
    /// compensation does not deregister them again.
    ///
    /// # Errors
    /// The load balancer refusing (other than "already gone"), or the bound
    /// running out; compensation then deregisters before it terminates.
    pub(super) async fn withdraw_launched(&self, ctx: &mut Context) -> Result<()> {
        let Some(lb) = self.aws.load_balancers_text() else {
            return Ok(());
        };
        let step = ctx.step_name().to_owned();
        let record = ctx.step_output::<Launched>(&step).cloned();
        let known = match &record {
            Some(r) if r.undone => return Ok(()),
            // A run recovered after its controller died, or resumed: the
            // registration may have happened in the earlier life.
            _ if ctx.is_recovering() || ctx.is_resumed() => None,
            None => None,
            // Registration comes after an answered launch and records the
            // load balancer first: without it, nothing was registered.
            Some(r) if r.load_balancers.is_empty() => return Ok(()),
            Some(r) => Some(r.instance_ids.clone()),
        };
        let out = tokio::time::timeout(self.withdrawn_within, self.deregister_from(ctx, known))
            .await
            .map_err(|_| AwsError::WaitTimedOut {
                what: format!("{lb} to deregister the instances of step {step}"),
                after: self.withdrawn_within,
            })??;
        if !out.is_empty() {
            info!(step = %step, load_balancer = %lb, instances = ?out,
                "Withdrawn: out of the load balancer before the run's other undos.");
            let record = ctx.step_output_mut::<Launched>();
            for id in out {
                if !record.withdrawn.contains(&id) {
                    record.withdrawn.push(id);
                }
            }
        }
        Ok(())
    }

    /// Deregisters `known` (or the step's live instances, found by its tags)
    /// from each load balancer; returns the instances that are out.
    async fn deregister_from(
        &self,
        ctx: &Context,
        known: Option<Vec<String>>,
    ) -> Result<Vec<String>> {
        let ids = match known {
            Some(ids) => ids,
            None => {
                let alive = InstanceState::LIVE;
                let tags = adopt::step_tags(ctx, ctx.step_name());
                let found = self.aws.ec2().find_by_tags(&tags, &alive).await?;
                found.into_iter().map(|i| i.id).collect()
            }
        };
        if ids.is_empty() {
            return Ok(ids);
        }
        // One id not registered makes the whole call fail with nothing
        // deregistered: `deregister_all` then takes them out one by one.
        for (elb, lb) in self.aws.load_balancers() {
            deregister_all(elb, lb, &ids).await?;
        }
        Ok(ids)
    }
}
