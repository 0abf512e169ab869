//! # pyscaler-prometheus
//!
//! A [`MetricSource`](pyscaler_core::MetricSource) over Prometheus' HTTP
//! API, so a [`ThresholdTrigger`](pyscaler_core::ThresholdTrigger) scales on
//! what the cluster's Prometheus already measures: [`PrometheusSource`].
//! It is a crate of its own so that `pyscaler-core` stays free of HTTP
//! clients.
//!
//! ```no_run
//! # async fn demo(scale_out: std::sync::Arc<pyscaler_core::Pipeline>) -> pyscaler_core::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use pyscaler_core::{Comparison, ThresholdTrigger};
//! use pyscaler_prometheus::PrometheusSource;
//!
//! // The cluster's mean request rate, one value for the whole cluster.
//! let rate = PrometheusSource::builder(
//!     "http://127.0.0.1:9090",
//!     r#"sum(rate(tomcat_requests_total{cluster="web"}[1m]))"#,
//! )
//! .name("requests")
//! .build()
//! .await?;
//! let busy = ThresholdTrigger::builder("busy", Arc::new(rate))
//!     .when(Comparison::Greater, 500.0)
//!     .window(Duration::from_secs(300))
//!     .build()?;
//! # let _ = (busy, scale_out);
//! # Ok(())
//! # }
//! ```
//!
//! Errors are one type, [`PrometheusError`], classified once: a query
//! Prometheus refuses (HTTP 400 or 422) is bad input and is found by
//! [`build`](PrometheusSourceBuilder::build)'s test query, with the server's
//! message; a 5xx and a refused connection are transient, a query past the
//! source's bound a timeout (both retried by the trigger's next read); a query with nothing to decide on is
//! [`PrometheusError::NoData`] (missing data is not zero).
//!
//! Without Prometheus, `pyscaler_ssh::SshCounter` reads a counter from every
//! node over SSH.

mod answer;
mod error;
mod source;

pub use error::PrometheusError;
pub use source::{NodeKey, PrometheusSource, PrometheusSourceBuilder};
