//! Launches that may have happened before: taking over what an earlier
//! attempt of the step started, and reconciling after a launch that may have
//! been repeated, so a step ends with exactly the instances it accounts for.

use std::collections::BTreeSet;

use pyscaler_core::{Classify, Context, Result};
use tracing::{info, warn};

use super::DeployEc2Node;
use crate::node::{node_name, TAG_CLUSTER, TAG_RUN, TAG_STEP};
use crate::wait::Poller;
use crate::{AwsError, Instance, InstanceState};

/// The tags every instance of this run's step carries.
pub(super) fn step_tags(ctx: &Context, step: &str) -> [(String, String); 3] {
    [
        (TAG_CLUSTER.to_owned(), ctx.cluster().name().to_owned()),
        (TAG_RUN.to_owned(), ctx.run_id().to_string()),
        (TAG_STEP.to_owned(), step.to_owned()),
    ]
}

/// Splits the candidates (the answered or adopted ones first) into those the
/// step keeps, up to `count` and never two with the same node name (two
/// launches of one step carry the same `Name` range), and the surplus.
pub(super) fn pick(
    answered: Vec<Instance>,
    found: Vec<Instance>,
    count: usize,
) -> (Vec<Instance>, Vec<Instance>) {
    let mut others: Vec<Instance> = found
        .into_iter()
        .filter(|f| !answered.iter().any(|a| a.id == f.id))
        .collect();
    others.sort_by(|a, b| {
        a.launched_at
            .cmp(&b.launched_at)
            .then(a.launch_index.cmp(&b.launch_index))
            .then(a.id.cmp(&b.id))
    });
    let (mut kept, mut surplus) = (Vec::new(), Vec::new());
    let mut names = BTreeSet::new();
    for i in answered.into_iter().chain(others) {
        let usable = matches!(i.state, InstanceState::Pending | InstanceState::Running);
        if usable && kept.len() < count && names.insert(node_name(&i)) {
            kept.push(i);
        } else {
            surplus.push(i);
        }
    }
    (kept, surplus)
}

impl DeployEc2Node {
    /// The live instances an earlier attempt of this step launched (found by
    /// the run's and the step's tags), when there are at least `min_count`.
    pub(super) async fn earlier_launch(&self, ctx: &Context, step: &str) -> Result<Vec<Instance>> {
        let tags = step_tags(ctx, step);
        let alive = [InstanceState::Pending, InstanceState::Running];
        let mut found = self.aws.ec2.find_by_tags(&tags, &alive).await?;
        if found.is_empty() {
            return Ok(found);
        }
        // Some showed up: the rest of that launch may not be visible yet
        // (DescribeInstances is eventually consistent).
        found = self.settle_unanswered(ctx, &tags, &alive, found).await?;
        let min_count = self.min_count(ctx);
        if found.len() < min_count as usize {
            // Launching anew would leave these running beside the new set,
            // untracked once the run succeeds: fail, and the step's undo
            // terminates them (it finds them by the same tags).
            return Err(AwsError::WaitTimedOut {
                what: format!(
                    "the instances an earlier attempt of {step} launched to show up \
                     (found {} of at least {})",
                    found.len(),
                    min_count
                ),
                after: self.unanswered_within,
            }
            .into());
        }
        found.sort_by_key(|i| i.launch_index);
        Ok(found)
    }

    /// After a launch whose answer never came: searches the run's tags until
    /// `count` instances show up or [`DeployEc2NodeBuilder::unanswered_launch_within`]
    /// passes, and returns what it found.
    pub(super) async fn settle_unanswered(
        &self,
        ctx: &Context,
        tags: &[(String, String)],
        alive: &[InstanceState],
        mut found: Vec<Instance>,
    ) -> Result<Vec<Instance>> {
        let wanted = self.count(ctx) as usize;
        let mut poller = Poller::new(&self.poll, self.unanswered_within);
        while found.len() < wanted && poller.tick(ctx.cancellation()).await? {
            match self.aws.ec2.find_by_tags(tags, alive).await {
                Ok(now) => found = now,
                Err(e) if e.is_retryable() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if found.len() < wanted {
            warn!(
                step = %ctx.step_name(),
                found = found.len(),
                wanted,
                within = ?self.unanswered_within,
                "The launch was never answered and fewer instances than asked for showed up; \
                 any that appear later carry the run's tags, and the orphan sweep terminates them."
            );
        }
        Ok(found)
    }

    /// After a launch that may have been repeated (the SDK retried it, or the
    /// step runs again after a retry or a resume): every live instance of this
    /// run's step is looked up by its tags (unless `found` holds a search just
    /// made), the step keeps up to `count` of them ([`pick`]), and the surplus
    /// is terminated (deregistered first when an earlier attempt may have
    /// registered it) before anything is registered. Returns what was kept
    /// and what was terminated.
    ///
    /// # Errors
    /// The search or the termination failing; the step's undo then finds
    /// every instance by the same tags.
    pub(super) async fn reconcile(
        &self,
        ctx: &Context,
        step: &str,
        answered: Vec<Instance>,
        found: Option<Vec<Instance>>,
        registered_before: bool,
    ) -> Result<(Vec<Instance>, Vec<Instance>)> {
        let found = match found {
            Some(found) => found,
            None => {
                let live = InstanceState::LIVE;
                self.aws
                    .ec2
                    .find_by_tags(&step_tags(ctx, step), &live)
                    .await?
            }
        };
        let (kept, surplus) = pick(answered, found, self.count(ctx) as usize);
        if surplus.is_empty() {
            return Ok((kept, surplus));
        }
        let ids: Vec<String> = surplus.iter().map(|i| i.id.clone()).collect();
        warn!(step = %step, surplus = ?ids, kept = ?kept.iter().map(|i| &i.id).collect::<Vec<_>>(),
            "A repeated launch started more instances than the step asked for; terminating the surplus.");
        if let Some(e) = self
            .aws
            .retire(
                (registered_before, false),
                &self.poll,
                self.terminated_within,
                &ids,
            )
            .await?
        {
            return Err(e.into());
        }
        info!(step = %step, surplus = ?ids, "Terminated the surplus of a repeated launch.");
        Ok((kept, surplus))
    }
}
