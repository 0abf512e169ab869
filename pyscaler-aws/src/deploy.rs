//! `DeployEc2Node`: launch instances, wait for them, put them behind the load balancer.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{Action, Context, Effects, NodeOutcome, Result, RunId};
use tracing::info;

use crate::attempts::SdkAttempts;
use crate::node::node_name;
use crate::wait::Backoff;
use crate::{Aws, InstanceState};

mod adopt;
mod builder;
mod host_keys;
mod launch;
mod placement;
mod ready;
mod withdraw;

pub use builder::DeployEc2NodeBuilder;

/// What one `DeployEc2Node` step launched: the step's output
/// ([`Context::step_output`], under the step's name), so that its withdrawal
/// and compensation can undo it, also after a run that failed or timed out
/// half-way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Launched {
    /// The step's ClientToken ([`client_token`]). A launch over several
    /// Availability Zones gives each zone's call its own
    /// ([`zone_client_token`]).
    pub client_token: String,
    /// Whether EC2 answered the launch call (then `instance_ids` is all it started;
    /// otherwise compensation looks the instances up by their tags).
    pub answered: bool,
    /// Whether the launch call went out and neither an answer nor a refusal
    /// came back (a timeout, a dropped connection, a run cut short while
    /// waiting): EC2 may have started instances that no search shows yet.
    pub in_flight: bool,
    /// The instances started.
    pub instance_ids: Vec<String>,
    /// The load balancers they were (or were being) registered with: set
    /// before the first registration call.
    pub load_balancers: Vec<String>,
    /// The instances the withdrawal of a failed run ([`Action::withdraw`])
    /// took out of the load balancer already: compensation does not
    /// deregister them again.
    pub withdrawn: Vec<String>,
    /// Whether compensation has undone the launch.
    pub undone: bool,
}

/// The ClientToken of a launch: the same for every attempt of one step of one
/// run (so a retried launch, or one resumed by a restarted controller, never
/// starts a second set of instances), different for every other step or run.
/// At most 64 ASCII characters, as EC2 requires.
pub fn client_token(run_id: &RunId, step: &str) -> String {
    // FNV-1a: stable across Rust versions and processes, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run_id.as_str().bytes().chain([0]).chain(step.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let run: String = run_id
        .as_str()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(46)
        .collect();
    format!("{run}-{hash:016x}")
}

/// The ClientToken of one RunInstances call of a step that spreads its nodes
/// over several Availability Zones: derived from the run, the step, the zone
/// and how many calls the step made in that zone before (`nth`: a zone that
/// takes over another's share is called again), so a retried or resumed step
/// sends each call the same token and EC2 starts each set once. The first
/// call where no zone was looked up (one subnet, or none) has the step's
/// [`client_token`]. At most 64 ASCII characters.
pub fn zone_client_token(run_id: &RunId, step: &str, zone: Option<&str>, nth: u32) -> String {
    match (zone, nth) {
        (None, 0) => client_token(run_id, step),
        (zone, nth) => client_token(
            run_id,
            &format!("{step}\0{}\0{nth}", zone.unwrap_or_default()),
        ),
    }
}

/// Launches EC2 instances for the cluster and puts them behind its load balancer:
/// the "deploy a new VM" and "add the node to the load balancer" steps.
///
/// One RunInstances call starts `count` instances (all or nothing unless
/// [`DeployEc2NodeBuilder::allow_partial`]), tagged at launch with `Name`
/// (`<cluster>-NN`, the next free number; `<cluster>-NN..MM` for a batch),
/// `pyscaler:cluster`, `pyscaler:run`, `pyscaler:step` and the profile's tags.
/// Its ClientToken comes from the run id and the step ([`client_token`]), so a
/// retry never launches twice. The action then waits until the instances run
/// (polling with backoff), optionally until their SSH port answers, registers
/// them all with the load balancer in one call and waits until they are
/// InService. The nodes join the [`Context`] as this run's new nodes.
///
/// When a run fails, the engine first withdraws the step ([`Action::withdraw`]):
/// one bounded call deregisters its instances from the load balancer, so a
/// broken node stops serving before the run's slower undos (Puppet, scripts
/// over SSH) start. Compensation then deregisters what is still registered,
/// terminates and waits until terminated; it is safe to run twice, and works
/// after a run that failed or timed out half-way (the instances are kept in
/// the step's output, [`Launched`], or found by their tags).
///
/// ```no_run
/// # async fn example() -> Result<(), pyscaler_core::Error> {
/// use pyscaler_aws::{Aws, ClientConfig, DeployEc2Node, Ec2Profile};
/// use pyscaler_core::{ActionExt, Pipeline, Target};
///
/// let profile = Ec2Profile::builder("eu-west-1", "ami-0abcdef1234567890", "t3.small")
///     .load_balancer("web-lb")
///     .build()?;
/// let aws = Aws::connect(&ClientConfig::for_profile(&profile), profile).await;
/// let deploy = DeployEc2Node::builder(&aws).count(2).build()?;
/// let pipeline = Pipeline::builder("scale-out").step(deploy.on(Target::None)).build()?;
/// # let _ = pipeline;
/// # Ok(())
/// # }
/// ```
pub struct DeployEc2Node {
    aws: Aws,
    count: u32,
    min_count: u32,
    poll: Backoff,
    running_within: Duration,
    ssh_within: Option<Duration>,
    host_keys_within: Duration,
    in_service_within: Duration,
    terminated_within: Duration,
    unanswered_within: Duration,
    withdrawn_within: Duration,
}

impl fmt::Debug for DeployEc2Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployEc2Node")
            .field("aws", &self.aws)
            .field("count", &self.count)
            .field("min_count", &self.min_count)
            .field("running_within", &self.running_within)
            .field("ssh_within", &self.ssh_within)
            .field("host_keys_within", &self.host_keys_within)
            .field("in_service_within", &self.in_service_within)
            .finish_non_exhaustive()
    }
}

impl DeployEc2Node {
    /// How many instances this run launches: what the scaler's decision
    /// asked for ([`TriggerInfo::nodes`](pyscaler_core::TriggerInfo::nodes),
    /// already capped by its bounds), or the step's count.
    pub(super) fn count(&self, ctx: &Context) -> u32 {
        ctx.trigger()
            .nodes
            .map_or(self.count, |n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The fewest instances this run accepts: all it launches, unless the
    /// step allows a partial launch ([`DeployEc2NodeBuilder::allow_partial`]).
    pub(super) fn min_count(&self, ctx: &Context) -> u32 {
        let count = self.count(ctx);
        if self.min_count == self.count {
            count
        } else {
            self.min_count.min(count)
        }
    }
}

impl DeployEc2Node {
    async fn run_counted(&self, ctx: &mut Context, sdk: &SdkAttempts) -> Result<()> {
        let started = tokio::time::Instant::now();
        let step = ctx.step_name().to_owned();
        // Nothing is launched for a load balancer or a launch template that
        // does not exist.
        self.check_load_balancers().await?;
        self.check_launch_template().await?;
        let token = client_token(ctx.run_id(), &step);
        let before = ctx.step_output_mut::<Launched>().clone();
        {
            let record = ctx.step_output_mut::<Launched>();
            record.client_token.clone_from(&token);
            record.undone = false;
            record.withdrawn.clear();
        }
        // This step may have launched before: a retry of the step (whatever
        // the last attempt heard back), a resumed run (its controller died
        // during this step), or an unanswered launch. EC2 may already run
        // that launch's instances: they are taken over rather than launched
        // again. The ClientToken gives the same guarantee on AWS while EC2
        // remembers it; this one also holds where the token is ignored (moto,
        // some API emulators) or forgotten.
        let repeated = ctx.is_resumed()
            || ctx.attempt() > 1
            || before.in_flight
            || !before.instance_ids.is_empty();
        let adopted = if repeated {
            self.earlier_launch(ctx, &step).await?
        } else {
            Vec::new()
        };
        let adopting = !adopted.is_empty();
        let (instances, moved_on) = if !adopting {
            // The subnets' zones are read once per launch, before it.
            let zones = self.zones().await?;
            let placed = self.launch_over(ctx, &zones).await?;
            (placed.instances, placed.notes)
        } else {
            info!(step = %step, instances = ?adopted.iter().map(|i| &i.id).collect::<Vec<_>>(),
                "Taking over the instances an earlier attempt of this step launched.");
            (adopted, Vec::new())
        };
        // Each launch call refused for capacity, and where its share went.
        let moved_on = if moved_on.is_empty() {
            String::new()
        } else {
            format!("; placed after: {}", moved_on.join("; "))
        };
        // The SDK sent a RunInstances more than once: a server that did not
        // replay the ClientToken started a set for each.
        let launches = sdk.of("RunInstances");
        let sdk_repeated = launches.attempts > launches.calls;
        let (instances, surplus) = if repeated || sdk_repeated {
            let registered_before = ctx.is_resumed() || !before.load_balancers.is_empty();
            // What was taken over is what a search just found.
            let found = adopting.then(|| instances.clone());
            self.reconcile(ctx, &step, instances, found, registered_before)
                .await?
        } else {
            (instances, Vec::new())
        };
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        {
            let record = ctx.step_output_mut::<Launched>();
            record.answered = true;
            record.in_flight = false;
            record.instance_ids.clone_from(&ids);
        }
        let took = started.elapsed();
        for extra in &surplus {
            ctx.record_node(
                NodeOutcome::ok(
                    extra.id.clone(),
                    format!(
                        "terminated {}: surplus of a repeated launch (a second {})",
                        extra.id,
                        node_name(extra)
                    ),
                )
                .with_duration(took),
            );
        }
        info!(step = %step, instances = ?ids, "Launched; waiting until they run.");

        let ready = self.make_ready(ctx, &step, &ids).await;
        let took = started.elapsed();
        let retries = sdk.retries().map(|r| format!("; {r}")).unwrap_or_default();
        match ready {
            Ok(ready) => {
                let mut nodes = Vec::with_capacity(ready.len());
                for (node, summary) in ready {
                    info!(step = %step, node = %node, "Node ready.");
                    ctx.record_node(
                        NodeOutcome::ok(
                            node.name.clone(),
                            format!("launched {}: {summary}{moved_on}{retries}", node.id),
                        )
                        .with_duration(took),
                    );
                    nodes.push(node);
                }
                ctx.add_new_nodes(nodes);
                Ok(())
            }
            Err(e) => {
                // Every launched instance is named in the report, with why it is not ready.
                for instance in &instances {
                    ctx.record_node(
                        NodeOutcome::failed(
                            node_name(instance),
                            format!("{}: {e}{moved_on}{retries}", instance.id),
                        )
                        .with_duration(took),
                    );
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Action for DeployEc2Node {
    fn name(&self) -> &str {
        "deploy-ec2-node"
    }

    fn describe(&self) -> Effects {
        let profile = &self.aws.profile;
        let what = profile
            .instance_type()
            .map(|t| format!(" {t}"))
            .unwrap_or_default();
        let from = match (profile.launch_template(), profile.image_id()) {
            (Some(t), Some(image)) => format!("launch template {t} with {image}"),
            (Some(t), None) => format!("launch template {t}"),
            (None, image) => image.unwrap_or_default().to_owned(),
        };
        let mut e = Effects::says(format!(
            "launch {}{what} from {from} in {}",
            self.count,
            profile.region()
        ))
        .adding(self.count as usize);
        if profile.subnet_ids().len() > 1 {
            e.summary.push(format!(
                "spread them over the Availability Zones of {}, the zone with the fewest nodes first",
                profile.subnet_ids().join(", ")
            ));
        }
        if let Some((_, fallbacks)) = profile.instance_types().split_first() {
            if !fallbacks.is_empty() {
                e.summary.push(format!(
                    "without capacity in any zone, fall back on {}",
                    fallbacks.join(", then ")
                ));
            }
        }
        if profile.market() == crate::Market::Spot {
            e.summary.push(match profile.spot_fallback() {
                crate::SpotFallback::OnDemand => {
                    "as one-time Spot Instances, On-Demand where a zone has no Spot capacity"
                        .to_owned()
                }
                _ => "as one-time Spot Instances".to_owned(),
            });
        }
        if profile.ssh().host_keys == crate::HostKeySource::ConsoleOutput {
            e.summary.push(
                "read each instance's host key fingerprints from its console output, for the \
                 SSH steps to accept only those keys"
                    .to_owned(),
            );
        }
        if let Some(lb) = self.aws.load_balancers_text() {
            let noun = if self.aws.elbs.len() > 1 {
                "load balancers"
            } else {
                "load balancer"
            };
            e.summary.push(format!(
                "register them with {noun} {lb} and wait until InService"
            ));
        }
        e
    }

    /// The summary, with the client token and the run: what a crashed
    /// controller's journal needs to tell which launch was under way.
    fn intent(&self, ctx: &Context) -> Vec<String> {
        let mut intent = self.describe().summary;
        if let Some(first) = intent.first_mut() {
            let token = client_token(ctx.run_id(), ctx.step_name());
            if self.aws.profile.subnet_ids().len() > 1 {
                first.push_str(&format!(
                    " with a client token per Availability Zone, derived from the run, the step \
                     and the zone (the step's own is {token}), for run {}",
                    ctx.run_id()
                ));
            } else {
                first.push_str(&format!(
                    " with client token {token} for run {}",
                    ctx.run_id()
                ));
            }
        }
        intent
    }

    /// Yes: the launch carries a ClientToken, and a repeated run takes over
    /// the instances an earlier attempt started (found by the run's tags).
    fn repeatable(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        // Every SDK call of the step is counted, attempts included, for the report.
        let sdk = SdkAttempts::default();
        sdk.scope(self.run_counted(ctx, &sdk)).await
    }

    /// Deregisters the step's instances from the load balancer, in one
    /// bounded call, without waiting for draining.
    async fn withdraw(&self, ctx: &mut Context) -> Result<()> {
        self.withdraw_launched(ctx).await
    }

    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let step = ctx.step_name().to_owned();
        let record = ctx.step_output::<Launched>(&step).cloned();
        if record.as_ref().is_some_and(|r| r.undone) {
            return Ok(());
        }
        // What the launch answered, and whatever else carries this run's and
        // step's tags: a launch whose answer never reached us, or an earlier
        // attempt's instances where the ClientToken was not honoured.
        let tags = adopt::step_tags(ctx, &step);
        let alive = InstanceState::LIVE;
        let mut found = self.aws.ec2().find_by_tags(&tags, &alive).await?;
        if record.as_ref().is_some_and(|r| r.in_flight) {
            found = self.settle_unanswered(ctx, &tags, &alive, found).await?;
        }
        let mut ids: Vec<String> = record
            .as_ref()
            .filter(|r| r.answered)
            .map(|r| r.instance_ids.clone())
            .unwrap_or_default();
        for instance in found {
            if !ids.contains(&instance.id) {
                ids.push(instance.id);
            }
        }
        // Registered where the record says; when the launch's answer never
        // came, possibly with the profile's load balancer. Not again when the
        // withdrawal took them all out already.
        let registered = match &record {
            Some(r) if ids.iter().all(|id| r.withdrawn.contains(id)) => false,
            Some(r) if r.answered => !r.load_balancers.is_empty(),
            _ => true,
        };
        // Taken out by the withdrawal: still drained before they go.
        let withdrawn = record.as_ref().is_some_and(|r| !r.withdrawn.is_empty());
        if !ids.is_empty() {
            let deregister_error = self
                .aws
                .retire(
                    (registered, withdrawn),
                    &self.poll,
                    self.terminated_within,
                    &ids,
                )
                .await?;
            // They are gone: the nodes leave the cluster.
            ctx.forget_new_nodes(&ids);
            if let Some(e) = deregister_error {
                return Err(e.into());
            }
        }
        let record = ctx.step_output_mut::<Launched>();
        record.undone = true;
        record.answered = true;
        record.in_flight = false;
        record.instance_ids = ids;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
