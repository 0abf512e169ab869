//! Reading `GetMetricData`'s answers: the newest point of each query, across
//! pages, and the queries CloudWatch could not answer.

use std::collections::HashMap;

use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
use aws_sdk_cloudwatch::types::{MetricDataResult, StatusCode};
use chrono::{DateTime, Utc};
use pyscaler_core::ErrorKind;
use tracing::debug;

use crate::AwsError;

/// What the pages of a sample's calls said, by query id.
#[derive(Debug, Default)]
pub(super) struct Points {
    /// The newest finite point of each query that has one.
    newest: HashMap<String, (DateTime<Utc>, f64)>,
    /// The queries CloudWatch could not answer (`Forbidden`,
    /// `InternalError`), with what it said about them.
    failed: HashMap<String, (StatusCode, String)>,
    /// How many results the pages held, with points or without.
    results: usize,
}

impl Points {
    /// The newest point of query `id`: when, and its value.
    pub(super) fn newest(&self, id: &str) -> Option<(DateTime<Utc>, f64)> {
        self.newest.get(id).copied()
    }

    /// Takes in one page; `Err` says why the answer does not fit the query.
    pub(super) fn read(&mut self, out: &GetMetricDataOutput) -> Result<(), String> {
        // Series with points per id on this page: one query is one series.
        let mut series: HashMap<&str, Vec<&str>> = HashMap::new();
        for r in out.metric_data_results() {
            let Some(id) = r.id() else { continue };
            self.results += 1;
            let said = said(r);
            match r.status_code() {
                // More may come on a later page, or CloudWatch gave up on
                // some of it: what came is used.
                Some(StatusCode::PartialData) => {
                    debug!(query = id, said = %said, "CloudWatch gave partial data; using what came.");
                }
                Some(status @ (StatusCode::Forbidden | StatusCode::InternalError)) => {
                    debug!(query = id, status = status.as_str(), said = %said,
                        "CloudWatch could not answer a query.");
                    self.failed.insert(id.to_owned(), (status.clone(), said));
                }
                _ if !said.is_empty() => {
                    debug!(query = id, said = %said, "CloudWatch said about a query.");
                }
                _ => {}
            }
            let Some(point) = newest_of(r) else { continue };
            let labels = series.entry(id).or_default();
            labels.push(r.label().unwrap_or("?"));
            if labels.len() > 1 {
                return Err(format!(
                    "{} series for the one query {id} ({}): aggregate them into one \
                     (AVG(SEARCH(...)), or a Metrics Insights SELECT without GROUP BY)",
                    labels.len(),
                    labels.join(", ")
                ));
            }
            let kept = self.newest.entry(id.to_owned()).or_insert(point);
            if point.0 > kept.0 {
                *kept = point;
            }
        }
        Ok(())
    }

    /// Why a sample of `asked` queries (the `query`) has no point at all:
    /// CloudWatch refused to read the metric (`Forbidden`), failed on it
    /// (`InternalError`, transient), or had no data.
    pub(super) fn nothing(&self, query: String, asked: usize) -> AwsError {
        let failure = |wanted: StatusCode| self.failed.values().find(|(s, _)| *s == wanted);
        let api = |code: &str, said: &str, kind: ErrorKind| AwsError::Api {
            service: "CloudWatch",
            operation: "GetMetricData",
            code: Some(code.to_owned()),
            // CloudWatch's message often repeats the status as its code.
            message: match said.strip_prefix(code).and_then(|s| s.strip_prefix(": ")) {
                Some(rest) => rest.to_owned(),
                None if said.is_empty() => "CloudWatch could not answer the query".to_owned(),
                None => said.to_owned(),
            },
            subject: Some(query.clone()),
            kind,
            source: None,
        };
        if let Some((_, said)) = failure(StatusCode::Forbidden) {
            return api("Forbidden", said, ErrorKind::PermissionDenied);
        }
        if let Some((_, said)) = failure(StatusCode::InternalError) {
            return api("InternalError", said, ErrorKind::Transient);
        }
        let what = match (self.results, asked) {
            (0, _) => "no result".to_owned(),
            (_, 1) => "no point in the window".to_owned(),
            (_, n) => format!("no point in the window for any of its {n} queries"),
        };
        AwsError::NoData { query, what }
    }
}

/// What CloudWatch said about one result (`ArithmeticError: ...`).
fn said(r: &MetricDataResult) -> String {
    r.messages()
        .iter()
        .map(|m| match (m.code(), m.value()) {
            (Some(c), Some(v)) => format!("{c}: {v}"),
            (c, v) => c.or(v).unwrap_or_default().to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The newest finite point of a result (NaN and infinities are no data).
fn newest_of(r: &MetricDataResult) -> Option<(DateTime<Utc>, f64)> {
    r.timestamps()
        .iter()
        .zip(r.values())
        .filter(|(_, v)| v.is_finite())
        .filter_map(|(t, v)| DateTime::from_timestamp(t.secs(), t.subsec_nanos()).map(|t| (t, *v)))
        .max_by_key(|(t, _)| *t)
}
