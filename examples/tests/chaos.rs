//! The randomized fault campaign (issue 17): see `common/chaos/mod.rs`.
//!
//! `chaos_campaign_short` runs in `scripts/test` (and so in CI): 15 cycles
//! of a fixed seed. `chaos_campaign` is the long one `scripts/chaos [CYCLES]
//! [SEED] [FIRST]` runs (`CHAOS_CYCLES`, `CHAOS_SEED`, `CHAOS_FIRST`); it
//! prints the table and writes it to `target/chaos/<seed>.md`. A failure
//! prints the seed, the cycle's plan and the first broken invariant;
//! `scripts/chaos 1 SEED CYCLE` replays that cycle's plan.

#[path = "common/faults_support.rs"]
mod faults_support;

#[path = "common/chaos/mod.rs"]
mod chaos;

use std::time::Duration;

use chaos::Campaign;

/// The short campaign's seed: its 15 plans include every fault kind, kills
/// in both phases and both kinds of restart.
const SHORT_SEED: u64 = 17;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

async fn campaign(seed: u64, first: u32, cycles: u32) {
    campaign_with(seed, first, cycles, None).await;
}

/// A campaign whose controllers lose their lease `steal_lease_after` into
/// each phase, when given.
async fn campaign_with(seed: u64, first: u32, cycles: u32, steal_lease_after: Option<Duration>) {
    // No machine lock: every node is a host of its own with its own port
    // 8080, and each campaign takes a node slot of its own, so two
    // campaigns (two seeds) can run side by side.
    let mut campaign = Campaign::start().await;
    campaign.steal_lease_after = steal_lease_after;
    let result = campaign.run(seed, first, cycles).await;
    let table = campaign.table(seed);
    println!("\n{table}");
    let dir = pyscaler_testkit::workspace_root().join("target/chaos");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{seed}.md")), &table);
    let footprint = campaign.stack.nodes().footprint();
    drop(campaign);
    if let Err(broken) = result {
        panic!("{broken}");
    }
    let left = footprint.left();
    assert!(
        left.is_empty(),
        "the campaign left node hosts behind: {left:?}"
    );
}

#[test]
fn the_short_campaign_covers_every_fault() {
    let plans: Vec<_> = (0..15)
        .map(|n| chaos::plan::Cycle::draw(SHORT_SEED, n))
        .collect();
    let kinds: std::collections::BTreeSet<&str> = plans
        .iter()
        .flat_map(|p| p.faults().map(|f| f.kind()))
        .collect();
    assert!(kinds.len() >= 9, "the short campaign draws only {kinds:?}");
    assert!(plans.iter().any(|p| p.scale_out.kill_after_ms.is_some()));
    assert!(plans.iter().any(|p| p.prometheus_down));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_campaign_short() {
    campaign(SHORT_SEED, 0, 15).await;
}

/// Seed 2026's cycle 14, which found a defect: its scale-in's
/// DeregisterTargets answer is lost after it took effect, and the SDK's
/// retry met moto's `InvalidTarget` (AWS answers success), which failed the
/// scale-in. The same plan must now pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_regression_lost_deregistration_seed_2026_cycle_14() {
    campaign(2026, 14, 1).await;
}

/// Seed 2027's cycle 68 and seed 2028's cycle 75, which found a defect of
/// the campaign: on a loaded machine a controller's renewals came late, its
/// lease (6 s here) lapsed and its journal write was refused, and it left
/// its run, as it must, to the lease's next holder; but no supervisor
/// restarted a controller, so the run stayed unfinished with its instance
/// running. The load is not reproducible; the lost lease is: it is taken
/// from each phase's controller mid-run, and the restarted controller must
/// undo (or resume) the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_regression_lease_lost_mid_run_seed_2027_cycle_68() {
    campaign_with(2027, 68, 1, Some(Duration::from_millis(3_500))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_regression_lease_lost_mid_run_seed_2028_cycle_75() {
    campaign_with(2028, 75, 1, Some(Duration::from_millis(3_500))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the long campaign: scripts/chaos [CYCLES] [SEED]"]
async fn chaos_campaign() {
    let cycles = env_u64("CHAOS_CYCLES").unwrap_or(200) as u32;
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let first = env_u64("CHAOS_FIRST").unwrap_or(0) as u32;
    println!("chaos: seed {seed}, cycles {first}..{}", first + cycles);
    campaign(seed, first, cycles).await;
}
