//! Engine overhead: a 10-step pipeline of no-op actions, and one threshold
//! evaluation over 1,000 nodes. Targets: at most 5 µs per no-op step and at
//! most 1 ms per evaluation of 1,000 nodes.
//!
//! Run with `cargo bench -p pyscaler-benches --bench engine`.

// criterion_group! and criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pyscaler_benches::{NoOp, Silent};
use pyscaler_core::{
    ActionExt, Aggregation, Cluster, Comparison, Context, Node, Pipeline, Sample, Target,
    ThresholdTrigger,
};

fn pipeline_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let mut builder = Pipeline::builder("noop");
    for i in 0..10 {
        builder = builder.step(NoOp.on(Target::None).named(format!("step-{i}")));
    }
    let pipeline = builder.build().expect("a valid pipeline");
    let cluster = Cluster::new("bench")
        .with_nodes((0..3).map(|i| Node::new(format!("i-{i}"), format!("web-{i}"))));
    c.bench_function("pipeline/10 no-op steps", |b| {
        b.to_async(&runtime).iter_batched(
            || Context::new(cluster.clone()),
            |mut ctx| {
                let pipeline = &pipeline;
                async move { black_box(pipeline.run(&mut ctx).await) }
            },
            BatchSize::SmallInput,
        )
    });
}

fn threshold_evaluation(c: &mut Criterion) {
    let samples: Vec<Sample> = (0..1000)
        .map(|i| Sample::new(format!("web-{i:04}"), f64::from(i % 7) * 0.5))
        .collect();
    let cluster = Cluster::new("web")
        .with_nodes((0..1000).map(|i| Node::new(format!("i-{i:04}"), format!("web-{i:04}"))));
    for aggregation in [Aggregation::Average, Aggregation::AnyNode] {
        let mut trigger = ThresholdTrigger::builder("load", Arc::new(Silent))
            .when(Comparison::Greater, 1.0)
            .aggregation(aggregation)
            .interval(Duration::from_secs(10))
            .window(Duration::from_secs(300))
            .build()
            .expect("a valid trigger");
        // Fill the 5-minute window with 10-second samples first: 30 rounds.
        let start = tokio::time::Instant::now();
        for round in 0..30u64 {
            trigger.evaluate(start + Duration::from_secs(round * 10), &cluster, &samples);
        }
        let now = start + Duration::from_secs(290);
        c.bench_function(&format!("threshold/1000 nodes/{aggregation:?}"), |b| {
            b.iter(|| black_box(trigger.evaluate(now, &cluster, black_box(&samples))))
        });
    }
}

criterion_group!(benches, pipeline_overhead, threshold_evaluation);
criterion_main!(benches);
