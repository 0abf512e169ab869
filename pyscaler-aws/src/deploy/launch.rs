//! The launch itself: the zones of the profile's subnets, each zone's share
//! of the new nodes ([`spread`]), one RunInstances call per zone used, each
//! with its own ClientToken ([`zone_client_token`]), and the capacity
//! fallback: a zone refused for capacity passes its share to the next zone,
//! and when every zone refused an instance type, the next type is tried.

use pyscaler_core::{Classify, Cluster, Context, Error, ErrorKind, NodeState, Result};
use tracing::{info, warn};

use super::placement::spread;
use super::{zone_client_token, DeployEc2Node, Launched};
use crate::node::{name_tag, next_free_number, zone_of, TAG_CLUSTER, TAG_RUN, TAG_STEP};
use crate::{AwsError, Instance, LaunchSpec, Market, SpotFallback};

/// One place a launch can go: an Availability Zone and the subnet used there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Zone {
    /// The Availability Zone, when looked up (a profile with several subnets).
    pub(super) name: Option<String>,
    /// The subnet to launch into; none: EC2's default subnet.
    pub(super) subnet_id: Option<String>,
}

impl Zone {
    /// How the report names it: `us-east-1a (subnet-a)`, or the subnet alone.
    pub(super) fn label(&self) -> String {
        match (&self.name, &self.subnet_id) {
            (Some(zone), Some(subnet)) => format!("{zone} ({subnet})"),
            (Some(zone), None) => zone.clone(),
            (None, Some(subnet)) => subnet.clone(),
            (None, None) => "the default subnet".to_owned(),
        }
    }

    /// How many live nodes of `cluster` run in this zone (none is known for
    /// a zone that was not looked up: there is no other to balance with).
    fn nodes_in(&self, cluster: &Cluster) -> usize {
        let Some(name) = &self.name else {
            return 0;
        };
        cluster
            .nodes()
            .iter()
            .filter(|n| {
                !matches!(
                    n.state,
                    NodeState::Stopping | NodeState::Stopped | NodeState::Terminated
                )
            })
            .filter(|n| zone_of(n) == Some(name.as_str()))
            .count()
    }
}

/// One RunInstances call of a launch.
struct Call<'a> {
    zone: &'a Zone,
    /// None: the launch template's.
    instance_type: Option<&'a str>,
    market: Market,
    /// The number of its first node's name.
    first: u32,
    /// MaxCount.
    share: u32,
    /// MinCount.
    min: u32,
    client_token: String,
}

/// What the calls of one launch started, in call order, and each attempt
/// that moved on.
#[derive(Debug, Default)]
pub(super) struct Placed {
    /// The instances, as RunInstances answered.
    pub(super) instances: Vec<Instance>,
    /// Each call refused for capacity, and where its share went, for the
    /// report (`t3.small in us-east-1a (subnet-a): InsufficientInstanceCapacity; ...`).
    pub(super) notes: Vec<String>,
}

/// How one call ended, when it did not fail the step.
enum Answer {
    /// EC2 started these.
    Started(Vec<Instance>),
    /// EC2 had no capacity there ([`AwsError::is_capacity_refusal`]).
    NoCapacity(AwsError),
}

impl DeployEc2Node {
    /// The zones new nodes can go to, in the profile's order: one per
    /// Availability Zone of its subnets (the first subnet named in each),
    /// read with one DescribeSubnets call. A profile with one subnet or none
    /// has one zone, not looked up.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] for a subnet EC2 does not know; the
    /// API's refusal (`InvalidSubnetID.NotFound` names the subnets).
    pub(super) async fn zones(&self) -> Result<Vec<Zone>> {
        let subnets = self.aws.profile.subnet_ids();
        if subnets.len() < 2 {
            return Ok(vec![Zone {
                name: None,
                subnet_id: subnets.first().cloned(),
            }]);
        }
        let found = self.aws.ec2.describe_subnets(subnets).await?;
        let mut zones: Vec<Zone> = Vec::new();
        for id in subnets {
            let Some(subnet) = found.iter().find(|s| &s.id == id) else {
                return Err(AwsError::invalid(
                    "subnet_ids",
                    format!("EC2 does not know subnet `{id}`"),
                )
                .into());
            };
            let zone = Some(subnet.availability_zone.clone());
            if !zones.iter().any(|z| z.name == zone) {
                zones.push(Zone {
                    name: zone,
                    subnet_id: Some(id.clone()),
                });
            }
        }
        Ok(zones)
    }

    /// Launches this run's count of instances over `zones`: each zone's share
    /// as [`spread`] says from the cluster's live nodes per zone, one call per
    /// zone used. A zone refused for capacity passes what is left to the
    /// zones still open (by the same rule); when every zone refused an
    /// instance type, the profile's next type is tried in every zone. The
    /// step's record ([`Launched`]) follows every call, so compensation finds
    /// what earlier calls started when a later one fails.
    ///
    /// # Errors
    /// The first call refused for another reason than capacity, or never
    /// answered (the record then says so); [`AwsError::NoCapacity`] when
    /// fewer than the minimum could be launched with every type in every zone.
    pub(super) async fn launch_over(&self, ctx: &mut Context, zones: &[Zone]) -> Result<Placed> {
        let total = self.count(ctx) as usize;
        // How many instances may be missing (a partial launch allowed).
        let mut slack = total - self.min_count(ctx) as usize;
        // Of those, how many partial answers left out.
        let mut missing = 0;
        let base = next_free_number(ctx.cluster());
        let mut current: Vec<usize> = zones.iter().map(|z| z.nodes_in(ctx.cluster())).collect();
        let mut calls_in = vec![0u32; zones.len()];
        let mut placed = Placed::default();
        // No type in a profile with a launch template: the template's.
        let mut types: Vec<Option<&str>> = self
            .aws
            .profile
            .instance_types()
            .iter()
            .map(|t| Some(t.as_str()))
            .collect();
        if types.is_empty() {
            types.push(None);
        }
        for (t, &instance_type) in types.iter().enumerate() {
            let type_label = instance_type.unwrap_or("the template's instance type");
            let mut refused = vec![false; zones.len()];
            'plan: loop {
                let left = total - placed.instances.len() - missing;
                if left == 0 {
                    return Ok(placed);
                }
                let open: Vec<usize> = (0..zones.len()).filter(|&z| !refused[z]).collect();
                if open.is_empty() {
                    break 'plan;
                }
                let counts: Vec<usize> = open.iter().map(|&z| current[z]).collect();
                for (&z, share) in open.iter().zip(spread(&counts, left)) {
                    if share == 0 {
                        continue;
                    }
                    let zone = &zones[z];
                    let call = Call {
                        zone,
                        instance_type,
                        market: self.aws.profile.market(),
                        first: base
                            .saturating_add(u32::try_from(placed.instances.len()).unwrap_or(0)),
                        share: u32::try_from(share).unwrap_or(u32::MAX),
                        min: u32::try_from((share - share.min(slack)).max(1)).unwrap_or(1),
                        client_token: zone_client_token(
                            ctx.run_id(),
                            ctx.step_name(),
                            zone.name.as_deref(),
                            calls_in[z],
                        ),
                    };
                    calls_in[z] += 1;
                    let mut answer = self.launch_one(ctx, &call).await?;
                    let mut market = call.market;
                    let spot_refused = match &answer {
                        Answer::NoCapacity(e)
                            if market == Market::Spot
                                && self.aws.profile.spot_fallback() == SpotFallback::OnDemand =>
                        {
                            Some(e.code().unwrap_or("no capacity").to_owned())
                        }
                        _ => None,
                    };
                    if let Some(code) = spot_refused {
                        // The same call again, On-Demand, in the same zone.
                        let note = format!(
                            "spot {type_label} in {} refused ({code}): on-demand there instead",
                            zone.label()
                        );
                        warn!(step = %ctx.step_name(), zone = %zone.label(), instance_type = type_label,
                            count = share, code = %code, "No Spot capacity; launching On-Demand instead.");
                        placed.notes.push(note);
                        market = Market::OnDemand;
                        let on_demand = Call {
                            market,
                            client_token: zone_client_token(
                                ctx.run_id(),
                                ctx.step_name(),
                                zone.name.as_deref(),
                                calls_in[z],
                            ),
                            ..call
                        };
                        calls_in[z] += 1;
                        answer = self.launch_one(ctx, &on_demand).await?;
                    }
                    match answer {
                        Answer::Started(got) => {
                            let short = share.saturating_sub(got.len());
                            slack -= short.min(slack);
                            missing += short;
                            current[z] += got.len();
                            placed.instances.extend(got);
                            let ids = placed.instances.iter().map(|i| i.id.clone()).collect();
                            ctx.step_output_mut::<Launched>().instance_ids = ids;
                        }
                        Answer::NoCapacity(e) => {
                            refused[z] = true;
                            let next = if open.len() > 1 {
                                "its share goes to the other zones".to_owned()
                            } else if let Some(Some(next)) = types.get(t + 1) {
                                format!("no zone left for {type_label}; trying {next}")
                            } else {
                                "no zone or instance type left".to_owned()
                            };
                            let code = e.code().unwrap_or("no capacity");
                            let spot = if market == Market::Spot { "spot " } else { "" };
                            let note = format!(
                                "{spot}{type_label} in {} refused ({code}): {next}",
                                zone.label()
                            );
                            warn!(step = %ctx.step_name(), zone = %zone.label(), instance_type = type_label,
                                count = share, error = %e, "No capacity; {next}.");
                            placed.notes.push(note);
                            continue 'plan;
                        }
                    }
                }
            }
        }
        let left = total - placed.instances.len() - missing;
        if left <= slack {
            // As many as a partial launch allows.
            return Ok(placed);
        }
        Err(AwsError::NoCapacity {
            wanted: total,
            missing: left,
            attempts: placed.notes,
        }
        .into())
    }

    /// One RunInstances call; the record says whether it is in flight, and,
    /// when it is refused, whether EC2 answered.
    ///
    /// # Errors
    /// A refusal other than for capacity, or no answer.
    async fn launch_one(&self, ctx: &mut Context, call: &Call<'_>) -> Result<Answer> {
        let spec = self.spec(ctx, call);
        info!(step = %ctx.step_name(), zone = %call.zone.label(), count = call.share,
            instance_type = call.instance_type.unwrap_or("the template's"),
            client_token = %call.client_token,
            "Launching instances.");
        ctx.step_output_mut::<Launched>().in_flight = true;
        let answer = self.aws.ec2.launch(&spec).await;
        let record = ctx.step_output_mut::<Launched>();
        match answer {
            Ok(got) if got.is_empty() => {
                record.in_flight = false;
                Err(Error::other(
                    ErrorKind::Unexpected,
                    "EC2 RunInstances answered without instances",
                ))
            }
            Ok(got) => {
                record.in_flight = false;
                Ok(Answer::Started(got))
            }
            // EC2 answered: nothing was started by this call.
            Err(e) if e.is_capacity_refusal() => {
                record.in_flight = false;
                Ok(Answer::NoCapacity(e))
            }
            Err(e) => {
                // A definitive refusal (bad input, permissions, token conflict) means
                // nothing was started. After a passing fault an earlier SDK attempt may
                // have launched without us hearing back: compensation searches the tags.
                record.answered = e.code().is_some() && !e.is_retryable();
                // No code: no answer from EC2 at all (a timeout, a dropped connection).
                record.in_flight = e.code().is_none();
                Err(e.into())
            }
        }
    }

    fn spec(&self, ctx: &Context, call: &Call<'_>) -> LaunchSpec {
        let cluster = ctx.cluster().name();
        let profile = &self.aws.profile;
        let mut tags = profile.tags().clone();
        tags.insert("Name".into(), name_tag(cluster, call.first, call.share));
        tags.insert(TAG_CLUSTER.into(), cluster.to_owned());
        tags.insert(TAG_RUN.into(), ctx.run_id().to_string());
        tags.insert(TAG_STEP.into(), ctx.step_name().to_owned());
        LaunchSpec {
            launch_template: profile.launch_template().cloned(),
            image_id: profile.image_id().map(str::to_owned),
            instance_type: call.instance_type.map(str::to_owned),
            key_name: profile.key_name().map(str::to_owned),
            security_group_ids: profile.security_group_ids().to_vec(),
            subnet_id: call.zone.subnet_id.clone(),
            user_data: profile.user_data().map(str::to_owned),
            iam_instance_profile: profile.iam_instance_profile().map(str::to_owned),
            tags,
            min_count: call.min,
            max_count: call.share,
            client_token: call.client_token.clone(),
            market: call.market,
        }
    }
}

#[cfg(test)]
mod tests;
