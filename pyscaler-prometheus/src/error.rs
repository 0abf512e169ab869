//! `PrometheusError`: what can go wrong asking Prometheus, classified once.

use std::time::Duration;

use pyscaler_core::{Classify, ErrorKind};

/// An error of the Prometheus metric source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrometheusError {
    /// A setting of the source is wrong (found when it is built).
    #[error("prometheus source: `{setting}` {problem}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Prometheus refused the query (HTTP 400 or 422): the query is wrong.
    #[error("prometheus refused the query `{query}` (HTTP {status}, {error_type}): {message}")]
    BadQuery {
        /// The PromQL expression.
        query: String,
        /// The HTTP status.
        status: u16,
        /// Prometheus' `errorType` (`bad_data`, `execution`, ...).
        error_type: String,
        /// Prometheus' own message.
        message: String,
    },
    /// Prometheus could not answer now: a 5xx (its own query timeout
    /// included), a refused connection, a dropped answer. Retryable.
    #[error("prometheus at {endpoint} did not answer the query `{query}`: {reason}")]
    Unavailable {
        /// The server's base URL.
        endpoint: String,
        /// The PromQL expression.
        query: String,
        /// What happened.
        reason: String,
    },
    /// The query ran out of time (the source's bound).
    #[error("prometheus at {endpoint} did not answer the query `{query}` within {after:?}")]
    TimedOut {
        /// The server's base URL.
        endpoint: String,
        /// The PromQL expression.
        query: String,
        /// The bound.
        after: Duration,
    },
    /// The credentials were refused (HTTP 401 or 403).
    #[error("prometheus at {endpoint} refused the credentials (HTTP {status})")]
    Unauthorized {
        /// The server's base URL.
        endpoint: String,
        /// The HTTP status.
        status: u16,
    },
    /// The query returned no value to decide on: no series, no series for
    /// any node of the cluster, or only NaN. Missing data is not zero.
    #[error("no data: the query `{query}` returned {what}")]
    NoData {
        /// The PromQL expression.
        query: String,
        /// What it returned instead.
        what: String,
    },
    /// The answer was not what the query should give (several series for a
    /// cluster-wide value, a string, a body that is not Prometheus' JSON).
    #[error("unexpected answer to the query `{query}`: {problem}")]
    Unexpected {
        /// The PromQL expression.
        query: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl PrometheusError {
    pub(crate) fn invalid(setting: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidSetting {
            setting,
            problem: problem.into(),
        }
    }
}

impl Classify for PrometheusError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidSetting { .. } | Self::BadQuery { .. } => ErrorKind::InvalidInput,
            Self::Unavailable { .. } => ErrorKind::Transient,
            Self::TimedOut { .. } => ErrorKind::Timeout,
            Self::Unauthorized { .. } => ErrorKind::PermissionDenied,
            Self::NoData { .. } => ErrorKind::NotFound,
            Self::Unexpected { .. } => ErrorKind::Unexpected,
        }
    }

    fn is_retryable(&self) -> bool {
        // No data may come with the next scrape; a refusal will not change.
        matches!(
            self,
            Self::Unavailable { .. } | Self::TimedOut { .. } | Self::NoData { .. }
        )
    }
}

impl From<PrometheusError> for pyscaler_core::Error {
    fn from(e: PrometheusError) -> Self {
        pyscaler_core::Error::provider(e)
    }
}
