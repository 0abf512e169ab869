//! A progress printer: the events of a run as lines a person can follow.

use std::time::Duration;

use tokio::sync::broadcast;

use crate::Event;

/// Prints the events it receives as progress lines on standard output, until
/// the sender is dropped. One line in a program's `main`:
///
/// ```
/// # use pyscaler_core::{Pipeline, Result};
/// # async fn demo(pipeline: &Pipeline) -> Result<()> {
/// tokio::spawn(pyscaler_core::print_progress(pipeline.subscribe()));
/// # Ok(()) }
/// ```
///
/// It prints the run, each step with its place and nodes, how each step
/// ended and in how long, nodes added and removed, and undos:
///
/// ```text
/// Run 20261201T203000-1a2b: scale-out on web (asked by hand)
///   [1/3] deploy-ec2-node -> none ...
///         + web-03 i-0abc at 10.0.1.7:22
///         deploy-ec2-node: succeeded in 41s
/// ```
///
/// A slow terminal misses events rather than slowing the run (it skips
/// what it lagged behind). For other output, match on [`Event`] yourself,
/// or use [`progress_line`] on each event.
pub async fn print_progress(mut events: broadcast::Receiver<Event>) {
    let mut total = 0;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Event::RunStarted { steps, .. } = &event {
            total = *steps;
        }
        if let Some(line) = progress_line(&event, total) {
            println!("{line}");
        }
    }
}

/// The progress line [`print_progress`] prints for `event`, or `None` for an
/// event it does not show; `total` is the number of main steps of the run
/// (from its [`Event::RunStarted`]).
pub fn progress_line(event: &Event, total: usize) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            run_id,
            pipeline,
            cluster,
            reason,
            ..
        } => format!("Run {run_id}: {pipeline} on {cluster} ({reason})"),
        Event::StepStarted {
            step,
            target,
            nodes,
            position,
            ..
        } => {
            let on = if nodes.is_empty() {
                String::new()
            } else {
                format!(" on {}", nodes.join(", "))
            };
            let n = position.map_or_else(|| "[finally]".to_owned(), |i| format!("[{i}/{total}]"));
            format!("  {n} {step} -> {target}{on} ...")
        }
        Event::StepFinished {
            step,
            status,
            duration,
            error,
            ..
        } => {
            // Whole milliseconds: "1s 204ms", not nanoseconds.
            let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            let took = humantime::format_duration(Duration::from_millis(millis));
            match error {
                None => format!("        {step}: {status} in {took}"),
                Some(e) => format!("        {step}: {status} in {took}: {e}"),
            }
        }
        Event::NodeAdded { node, .. } => {
            let at = node
                .address
                .as_ref()
                .map(|a| format!(" at {a}"))
                .unwrap_or_default();
            let id = node.instance_id.as_deref().unwrap_or_default();
            format!("        + {} {id}{at}", node.name)
        }
        Event::NodeRemoved { node, .. } => {
            let id = node.instance_id.as_deref().unwrap_or_default();
            format!("        - {} {id}", node.name)
        }
        Event::Compensating { step, .. } => format!("  undo {step} ..."),
        Event::Compensated {
            step, succeeded, ..
        } => format!(
            "        {step}: {}",
            if *succeeded { "undone" } else { "UNDO FAILED" }
        ),
        Event::RunFinished { status, .. } => format!("Run finished: {status}"),
        Event::LeaseAcquired { owner, epoch } => {
            format!("Scaling under the lease of {owner} (epoch {epoch})")
        }
        Event::LeaseLost { owner, epoch } => format!(
            "LEASE LOST by {owner} (epoch {epoch}): stopped; the new holder recovers the run in progress"
        ),
        Event::Decided(d) => {
            let value = d.value.map(|v| format!(" at {v:.2}")).unwrap_or_default();
            let what = match &d.verdict {
                crate::Verdict::Scale if d.change > 0 => {
                    format!("{} of {} node(s)", d.direction, d.change)
                }
                crate::Verdict::Scale => d.direction.to_string(),
                crate::Verdict::Skipped(_) => format!("{} skipped", d.direction),
                crate::Verdict::NoData => "no data".to_owned(),
                crate::Verdict::Failed => "FAILED".to_owned(),
            };
            format!("Decision of {}{value}: {what} ({})", d.trigger, d.reason)
        }
        Event::EvaluationStalled {
            trigger,
            since,
            bound,
        } => format!(
            "STALLED: trigger {trigger} has not finished an evaluation for {} (bound {})",
            humantime::format_duration(Duration::from_secs(since.as_secs())),
            humantime::format_duration(*bound)
        ),
        Event::EvaluationResumed { trigger } => {
            format!("Trigger {trigger} evaluates again.")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunId, StepStatus, Target};

    #[test]
    fn steps_show_their_place_nodes_and_how_they_ended() {
        let run_id = RunId::new("run-1");
        let started = Event::StepStarted {
            run_id: run_id.clone(),
            step: "os-configuration".into(),
            target: Target::NewNodes,
            nodes: vec!["web-01".into(), "web-02".into()],
            position: Some(2),
        };
        let line = progress_line(&started, 4).expect("shown");
        assert!(line.contains("[2/4] os-configuration"), "{line}");
        assert!(line.contains("on web-01, web-02"), "{line}");

        let failed = Event::StepFinished {
            run_id,
            step: "os-configuration".into(),
            status: StepStatus::Failed,
            duration: Duration::from_micros(1_204_567),
            error: Some("puppet exited 4 on web-02".into()),
        };
        let line = progress_line(&failed, 4).expect("shown");
        assert!(line.contains("1s 204ms"), "{line}");
        assert!(line.ends_with("puppet exited 4 on web-02"), "{line}");
    }

    #[tokio::test]
    async fn the_printer_stops_when_the_sender_is_gone() {
        let (tx, rx) = broadcast::channel(4);
        let printer = tokio::spawn(print_progress(rx));
        tx.send(Event::TriggerFired {
            trigger: "load-high".into(),
            reason: "load1 > 4".into(),
        })
        .expect("a receiver");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), printer)
            .await
            .expect("the printer ends")
            .expect("no panic");
    }
}
