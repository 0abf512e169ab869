//! Prometheus' JSON answers (`/api/v1/query`, `/api/v1/query_range`) read
//! into series of numbers.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One series of an answer: its labels and its values (NaN and infinities
/// left out: they are no measurement).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) values: Vec<f64>,
}

impl Series {
    /// The mean of the values, or `None` when there is none.
    pub(crate) fn mean(&self) -> Option<f64> {
        if self.values.is_empty() {
            return None;
        }
        Some(self.values.iter().sum::<f64>() / self.values.len() as f64)
    }
}

/// What an answer holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// A scalar: one value, no labels.
    Scalar(Option<f64>),
    /// An instant vector or a range matrix: series.
    Series(Vec<Series>),
}

/// The envelope of every answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Envelope {
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) data: Option<Data>,
    #[serde(default)]
    pub(crate) error_type: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Data {
    result_type: String,
    result: Value,
}

#[derive(Debug, Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// A sample's value: Prometheus writes numbers as strings (`"3.5"`, `"NaN"`, `"+Inf"`).
fn number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

impl Data {
    /// The answer, or what is wrong with it.
    pub(crate) fn answer(self) -> Result<Answer, String> {
        match self.result_type.as_str() {
            "scalar" => {
                let (_, v): (f64, String) = serde_json::from_value(self.result)
                    .map_err(|e| format!("a scalar that is not [time, \"value\"]: {e}"))?;
                Ok(Answer::Scalar(number(&v)))
            }
            "vector" | "matrix" => {
                let raw: Vec<RawSeries> = serde_json::from_value(self.result).map_err(|e| {
                    format!("a {} that is not a list of series: {e}", self.result_type)
                })?;
                Ok(Answer::Series(
                    raw.into_iter()
                        .map(|s| Series {
                            labels: s.metric,
                            values: s
                                .value
                                .into_iter()
                                .chain(s.values)
                                .filter_map(|(_, v)| number(&v))
                                .collect(),
                        })
                        .collect(),
                ))
            }
            other => Err(format!("a result of type `{other}`, not a number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Answer {
        let e: Envelope = serde_json::from_str(json).expect("envelope");
        e.data.expect("data").answer().expect("answer")
    }

    #[test]
    fn a_vector_keeps_its_labels_and_reads_numbers_from_strings() {
        let a = answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"instance":"web-01","job":"node"},"value":[1764620000.5,"3.5"]},
                {"metric":{"instance":"web-02"},"value":[1764620000.5,"NaN"]}]}}"#,
        );
        let Answer::Series(s) = a else {
            panic!("series")
        };
        assert_eq!(s[0].labels["instance"], "web-01");
        assert_eq!(s[0].mean(), Some(3.5));
        // NaN is no measurement.
        assert_eq!(s[1].mean(), None);
    }

    #[test]
    fn a_matrix_is_averaged_over_its_points_and_a_scalar_is_one_value() {
        let a = answer(
            r#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{},"values":[[1,"1"],[2,"9"],[3,"+Inf"]]}]}}"#,
        );
        let Answer::Series(s) = a else {
            panic!("series")
        };
        assert_eq!(s[0].mean(), Some(5.0));
        assert_eq!(
            answer(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"4.25"]}}"#),
            Answer::Scalar(Some(4.25))
        );
    }

    #[test]
    fn a_string_result_is_not_a_number() {
        let e: Envelope = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"string","result":[1,"hello"]}}"#,
        )
        .expect("envelope");
        assert!(e.data.expect("data").answer().is_err());
    }

    #[test]
    fn an_error_answer_keeps_prometheus_message() {
        let e: Envelope = serde_json::from_str(
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error"}"#,
        )
        .expect("envelope");
        assert_eq!(e.status, "error");
        assert_eq!(e.error_type.as_deref(), Some("bad_data"));
        assert_eq!(e.error.as_deref(), Some("1:5: parse error"));
    }
}
