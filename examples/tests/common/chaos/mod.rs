//! A randomized fault campaign (issue 17): cycles of scale-out and
//! scale-in of the Tomcat example's pipeline (light assets, every action,
//! an ALB target group and a classic ELB, the journal and the lease in
//! DynamoDB) on the local stack, a host of its own per instance; before
//! each run, faults drawn from a seed ([`plan`]); after each, the five
//! invariants ([`invariants`]) through the providers' own APIs.
//!
//! Where the faults come from: the AWS ones from the harness's fault proxy
//! (every EC2, ELB and DynamoDB call of the controller goes through it);
//! the node ones from the node hosts (an sshd stopped, every process of a
//! node paused with SIGSTOP); Puppet, the script and the application from
//! fault flags the campaign's assets read; the SMTP server and Prometheus
//! down as nothing listening at the address the controller was given;
//! the controller killed with SIGKILL and restarted ([`controller`]). A
//! controller that lost its lease (renewals late on a loaded machine: the
//! campaign's lease is 6 s) is restarted the same way.

pub(crate) mod assets;
mod controller;
mod invariants;
pub(crate) mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pyscaler_aws::{
    ClassicElb, ClientConfig, InstanceState, SdkEc2, StaticCredentials, TargetGroups,
};
use pyscaler_demo::LocalStack;
use pyscaler_testkit::fault_proxy::{Fault as ProxyFault, FaultProxy};
use pyscaler_testkit::moto;

use crate::faults_support::{config_copy, set, tomcat_cluster, Store, CLUSTER};
use invariants::Providers;
use plan::{Cycle, Fault, Phase};

/// The classic ELB the campaign adds beside the stack's target group.
const CLASSIC: &str = "chaos-classic";
/// The campaign's step timeouts: a paused node outlasts the longest.
const PUPPET_TIMEOUT: Duration = Duration::from_secs(20);
const PAUSE_FOR: Duration = Duration::from_secs(PUPPET_TIMEOUT.as_secs() + 2);
/// The application the assets serve, and what its page says.
const APP_PORT: u16 = 8080;
const APP_PATH: &str = "/demo/";
const APP_TEXT: &str = "pyscaler demo app";

/// What the campaign counted: the table it prints.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) cycles: u32,
    pub(crate) runs: u32,
    pub(crate) succeeded: u32,
    pub(crate) failed: u32,
    pub(crate) faults: BTreeMap<&'static str, u32>,
    pub(crate) crashes: u32,
    /// Controllers that lost their lease mid-run and were restarted.
    pub(crate) leases_lost: u32,
    pub(crate) recoveries: u32,
    pub(crate) violations: u32,
    pub(crate) launched: usize,
    pub(crate) terminated: usize,
    pub(crate) slowest_recovery: Duration,
    pub(crate) took: Duration,
}

/// The campaign: a local stack, the fault proxy, the configs.
pub(crate) struct Campaign {
    pub(crate) stack: LocalStack,
    proxy: FaultProxy,
    providers: Providers,
    /// DynamoDB itself (not through the proxy), to take the lease.
    dynamo: aws_sdk_dynamodb::Client,
    config: PathBuf,
    smtp_down: PathBuf,
    prometheus_down: PathBuf,
    flags: PathBuf,
    subnets: Vec<String>,
    dir: PathBuf,
    /// Takes the lease from the controller of every phase this long after
    /// it starts, as another controller would once this one's renewals
    /// were late (the regression tests of seeds 2027 and 2028).
    pub(crate) steal_lease_after: Option<Duration>,
    pub(crate) stats: Stats,
}

impl Campaign {
    /// Starts the stack, the proxy and a classic ELB, writes the assets and
    /// configs, and runs one clean scale-out, so every cycle has an old node
    /// whose member list the cluster update rewrites.
    pub(crate) async fn start() -> Self {
        let stack = LocalStack::start().await;
        stack.moto.create_load_balancer(CLASSIC).await;
        let proxy = FaultProxy::start(&stack.moto);
        let dir = stack.dir.join("chaos");
        let flags = dir.join("flags");
        let assets = assets::write(&dir.join("assets"), &flags);
        let text = std::fs::read_to_string(&stack.config).expect("read the stack's config");
        let table: toml::Table = text.parse().expect("the stack's config is TOML");
        let subnets: Vec<String> = table["ec2"]["subnet_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let dead = format!("http://127.0.0.1:{}", pyscaler_testkit::free_port());
        let target_group = stack.load_balancer.clone();
        let write = |name: &str, edit: &dyn Fn(&mut toml::Table)| {
            let path = config_copy(&stack, name, |t| {
                t.insert("assets".into(), assets.display().to_string().into());
                set(t, "ec2", "endpoint_url", proxy.endpoint_url());
                let mut tg = toml::Table::new();
                tg.insert("target_group".into(), target_group.clone().into());
                let mut classic = toml::Table::new();
                classic.insert("classic".into(), CLASSIC.into());
                set(
                    t,
                    "ec2",
                    "load_balancers",
                    toml::Value::Array(vec![tg.into(), classic.into()]),
                );
                set(t, "ssh", "command_timeout", "8s");
                set(t, "tomcat", "ready_within", "4s");
                set(
                    t,
                    "tomcat",
                    "puppet_timeout",
                    format!("{}s", PUPPET_TIMEOUT.as_secs()),
                );
                set(t, "deploy", "ssh_within", "20s");
                set(t, "deploy", "in_service_within", "30s");
                set(t, "watch", "min_nodes", 1);
                set(t, "watch", "draining", "1s");
                set(t, "watch", "interval", "1s");
                set(t, "watch", "window", "2s");
                edit(t);
            });
            Store::Dynamo.config(&stack, &path)
        };
        let config = write("chaos", &|_| {});
        let smtp_down = write("chaos-smtp-down", &|t| {
            set(t, "smtp", "port", i64::from(pyscaler_testkit::free_port()));
        });
        let prometheus_down = write("chaos-prometheus-down", &|t| {
            let mut p = toml::Table::new();
            p.insert("url".into(), dead.clone().into());
            p.insert("query".into(), "avg(pyscaler_demo_load)".into());
            set(t, "watch", "prometheus", p);
        });
        let aws = ClientConfig::new(moto::REGION)
            .endpoint_url(stack.moto.endpoint_url())
            .credentials(StaticCredentials::new(
                moto::ACCESS_KEY_ID,
                moto::SECRET_ACCESS_KEY,
            ));
        let dynamo = crate::faults_support::dynamo_client(&stack).await;
        let providers = Providers {
            ec2: SdkEc2::connect(&aws).await,
            target_groups: TargetGroups::connect(&aws).await,
            classic: ClassicElb::connect(&aws).await,
            target_group,
            classic_name: CLASSIC.to_owned(),
            cluster: CLUSTER.to_owned(),
        };
        let mut campaign = Self {
            stack,
            proxy,
            providers,
            dynamo,
            config,
            smtp_down,
            prometheus_down,
            flags,
            subnets,
            dir,
            steal_lease_after: None,
            stats: Stats::default(),
        };
        campaign
            .phase(&Phase::default(), true, "base")
            .await
            .unwrap_or_else(|e| panic!("the clean scale-out before the campaign: {e}"));
        campaign.stats = Stats::default();
        campaign
    }

    /// Runs `cycles` cycles of the campaign seeded `seed`, from cycle
    /// `first`; stops at the first broken invariant, with the seed, the
    /// cycle's plan and the invariant.
    pub(crate) async fn run(&mut self, seed: u64, first: u32, cycles: u32) -> Result<(), String> {
        let began = Instant::now();
        for number in first..first + cycles {
            let plan = Cycle::draw(seed, number);
            println!("chaos: {plan}");
            let checked = self.cycle(&plan).await;
            self.stats.cycles += 1;
            self.stats.took = began.elapsed();
            if let Err(broken) = checked {
                self.stats.violations += 1;
                self.count_instances().await;
                return Err(format!(
                    "chaos campaign: seed {seed}, cycle {number} broke an invariant\n  plan: {plan}\n  first broken: {broken}\n  replay: scripts/chaos 1 {seed} {number}"
                ));
            }
        }
        self.count_instances().await;
        Ok(())
    }

    async fn count_instances(&mut self) {
        let all = invariants::instances(&self.providers).await;
        self.stats.launched = all.len();
        self.stats.terminated = all
            .iter()
            .filter(|i| i.state == InstanceState::Terminated)
            .count();
    }

    async fn cycle(&mut self, plan: &Cycle) -> Result<(), String> {
        if plan.prometheus_down {
            self.watch_without_prometheus().await?;
        }
        let tag = format!("{}-{}", plan.seed, plan.number);
        self.phase(&plan.scale_out, true, &format!("{tag}-out"))
            .await?;
        let live = invariants::instances(&self.providers)
            .await
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count();
        if live > 1 {
            self.phase(&plan.scale_in, false, &format!("{tag}-in"))
                .await?;
        }
        Ok(())
    }

    /// A watch with the load high and nothing answering at Prometheus'
    /// address must not scale: no launch, no run.
    async fn watch_without_prometheus(&mut self) -> Result<(), String> {
        *self.stats.faults.entry("prometheus down").or_default() += 1;
        self.stack.set_load(5.0);
        let launches = self.proxy.executed("RunInstances");
        let runs = Store::Dynamo.runs(&self.stack).await.len();
        let report = self.dir.join("prometheus-down.json");
        let output = tokio::task::block_in_place(|| {
            tomcat_cluster(&self.stack, &self.prometheus_down, &report)
                .args(["watch", "--runs", "1", "--timeout", "4s"])
                .output()
                .expect("run tomcat_cluster watch")
        });
        let after = Store::Dynamo.runs(&self.stack).await.len();
        if self.proxy.executed("RunInstances") != launches || after != runs {
            return Err(format!(
                "a watch scaled while Prometheus was down: {}",
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        Ok(())
    }

    /// One run (a scale-out, or a scale-in) under the phase's faults, then
    /// the invariants.
    async fn phase(&mut self, phase: &Phase, scale_out: bool, tag: &str) -> Result<(), String> {
        let config = if phase.faults.contains(&Fault::SmtpDown) {
            self.smtp_down.clone()
        } else {
            self.config.clone()
        };
        self.arm(phase);
        let report = self.dir.join(format!("{tag}.json"));
        let args: &[&str] = if scale_out {
            &["run", "--reason", "chaos campaign"]
        } else {
            &["scale-in", "--reason", "chaos campaign"]
        };
        let theft = self.steal_lease_after.map(|after| {
            let dynamo = self.dynamo.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                steal_lease(&dynamo).await
            })
        });
        let stack = &self.stack;
        let command = |report: &Path| tomcat_cluster(stack, &config, report);
        let outcome = tokio::task::block_in_place(|| {
            controller::run(&command, &report, args, phase, stack.nodes(), PAUSE_FOR)
        });
        if let Some(theft) = theft {
            if let Ok(Err(e)) = theft.await {
                return Err(format!("could not take the lease: {e}"));
            }
        }
        self.disarm();
        self.stats.runs += 1;
        for f in &phase.faults {
            *self.stats.faults.entry(f.kind()).or_default() += 1;
        }
        if outcome.killed {
            self.stats.crashes += 1;
        }
        if let Some(hung) = &outcome.hung {
            return Err(format!(
                "{hung}\n{}{}",
                outcome.output, outcome.recovery_output
            ));
        }
        if outcome.lease_lost {
            self.stats.leases_lost += 1;
        }
        if outcome.killed || outcome.lease_lost {
            if outcome.recovery.is_none() {
                return Err(format!(
                    "the restarted controller could not recover:\n{}",
                    outcome.recovery_output
                ));
            }
            self.stats.recoveries += 1;
            let took = outcome.recovery.unwrap_or_default();
            self.stats.slowest_recovery = self.stats.slowest_recovery.max(took);
        }
        match outcome.exit {
            Some(0) => self.stats.succeeded += 1,
            Some(_) => self.stats.failed += 1,
            None => {}
        }
        // The node hosts follow moto within half a second.
        tokio::time::sleep(Duration::from_millis(600)).await;
        // The controllers' own words explain a broken invariant.
        self.check(phase, scale_out, &report, &outcome)
            .await
            .map_err(|broken| {
                format!(
                    "{broken}\n  controller output (last lines):\n{}",
                    tail(
                        &format!("{}{}", outcome.output, outcome.recovery_output),
                        60
                    )
                )
            })
    }

    async fn check(
        &self,
        phase: &Phase,
        scale_out: bool,
        report: &Path,
        outcome: &controller::Outcome,
    ) -> Result<(), String> {
        let instances = invariants::instances(&self.providers).await;
        let runs = Store::Dynamo.runs(&self.stack).await;
        let calls = self.proxy.calls();
        invariants::only_succeeded_runs_run(&instances, &runs)?;
        invariants::balancers_hold_only_running(&self.providers, &instances).await?;
        invariants::one_launch_per_token(&calls)?;
        // The report of the run, or of its resumption after a kill (or a
        // lost lease).
        let mut reports = Vec::new();
        if !outcome.killed {
            reports.extend(controller::read_report(report));
        }
        if (outcome.killed || outcome.lease_lost) && phase.resume {
            for attempt in 0..4 {
                reports.extend(controller::read_report(
                    &report.with_extension(format!("recover-{attempt}.json")),
                ));
            }
        }
        if !outcome.killed && outcome.exit != Some(2) && reports.is_empty() {
            return Err(format!(
                "invariant 4: the run wrote no report:\n{}",
                outcome.output
            ));
        }
        invariants::every_run_ended(&runs, None)?;
        for r in &reports {
            invariants::every_run_ended(&[], Some(r))?;
            if r["status"] != "succeeded" && r["status"] != "completed_with_failures" {
                continue;
            }
            if scale_out {
                let added = invariants::report_nodes(r, "nodes_added");
                invariants::new_nodes_answer(&added, APP_PORT, APP_PATH, APP_TEXT).await?;
            } else {
                let removed = invariants::report_nodes(r, "nodes_removed");
                invariants::deregistered_before_terminated(&removed, &calls)?;
            }
        }
        Ok(())
    }

    /// Arms the phase's AWS faults in the proxy and raises its flags.
    fn arm(&self, phase: &Phase) {
        for f in &phase.faults {
            match *f {
                Fault::Throttle { action, times } => self
                    .proxy
                    .inject(ProxyFault::error(action, "RequestLimitExceeded").times(times)),
                Fault::ServerError {
                    action,
                    status,
                    times,
                } => self
                    .proxy
                    .inject(ProxyFault::status(action, status).times(times)),
                Fault::LostAnswer { action } => self
                    .proxy
                    .inject(ProxyFault::error(action, "ServiceUnavailable").after_execution()),
                Fault::NoCapacity { zone } => {
                    if let Some(subnet) = self.subnets.get(usize::from(zone)) {
                        self.proxy.inject(
                            ProxyFault::error("RunInstances", "InsufficientInstanceCapacity")
                                .matching("SubnetId", subnet)
                                .always(),
                        );
                    }
                }
                Fault::DynamoThrottle { action, times } => self.proxy.inject(
                    ProxyFault::error(action, "ProvisionedThroughputExceededException")
                        .times(times),
                ),
                Fault::PuppetFails => assets::flag(&self.flags, assets::PUPPET_FAILS, true),
                Fault::ScriptFails => assets::flag(&self.flags, assets::SCRIPT_FAILS, true),
                Fault::NeverHealthy => assets::flag(&self.flags, assets::NEVER_HEALTHY, true),
                Fault::SmtpDown | Fault::SshdStopped { .. } | Fault::NodePaused { .. } => {}
            }
        }
    }

    fn disarm(&self) {
        self.proxy.clear_faults();
        for flag in [
            assets::PUPPET_FAILS,
            assets::SCRIPT_FAILS,
            assets::NEVER_HEALTHY,
        ] {
            assets::flag(&self.flags, flag, false);
        }
    }

    /// The campaign's table, in Markdown.
    pub(crate) fn table(&self, seed: u64) -> String {
        let s = &self.stats;
        let mut t = format!(
            "| chaos campaign, seed {seed} | |\n|---|---|\n\
             | cycles | {} |\n| runs (scale-out and scale-in) | {} |\n\
             | runs succeeded / failed and undone | {} / {} |\n",
            s.cycles, s.runs, s.succeeded, s.failed
        );
        let total: u32 = s.faults.values().sum();
        t.push_str(&format!("| faults injected | {total} |\n"));
        for (kind, n) in &s.faults {
            t.push_str(&format!("| - {kind} | {n} |\n"));
        }
        t.push_str(&format!(
            "| controller killed (SIGKILL) / lost its lease / recovered | {} / {} / {} |\n\
             | invariant violations | {} |\n\
             | instances launched / terminated | {} / {} |\n\
             | slowest recovery | {:.1} s |\n| took | {:.0} s |\n",
            s.crashes,
            s.leases_lost,
            s.recoveries,
            s.violations,
            s.launched,
            s.terminated,
            s.slowest_recovery.as_secs_f64(),
            s.took.as_secs_f64()
        ));
        t
    }
}

/// Takes the cluster's lease in DynamoDB for another owner (the next epoch,
/// for the campaign's lease duration), as a second controller would once
/// the first one's lease had lapsed.
async fn steal_lease(dynamo: &aws_sdk_dynamodb::Client) -> Result<(), String> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    dynamo
        .update_item()
        .table_name("pyscaler")
        .key("pk", AttributeValue::S(format!("cluster#{CLUSTER}")))
        .key("sk", AttributeValue::S("lease".into()))
        .update_expression("SET #o = :thief, expires_ms = :exp, epoch = epoch + :one")
        .condition_expression("attribute_exists(epoch)")
        .expression_attribute_names("#o", "owner")
        .expression_attribute_values(":thief", AttributeValue::S("chaos-thief".into()))
        .expression_attribute_values(":exp", AttributeValue::N((now + 6_000).to_string()))
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

/// The last `n` lines of `text`, indented.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}
