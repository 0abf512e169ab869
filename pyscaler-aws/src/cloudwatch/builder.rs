//! `CloudWatchSourceBuilder`: the settings of a [`CloudWatchSource`],
//! checked, and the test query that finds a refused query before any
//! scaler starts.

use std::time::Duration;

use pyscaler_core::{Cluster, Node};

use super::{CloudWatchSource, Query, INSTANCE_ID, MAX_DIMENSIONS, NO_INSTANCE};
use crate::attempts::CountAttempts;
use crate::{AwsError, ClientConfig};

/// How the source reaches CloudWatch.
#[derive(Debug)]
enum Connect {
    Config(ClientConfig),
    #[cfg(test)]
    Client(aws_sdk_cloudwatch::Client),
}

/// Builds a [`CloudWatchSource`]; setters cannot fail,
/// [`build`](Self::build) checks them and asks CloudWatch once.
#[derive(Debug)]
pub struct CloudWatchSourceBuilder {
    connect: Connect,
    name: Option<String>,
    query: Query,
    per_instance: bool,
    period: Duration,
    window: Option<Duration>,
    timeout: Duration,
}

impl CloudWatchSourceBuilder {
    pub(super) fn new(config: &ClientConfig, query: Query) -> Self {
        Self {
            connect: Connect::Config(config.clone()),
            name: None,
            query,
            per_instance: false,
            period: Duration::from_secs(60),
            window: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Uses this SDK client (the unit tests' mock) instead of one made from
    /// the [`ClientConfig`].
    #[cfg(test)]
    pub(crate) fn with_client(mut self, client: aws_sdk_cloudwatch::Client) -> Self {
        self.connect = Connect::Client(client);
        self
    }

    /// The counter's name in reports and events (by default the metric's
    /// name, or `cloudwatch` for an expression).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// One value per node: one query per node with an instance id, with the
    /// dimension `InstanceId` added to the metric's. Metrics only.
    pub fn per_instance(mut self) -> Self {
        self.per_instance = true;
        self
    }

    /// The length of each point (60 s by default): 1, 5, 10 or 30 s
    /// (high-resolution metrics), or a multiple of 60 s.
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// How far back the query looks for the newest point (5 periods by
    /// default): a multiple of the period.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    /// Bounds each `GetMetricData` call, the SDK's retries included (10 s by
    /// default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the settings, then runs the query once, so that a query
    /// CloudWatch refuses is found before anything depends on it. No data
    /// yet is fine (a metric has none before its first point). A
    /// per-instance query is tried for an instance id no instance has.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] for an empty name, namespace, metric
    /// name, dimension name, statistic or expression, more than 30
    /// dimensions, an `InstanceId` dimension on a per-instance query,
    /// `per_instance` on an expression, a period CloudWatch does not take, a
    /// window that is not a multiple of it, or a zero timeout;
    /// [`AwsError::Api`] when CloudWatch refuses the query (bad input, with
    /// CloudWatch's message: `InvalidParameterValue`, `ValidationError`,
    /// ...), refuses to read the metric (`Forbidden`), or the test query
    /// meets a passing fault (throttling, a 5xx, no answer: retryable);
    /// [`AwsError::WaitTimedOut`] when it ran past the timeout;
    /// [`AwsError::UnexpectedAnswer`] when an expression gives several
    /// series.
    pub async fn build(self) -> Result<CloudWatchSource, AwsError> {
        let (period, window) = self.check()?;
        let client = match self.connect {
            #[cfg(test)]
            Connect::Client(client) => client,
            Connect::Config(config) => {
                let conf = aws_sdk_cloudwatch::config::Builder::from(&config.sdk_config().await)
                    // Counts the SDK's own retries for reports.
                    .interceptor(CountAttempts)
                    .build();
                aws_sdk_cloudwatch::Client::from_conf(conf)
            }
        };
        let name = self.name.unwrap_or_else(|| match &self.query {
            Query::Metric(m) => m.name.clone(),
            Query::Expression(_) => "cloudwatch".to_owned(),
        });
        let source = CloudWatchSource {
            name,
            client,
            query: self.query,
            per_instance: self.per_instance,
            period,
            window,
            timeout: self.timeout,
        };
        let nobody = Node::new(NO_INSTANCE, NO_INSTANCE).with_instance_id(NO_INSTANCE);
        let test = Cluster::new("test-query").with_nodes([nobody]);
        match source.samples(&test).await {
            Ok(_) | Err(AwsError::NoData { .. }) => Ok(source),
            Err(e) => Err(e),
        }
    }

    /// The period and the window in seconds, or the first setting that is wrong.
    fn check(&self) -> Result<(i32, i64), AwsError> {
        let empty = |s: &str| s.trim().is_empty();
        if self.name.as_deref().is_some_and(empty) {
            return Err(AwsError::invalid("name", "is empty"));
        }
        match &self.query {
            Query::Metric(m) => {
                if empty(&m.namespace) {
                    return Err(AwsError::invalid("namespace", "is empty"));
                }
                if empty(&m.name) {
                    return Err(AwsError::invalid("metric name", "is empty"));
                }
                if empty(m.statistic.as_str()) {
                    return Err(AwsError::invalid("statistic", "is empty"));
                }
                if let Some((_, v)) = m.dimensions.iter().find(|(n, _)| empty(n)) {
                    return Err(AwsError::invalid(
                        "dimensions",
                        format!("a dimension without a name (value `{v}`)"),
                    ));
                }
                if self.per_instance && m.dimensions.iter().any(|(n, _)| n == INSTANCE_ID) {
                    return Err(AwsError::invalid(
                        "dimensions",
                        "name InstanceId, which per_instance sets for each node",
                    ));
                }
                let count = m.dimensions.len() + usize::from(self.per_instance);
                if count > MAX_DIMENSIONS {
                    return Err(AwsError::invalid(
                        "dimensions",
                        format!("are {count}; a CloudWatch metric has at most {MAX_DIMENSIONS}"),
                    ));
                }
            }
            Query::Expression(e) => {
                if empty(e) {
                    return Err(AwsError::invalid("expression", "is empty"));
                }
                if self.per_instance {
                    return Err(AwsError::invalid(
                        "per_instance",
                        "applies to a metric, not to an expression (the expression gives one \
                         value for the cluster)",
                    ));
                }
            }
        }
        if self.timeout.is_zero() {
            return Err(AwsError::invalid("timeout", "is 0"));
        }
        let secs = self.period.as_secs();
        let shown = humantime_serde::re::humantime::format_duration(self.period);
        if self.period.subsec_nanos() != 0
            || !(matches!(secs, 1 | 5 | 10 | 30) || secs.is_multiple_of(60))
        {
            return Err(AwsError::invalid(
                "period",
                format!("is {shown}; CloudWatch takes 1, 5, 10 or 30 s, or a multiple of 60 s"),
            ));
        }
        let period = i32::try_from(secs)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| AwsError::invalid("period", format!("is {shown}, out of range")))?;
        let window = self.window.unwrap_or(self.period * 5);
        let periods = window.as_secs() / secs;
        if window.subsec_nanos() != 0 || !window.as_secs().is_multiple_of(secs) || periods == 0 {
            return Err(AwsError::invalid(
                "window",
                format!(
                    "is {}; it must be a multiple of the period ({shown})",
                    humantime_serde::re::humantime::format_duration(window)
                ),
            ));
        }
        let window = i64::try_from(window.as_secs())
            .map_err(|_| AwsError::invalid("window", "is out of range"))?;
        Ok((period, window))
    }
}
