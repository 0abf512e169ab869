//! `scale_by_itself`: the README's "Scaling by itself", compiled here.

use std::sync::Arc;
use std::time::Duration;

use pyscaler_core::{
    CancellationToken, Cluster, Comparison, Direction, Journal, ManualTrigger, Pipeline, Recovery,
    Scaler, ThresholdTrigger,
};
use pyscaler_ssh::{RemoteShell, SshCounter};

/// Runs `scale_out` when the cluster's load stays high, `scale_in` when it
/// stays low, or `scale_out` when a person asks through `by_hand`
/// (`by_hand.fire("reason")`), until `stop` is cancelled.
///
/// # Errors
/// A trigger or scaler that is set up wrong; nothing has run then.
pub async fn scale_by_itself(
    cluster: Cluster,
    shell: Arc<dyn RemoteShell>,
    journal: Arc<dyn Journal>,
    (scale_out, scale_in): (Arc<Pipeline>, Arc<Pipeline>),
    by_hand: ManualTrigger,
    stop: CancellationToken,
) -> pyscaler_core::Result<()> {
    let load = Arc::new(SshCounter::load_average(shell));
    let high = ThresholdTrigger::builder("load-high", load.clone())
        .when(Comparison::Greater, 4.0)
        .window(Duration::from_secs(120)) // must hold for 2 minutes; a dip restarts it
        .cooldown(Duration::from_secs(900))
        .build()?;
    // Bound to a scale-in, the window defaults to 5 minutes. No data (a node
    // that cannot be read) is never a low load: the trigger holds.
    let low = ThresholdTrigger::builder("load-low", load)
        .when(Comparison::Less, 0.5)
        .build()?;
    let mut scaler = Scaler::builder(cluster)
        .min_nodes(2)
        .max_nodes(10)
        .bind(high, Direction::Out, scale_out.clone())
        .bind(low, Direction::In, scale_in)
        .bind(by_hand, Direction::Out, scale_out)
        .recover_first(Recovery::new(journal)) // first, the runs a dead controller left
        .build()?;
    tokio::spawn(pyscaler_core::print_progress(scaler.subscribe()));
    scaler.run(stop).await; // one run at a time; cancelling undoes the current run
    Ok(())
}
