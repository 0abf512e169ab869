//! # pyscaler examples
//!
//! The Tomcat cluster: every step of the deployment table in `docs/scaling.rst` as
//! one pipeline (`src/pipeline.rs`), the program that runs it
//! (`src/bin/tomcat_cluster.rs`), the assets it ships (`tomcat/`: a Puppet
//! manifest, scripts, a web application), and how an application unit-tests
//! its own pipeline with mocked providers (`tests/mocked_pipeline.rs`).

mod config;
pub mod http;
mod journal;
mod metrics_server;
mod pipeline;
mod scaling;
mod war;

pub use config::{
    ConfigError, DeploySettings, JournalSettings, JournalStore, PrometheusWatch,
    TomcatClusterConfig, TomcatSettings, WatchSettings,
};
pub use journal::open_journal;
pub use metrics_server::{serve_metrics, DURATION_BUCKETS};
pub use pipeline::{scale_in_pipeline, tomcat_pipeline, Providers};
pub use scaling::scale_by_itself;
pub use war::build_war;
