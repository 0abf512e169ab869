//! The Grafana dashboard that ships with the example
//! (`examples/tomcat/grafana/pyscaler.json`) queries only what the library
//! exports: every metric its PromQL names is one of `pyscaler_core::METRICS`
//! (a histogram through its `_bucket`, `_sum` or `_count` series), with
//! labels that metric has.

use std::collections::BTreeSet;

use pyscaler_core::{MetricInfo, MetricType, METRICS};

const DASHBOARD: &str = include_str!("../tomcat/grafana/pyscaler.json");

/// Every PromQL expression of the dashboard, with the legend it is shown
/// under (none for annotations and variables), and where it is.
fn expressions(dashboard: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            found.push((format!("panel {title}"), expr.to_owned(), legend.to_owned()));
        }
    }
    let annotations = dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations");
    for a in annotations {
        let name = a["name"].as_str().unwrap_or_default();
        let expr = a["expr"].as_str().expect("an annotation's expr");
        let legend = format!(
            "{} {}",
            a["titleFormat"].as_str().unwrap_or_default(),
            a["textFormat"].as_str().unwrap_or_default()
        );
        found.push((format!("annotation {name}"), expr.to_owned(), legend));
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    for v in variables {
        if let Some(query) = v["query"]["query"].as_str() {
            let name = v["name"].as_str().unwrap_or_default();
            found.push((format!("variable {name}"), query.to_owned(), String::new()));
        }
    }
    found
}

/// A metric an expression selects: its name as written, and the label
/// names of its matchers.
#[derive(Debug)]
struct Selector {
    name: String,
    labels: Vec<String>,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The `pyscaler_` series an expression selects, with their matchers'
/// label names (quoted values skipped, so a value never reads as a name).
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if !is_ident(chars[i]) || (i > 0 && is_ident(chars[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        if !name.starts_with("pyscaler_") {
            continue;
        }
        let mut labels = Vec::new();
        if chars.get(i) == Some(&'{') {
            i += 1;
            let mut label = String::new();
            while i < chars.len() && chars[i] != '}' {
                match chars[i] {
                    '"' => {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            i += 1;
                        }
                    }
                    c if is_ident(c) => label.push(c),
                    _ if !label.is_empty() => labels.push(std::mem::take(&mut label)),
                    _ => {}
                }
                i += 1;
            }
        }
        found.push(Selector { name, labels });
    }
    found
}

/// The label names of each `by (...)` of an expression.
fn grouping(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        rest = &rest[at + 4..];
        let end = rest.find(')').expect("a closed by (...)");
        labels.extend(rest[..end].split(',').map(|l| l.trim().to_owned()));
        rest = &rest[end..];
    }
    labels
}

/// The labels a legend shows (`{{step}}`).
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_owned()))
        .collect()
}

/// The exported metric a series name belongs to, and whether it is a
/// histogram's bucket series (which adds the `le` label).
fn exported(name: &str) -> Option<(&'static MetricInfo, bool)> {
    if let Some(m) = METRICS.iter().find(|m| m.name == name) {
        return Some((m, false));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(m) = METRICS.iter().find(|m| m.name == base) {
                if m.kind == MetricType::Histogram {
                    return Some((m, suffix == "_bucket"));
                }
            }
        }
    }
    None
}

#[test]
fn every_query_of_the_dashboard_names_an_exported_metric_with_its_labels() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 15, "{} expressions", exprs.len());
    let mut used = BTreeSet::new();
    for (place, expr, legend) in &exprs {
        let selected = selectors(expr);
        assert!(
            !selected.is_empty(),
            "{place}: {expr} names no pyscaler metric"
        );
        let mut known: BTreeSet<String> = BTreeSet::new();
        for s in &selected {
            let Some((metric, bucket)) = exported(&s.name) else {
                panic!(
                    "{place}: {} is not a metric pyscaler exports ({expr})",
                    s.name
                );
            };
            assert!(
                metric.kind != MetricType::Histogram || s.name != metric.name,
                "{place}: the histogram {} is queried through _bucket, _sum or _count",
                s.name
            );
            let mut labels: BTreeSet<String> =
                metric.labels.iter().map(|l| (*l).to_owned()).collect();
            if bucket {
                labels.insert("le".to_owned());
            }
            for l in &s.labels {
                assert!(labels.contains(l), "{place}: {} has no label {l}", s.name);
            }
            known.extend(labels);
            used.insert(metric.name);
        }
        for l in grouping(expr) {
            assert!(
                known.contains(&l),
                "{place}: grouped by {l}, which no metric of {expr} has"
            );
        }
        for l in legend_labels(legend) {
            assert!(
                known.contains(&l),
                "{place}: the legend shows {l}, which no metric of {expr} has"
            );
        }
    }
    // What the dashboard is for: runs and outcomes, step durations, the
    // trigger's value against its threshold, decisions, nodes over time.
    for name in [
        "pyscaler_runs_finished_total",
        "pyscaler_step_duration_seconds",
        "pyscaler_trigger_value",
        "pyscaler_trigger_threshold",
        "pyscaler_decisions_total",
        "pyscaler_cluster_nodes",
    ] {
        assert!(used.contains(name), "the dashboard shows {name}");
    }
}

#[test]
fn the_trigger_s_value_and_threshold_share_a_panel_and_decisions_are_marked_on_it() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let both = panels.iter().any(|p| {
        let exprs: Vec<&str> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .collect();
        exprs.iter().any(|e| e.contains("pyscaler_trigger_value"))
            && exprs
                .iter()
                .any(|e| e.contains("pyscaler_trigger_threshold"))
    });
    assert!(both, "one panel draws the value against the threshold");
    let annotations = dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations");
    assert!(
        annotations.iter().any(|a| a["enable"] == true
            && a["expr"]
                .as_str()
                .is_some_and(|e| e.contains("pyscaler_decisions_total"))),
        "decisions are annotations"
    );
}

#[test]
fn the_checks_catch_a_metric_or_label_the_library_does_not_export() {
    let wrong = r#"sum by (node) (rate(pyscaler_steps_total{run_id="x"}[5m])) + pyscaler_nope"#;
    let selected = selectors(wrong);
    let names: Vec<&str> = selected.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["pyscaler_steps_total", "pyscaler_nope"]);
    assert_eq!(selected[0].labels, ["run_id"]);
    assert!(exported("pyscaler_nope").is_none());
    assert!(
        exported("pyscaler_steps_total_bucket").is_none(),
        "a counter has no buckets"
    );
    assert!(exported("pyscaler_step_duration_seconds_bucket").is_some_and(|(_, b)| b));
    assert_eq!(grouping(wrong), ["node"]);
    assert_eq!(legend_labels("{{step}} {{ status }}"), ["step", "status"]);
}
