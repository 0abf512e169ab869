//! # pyscaler examples
//!
//! The Tomcat cluster: every step of the deployment table in scaling.rst as
//! one pipeline (`src/pipeline.rs`), the program that runs it
//! (`src/bin/tomcat_cluster.rs`), the assets it ships (`tomcat/`: a Puppet
//! manifest, scripts, a web application), the local stack it runs against
//! in the demo and the end-to-end test, and how an application unit-tests
//! its own pipeline with mocked providers (`tests/mocked_pipeline.rs`).

mod config;
pub mod http;
mod local_stack;
mod pipeline;
mod war;

pub use config::{ConfigError, DeploySettings, TomcatClusterConfig, TomcatSettings, WatchSettings};
pub use local_stack::{LocalStack, LOAD_BALANCER, LOAD_FILE};
pub use pipeline::{tomcat_pipeline, Providers};
pub use war::build_war;
