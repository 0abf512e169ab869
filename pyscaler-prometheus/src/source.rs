//! `PrometheusSource`: a [`MetricSource`] over Prometheus' HTTP API.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pyscaler_core::{Cluster, MetricSource, Node, Result, Sample};
use reqwest::{StatusCode, Url};
use tracing::debug;

use crate::answer::{Answer, Envelope, Series};
use crate::PrometheusError;

/// The most points Prometheus returns for one range query's series.
const MAX_POINTS: u64 = 11_000;
/// Answers larger than this are refused rather than read.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Which of a node's fields a per-node series' label is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeKey {
    /// The node's name (`web-01`).
    Name,
    /// The node's id (on EC2, the instance id `i-0abc...`).
    Id,
    /// The node's host (`10.0.1.7`); a label value `host:port`, as
    /// Prometheus' `instance` label usually is, matches by its host.
    Host,
}

impl NodeKey {
    /// What a node is known by under this key (`None`: a node without an
    /// address, for `Host`).
    fn of(self, node: &Node) -> Option<&str> {
        match self {
            Self::Name => Some(&node.name),
            Self::Id => Some(&node.id),
            Self::Host => node.address.as_ref().map(|a| a.host.as_str()),
        }
    }

    /// The keys a label's value matches: itself, and for `Host` also the
    /// host of a `host:port` (`[::1]:9100` gives `::1`).
    fn keys(self, value: &str) -> impl Iterator<Item = &str> {
        let host = match self {
            Self::Host => value
                .rsplit_once(':')
                .map(|(host, _)| host.trim_matches(['[', ']']))
                .filter(|host| *host != value),
            Self::Name | Self::Id => None,
        };
        std::iter::once(value).chain(host)
    }
}

/// How the source logs in (never logged, never in an error).
#[derive(Clone)]
enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Self::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// A metric source that asks Prometheus: one PromQL expression, evaluated
/// now (`/api/v1/query`) or over a window (`/api/v1/query_range` with an
/// explicit step, the mean of each series' points).
///
/// - **Cluster-wide** (the default): the query gives a scalar or exactly one
///   series (aggregate with `sum`, `avg`, ...); the sample carries the
///   cluster's name.
/// - **Per node** ([`per_node`](PrometheusSourceBuilder::per_node)): one
///   series per node, matched to the cluster's nodes by a label (`instance`
///   against the node's host, say); nodes without a series are left out.
///
/// Missing data is not zero: a query that returns nothing to decide on
/// (no series, no series for any node, only NaN) is
/// [`PrometheusError::NoData`], so the trigger does not act on it.
///
/// Staleness is Prometheus' own: a series its scrapes no longer see is
/// marked stale and drops out of the answer (and any series older than the
/// server's 5-minute lookback). The samples carry no
/// [`Sample::at`](pyscaler_core::Sample::at): the timestamps in an answer
/// are the query's evaluation time, not when the value was measured. A
/// Pushgateway keeps a value forever; to notice a dead pusher, query
/// `metric and on(job, instance) (time() - push_time_seconds < 30)`.
///
/// ```no_run
/// # async fn demo() -> Result<(), pyscaler_prometheus::PrometheusError> {
/// use std::time::Duration;
/// use pyscaler_prometheus::{NodeKey, PrometheusSource};
///
/// // The 5-minute load of each node, from node_exporter's `instance` label.
/// let load = PrometheusSource::builder("http://127.0.0.1:9090", "node_load5")
///     .name("load5")
///     .per_node("instance", NodeKey::Host)
///     .timeout(Duration::from_secs(5))
///     .build()
///     .await?; // one test query: a query Prometheus refuses stops here
/// # let _ = load;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    name: String,
    endpoint: Url,
    query: String,
    per_node: Option<(String, NodeKey)>,
    window: Option<(Duration, Duration)>,
    timeout: Duration,
    auth: Option<Auth>,
    client: reqwest::Client,
}

/// Builds a [`PrometheusSource`]; setters cannot fail,
/// [`build`](Self::build) checks them and asks Prometheus once.
pub struct PrometheusSourceBuilder {
    name: String,
    endpoint: String,
    query: String,
    per_node: Option<(String, NodeKey)>,
    window: Option<(Duration, Duration)>,
    timeout: Duration,
    auth: Option<Auth>,
}

impl fmt::Debug for PrometheusSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusSourceBuilder")
            .field("name", &self.name)
            .field("endpoint", &without_credentials(&self.endpoint))
            .field("query", &self.query)
            .field("per_node", &self.per_node)
            .field("window", &self.window)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .finish()
    }
}

/// `endpoint` with any `user:password@` taken out, for messages.
fn without_credentials(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => endpoint.to_owned(),
            }
        }
        None => endpoint.to_owned(),
    }
}

fn decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

impl PrometheusSource {
    /// Starts building a source that evaluates `query` on the Prometheus
    /// server at `endpoint` (`http://prometheus:9090`, a path prefix allowed).
    pub fn builder(
        endpoint: impl Into<String>,
        query: impl Into<String>,
    ) -> PrometheusSourceBuilder {
        PrometheusSourceBuilder {
            name: "prometheus".into(),
            endpoint: endpoint.into(),
            query: query.into(),
            per_node: None,
            window: None,
            timeout: Duration::from_secs(10),
            auth: None,
        }
    }

    /// The PromQL expression.
    pub fn query(&self) -> &str {
        &self.query
    }
}

impl PrometheusSourceBuilder {
    /// The counter's name in reports and events (`prometheus` by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// One value per node: each series is matched to the node whose `key`
    /// equals the series' `label`.
    pub fn per_node(mut self, label: impl Into<String>, key: NodeKey) -> Self {
        self.per_node = Some((label.into(), key));
        self
    }

    /// Evaluates the query over the last `range`, one point per `step`
    /// (`/api/v1/query_range`), and takes each series' mean.
    pub fn window(mut self, range: Duration, step: Duration) -> Self {
        self.window = Some((range, step));
        self
    }

    /// Bounds each query, connecting included (10 s by default).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Logs in with HTTP basic authentication.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some(Auth::Basic {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// Logs in with a bearer token.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(Auth::Bearer(token.into()));
        self
    }

    /// Checks the settings, then evaluates the query once, so that a query
    /// Prometheus refuses is found before anything depends on it. No data
    /// yet is fine (the series may not exist before the first scale-out).
    ///
    /// # Errors
    /// [`PrometheusError::InvalidSetting`] for an endpoint that is not an
    /// `http(s)` URL, an empty query or name, a zero timeout or step, or a
    /// window of more than 11,000 points; [`PrometheusError::BadQuery`] with
    /// the server's message; and whatever the test query met (the server
    /// unreachable, the credentials refused).
    pub async fn build(self) -> std::result::Result<PrometheusSource, PrometheusError> {
        let source = self.check()?;
        match source.fetch().await {
            Ok(_) | Err(PrometheusError::NoData { .. }) => Ok(source),
            Err(e) => Err(e),
        }
    }

    fn check(self) -> std::result::Result<PrometheusSource, PrometheusError> {
        let shown = without_credentials(&self.endpoint);
        let mut endpoint = Url::parse(&self.endpoint)
            .map_err(|e| PrometheusError::invalid("endpoint", format!("`{shown}`: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(PrometheusError::invalid(
                "endpoint",
                format!("`{shown}` is not an http or https URL"),
            ));
        }
        // Credentials in the URL would show in every error naming the
        // endpoint: they become basic authentication instead.
        let mut auth = self.auth;
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            if auth.is_none() {
                auth = Some(Auth::Basic {
                    user: decoded(endpoint.username()),
                    password: decoded(endpoint.password().unwrap_or_default()),
                });
            }
            let _ = endpoint.set_username("");
            let _ = endpoint.set_password(None);
        }
        if !endpoint.path().ends_with('/') {
            let path = format!("{}/", endpoint.path());
            endpoint.set_path(&path);
        }
        if self.query.trim().is_empty() {
            return Err(PrometheusError::invalid("query", "is empty"));
        }
        if self.name.trim().is_empty() {
            return Err(PrometheusError::invalid("name", "is empty"));
        }
        if self.timeout.is_zero() {
            return Err(PrometheusError::invalid("timeout", "is 0"));
        }
        if self
            .per_node
            .as_ref()
            .is_some_and(|(l, _)| l.trim().is_empty())
        {
            return Err(PrometheusError::invalid("per_node", "names no label"));
        }
        if let Some((range, step)) = self.window {
            if step.as_secs() == 0 {
                return Err(PrometheusError::invalid("window", "has a step under 1 s"));
            }
            let points = range.as_secs() / step.as_secs();
            if points == 0 {
                return Err(PrometheusError::invalid(
                    "window",
                    "is shorter than its step",
                ));
            }
            if points > MAX_POINTS {
                return Err(PrometheusError::invalid(
                    "window",
                    format!("asks for {points} points; Prometheus returns at most {MAX_POINTS}"),
                ));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .build()
            .map_err(|e| PrometheusError::invalid("endpoint", format!("no HTTP client: {e}")))?;
        Ok(PrometheusSource {
            name: self.name,
            endpoint,
            query: self.query,
            per_node: self.per_node,
            window: self.window,
            timeout: self.timeout,
            auth,
            client,
        })
    }
}

impl PrometheusSource {
    fn endpoint_str(&self) -> String {
        self.endpoint.as_str().trim_end_matches('/').to_owned()
    }

    fn unavailable(&self, reason: impl Into<String>) -> PrometheusError {
        PrometheusError::Unavailable {
            endpoint: self.endpoint_str(),
            query: self.query.clone(),
            reason: reason.into(),
        }
    }

    fn unexpected(&self, problem: impl Into<String>) -> PrometheusError {
        PrometheusError::Unexpected {
            query: self.query.clone(),
            problem: problem.into(),
        }
    }

    /// Evaluates the query: what Prometheus answered.
    async fn fetch(&self) -> std::result::Result<Answer, PrometheusError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let (path, params) = match self.window {
            None => ("api/v1/query", vec![("query", self.query.clone())]),
            Some((range, step)) => (
                "api/v1/query_range",
                vec![
                    ("query", self.query.clone()),
                    ("start", format!("{:.3}", now - range.as_secs_f64())),
                    ("end", format!("{now:.3}")),
                    ("step", step.as_secs().to_string()),
                ],
            ),
        };
        let url = self
            .endpoint
            .join(path)
            .map_err(|e| self.unexpected(format!("no URL for {path}: {e}")))?;
        let mut request = self.client.post(url).form(&params);
        request = match &self.auth {
            Some(Auth::Basic { user, password }) => request.basic_auth(user, Some(password)),
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            None => request,
        };
        debug!(source = %self.name, query = %self.query, "Asking Prometheus.");
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(PrometheusError::Unauthorized {
                endpoint: self.endpoint_str(),
                status: status.as_u16(),
            });
        }
        // Read in chunks, so that an answer too large is refused before it
        // is all in memory (Prometheus sends large answers chunked, without
        // a Content-Length).
        let mut response = response;
        let mut body: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(self.unexpected(format!(
                    "an answer of more than {MAX_ANSWER_BYTES} bytes; narrow the query"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        self.read(status, &body)
    }

    /// A transport failure: timed out, or unavailable.
    fn transport(&self, e: reqwest::Error) -> PrometheusError {
        if e.is_timeout() {
            PrometheusError::TimedOut {
                endpoint: self.endpoint_str(),
                query: self.query.clone(),
                after: self.timeout,
            }
        } else {
            // Without the URL: the error's text names it already as the endpoint.
            self.unavailable(e.without_url().to_string())
        }
    }

    /// Reads an answer with `status` and `body`.
    fn read(
        &self,
        status: StatusCode,
        body: &[u8],
    ) -> std::result::Result<Answer, PrometheusError> {
        let envelope: Option<Envelope> = serde_json::from_slice(body).ok();
        let refused = matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
        );
        match envelope {
            Some(e) if e.status == "success" && status.is_success() => e
                .data
                .ok_or_else(|| self.unexpected("a success without data"))?
                .answer()
                .map_err(|p| self.unexpected(p)),
            Some(e) if refused => Err(PrometheusError::BadQuery {
                query: self.query.clone(),
                status: status.as_u16(),
                error_type: e.error_type.unwrap_or_default(),
                message: e.error.unwrap_or_default(),
            }),
            Some(e) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                Err(self.unavailable(format!("HTTP {status}: {}", e.error.unwrap_or_default())))
            }
            Some(e) => Err(self.unexpected(format!(
                "HTTP {status}, status `{}`: {}",
                e.status,
                e.error.unwrap_or_default()
            ))),
            None if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                Err(self.unavailable(format!("HTTP {status}")))
            }
            None if refused => Err(PrometheusError::BadQuery {
                query: self.query.clone(),
                status: status.as_u16(),
                error_type: String::new(),
                message: String::from_utf8_lossy(body).chars().take(500).collect(),
            }),
            None => Err(self.unexpected(format!(
                "HTTP {status} with a body that is not Prometheus' JSON"
            ))),
        }
    }

    /// The samples `answer` gives for `cluster`.
    fn samples(
        &self,
        cluster: &Cluster,
        answer: Answer,
    ) -> std::result::Result<Vec<Sample>, PrometheusError> {
        let no_data = |what: String| PrometheusError::NoData {
            query: self.query.clone(),
            what,
        };
        match (&self.per_node, answer) {
            (None, Answer::Scalar(Some(value))) => {
                Ok(vec![Sample::new(cluster.name().to_owned(), value)])
            }
            (None, Answer::Scalar(None)) => Err(no_data("NaN".into())),
            (None, Answer::Series(series)) => match series.as_slice() {
                [] => Err(no_data("no series".into())),
                [one] => one
                    .mean()
                    .map(|value| vec![Sample::new(cluster.name().to_owned(), value)])
                    .ok_or_else(|| no_data("a series without a number".into())),
                many => Err(self.unexpected(format!(
                    "{} series for one cluster-wide value: aggregate them (sum, avg, max) \
                     or ask for one per node",
                    many.len()
                ))),
            },
            (Some(_), Answer::Scalar(_)) => {
                Err(self.unexpected("a scalar, where one series per node was asked for"))
            }
            (Some((label, key)), Answer::Series(series)) => {
                let mut samples = Vec::new();
                let index = index(&series, label, *key);
                for node in cluster.nodes() {
                    let mine = key
                        .of(node)
                        .and_then(|k| index.get(k))
                        .map_or(&[][..], Vec::as_slice);
                    if mine.len() > 1 {
                        return Err(self.unexpected(format!(
                            "{} series for node {} (by `{label}`): aggregate them by `{label}`",
                            mine.len(),
                            node.name
                        )));
                    }
                    if let Some(value) = mine.first().and_then(|s| s.mean()) {
                        samples.push(Sample::new(node.name.clone(), value));
                    }
                }
                if samples.is_empty() {
                    return Err(no_data(format!(
                        "{} series, none with a `{label}` of a node of cluster {}",
                        series.len(),
                        cluster.name()
                    )));
                }
                Ok(samples)
            }
        }
    }
}

/// The series by the key their `label` gives: built once per answer, so
/// matching a cluster's nodes costs one lookup a node, not a scan.
fn index<'a>(series: &'a [Series], label: &str, key: NodeKey) -> HashMap<&'a str, Vec<&'a Series>> {
    let mut index: HashMap<&str, Vec<&Series>> = HashMap::new();
    for s in series {
        if let Some(value) = s.labels.get(label) {
            for k in key.keys(value) {
                index.entry(k).or_default().push(s);
            }
        }
    }
    index
}

#[async_trait]
impl MetricSource for PrometheusSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn sample(&self, cluster: &Cluster) -> Result<Vec<Sample>> {
        let answer = self.fetch().await;
        // The core's metrics count every query, by its error kind.
        pyscaler_core::record_provider_call(pyscaler_core::ProviderCall {
            provider: "Prometheus",
            operation: "Query",
            attempts: 1,
            error: answer.as_ref().err().map(pyscaler_core::Classify::kind),
        });
        let answer = answer?;
        let samples = self.samples(cluster, answer)?;
        debug!(source = %self.name, samples = samples.len(), "Prometheus answered.");
        Ok(samples)
    }
}

#[cfg(test)]
mod tests;
