//! The campaign's five invariants, checked after every phase through the
//! providers' own APIs (EC2, the target group and the classic ELB, the
//! fault proxy's call log, the DynamoDB journal, HTTP to the nodes), never
//! through pyscaler's view of the cluster.

use std::collections::HashMap;

use pyscaler_aws::{
    ClassicElb, Ec2, Instance, InstanceState, LoadBalancer, SdkEc2, TargetGroups, TAG_CLUSTER,
    TAG_RUN,
};
use pyscaler_core::{RunRecord, RunState};
use pyscaler_testkit::fault_proxy::Call;

/// What the checks look at.
pub(crate) struct Providers {
    pub(crate) ec2: SdkEc2,
    pub(crate) target_groups: TargetGroups,
    pub(crate) classic: ClassicElb,
    pub(crate) target_group: String,
    pub(crate) classic_name: String,
    pub(crate) cluster: String,
}

/// The cluster's instances, in every state.
pub(crate) async fn instances(p: &Providers) -> Vec<Instance> {
    p.ec2
        .find_by_tags(&[(TAG_CLUSTER.to_owned(), p.cluster.clone())], &[])
        .await
        .expect("list the cluster's instances")
}

fn live(state: InstanceState) -> bool {
    matches!(state, InstanceState::Pending | InstanceState::Running)
}

/// Invariant 1: every pending or running instance tagged with the cluster belongs to
/// a run the journal shows succeeded (recoveries are over when this runs).
pub(crate) fn only_succeeded_runs_run(
    instances: &[Instance],
    runs: &[RunRecord],
) -> Result<(), String> {
    let by_id: HashMap<&str, &RunRecord> = runs.iter().map(|r| (r.run_id.as_str(), r)).collect();
    for i in instances.iter().filter(|i| live(i.state)) {
        let run = i.tags.get(TAG_RUN).map(String::as_str).unwrap_or("");
        match by_id.get(run) {
            Some(r) if r.succeeded() && r.pipeline == "tomcat-scale-out" => {}
            Some(r) => {
                return Err(format!(
                    "invariant 1: {} ({:?}) belongs to run {run}, which the journal shows {:?}",
                    i.id, i.state, r.state
                ))
            }
            None => {
                return Err(format!(
                "invariant 1: {} ({:?}) carries run tag {run:?}, a run the journal does not know",
                i.id, i.state
            ))
            }
        }
    }
    Ok(())
}

/// Invariant 2: no load balancer or target group holds an instance that is not running.
pub(crate) async fn balancers_hold_only_running(
    p: &Providers,
    instances: &[Instance],
) -> Result<(), String> {
    let running: Vec<&str> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .map(|i| i.id.as_str())
        .collect();
    let held = [
        (
            p.target_group.as_str(),
            p.target_groups.health(&p.target_group, &[]).await,
        ),
        (
            p.classic_name.as_str(),
            p.classic.health(&p.classic_name, &[]).await,
        ),
    ];
    for (lb, health) in held {
        let health = health.map_err(|e| format!("cannot read {lb}'s members: {e}"))?;
        if let Some(h) = health
            .iter()
            .find(|h| !running.contains(&h.instance_id.as_str()))
        {
            return Err(format!(
                "invariant 2: {lb} holds {}, which is not running",
                h.instance_id
            ));
        }
    }
    Ok(())
}

/// Invariant 3: no ClientToken launched more than one set of instances: moto, behind
/// the proxy, executed at most one RunInstances per token.
pub(crate) fn one_launch_per_token(calls: &[Call]) -> Result<(), String> {
    let mut executed: HashMap<&str, usize> = HashMap::new();
    for c in calls
        .iter()
        .filter(|c| c.action == "RunInstances" && c.executed)
    {
        if let Some(token) = &c.client_token {
            *executed.entry(token.as_str()).or_default() += 1;
        }
    }
    match executed.into_iter().find(|(_, n)| *n > 1) {
        Some((token, n)) => Err(format!(
            "invariant 3: ClientToken {token} launched {n} sets of instances"
        )),
        None => Ok(()),
    }
}

/// Invariant 4: every run in the journal is finished, undone or recovered; and the
/// report of a failed run names the failed step and its cause.
pub(crate) fn every_run_ended(
    runs: &[RunRecord],
    report: Option<&serde_json::Value>,
) -> Result<(), String> {
    for r in runs {
        match &r.state {
            RunState::Unfinished => {
                return Err(format!(
                    "invariant 4: run {} is unfinished in the journal",
                    r.run_id
                ))
            }
            RunState::Recovered { succeeded: false } => {
                return Err(format!(
                    "invariant 4: the recovery of run {} did not undo everything",
                    r.run_id
                ))
            }
            _ => {}
        }
    }
    let Some(report) = report else { return Ok(()) };
    if report["status"] == "failed" {
        let named = report["steps"].as_array().is_some_and(|steps| {
            steps.iter().any(|s| {
                s["status"] == "failed"
                    && s["name"].as_str().is_some_and(|n| !n.is_empty())
                    && (has_cause(&s["error"])
                        || s["nodes"]
                            .as_array()
                            .is_some_and(|nodes| nodes.iter().any(|n| has_cause(&n["error"]))))
            })
        });
        if !named {
            return Err(format!(
                "invariant 4: the report of failed run {} names no failed step with its cause",
                report["run_id"]
            ));
        }
    }
    Ok(())
}

/// Whether a report's error (`{"message": ..., "kind": ..., "chain": [...]}`)
/// says what went wrong.
fn has_cause(error: &serde_json::Value) -> bool {
    error["message"]
        .as_str()
        .is_some_and(|m| !m.trim().is_empty())
}

/// The nodes a report says it added or removed: (instance id, address).
pub(crate) fn report_nodes(report: &serde_json::Value, key: &str) -> Vec<(String, String)> {
    report[key]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| {
                    Some((
                        n["instance_id"].as_str()?.to_owned(),
                        n["address"]["host"].as_str().unwrap_or("").to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Invariant 5a: after a successful scale-out the application answers on every new node.
pub(crate) async fn new_nodes_answer(
    added: &[(String, String)],
    port: u16,
    path: &str,
    text: &str,
) -> Result<(), String> {
    for (id, host) in added {
        pyscaler_examples::http::wait_until_ok(
            host,
            port,
            path,
            text,
            std::time::Duration::from_secs(5),
        )
        .await
        .map_err(|e| format!("invariant 5: new node {id} does not serve the application: {e}"))?;
    }
    Ok(())
}

/// Invariant 5b: after a scale-in, each removed node left both load balancers before
/// it was terminated (the order of the calls moto executed).
pub(crate) fn deregistered_before_terminated(
    removed: &[(String, String)],
    calls: &[Call],
) -> Result<(), String> {
    let first = |action: &str, id: &str| {
        calls.iter().position(|c| {
            c.action == action && c.executed && c.instance_ids.iter().any(|i| i == id)
        })
    };
    for (id, _) in removed {
        let Some(terminated) = first("TerminateInstances", id) else {
            return Err(format!(
                "invariant 5: removed node {id} was never terminated"
            ));
        };
        for leave in ["DeregisterTargets", "DeregisterInstancesFromLoadBalancer"] {
            match first(leave, id) {
                Some(at) if at < terminated => {}
                Some(_) => return Err(format!("invariant 5: {id} was terminated before {leave}")),
                None => return Err(format!("invariant 5: {id} was terminated without {leave}")),
            }
        }
    }
    Ok(())
}
