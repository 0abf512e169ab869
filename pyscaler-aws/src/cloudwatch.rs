//! `CloudWatchSource`: a [`MetricSource`] over CloudWatch's `GetMetricData`,
//! feature `cloudwatch`.
//!
//! aws-sdk-cloudwatch (1.100 and later) speaks only the Smithy RPC v2 CBOR
//! protocol, and moto has no CBOR parser (getmoto/moto#9195: "no current (or
//! planned) support"), so this source is not tested against moto: its unit
//! tests prove the requests and the reading of the answers on the wire with
//! `aws-smithy-mocks` (the `cloudwatch/tests.rs` module).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use chrono::Utc;
use pyscaler_core::{Cluster, MetricSource, Sample};
use tracing::{debug, warn};

use crate::attempts::call;
use crate::error::Subjects;
use crate::{AwsError, ClientConfig};

mod builder;
mod read;

pub use builder::CloudWatchSourceBuilder;
use read::Points;

/// The most queries one `GetMetricData` call takes; more are split into
/// several calls.
const MAX_QUERIES: usize = 500;
/// The most pages one call is followed through (`NextToken`).
const MAX_PAGES: usize = 10;
/// The most dimensions one CloudWatch metric has.
const MAX_DIMENSIONS: usize = 30;
/// The dimension a per-instance query adds.
const INSTANCE_ID: &str = "InstanceId";
/// The instance the test query of a per-instance source asks for: none has
/// this id, so it checks the query's shape without reading anyone's data.
const NO_INSTANCE: &str = "i-00000000000000000";

/// The statistic a metric query asks for over each period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Statistic {
    /// The mean of the period's values (the default).
    #[default]
    Average,
    /// Their sum.
    Sum,
    /// The smallest.
    Minimum,
    /// The largest.
    Maximum,
    /// How many values there were.
    SampleCount,
    /// An extended statistic as CloudWatch writes it: a percentile (`p90`,
    /// `p99.9`), a trimmed mean (`tm90`), `TS(10%:90%)`, ...
    Extended(String),
}

impl Statistic {
    /// The statistic as CloudWatch names it (`Average`, `p90`).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Average => "Average",
            Self::Sum => "Sum",
            Self::Minimum => "Minimum",
            Self::Maximum => "Maximum",
            Self::SampleCount => "SampleCount",
            Self::Extended(s) => s,
        }
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CloudWatch metric and the statistic to read of it: a namespace, a
/// metric name and its dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatchMetric {
    namespace: String,
    name: String,
    dimensions: Vec<(String, String)>,
    statistic: Statistic,
}

impl CloudWatchMetric {
    /// The metric `name` in `namespace` (`AWS/EC2`, `CPUUtilization`), its
    /// [`Statistic::Average`], without dimensions.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            dimensions: Vec::new(),
            statistic: Statistic::Average,
        }
    }

    /// Adds a dimension (`AutoScalingGroupName` = `web`).
    pub fn dimension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    /// The statistic to read ([`Statistic::Average`] by default).
    pub fn statistic(mut self, statistic: Statistic) -> Self {
        self.statistic = statistic;
        self
    }
}

/// What a source asks for.
#[derive(Debug, Clone)]
enum Query {
    Metric(CloudWatchMetric),
    Expression(String),
}

/// A metric source that asks CloudWatch (`GetMetricData`) for the newest
/// point of a metric, or of a metric-math expression, in a window ending now.
///
/// - **Cluster-wide** (the default): one query; the sample carries the
///   cluster's name.
/// - **Per instance** ([`per_instance`](CloudWatchSourceBuilder::per_instance),
///   metrics only): one query per node, with the dimension `InstanceId` = the
///   node's instance id; a node without one is left out. Up to 500 queries
///   go in one call; a larger cluster takes several.
///
/// Each query asks for the points of its window newest first
/// (`ScanBy::TimestampDescending`); the sample is the newest point, and
/// [`Sample::at`] is its timestamp. CloudWatch stamps a point with the start
/// of its period and publishes it some time after (a minute or more for AWS
/// metrics), so the newest point is often more than a period old: give the
/// trigger a staleness bound past that, and a window long enough to hold it.
///
/// Missing data is not zero: a node whose query has no point has no sample,
/// and when no query has one the sample is [`AwsError::NoData`], which the
/// trigger takes as no data.
///
/// Each call is bounded by the source's [`timeout`](CloudWatchSourceBuilder::timeout)
/// (10 s by default), the AWS SDK's own retries (the [`ClientConfig`]'s)
/// included. moto has no CBOR parser, so CloudWatch is proven on the wire
/// with `aws-smithy-mocks` (getmoto/moto#9195), not against moto.
///
/// ```no_run
/// # async fn demo() -> Result<(), pyscaler_aws::AwsError> {
/// use std::time::Duration;
/// use pyscaler_aws::{ClientConfig, CloudWatchMetric, CloudWatchSource, Statistic};
///
/// let config = ClientConfig::new("eu-west-1");
/// // The CPU of each node, the average of each minute.
/// let cpu = CloudWatchMetric::new("AWS/EC2", "CPUUtilization").statistic(Statistic::Average);
/// let per_node = CloudWatchSource::metric(&config, cpu)
///     .per_instance()
///     .period(Duration::from_secs(60))
///     .build()
///     .await?; // one test query: a query CloudWatch refuses stops here
///
/// // One value for the cluster, from Metrics Insights.
/// let fleet = CloudWatchSource::expression(
///     &config,
///     r#"SELECT AVG(CPUUtilization) FROM SCHEMA("AWS/EC2", AutoScalingGroupName) WHERE AutoScalingGroupName = 'web'"#,
/// )
/// .name("fleet-cpu")
/// .build()
/// .await?;
/// # let _ = (per_node, fleet);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CloudWatchSource {
    name: String,
    client: aws_sdk_cloudwatch::Client,
    query: Query,
    per_instance: bool,
    period: i32,
    window: i64,
    timeout: Duration,
}

impl CloudWatchSource {
    /// Starts building a source that reads `metric`, reaching CloudWatch as
    /// `config` says (region, endpoint, credentials, SDK retries).
    pub fn metric(config: &ClientConfig, metric: CloudWatchMetric) -> CloudWatchSourceBuilder {
        CloudWatchSourceBuilder::new(config, Query::Metric(metric))
    }

    /// Starts building a source that evaluates a metric-math `expression`
    /// (`SEARCH(...)`, a Metrics Insights `SELECT`, or a function of them)
    /// for one cluster-wide value.
    pub fn expression(
        config: &ClientConfig,
        expression: impl Into<String>,
    ) -> CloudWatchSourceBuilder {
        CloudWatchSourceBuilder::new(config, Query::Expression(expression.into()))
    }
}

/// One query of a sample: its id in the call, and the sample's node.
struct Planned {
    id: String,
    node: String,
    query: MetricDataQuery,
}

impl CloudWatchSource {
    /// The query, in words for messages (`metric AWS/EC2 CPUUtilization`).
    fn describe(&self) -> String {
        match &self.query {
            Query::Metric(m) => {
                let mut s = format!("metric {} {} ({}", m.namespace, m.name, m.statistic);
                for (n, v) in &m.dimensions {
                    s.push_str(&format!(", {n}={v}"));
                }
                if self.per_instance {
                    s.push_str(", per instance");
                }
                s.push(')');
                s
            }
            Query::Expression(e) => format!("expression `{e}`"),
        }
    }

    /// The query `id` of metric `m`, for `instance` when it names one.
    fn metric_query(
        &self,
        m: &CloudWatchMetric,
        id: &str,
        instance: Option<&str>,
    ) -> MetricDataQuery {
        let mut metric = Metric::builder()
            .namespace(&m.namespace)
            .metric_name(&m.name);
        for (n, v) in &m.dimensions {
            metric = metric.dimensions(Dimension::builder().name(n).value(v).build());
        }
        if let Some(i) = instance {
            metric = metric.dimensions(Dimension::builder().name(INSTANCE_ID).value(i).build());
        }
        let stat = MetricStat::builder()
            .metric(metric.build())
            .period(self.period)
            .stat(m.statistic.as_str())
            .build();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(stat)
            .return_data(true)
            .build()
    }

    /// The queries for `cluster`: one per node with an instance id, or one.
    fn plan(&self, cluster: &Cluster) -> Vec<Planned> {
        match &self.query {
            Query::Metric(m) if self.per_instance => cluster
                .nodes()
                .iter()
                .filter_map(|n| n.instance_id.as_deref().map(|i| (n, i)))
                .enumerate()
                .map(|(k, (node, instance))| {
                    // Ids start with a lower-case letter: m0, m1, ...
                    let id = format!("m{k}");
                    Planned {
                        query: self.metric_query(m, &id, Some(instance)),
                        id,
                        node: node.name.clone(),
                    }
                })
                .collect(),
            Query::Metric(m) => vec![Planned {
                query: self.metric_query(m, "m0", None),
                id: "m0".to_owned(),
                node: cluster.name().to_owned(),
            }],
            Query::Expression(e) => vec![Planned {
                id: "e0".to_owned(),
                node: cluster.name().to_owned(),
                query: MetricDataQuery::builder()
                    .id("e0")
                    .expression(e)
                    .period(self.period)
                    .return_data(true)
                    .build(),
            }],
        }
    }

    /// One sample per query that has a point, or why there is none.
    async fn samples(&self, cluster: &Cluster) -> Result<Vec<Sample>, AwsError> {
        let planned = self.plan(cluster);
        if planned.is_empty() {
            let what = if cluster.is_empty() {
                format!("nothing to ask (cluster {} has no nodes)", cluster.name())
            } else {
                format!(
                    "nothing to ask (no node of cluster {} has an instance id)",
                    cluster.name()
                )
            };
            return Err(AwsError::NoData {
                query: self.describe(),
                what,
            });
        }
        let end = Utc::now().timestamp();
        let start = end - self.window;
        let mut points = Points::default();
        for chunk in planned.chunks(MAX_QUERIES) {
            self.fetch(chunk, (start, end), &mut points).await?;
        }
        let samples: Vec<Sample> = planned
            .iter()
            .filter_map(|p| {
                points
                    .newest(&p.id)
                    .map(|(at, value)| Sample::new(p.node.clone(), value).at(at))
            })
            .collect();
        if samples.is_empty() {
            return Err(points.nothing(self.describe(), planned.len()));
        }
        if samples.len() < planned.len() {
            debug!(source = %self.name, asked = planned.len(), answered = samples.len(),
                "CloudWatch had no point for some nodes; they have no sample.");
        }
        Ok(samples)
    }

    /// Asks for one chunk of queries over `(start, end)` (epoch seconds),
    /// following `NextToken` until every query has its newest point, there
    /// are no more pages, or [`MAX_PAGES`] were read.
    async fn fetch(
        &self,
        chunk: &[Planned],
        (start, end): (i64, i64),
        points: &mut Points,
    ) -> Result<(), AwsError> {
        let queries: Vec<MetricDataQuery> = chunk.iter().map(|p| p.query.clone()).collect();
        let mut token: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let request = self
                .client
                .get_metric_data()
                .set_metric_data_queries(Some(queries.clone()))
                .start_time(aws_smithy_types::DateTime::from_secs(start))
                .end_time(aws_smithy_types::DateTime::from_secs(end))
                // The newest point first: the one the sample is.
                .scan_by(ScanBy::TimestampDescending)
                .set_next_token(token.take());
            let out = self.send(request).await?;
            points
                .read(&out)
                .map_err(|problem| AwsError::UnexpectedAnswer {
                    query: self.describe(),
                    problem,
                })?;
            log_messages(&self.name, &out);
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                return Ok(());
            }
            // Newest first: a query that has a point will not get a newer one.
            if chunk.iter().all(|p| points.newest(&p.id).is_some()) {
                debug!(source = %self.name, page, "Every query has its newest point; not reading further pages.");
                return Ok(());
            }
        }
        warn!(source = %self.name, pages = MAX_PAGES,
            "CloudWatch had more pages; using the first ones (shorten the window).");
        Ok(())
    }

    /// Sends one `GetMetricData` call, bounded by the timeout.
    async fn send(
        &self,
        request: aws_sdk_cloudwatch::operation::get_metric_data::builders::GetMetricDataFluentBuilder,
    ) -> Result<GetMetricDataOutput, AwsError> {
        let subjects = Subjects {
            metric: Some(self.describe()),
            ..Subjects::default()
        };
        let sent = call("CloudWatch", "GetMetricData", &subjects, request.send());
        tokio::time::timeout(self.timeout, sent)
            .await
            .unwrap_or_else(|_| {
                Err(AwsError::WaitTimedOut {
                    what: format!(
                        "CloudWatch to answer GetMetricData for the {}",
                        self.describe()
                    ),
                    after: self.timeout,
                })
            })
    }
}

/// Logs the messages of an answer (partial data, arithmetic errors of an
/// expression) at debug.
fn log_messages(source: &str, out: &GetMetricDataOutput) {
    for m in out.messages() {
        debug!(
            source,
            code = m.code().unwrap_or_default(),
            message = m.value().unwrap_or_default(),
            "CloudWatch said about the query."
        );
    }
}

#[async_trait]
impl MetricSource for CloudWatchSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn sample(&self, cluster: &Cluster) -> pyscaler_core::Result<Vec<Sample>> {
        let samples = self.samples(cluster).await?;
        debug!(source = %self.name, samples = samples.len(), "CloudWatch answered.");
        Ok(samples)
    }
}

#[cfg(test)]
mod tests;
