//! `DeployEc2Node`: launch instances, wait for them, put them behind the load balancer.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pyscaler_core::{
    Action, Context, Effects, Error, ErrorKind, Node, NodeAddress, NodeOutcome, Result,
    RetryPolicy, RunId,
};
use tracing::{info, warn};

use crate::node::{name_tag, next_free_number, node_name, node_of, TAG_CLUSTER, TAG_RUN, TAG_STEP};
use crate::terminate::deregister_and_terminate;
use crate::wait::{default_poll, Poller};
use crate::{
    AwsError, Ec2, Ec2Profile, HealthState, Instance, InstanceState, LaunchSpec, LoadBalancer,
};

/// What one `DeployEc2Node` step launched, kept in the [`Context`] outputs (in
/// [`Launches`]) so that its compensation can undo it, also after a run that
/// failed or timed out half-way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Launched {
    /// The ClientToken of the launch.
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
    /// The load balancer they were (or were being) registered with.
    pub load_balancer: Option<String>,
    /// Whether compensation has undone the launch.
    pub undone: bool,
}

/// Every [`Launched`] of a run, by step name: the type `DeployEc2Node` keeps in the outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launches {
    by_step: BTreeMap<String, Launched>,
}

impl Launches {
    /// What the step named `step` launched.
    pub fn get(&self, step: &str) -> Option<&Launched> {
        self.by_step.get(step)
    }

    /// Every launch, by step name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Launched)> {
        self.by_step.iter().map(|(k, v)| (k.as_str(), v))
    }
}

fn launched<'a>(ctx: &'a mut Context, step: &str) -> &'a mut Launched {
    if ctx.outputs().get::<Launches>().is_none() {
        ctx.outputs_mut().insert(Launches::default());
    }
    ctx.outputs_mut()
        .get_mut::<Launches>()
        .expect("inserted just above")
        .by_step
        .entry(step.to_owned())
        .or_default()
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
/// Compensation deregisters, terminates and waits until terminated; it is safe
/// to run twice, and works after a run that failed or timed out half-way (the
/// instances are kept in the outputs as [`Launches`], or found by their tags).
///
/// ```no_run
/// # async fn example() -> Result<(), pyscaler_core::Error> {
/// use std::sync::Arc;
/// use pyscaler_aws::{ClassicElb, ClientConfig, DeployEc2Node, Ec2Profile, SdkEc2};
/// use pyscaler_core::{ActionExt, Pipeline, Target};
///
/// let profile = Ec2Profile::builder("eu-west-1", "ami-0abcdef1234567890", "t3.small")
///     .load_balancer("web-lb")
///     .build()?;
/// let config = ClientConfig::for_profile(&profile);
/// let deploy = DeployEc2Node::builder(
///     Arc::new(SdkEc2::connect(&config).await),
///     Some(Arc::new(ClassicElb::connect(&config).await)),
///     profile,
/// )
/// .count(2)
/// .build()?;
/// let pipeline = Pipeline::builder("scale-out").step(deploy.on(Target::None)).build()?;
/// # let _ = pipeline;
/// # Ok(())
/// # }
/// ```
pub struct DeployEc2Node {
    ec2: Arc<dyn Ec2>,
    elb: Option<Arc<dyn LoadBalancer>>,
    profile: Ec2Profile,
    count: u32,
    min_count: u32,
    poll: RetryPolicy,
    running_within: Duration,
    ssh_within: Option<Duration>,
    in_service_within: Duration,
    terminated_within: Duration,
    unanswered_within: Duration,
}

impl fmt::Debug for DeployEc2Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployEc2Node")
            .field("profile", &self.profile)
            .field("count", &self.count)
            .field("min_count", &self.min_count)
            .field("load_balancer", &self.elb.as_ref().map(|_| ()))
            .field("running_within", &self.running_within)
            .field("ssh_within", &self.ssh_within)
            .field("in_service_within", &self.in_service_within)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DeployEc2Node`]; [`DeployEc2NodeBuilder::build`] reports the first mistake.
pub struct DeployEc2NodeBuilder {
    inner: DeployEc2Node,
    min_count: Option<u32>,
}

impl fmt::Debug for DeployEc2NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployEc2NodeBuilder")
            .field("inner", &self.inner)
            .finish()
    }
}

impl DeployEc2Node {
    /// Starts building: the EC2 provider, the load balancer provider (needed
    /// when the profile names a load balancer), and the profile.
    pub fn builder(
        ec2: Arc<dyn Ec2>,
        elb: Option<Arc<dyn LoadBalancer>>,
        profile: Ec2Profile,
    ) -> DeployEc2NodeBuilder {
        DeployEc2NodeBuilder {
            inner: DeployEc2Node {
                ec2,
                elb,
                profile,
                count: 1,
                min_count: 1,
                poll: default_poll(),
                running_within: Duration::from_secs(300),
                ssh_within: None,
                in_service_within: Duration::from_secs(300),
                terminated_within: Duration::from_secs(300),
                unanswered_within: Duration::from_secs(30),
            },
            min_count: None,
        }
    }
}

impl DeployEc2NodeBuilder {
    /// How many instances to launch (1 by default).
    pub fn count(mut self, n: u32) -> Self {
        self.inner.count = n;
        self
    }

    /// Accepts a launch that starts at least `min` instances (MinCount) instead of all.
    pub fn allow_partial(mut self, min: u32) -> Self {
        self.min_count = Some(min);
        self
    }

    /// How polls are spaced (first after ~0.5 s, doubling, capped at 5 s by default).
    pub fn poll(mut self, policy: RetryPolicy) -> Self {
        self.inner.poll = policy;
        self
    }

    /// Bounds the wait until the instances run (5 min by default).
    pub fn running_within(mut self, d: Duration) -> Self {
        self.inner.running_within = d;
        self
    }

    /// Also waits, up to `d`, until each node's SSH port accepts connections.
    pub fn wait_for_ssh(mut self, d: Duration) -> Self {
        self.inner.ssh_within = Some(d);
        self
    }

    /// Bounds the wait until the load balancer says InService (5 min by default).
    pub fn in_service_within(mut self, d: Duration) -> Self {
        self.inner.in_service_within = d;
        self
    }

    /// Bounds compensation's wait until the instances are terminated (5 min by default).
    pub fn terminated_within(mut self, d: Duration) -> Self {
        self.inner.terminated_within = d;
        self
    }

    /// Bounds how long compensation keeps looking for the instances of a
    /// launch whose answer never came (30 s by default).
    ///
    /// EC2 may act on a RunInstances call whose answer is lost (a timeout, a
    /// dropped connection, a run cut short), and a search by tags right after
    /// a launch can miss instances that are starting (DescribeInstances is
    /// eventually consistent). So after such a launch compensation searches
    /// the run's tags until it has found `count` instances or this bound
    /// passes. Instances that appear even later are the orphan sweep's
    /// ([`crate::sweep_orphans`]): they carry the run's tags.
    pub fn unanswered_launch_within(mut self, d: Duration) -> Self {
        self.inner.unanswered_within = d;
        self
    }

    /// Checks the settings and builds the action.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] for a zero count, a minimum above the count,
    /// a profile naming a load balancer without a load balancer provider (or
    /// the reverse), or a zero bound.
    pub fn build(self) -> Result<DeployEc2Node, AwsError> {
        let mut a = self.inner;
        if a.count == 0 {
            return Err(AwsError::invalid(
                "count",
                "is 0: launch at least one instance",
            ));
        }
        a.min_count = self.min_count.unwrap_or(a.count);
        if a.min_count == 0 || a.min_count > a.count {
            return Err(AwsError::invalid(
                "allow_partial",
                format!(
                    "minimum {} must be between 1 and the count {}",
                    a.min_count, a.count
                ),
            ));
        }
        match (a.profile.load_balancer(), a.elb.is_some()) {
            (Some(lb), false) => {
                return Err(AwsError::invalid(
                    "load balancer",
                    format!("the profile names `{lb}` but no LoadBalancer provider was given"),
                ))
            }
            (None, true) => {
                return Err(AwsError::invalid(
                    "load balancer",
                    "a LoadBalancer provider was given but the profile names no load balancer",
                ))
            }
            _ => {}
        }
        for (name, d) in [
            ("running_within", Some(a.running_within)),
            ("wait_for_ssh", a.ssh_within),
            ("in_service_within", Some(a.in_service_within)),
            ("terminated_within", Some(a.terminated_within)),
            ("unanswered_launch_within", Some(a.unanswered_within)),
        ] {
            if d == Some(Duration::ZERO) {
                return Err(AwsError::invalid(name, "is 0"));
            }
        }
        Ok(a)
    }
}

impl DeployEc2Node {
    /// The live instances an earlier attempt of this step launched (found by
    /// the run's and the step's tags), when there are at least `min_count`.
    async fn earlier_launch(&self, ctx: &Context, step: &str) -> Result<Vec<Instance>> {
        let tags = [
            (TAG_CLUSTER.to_owned(), ctx.cluster().name().to_owned()),
            (TAG_RUN.to_owned(), ctx.run_id().to_string()),
            (TAG_STEP.to_owned(), step.to_owned()),
        ];
        let alive = [InstanceState::Pending, InstanceState::Running];
        let mut found = self.ec2.find_by_tags(&tags, &alive).await?;
        if found.is_empty() {
            return Ok(found);
        }
        // Some showed up: the rest of that launch may not be visible yet
        // (DescribeInstances is eventually consistent).
        found = self.settle_unanswered(ctx, &tags, &alive, found).await?;
        if found.len() < self.min_count as usize {
            // Launching anew would leave these running beside the new set,
            // untracked once the run succeeds: fail, and the step's undo
            // terminates them (it finds them by the same tags).
            return Err(AwsError::WaitTimedOut {
                what: format!(
                    "the instances an earlier attempt of {step} launched to show up \
                     (found {} of at least {})",
                    found.len(),
                    self.min_count
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
    async fn settle_unanswered(
        &self,
        ctx: &Context,
        tags: &[(String, String)],
        alive: &[InstanceState],
        mut found: Vec<Instance>,
    ) -> Result<Vec<Instance>> {
        let wanted = self.count as usize;
        let mut poller = Poller::new(&self.poll, self.unanswered_within);
        while found.len() < wanted && poller.tick(ctx.cancellation()).await? {
            match self.ec2.find_by_tags(tags, alive).await {
                Ok(now) => found = now,
                Err(e) if pyscaler_core::Classify::is_retryable(&e) => continue,
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

    fn spec(&self, ctx: &Context, token: &str, first: u32) -> LaunchSpec {
        let cluster = ctx.cluster().name();
        let mut tags = self.profile.tags().clone();
        tags.insert("Name".into(), name_tag(cluster, first, self.count));
        tags.insert(TAG_CLUSTER.into(), cluster.to_owned());
        tags.insert(TAG_RUN.into(), ctx.run_id().to_string());
        tags.insert(TAG_STEP.into(), ctx.step_name().to_owned());
        LaunchSpec {
            image_id: self.profile.image_id().to_owned(),
            instance_type: self.profile.instance_type().to_owned(),
            key_name: self.profile.key_name().map(str::to_owned),
            security_group_ids: self.profile.security_group_ids().to_vec(),
            subnet_id: self.profile.subnet_id().map(str::to_owned),
            user_data: self.profile.user_data().map(str::to_owned),
            iam_instance_profile: self.profile.iam_instance_profile().map(str::to_owned),
            tags,
            min_count: self.min_count,
            max_count: self.count,
            client_token: token.to_owned(),
        }
    }

    /// Waits until the launched instances run (and answer on SSH), registers them
    /// and waits until InService: the nodes, and a summary for the report.
    async fn make_ready(
        &self,
        ctx: &mut Context,
        step: &str,
        ids: &[String],
    ) -> Result<(Vec<Node>, String)> {
        let running = self.wait_running(ctx, ids).await?;
        let mut nodes = Vec::with_capacity(running.len());
        for instance in &running {
            // The address the profile asks for must exist once running.
            self.profile.ssh().address_of(instance)?;
            nodes.push(node_of(instance, &self.profile));
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));

        if let Some(within) = self.ssh_within {
            self.wait_ssh(ctx, &nodes, within).await?;
        }

        let mut summary = format!("running ({})", self.profile.instance_type());
        if let (Some(elb), Some(lb)) = (&self.elb, self.profile.load_balancer()) {
            launched(ctx, step).load_balancer = Some(lb.to_owned());
            elb.register(lb, ids).await?;
            info!(step = %step, load_balancer = lb, instances = ?ids, "Registered with the load balancer.");
            self.wait_in_service(ctx, elb.as_ref(), lb, ids).await?;
            summary.push_str(&format!(", InService in {lb}"));
        }
        Ok((nodes, summary))
    }

    async fn wait_running(&self, ctx: &Context, ids: &[String]) -> Result<Vec<Instance>> {
        let mut poller = Poller::new(&self.poll, self.running_within);
        let mut last = String::from("not yet visible");
        while poller.tick(ctx.cancellation()).await? {
            let instances = match self.ec2.describe(ids).await {
                Ok(i) => i,
                // Right after a launch EC2 may not know the ids yet (eventual consistency).
                Err(e) if e.has_code("InvalidInstanceID.NotFound") => continue,
                Err(e) if pyscaler_core::Classify::is_retryable(&e) => {
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
        elb: &dyn LoadBalancer,
        lb: &str,
        ids: &[String],
    ) -> Result<()> {
        let mut poller = Poller::new(&self.poll, self.in_service_within);
        let mut last = String::from("no answer yet");
        while poller.tick(ctx.cancellation()).await? {
            let health = match elb.health(lb, ids).await {
                Ok(h) => h,
                Err(e) if pyscaler_core::Classify::is_retryable(&e) => {
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
}

#[async_trait]
impl Action for DeployEc2Node {
    fn name(&self) -> &str {
        "deploy-ec2-node"
    }

    fn describe(&self) -> Effects {
        let mut e = Effects::says(format!(
            "launch {} {} from {} in {}",
            self.count,
            self.profile.instance_type(),
            self.profile.image_id(),
            self.profile.region()
        ))
        .adding(self.count as usize);
        if let Some(lb) = self.profile.load_balancer() {
            e.summary.push(format!(
                "register them with load balancer {lb} and wait until InService"
            ));
        }
        e
    }

    /// The summary, with the client token and the run: what a crashed
    /// controller's journal needs to tell which launch was under way.
    fn intent(&self, ctx: &Context) -> Vec<String> {
        let mut intent = self.describe().summary;
        if let Some(first) = intent.first_mut() {
            first.push_str(&format!(
                " with client token {} for run {}",
                client_token(ctx.run_id(), ctx.step_name()),
                ctx.run_id()
            ));
        }
        intent
    }

    /// Yes: the launch carries a ClientToken, and a repeated run takes over
    /// the instances an earlier attempt started (found by the run's tags).
    fn repeatable(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let started = tokio::time::Instant::now();
        let step = ctx.step_name().to_owned();
        let token = client_token(ctx.run_id(), &step);
        let first = next_free_number(ctx.cluster());
        let spec = self.spec(ctx, &token, first);
        {
            let record = launched(ctx, &step);
            record.client_token.clone_from(&token);
            record.undone = false;
        }
        // A resumed run (its controller died during this step) or a retry
        // after an unanswered launch: EC2 may already run this launch's
        // instances. They are taken over rather than launched again; the
        // ClientToken gives the same guarantee on AWS, this one also holds
        // where the token is ignored (moto, some API emulators).
        let earlier = ctx.is_resumed()
            || ctx
                .outputs()
                .get::<Launches>()
                .and_then(|l| l.get(&step))
                .is_some_and(|r| r.in_flight);
        let adopted = if earlier {
            self.earlier_launch(ctx, &step).await?
        } else {
            Vec::new()
        };
        let launch = if adopted.is_empty() {
            info!(step = %step, count = self.count, client_token = %token, "Launching instances.");
            launched(ctx, &step).in_flight = true;
            self.ec2.launch(&spec).await
        } else {
            info!(step = %step, instances = ?adopted.iter().map(|i| &i.id).collect::<Vec<_>>(),
                "Taking over the instances an earlier attempt of this step launched.");
            Ok(adopted)
        };
        let instances = match launch {
            Ok(i) => i,
            Err(e) => {
                // A definitive refusal (bad input, permissions, token conflict) means
                // nothing was started. After a passing fault an earlier SDK attempt may
                // have launched without us hearing back: compensation searches the tags.
                let record = launched(ctx, &step);
                record.answered = e.code().is_some() && !pyscaler_core::Classify::is_retryable(&e);
                // No code: no answer from EC2 at all (a timeout, a dropped connection).
                record.in_flight = e.code().is_none();
                return Err(e.into());
            }
        };
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        {
            let record = launched(ctx, &step);
            record.answered = true;
            record.in_flight = false;
            record.instance_ids.clone_from(&ids);
        }
        if ids.is_empty() {
            return Err(Error::other(
                ErrorKind::Unexpected,
                "EC2 RunInstances answered without instances",
            ));
        }
        info!(step = %step, instances = ?ids, "Launched; waiting until they run.");

        match self.make_ready(ctx, &step, &ids).await {
            Ok((nodes, summary)) => {
                let took = started.elapsed();
                for node in &nodes {
                    info!(step = %step, node = %node, "Node ready.");
                    ctx.record_node(
                        NodeOutcome::ok(
                            node.name.clone(),
                            format!("launched {}: {summary}", node.id),
                        )
                        .with_duration(took),
                    );
                }
                ctx.add_new_nodes(nodes);
                Ok(())
            }
            Err(e) => {
                // Every launched instance is named in the report, with why it is not ready.
                let took = started.elapsed();
                for instance in &instances {
                    ctx.record_node(
                        NodeOutcome::failed(node_name(instance), format!("{}: {e}", instance.id))
                            .with_duration(took),
                    );
                }
                Err(e)
            }
        }
    }

    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        let step = ctx.step_name().to_owned();
        let record = ctx
            .outputs()
            .get::<Launches>()
            .and_then(|l| l.get(&step))
            .cloned();
        if record.as_ref().is_some_and(|r| r.undone) {
            return Ok(());
        }
        // What the launch answered, and whatever else carries this run's and
        // step's tags: a launch whose answer never reached us, or an earlier
        // attempt's instances where the ClientToken was not honoured.
        let tags = [
            (TAG_CLUSTER.to_owned(), ctx.cluster().name().to_owned()),
            (TAG_RUN.to_owned(), ctx.run_id().to_string()),
            (TAG_STEP.to_owned(), step.clone()),
        ];
        let alive = [
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::Stopping,
            InstanceState::Stopped,
        ];
        let mut found = self.ec2.find_by_tags(&tags, &alive).await?;
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
        // came, possibly with the profile's load balancer.
        let lb = match &record {
            Some(r) if r.answered => r.load_balancer.clone(),
            _ => self.profile.load_balancer().map(str::to_owned),
        };
        if !ids.is_empty() {
            let elb = match (&self.elb, &lb) {
                (Some(elb), Some(lb)) => Some((elb.as_ref(), lb.as_str())),
                _ => None,
            };
            let deregister_error = deregister_and_terminate(
                self.ec2.as_ref(),
                elb,
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
        let record = launched(ctx, &step);
        record.undone = true;
        record.answered = true;
        record.in_flight = false;
        record.instance_ids = ids;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
