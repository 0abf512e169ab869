//! What the health-gated wait adds to a scale-out on the local stack
//! (issue 12): `DeployEc2Node` against moto, with no load balancer, with an
//! ALB target group, and with a classic ELB, for 1 and 6 nodes. The
//! difference to "none" is the registration call plus the bounded wait
//! until every target is healthy (InService).
//!
//! moto makes a registered target healthy at once, so this measures
//! pyscaler's own cost of the gate (the calls and the first poll's
//! backoff), not AWS's health checks: on AWS a target stays `initial`
//! for the group's HealthCheckIntervalSeconds x HealthyThresholdCount
//! (30 s x 5 by default) before it is `healthy`.
//!
//! `cargo run --release -p pyscaler-benches --bin health_wait [rounds]`
//! prints min, median and max of each over `rounds` (default 5).

use std::time::{Duration, Instant};

use pyscaler_aws::{Aws, ClientConfig, DeployEc2Node, Ec2Profile, StaticCredentials};
use pyscaler_core::{Action, Cluster, Context};
use pyscaler_testkit::moto::{MotoServer, ACCESS_KEY_ID, AMI, REGION, SECRET_ACCESS_KEY};

#[derive(Clone, Copy)]
enum Gate {
    None,
    TargetGroup,
    Classic,
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let moto = MotoServer::start();
    moto.create_load_balancer("bench-lb").await;
    let arn = moto.create_target_group("bench").await;
    let config = ClientConfig::new(REGION)
        .endpoint_url(moto.endpoint_url())
        .credentials(StaticCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
        .max_attempts(1);
    println!("| nodes | load balancer | min | median | max | median added by the gate |");
    println!("|---|---|---|---|---|---|");
    for count in [1u32, 6] {
        let mut none_median = Duration::ZERO;
        for (gate, label) in [
            (Gate::None, "none"),
            (Gate::TargetGroup, "ALB target group"),
            (Gate::Classic, "classic ELB"),
        ] {
            let profile =
                Ec2Profile::builder(REGION, AMI, "t3.small").endpoint_url(moto.endpoint_url());
            let profile = match gate {
                Gate::None => profile,
                Gate::TargetGroup => profile.target_group(&arn),
                Gate::Classic => profile.load_balancer("bench-lb"),
            }
            .build()
            .expect("profile");
            let aws = Aws::connect(&config, profile).await;
            let deploy = DeployEc2Node::builder(&aws)
                .count(count)
                .running_within(Duration::from_secs(60))
                .in_service_within(Duration::from_secs(60))
                .build()
                .expect("action");
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let mut ctx = Context::new(Cluster::new("bench"));
                let started = Instant::now();
                deploy.run(&mut ctx).await.expect("deployed");
                times.push(started.elapsed());
                // Terminated between rounds so moto's lists stay short.
                let ids: Vec<String> = ctx.new_nodes().iter().map(|n| n.id.clone()).collect();
                aws.ec2().terminate(&ids).await.expect("terminate");
            }
            let (min, median, max) = stats(times);
            let added = match gate {
                Gate::None => {
                    none_median = median;
                    "-".to_owned()
                }
                _ => ms(median.saturating_sub(none_median)),
            };
            println!(
                "| {count} | {label} | {} | {} | {} | {added} |",
                ms(min),
                ms(median),
                ms(max)
            );
        }
    }
}
