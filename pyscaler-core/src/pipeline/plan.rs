//! The dry run: what a pipeline would do, step by step, on a cluster.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Pipeline;
use crate::context::StepScope;
use crate::step::Step;
use crate::{Context, FailurePolicy, RetryPolicy, Target};

impl Pipeline {
    /// The steps in order with their resolved targets and side effects; runs nothing.
    ///
    /// The nodes a removal step says it would take out
    /// ([`Action::nodes_to_remove`](crate::Action::nodes_to_remove)) are not
    /// among the targets of the steps after it.
    pub fn plan(&self, ctx: &Context) -> Plan {
        // The cluster as the run would see it, step by step.
        let mut sim = Context::new(ctx.cluster().clone())
            .with_run_id(ctx.run_id().clone())
            .with_trigger(ctx.trigger().clone());
        sim.add_new_nodes(ctx.new_nodes().iter().cloned());
        let mut creator: Option<String> = None;
        let mut plan_step = |s: &Step| {
            let effects = s.action.describe();
            let nodes = s.target.resolve(&sim);
            sim.step = StepScope {
                name: s.name.clone(),
                target: Some(s.target),
                nodes: nodes.clone(),
                ..StepScope::default()
            };
            for gone in s.action.nodes_to_remove(&sim) {
                sim.remove_node(&gone.id);
            }
            let planned = PlannedStep {
                name: s.name.clone(),
                target: s.target,
                nodes: nodes.into_iter().map(|n| n.name).collect(),
                nodes_from: match s.target {
                    Target::NewNodes | Target::Cluster => creator.clone(),
                    _ => None,
                },
                effects: effects.summary,
                timeout: s.timeout,
                retry: s.retry.clone(),
                on_failure: s.on_failure,
            };
            if effects.creates_nodes {
                creator = Some(s.name.clone());
            }
            planned
        };
        let steps = self.steps.iter().map(&mut plan_step).collect();
        let finally = self.finally.iter().map(&mut plan_step).collect();
        Plan {
            pipeline: self.name.clone(),
            cluster: ctx.cluster().name().to_owned(),
            steps,
            finally,
        }
    }
}

/// What a run would do, step by step: the output of [`Pipeline::plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The pipeline.
    pub pipeline: String,
    /// The cluster.
    pub cluster: String,
    /// The main steps, in order.
    pub steps: Vec<PlannedStep>,
    /// The `finally` steps.
    pub finally: Vec<PlannedStep>,
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The step's name.
    pub name: String,
    /// Its target.
    pub target: Target,
    /// The nodes it would apply to now, by name.
    pub nodes: Vec<String>,
    /// For targets that include new nodes: the step that creates them.
    pub nodes_from: Option<String>,
    /// What it would do.
    pub effects: Vec<String>,
    /// Its timeout per attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Its retry policy.
    pub retry: Option<RetryPolicy>,
    /// What a failure does.
    pub on_failure: FailurePolicy,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Plan of `{}` on cluster {} (dry run: nothing is touched)",
            self.pipeline, self.cluster
        )?;
        let mut n = 0;
        for (label, steps) in [("", &self.steps), ("finally ", &self.finally)] {
            for s in steps {
                n += 1;
                write!(f, "  {n}. {label}{} -> {}", s.name, s.target)?;
                if !s.nodes.is_empty() {
                    write!(f, " [{}]", s.nodes.join(", "))?;
                }
                if let Some(from) = &s.nodes_from {
                    write!(f, " (+ nodes created by `{from}`)")?;
                }
                if let Some(t) = s.timeout {
                    write!(f, ", timeout {}", humantime::format_duration(t))?;
                }
                if let Some(r) = &s.retry {
                    write!(f, ", up to {} attempts", r.max_attempts)?;
                }
                writeln!(f)?;
                for e in &s.effects {
                    writeln!(f, "       - {e}")?;
                }
            }
        }
        Ok(())
    }
}
