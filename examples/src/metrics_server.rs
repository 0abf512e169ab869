//! Serving the library's metrics: the application's choice of exporter
//! (here Prometheus' text format over HTTP, `metrics-exporter-prometheus`);
//! the library crates only record through the `metrics` facade.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// The histogram buckets of every `_seconds` metric, in seconds: from a
/// journal write (milliseconds) to a slow step (half an hour).
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
];

/// Installs a Prometheus recorder for the whole process, serving
/// `GET http://<addr>/metrics` (any path answers), and describes
/// pyscaler's metrics to it. Durations are histograms with
/// [`DURATION_BUCKETS`]. Call it once, inside the tokio runtime.
///
/// # Errors
/// When the address cannot be listened on, or a recorder is installed already.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .and_then(PrometheusBuilder::install)
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    pyscaler_core::describe_metrics();
    Ok(())
}
