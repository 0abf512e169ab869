//! The automatic path's two measures (issue 13), against a real Prometheus
//! on loopback (Debian's, started by the test harness with its Pushgateway):
//!
//! 1. One evaluation over 1,000 nodes' series: the query, matching each
//!    series to its node by the `instance` label, and the trigger's
//!    decision (target: under 50 ms).
//! 2. The time from the window being satisfied to the pipeline's first
//!    provider call: a scaler with a threshold trigger (interval 100 ms,
//!    window 1 s) on that source, bound to a pipeline whose first step
//!    notes when it is called (target: under 1 s).
//!
//! `cargo run --release -p pyscaler-benches --bin decide [rounds]` prints
//! min, median and max of each over `rounds` (default 30) rounds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyscaler_core::{
    async_trait, Action, ActionExt, CancellationToken, Cluster, Comparison, Context, Direction,
    MetricSource, Node, NodeAddress, Pipeline, Result, Sample, Scaler, Target, ThresholdTrigger,
};
use pyscaler_prometheus::{NodeKey, PrometheusSource};
use pyscaler_testkit::prometheus::Prometheus;

const NODES: usize = 1000;

fn host(i: usize) -> String {
    format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)
}

fn cluster() -> Cluster {
    Cluster::new("web").with_nodes((0..NODES).map(|i| {
        Node::new(format!("i-{i:04}"), format!("web-{i:04}"))
            .with_address(NodeAddress::new(host(i)))
    }))
}

/// Notes the instant of its first call: the pipeline's first provider call.
struct FirstCall(Arc<Mutex<Option<Instant>>>);

#[async_trait]
impl Action for FirstCall {
    fn name(&self) -> &str {
        "first-provider-call"
    }

    async fn run(&self, _ctx: &mut Context) -> Result<()> {
        let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(Instant::now);
        Ok(())
    }
}

/// The source, noting when its answer first breached (the window starts there).
struct Noting {
    inner: PrometheusSource,
    first_breach: Arc<Mutex<Option<Instant>>>,
}

#[async_trait]
impl MetricSource for Noting {
    fn name(&self) -> &str {
        "load1"
    }

    async fn sample(&self, cluster: &Cluster) -> Result<Vec<Sample>> {
        let samples = self.inner.sample(cluster).await?;
        if samples.iter().any(|s| s.value > 2.0) {
            let mut first = self.first_breach.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(Instant::now);
        }
        Ok(samples)
    }
}

fn stats(name: &str, mut values: Vec<Duration>, target: Duration) {
    values.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (min, med, max) = (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    );
    println!(
        "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | < {} ms | {} |",
        ms(min),
        ms(med),
        ms(max),
        target.as_millis(),
        if med < target { "met" } else { "MISSED" }
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let prometheus = Prometheus::start();
    let lines: String = (0..NODES)
        .map(|i| format!("pyscaler_load1{{instance=\"{}:9100\"}} 3.5\n", host(i)))
        .collect();
    prometheus.push("load", &lines);
    let build = || {
        PrometheusSource::builder(prometheus.endpoint_url(), "pyscaler_load1")
            .per_node("instance", NodeKey::Host)
            .timeout(Duration::from_secs(5))
            .build()
    };
    let source = build().await.expect("a valid query");
    let cluster = cluster();
    let deadline = Instant::now() + Duration::from_secs(60);
    while source.sample(&cluster).await.map(|s| s.len()).unwrap_or(0) < NODES {
        assert!(
            Instant::now() < deadline,
            "Prometheus never had the 1,000 series"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 1. Query + matching + decision.
    let mut trigger =
        ThresholdTrigger::builder("load-high", Arc::new(build().await.expect("source")))
            .when(Comparison::Greater, 2.0)
            .window(Duration::from_secs(300))
            .build()
            .expect("trigger");
    let mut evaluations = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let samples = source.sample(&cluster).await.expect("samples");
        let eval = trigger.evaluate(tokio::time::Instant::now(), &cluster, &samples);
        assert!(eval.breaching && samples.len() == NODES);
        evaluations.push(started.elapsed());
    }

    // 2. Window satisfied -> first provider call, through the scaler.
    let mut latencies = Vec::new();
    for _ in 0..rounds.min(10) {
        let first_breach = Arc::new(Mutex::new(None));
        let first_call = Arc::new(Mutex::new(None));
        let source = Noting {
            inner: build().await.expect("source"),
            first_breach: first_breach.clone(),
        };
        let window = Duration::from_secs(1);
        let trigger = ThresholdTrigger::builder("load-high", Arc::new(source))
            .when(Comparison::Greater, 2.0)
            .interval(Duration::from_millis(100))
            .window(window)
            .build()
            .expect("trigger");
        let pipeline = Pipeline::builder("scale-out")
            .step(FirstCall(first_call.clone()).on(Target::None))
            .build()
            .expect("pipeline");
        let mut scaler = Scaler::builder(cluster.clone())
            .max_nodes(NODES + 10)
            .bind(trigger, Direction::Out, Arc::new(pipeline))
            .build()
            .expect("scaler");
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let watching = first_call.clone();
        let stopping = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while watching.lock().map(|f| f.is_none()).unwrap_or(true) && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stopper.cancel();
        });
        scaler.run(stop).await;
        let _ = stopping.await;
        let breach = first_breach.lock().ok().and_then(|f| *f).expect("a breach");
        let call = first_call
            .lock()
            .ok()
            .and_then(|f| *f)
            .expect("a provider call");
        latencies.push(call.saturating_duration_since(breach + window));
    }

    println!("One evaluation over {NODES} nodes from a local Prometheus, and the scaler's reaction ({rounds} rounds):\n");
    println!("| measure | min | median | max | target | |");
    println!("| --- | --- | --- | --- | --- | --- |");
    stats(
        "query + matching + decision, 1,000 nodes",
        evaluations,
        Duration::from_millis(50),
    );
    stats(
        "window satisfied -> first provider call (interval 100 ms)",
        latencies,
        Duration::from_secs(1),
    );
}
