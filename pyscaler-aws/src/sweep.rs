//! The orphan sweep: terminating a cluster's instances whose run did not succeed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pyscaler_core::{
    Action, Context, Effects, Journal, NodeOutcome, Result, RunId, RunRecord, RunState, RunStatus,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::node::{node_name, TAG_CLUSTER, TAG_RUN};
use crate::wait::{default_poll, Backoff};
use crate::{Aws, AwsError, Instance, InstanceState};

/// Why the sweep looked at an instance: what the journal says of its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OrphanReason {
    /// The instance carries the cluster tag but no `pyscaler:run` tag: pyscaler
    /// did not launch it (or someone removed the tag), so it is never touched.
    NoRunTag,
    /// The journal does not know the run (another journal's, or a journal that was lost).
    UnknownRun,
    /// The run started and never finished (its controller died, or it is still running).
    Unfinished,
    /// The run finished without succeeding (failed or cancelled).
    NotSucceeded(RunStatus),
    /// The run never finished and was then recovered (its clean-up missed this instance).
    Recovered,
}

impl fmt::Display for OrphanReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRunTag => f.write_str("no pyscaler:run tag"),
            Self::UnknownRun => f.write_str("run unknown to the journal"),
            Self::Unfinished => f.write_str("run never finished"),
            Self::NotSucceeded(status) => write!(f, "run ended {status}"),
            Self::Recovered => f.write_str("run was recovered"),
        }
    }
}

/// What the sweep did with an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SweepOutcome {
    /// Deregistered from the load balancer (when one is configured) and terminated.
    Terminated,
    /// Launched less than the grace period ago (or at an unknown time): left alone this time.
    WithinGrace,
    /// Not pyscaler's to sweep (no run tag): left alone, reported for an operator.
    Skipped,
}

/// One instance of the cluster whose run the journal does not show as successful.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Orphan {
    /// The instance.
    pub instance_id: String,
    /// Its node name (from its `Name` tag and launch index; its id when untagged).
    #[serde(default)]
    pub node: String,
    /// The run that launched it (its `pyscaler:run` tag), if tagged.
    pub run_id: Option<RunId>,
    /// Why it is an orphan.
    pub reason: OrphanReason,
    /// When it was launched, when EC2 says.
    pub launched_at: Option<DateTime<Utc>>,
    /// What the sweep did with it.
    pub outcome: SweepOutcome,
}

impl fmt::Display for Orphan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let run = self
            .run_id
            .as_ref()
            .map_or("-".to_owned(), RunId::to_string);
        let outcome = match self.outcome {
            SweepOutcome::Terminated => "terminated",
            SweepOutcome::WithinGrace => "within grace, kept",
            SweepOutcome::Skipped => "skipped",
        };
        write!(
            f,
            "{} (run {run}): {}; {outcome}",
            self.instance_id, self.reason
        )
    }
}

/// Finds the instances tagged `pyscaler:cluster = <cluster>` whose
/// `pyscaler:run` the journal does not show as successful
/// ([`RunRecord::succeeded`] is false: unknown, unfinished, failed, cancelled,
/// recovered) and, once they were launched more than the grace period ago,
/// deregisters them from the load balancer and terminates them.
///
/// An instance with the cluster tag but no run tag is reported as skipped and
/// never touched; instances of other clusters are never listed. Build it with
/// [`SweepOrphans::builder`]; call [`SweepOrphans::sweep`] directly, or schedule
/// it as a pipeline step (it is an [`Action`]: as a step it spares the run it is
/// part of, and leaves its report in the context's outputs as `Vec<Orphan>`).
pub struct SweepOrphans {
    aws: Aws,
    journal: Arc<dyn Journal>,
    cluster: String,
    grace: Duration,
    poll: Backoff,
    terminated_within: Duration,
}

impl fmt::Debug for SweepOrphans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SweepOrphans")
            .field("cluster", &self.cluster)
            .field("load_balancers", &self.aws.load_balancer_names())
            .field("journal", &self.journal)
            .field("grace", &self.grace)
            .field("terminated_within", &self.terminated_within)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SweepOrphans`]; setters cannot fail, [`build`](Self::build) checks.
pub struct SweepOrphansBuilder {
    inner: SweepOrphans,
}

impl fmt::Debug for SweepOrphansBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SweepOrphansBuilder")
            .field("inner", &self.inner)
            .finish()
    }
}

impl SweepOrphans {
    /// A sweep of `cluster`'s instances, judged by `journal`, with a grace
    /// period of 15 minutes; swept instances are deregistered from the load
    /// balancer `aws`'s profile names first.
    pub fn builder(
        aws: &Aws,
        journal: Arc<dyn Journal>,
        cluster: impl Into<String>,
    ) -> SweepOrphansBuilder {
        SweepOrphansBuilder {
            inner: Self {
                aws: aws.clone(),
                journal,
                cluster: cluster.into(),
                grace: Duration::from_secs(15 * 60),
                poll: default_poll(),
                terminated_within: Duration::from_secs(300),
            },
        }
    }

    /// Sweeps the cluster once; returns every orphan found, with what was done to it.
    ///
    /// # Errors
    /// When the journal cannot be read, or EC2 / the load balancer refuses
    /// (a load balancer or instance that no longer exists is no error).
    pub async fn sweep(&self) -> Result<Vec<Orphan>> {
        self.sweep_sparing(None).await
    }

    async fn sweep_sparing(&self, spare: Option<&RunId>) -> Result<Vec<Orphan>> {
        let runs: BTreeMap<RunId, RunRecord> = self
            .journal
            .runs()
            .await?
            .into_iter()
            .map(|r| (r.run_id.clone(), r))
            .collect();
        let instances = self
            .aws
            .ec2()
            .find_by_tags(
                &[(TAG_CLUSTER.to_owned(), self.cluster.clone())],
                &InstanceState::LIVE,
            )
            .await?;
        let now = Utc::now();
        let mut orphans: Vec<Orphan> = instances
            .iter()
            .filter_map(|i| self.judge(i, &runs, spare, now))
            .collect();
        orphans.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let doomed: Vec<String> = orphans
            .iter()
            .filter(|o| o.outcome == SweepOutcome::Terminated)
            .map(|o| o.instance_id.clone())
            .collect();
        for o in orphans
            .iter()
            .filter(|o| o.outcome != SweepOutcome::Terminated)
        {
            info!(cluster = %self.cluster, instance = %o.instance_id, reason = %o.reason, outcome = ?o.outcome, "Orphan left alone.");
        }
        if doomed.is_empty() {
            return Ok(orphans);
        }
        let deregister_error = self
            .aws
            .retire((true, false), &self.poll, self.terminated_within, &doomed)
            .await?;
        for o in orphans
            .iter()
            .filter(|o| o.outcome == SweepOutcome::Terminated)
        {
            info!(cluster = %self.cluster, instance = %o.instance_id, run_id = ?o.run_id.as_ref().map(RunId::to_string), reason = %o.reason, "Terminated an orphan.");
        }
        if let Some(e) = deregister_error {
            // They are gone; say which, and that the load balancer may still point at them.
            return Err(pyscaler_core::Error::other(
                pyscaler_core::Classify::kind(&e),
                format!(
                    "terminated {}, but deregistering them from {} failed: {e}",
                    doomed.join(", "),
                    self.aws
                        .load_balancers_text()
                        .unwrap_or_else(|| "the load balancer".to_owned())
                ),
            ));
        }
        Ok(orphans)
    }

    /// The orphan `instance` is, if any (`None`: its run succeeded, or it is spared).
    fn judge(
        &self,
        instance: &Instance,
        runs: &BTreeMap<RunId, RunRecord>,
        spare: Option<&RunId>,
        now: DateTime<Utc>,
    ) -> Option<Orphan> {
        let run_id = instance
            .tags
            .get(TAG_RUN)
            .filter(|r| !r.is_empty())
            .map(|r| RunId::new(r.clone()));
        let reason = match &run_id {
            None => OrphanReason::NoRunTag,
            Some(id) if Some(id) == spare => return None,
            Some(id) => match runs.get(id) {
                None => OrphanReason::UnknownRun,
                Some(r) if r.succeeded() => return None,
                Some(r) => match r.state {
                    RunState::Finished(status) => OrphanReason::NotSucceeded(status),
                    RunState::Recovered { .. } => OrphanReason::Recovered,
                    _ => OrphanReason::Unfinished,
                },
            },
        };
        let old_enough = instance.launched_at.is_some_and(|at| {
            now.signed_duration_since(at)
                .to_std()
                .is_ok_and(|age| age > self.grace)
        });
        let outcome = match reason {
            OrphanReason::NoRunTag => SweepOutcome::Skipped,
            _ if old_enough => SweepOutcome::Terminated,
            _ => SweepOutcome::WithinGrace,
        };
        Some(Orphan {
            instance_id: instance.id.clone(),
            node: node_name(instance),
            run_id,
            reason,
            launched_at: instance.launched_at,
            outcome,
        })
    }
}

impl SweepOrphans {
    /// What the sweep did with `o`, in words for the run report.
    fn report_line(&self, o: &Orphan) -> String {
        let run = o
            .run_id
            .as_ref()
            .map_or_else(|| "no run".to_owned(), |r| format!("run {r}"));
        match o.outcome {
            SweepOutcome::Terminated => {
                let lb = self
                    .aws
                    .load_balancers_text()
                    .map(|lb| format!("deregistered from {lb}, "))
                    .unwrap_or_default();
                format!("{lb}terminated {} ({run}: {})", o.instance_id, o.reason)
            }
            SweepOutcome::WithinGrace => format!(
                "kept {} for now: launched within the grace period ({run}: {})",
                o.instance_id, o.reason
            ),
            SweepOutcome::Skipped => format!("left {} alone: {}", o.instance_id, o.reason),
        }
    }
}

impl SweepOrphansBuilder {
    /// Leaves instances launched less than `grace` ago alone (15 min by default):
    /// their run may still be going on.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.inner.grace = grace;
        self
    }

    /// Bounds the wait until swept instances are terminated (5 min by default).
    pub fn terminated_within(mut self, d: Duration) -> Self {
        self.inner.terminated_within = d;
        self
    }

    /// The sweep.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] for an empty cluster name (the load
    /// balancer's name was checked with the profile).
    pub fn build(self) -> std::result::Result<SweepOrphans, AwsError> {
        if self.inner.cluster.is_empty() {
            return Err(AwsError::invalid("cluster", "name the cluster to sweep"));
        }
        Ok(self.inner)
    }
}

#[async_trait]
impl Action for SweepOrphans {
    fn name(&self) -> &str {
        "sweep-orphans"
    }

    fn describe(&self) -> Effects {
        Effects::says(format!(
            "terminate instances of cluster {} whose run did not succeed, launched over {}s ago",
            self.cluster,
            self.grace.as_secs()
        ))
    }

    /// Sweeps, sparing this run, and reports each orphan as a node outcome
    /// (named by its node name, saying what was done to which instance).
    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let spare = ctx.run_id().clone();
        let orphans = self.sweep_sparing(Some(&spare)).await?;
        for o in &orphans {
            ctx.record_node(NodeOutcome::ok(o.node.clone(), self.report_line(o)));
        }
        ctx.outputs_mut().insert(orphans);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pyscaler_core::{Cluster, JournalEntry, MemoryJournal, Node};

    use super::*;
    use crate::test_support::{
        elb_deregistering, expect_describe_terminated, expect_terminate_noted, Calls,
    };
    use crate::{MockEc2, MockLoadBalancer};

    /// A journal in memory holding `runs`, each finished with its status or unfinished.
    fn journal_with_runs(runs: &[(&str, Option<RunStatus>)]) -> Arc<MemoryJournal> {
        let mut entries = Vec::new();
        for (id, status) in runs {
            let run_id = RunId::new(*id);
            entries.push(JournalEntry::RunStarted {
                run_id: run_id.clone(),
                pipeline: "scale-out".into(),
                cluster: "web".into(),
                trigger: pyscaler_core::TriggerInfo::new("manual", "test"),
                at: Utc::now(),
            });
            if let Some(status) = status {
                entries.push(JournalEntry::RunFinished {
                    run_id,
                    status: *status,
                    new_nodes: Vec::<Node>::new(),
                    at: Utc::now(),
                });
            }
        }
        Arc::new(MemoryJournal::with_entries(entries))
    }

    fn instance(id: &str, run: Option<&str>, age_mins: i64) -> Instance {
        let mut tags = BTreeMap::from([(TAG_CLUSTER.to_owned(), "web".to_owned())]);
        if let Some(run) = run {
            tags.insert(TAG_RUN.to_owned(), run.to_owned());
        }
        Instance {
            id: id.into(),
            state: InstanceState::Running,
            launched_at: Some(Utc::now() - chrono::Duration::minutes(age_mins)),
            tags,
            ..Instance::default()
        }
    }

    /// An EC2 mock listing `instances` for the cluster, recording what is terminated.
    fn ec2_with(instances: Vec<Instance>, calls: &Calls) -> MockEc2 {
        let mut ec2 = MockEc2::new();
        ec2.expect_find_by_tags()
            .withf(|tags, states| {
                tags == [(TAG_CLUSTER.to_owned(), "web".to_owned())]
                    && states.contains(&InstanceState::Running)
                    && !states.contains(&InstanceState::Terminated)
            })
            .returning(move |_, _| Ok(instances.clone()));
        expect_terminate_noted(&mut ec2, calls, ..);
        expect_describe_terminated(&mut ec2);
        ec2
    }

    fn sweep(ec2: MockEc2, elb: MockLoadBalancer, journal: Arc<MemoryJournal>) -> SweepOrphans {
        let profile = crate::Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
            .load_balancer("web-lb")
            .build()
            .expect("profile");
        let aws = Aws::new(Arc::new(ec2), Some(Arc::new(elb)), profile).expect("paired");
        SweepOrphans::builder(&aws, journal, "web")
            .grace(Duration::from_secs(10 * 60))
            .build()
            .expect("valid sweep")
    }

    #[tokio::test(start_paused = true)]
    async fn each_kind_of_orphan_is_judged_and_only_old_tagged_ones_are_terminated() {
        let calls = Calls::default();
        let journal = journal_with_runs(&[
            ("run-ok", Some(RunStatus::Succeeded)),
            ("run-partial", Some(RunStatus::CompletedWithFailures)),
            ("run-failed", Some(RunStatus::Failed)),
            ("run-dead", None),
        ]);
        let ec2 = ec2_with(
            vec![
                instance("i-ok", Some("run-ok"), 60),
                instance("i-partial", Some("run-partial"), 60),
                instance("i-failed", Some("run-failed"), 60),
                instance("i-dead", Some("run-dead"), 60),
                instance("i-young", Some("run-dead"), 2),
                instance("i-stranger", Some("run-elsewhere"), 60),
                instance("i-hand-made", None, 600),
            ],
            &calls,
        );
        let orphans = sweep(ec2, elb_deregistering(&calls), journal)
            .sweep()
            .await
            .expect("swept");
        let seen: Vec<(&str, OrphanReason, SweepOutcome)> = orphans
            .iter()
            .map(|o| (o.instance_id.as_str(), o.reason, o.outcome))
            .collect();
        assert_eq!(
            seen,
            [
                ("i-dead", OrphanReason::Unfinished, SweepOutcome::Terminated),
                (
                    "i-failed",
                    OrphanReason::NotSucceeded(RunStatus::Failed),
                    SweepOutcome::Terminated
                ),
                ("i-hand-made", OrphanReason::NoRunTag, SweepOutcome::Skipped),
                (
                    "i-stranger",
                    OrphanReason::UnknownRun,
                    SweepOutcome::Terminated
                ),
                (
                    "i-young",
                    OrphanReason::Unfinished,
                    SweepOutcome::WithinGrace
                ),
            ]
        );
        assert_eq!(
            *calls.lock().expect("lock"),
            [
                "deregister web-lb i-dead,i-failed,i-stranger",
                "terminate i-dead,i-failed,i-stranger"
            ]
        );
        assert_eq!(
            orphans[0].run_id.as_ref().map(RunId::to_string).as_deref(),
            Some("run-dead")
        );
        assert_eq!(
            orphans[0].to_string(),
            "i-dead (run run-dead): run never finished; terminated"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_touched_when_every_run_succeeded_or_is_too_young() {
        let journal = journal_with_runs(&[("run-ok", Some(RunStatus::Succeeded))]);
        let mut ec2 = MockEc2::new();
        let listed = vec![
            instance("i-ok", Some("run-ok"), 600),
            instance("i-young", Some("run-unknown"), 9),
        ];
        ec2.expect_find_by_tags()
            .returning(move |_, _| Ok(listed.clone()));
        ec2.expect_terminate().never();
        let mut elb = MockLoadBalancer::new();
        elb.expect_deregister().never();
        let orphans = sweep(ec2, elb, journal).sweep().await.expect("swept");
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].instance_id, "i-young");
        assert_eq!(orphans[0].outcome, SweepOutcome::WithinGrace);
    }

    #[tokio::test(start_paused = true)]
    async fn as_a_step_it_spares_its_own_run_and_reports_in_the_outputs() {
        let calls = Calls::default();
        let journal = journal_with_runs(&[]);
        let mut ctx = Context::new(Cluster::new("web"));
        let own = ctx.run_id().to_string();
        let ec2 = ec2_with(
            vec![
                instance("i-own", Some(&own), 60),
                instance("i-lost", Some("run-lost"), 60),
            ],
            &calls,
        );
        let step = sweep(ec2, elb_deregistering(&calls), journal);
        assert_eq!(step.name(), "sweep-orphans");
        step.run(&mut ctx).await.expect("swept");
        let orphans = ctx.outputs().get::<Vec<Orphan>>().expect("report");
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].instance_id, "i-lost");
        assert_eq!(
            step.report_line(&orphans[0]),
            "deregistered from web-lb, terminated i-lost (run run-lost: run unknown to the journal)"
        );
        assert_eq!(
            *calls.lock().expect("lock"),
            ["deregister web-lb i-lost", "terminate i-lost"]
        );
    }

    #[test]
    fn an_empty_cluster_name_is_refused() {
        let profile = crate::Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
            .build()
            .expect("profile");
        let aws = Aws::new(Arc::new(MockEc2::new()), None, profile).expect("aws");
        let err = SweepOrphans::builder(&aws, journal_with_runs(&[]), "")
            .build()
            .expect_err("no cluster");
        assert!(err.to_string().contains("cluster"), "{err}");
    }
}
