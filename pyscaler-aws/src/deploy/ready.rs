//! Getting launched instances ready: running, reachable on SSH, registered
//! with the load balancer and InService; each wait bounded.

use std::time::Duration;

use pyscaler_core::{Classify, Context, Node, NodeAddress, Result};
use tracing::{info, warn};

use super::{DeployEc2Node, Launched};
use crate::node::node_of;
use crate::wait::Poller;
use crate::{AwsError, HealthState, Instance, InstanceState, LoadBalancer};

/// How many times a refused registration is tried before the step fails.
pub(super) const REGISTER_ATTEMPTS: u32 = 3;

impl DeployEc2Node {
    /// Waits until the launched instances run (and answer on SSH), registers them
    /// and waits until InService: the nodes, each with a summary for the
    /// report (`running (t3.small in us-east-1a), InService in web-lb`).
    pub(super) async fn make_ready(
        &self,
        ctx: &mut Context,
        step: &str,
        ids: &[String],
    ) -> Result<Vec<(Node, String)>> {
        let running = self.wait_running(ctx, ids).await?;
        let mut nodes = Vec::with_capacity(running.len());
        let mut placements = Vec::with_capacity(running.len());
        for instance in &running {
            // The address the profile asks for must exist once running.
            self.aws.profile.ssh().address_of(instance)?;
            nodes.push(node_of(instance, &self.aws.profile));
            let instance_type = instance
                .instance_type
                .as_deref()
                .or(self.aws.profile.instance_type())
                .unwrap_or("the template's instance type");
            let mut placed = match &instance.availability_zone {
                Some(zone) => format!("{instance_type} in {zone}"),
                None => instance_type.to_owned(),
            };
            // A Spot profile says which each node got.
            if self.aws.profile.market() == crate::Market::Spot {
                placed.push_str(&format!(", {}", instance.market));
            }
            placements.push(placed);
        }

        self.read_host_keys(ctx, &mut nodes).await?;
        if let Some(within) = self.ssh_within {
            self.wait_ssh(ctx, &nodes, within).await?;
        }

        let mut registered = String::new();
        if let Some(all) = self.aws.load_balancers_text() {
            ctx.step_output_mut::<Launched>().load_balancers = self
                .aws
                .load_balancer_names()
                .into_iter()
                .map(str::to_owned)
                .collect();
            // Every registration first (one call per load balancer for all
            // the new nodes), so their health checks run side by side.
            for (elb, lb) in self.aws.load_balancers() {
                self.register(ctx, elb, lb, ids).await?;
                info!(step = %step, load_balancer = lb, instances = ?ids, "Registered with the load balancer.");
            }
            // One bound for the whole wait, however many load balancers.
            let mut poller = Poller::new(&self.poll, self.in_service_within);
            for (elb, lb) in self.aws.load_balancers() {
                self.wait_in_service(ctx, &mut poller, elb, lb, ids).await?;
            }
            registered = format!(", InService in {all}");
        }
        let mut ready: Vec<(Node, String)> = nodes
            .into_iter()
            .zip(placements)
            .map(|(node, placed)| (node, format!("running ({placed}){registered}")))
            .collect();
        ready.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(ready)
    }

    async fn wait_running(&self, ctx: &Context, ids: &[String]) -> Result<Vec<Instance>> {
        let mut poller = Poller::new(&self.poll, self.running_within);
        let mut last = String::from("not yet visible");
        while poller.tick(ctx.cancellation()).await? {
            let instances = match self.aws.ec2.describe(ids).await {
                Ok(i) => i,
                // Right after a launch EC2 may not know the ids yet (eventual consistency).
                Err(e) if e.has_code("InvalidInstanceID.NotFound") => continue,
                Err(e) if e.is_retryable() => {
                    warn!(error = %e, "Describing the new instances failed; polling again.");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(lost) = instances.iter().find(|i| {
                i.state.is_gone()
                    || matches!(i.state, InstanceState::Stopping | InstanceState::Stopped)
            }) {
                return Err(AwsError::InstanceLost {
                    instance_id: lost.id.clone(),
                    state: lost.state,
                    reason: lost.state_reason.clone(),
                }
                .into());
            }
            let running = instances
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .count();
            if running == ids.len() && instances.len() == ids.len() {
                return Ok(instances);
            }
            last = instances
                .iter()
                .map(|i| format!("{} {}", i.id, i.state))
                .collect::<Vec<_>>()
                .join(", ");
        }
        Err(AwsError::WaitTimedOut {
            what: format!("{} to run (last seen: {last})", ids.join(", ")),
            after: poller.within(),
        }
        .into())
    }

    async fn wait_ssh(&self, ctx: &Context, nodes: &[Node], within: Duration) -> Result<()> {
        let mut waiting: Vec<&NodeAddress> =
            nodes.iter().filter_map(|n| n.address.as_ref()).collect();
        waiting.dedup();
        let mut poller = Poller::new(&self.poll, within);
        while poller.tick(ctx.cancellation()).await? {
            let mut still = Vec::new();
            for addr in waiting {
                let attempt = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect((addr.host.as_str(), addr.port)),
                )
                .await;
                if !matches!(attempt, Ok(Ok(_))) {
                    still.push(addr);
                }
            }
            waiting = still;
            if waiting.is_empty() {
                return Ok(());
            }
        }
        let names: Vec<String> = waiting.iter().map(|a| a.to_string()).collect();
        Err(AwsError::WaitTimedOut {
            what: format!("SSH to accept connections at {}", names.join(", ")),
            after: poller.within(),
        }
        .into())
    }

    async fn wait_in_service(
        &self,
        ctx: &Context,
        poller: &mut Poller,
        elb: &dyn LoadBalancer,
        lb: &str,
        ids: &[String],
    ) -> Result<()> {
        let mut last = String::from("no answer yet");
        while poller.tick(ctx.cancellation()).await? {
            let health = match elb.health(lb, ids).await {
                Ok(h) => h,
                Err(e) if e.is_retryable() => {
                    warn!(error = %e, "Asking the load balancer for health failed; polling again.");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let in_service = ids.iter().all(|id| {
                health
                    .iter()
                    .any(|h| &h.instance_id == id && h.state == HealthState::InService)
            });
            if in_service {
                return Ok(());
            }
            last = health
                .iter()
                .filter(|h| h.state != HealthState::InService)
                .map(|h| match &h.reason {
                    Some(r) => format!("{} {}: {r}", h.instance_id, h.state),
                    None => format!("{} {}", h.instance_id, h.state),
                })
                .collect::<Vec<_>>()
                .join("; ");
        }
        Err(AwsError::WaitTimedOut {
            what: format!(
                "{} to be InService in {lb} (last seen: {last})",
                ids.join(", ")
            ),
            after: poller.within(),
        }
        .into())
    }

    /// Checks, before anything is launched, that the launch template the
    /// profile names exists at its version (DescribeLaunchTemplates).
    ///
    /// # Errors
    /// [`AwsError::LaunchTemplateNotFound`] naming it; the API's refusal.
    pub(super) async fn check_launch_template(&self) -> Result<()> {
        let Some(template) = self.aws.profile.launch_template() else {
            return Ok(());
        };
        let not_found = |latest| AwsError::LaunchTemplateNotFound {
            template: template.to_string(),
            latest,
        };
        match self.aws.ec2.describe_launch_template(template).await? {
            None => Err(not_found(None).into()),
            Some(info) => match template.version {
                crate::TemplateVersion::Number(n) if n > info.latest_version => {
                    Err(not_found(Some(info.latest_version)).into())
                }
                _ => Ok(()),
            },
        }
    }

    /// Checks, before anything is launched, that each load balancer the
    /// profile names exists (DescribeLoadBalancers, DescribeTargetGroups).
    ///
    /// # Errors
    /// [`AwsError::LoadBalancerNotFound`] naming the first missing; the API's refusal.
    pub(super) async fn check_load_balancers(&self) -> Result<()> {
        for (elb, lb) in self.aws.load_balancers() {
            if !elb.exists(lb).await? {
                return Err(AwsError::LoadBalancerNotFound {
                    load_balancer: lb.to_owned(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Registers the instances, retrying a passing refusal as a registration
    /// ([`REGISTER_ATTEMPTS`] tries, spaced as polls are, within the
    /// InService bound): the launch is never repeated for it.
    async fn register(
        &self,
        ctx: &Context,
        elb: &dyn LoadBalancer,
        lb: &str,
        ids: &[String],
    ) -> Result<()> {
        let mut poller = Poller::new(&self.poll, self.in_service_within);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let e = match elb.register(lb, ids).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if e.is_retryable()
                && attempts < REGISTER_ATTEMPTS
                && poller.tick(ctx.cancellation()).await?
            {
                warn!(load_balancer = lb, attempt = attempts, error = %e, "Registration refused; trying again.");
                continue;
            }
            if !e.is_retryable() {
                // A definitive refusal (LoadBalancerNotFound, InvalidInstance)
                // names the load balancer already.
                return Err(e.into());
            }
            // moto answers a registration with an unknown classic load
            // balancer with a bare HTTP 500 and no code (AWS says
            // LoadBalancerNotFound): ask whether it exists.
            if e.code().is_none() && matches!(elb.exists(lb).await, Ok(false)) {
                return Err(AwsError::LoadBalancerNotFound {
                    load_balancer: lb.to_owned(),
                }
                .into());
            }
            return Err(AwsError::RegistrationFailed {
                load_balancer: lb.to_owned(),
                instance_ids: ids.to_vec(),
                attempts,
                source: Box::new(e),
            }
            .into());
        }
    }
}
