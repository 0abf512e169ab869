//! pyscaler's own metrics, scraped for real from a running
//! `tomcat_cluster --metrics-listen ... watch` on the local stack: the
//! counters move with a run (one started, one finished, its steps counted,
//! a decision skipped while the direction cools down), no label names a
//! run or an instance, and the stack's Prometheus scrapes the controller.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pyscaler_core::{metric_names, FileJournal, Journal};
use pyscaler_demo::LocalStack;
use pyscaler_examples::http;

const PASSWORD: &str = "metrics-e2e-manager-password-41ad";

/// One scraped sample: a metric's name and labels.
type Series = (String, BTreeMap<String, String>);

/// Prometheus' text format, parsed: each sample's series and value.
fn parse(text: &str) -> Vec<(Series, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter_map(|pair| pair.split_once("=\""))
            .map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned()))
            .collect();
        samples.push(((name.to_owned(), labels), value));
    }
    samples
}

/// The sum of the samples of `name` whose labels include `with`.
fn value(samples: &[(Series, f64)], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, labels), _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(port: u16) -> Option<Vec<(Series, f64)>> {
    match http::get("127.0.0.1", port, "/metrics", Duration::from_secs(5)).await {
        Ok((200, body)) => Some(parse(&body)),
        _ => None,
    }
}

/// Stops the watch as a person would (Ctrl-C: it finishes the current
/// step), and kills it if it has not stopped within a minute.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_s_metrics_move_with_a_run_and_a_skipped_decision() {
    // Each instance is a host of its own, with its own Tomcat.
    let stack = LocalStack::start().await;
    // The stack's cooldowns are 60 s, the trigger's counted from its firing
    // and the scaler's from the run's end: for a run shorter than that, the
    // trigger's next firing falls within the scaler's cooldown, and is
    // skipped before any second run can start.
    let config_path = stack.config.clone();
    stack.set_load(5.0);

    let log = stack.dir.join("metrics-watch.log");
    let out = std::fs::File::create(&log).expect("the watch's log");
    let child = Command::new(env!("CARGO_BIN_EXE_tomcat_cluster"))
        .arg("--config")
        .arg(&config_path)
        .arg("--report")
        .arg(stack.dir.join("metrics-watch.json"))
        .arg("--metrics-listen")
        .arg(stack.metrics_addr.to_string())
        .args(["watch", "--timeout", "600s"])
        .envs(stack.env())
        .env("TOMCAT_MANAGER_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("the log"))
        .stderr(out)
        .spawn()
        .expect("start tomcat_cluster watch");

    // Until a run has finished and a later decision was skipped for the
    // cooldown (bounded: the first run may install Tomcat).
    let port = stack.metrics_addr.port();
    let (cluster, scale_out) = (("cluster", "tomcat-demo"), ("pipeline", "tomcat-scale-out"));
    let deadline = Instant::now() + Duration::from_secs(540);
    let mut first: Option<Vec<(Series, f64)>> = None;
    let samples = loop {
        if let Some(samples) = scrape(port).await {
            first.get_or_insert_with(|| samples.clone());
            let finished = value(&samples, metric_names::RUNS_FINISHED, &[cluster]);
            let cooled = value(&samples, metric_names::DECISIONS, &[("kind", "cooldown")]);
            if finished >= 1.0 && cooled >= 1.0 {
                break samples;
            }
        }
        if Instant::now() > deadline {
            stop(child);
            panic!(
                "no finished run and cooldown skip in time; the watch said:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Prometheus scrapes the controller (job `pyscaler`) while it runs.
    let scraped = loop {
        let query = format!("/api/v1/query?query={}", metric_names::RUNS_STARTED);
        let answer = http::get(
            "127.0.0.1",
            stack.prometheus.port(),
            &query,
            Duration::from_secs(5),
        )
        .await;
        match answer {
            Ok((200, body)) if body.contains("\"job\":\"pyscaler\"") => break body,
            _ if Instant::now() > deadline => {
                stop(child);
                panic!("Prometheus never scraped the controller: {answer:?}");
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    stop(child);
    let printed = std::fs::read_to_string(&log).unwrap_or_default();
    println!("{printed}");
    assert!(
        !printed.contains(PASSWORD),
        "the password reached the output"
    );
    assert!(
        scraped.contains("\"pipeline\":\"tomcat-scale-out\""),
        "{scraped}"
    );

    // The exporter served the counters before the run, and they moved with it.
    let first = first.expect("a first scrape");
    assert_eq!(value(&first, metric_names::RUNS_FINISHED, &[cluster]), 0.0);
    assert_eq!(
        value(&samples, metric_names::RUNS_STARTED, &[cluster, scale_out]),
        1.0
    );
    let succeeded = [cluster, scale_out, ("status", "succeeded")];
    assert_eq!(
        value(&samples, metric_names::RUNS_FINISHED, &succeeded),
        1.0
    );
    for step in [
        "deploy-ec2-node",
        "os-configuration",
        "tomcat-config",
        "app-deploy",
        "cluster-update",
    ] {
        let ok = [cluster, scale_out, ("step", step), ("status", "succeeded")];
        assert_eq!(value(&samples, metric_names::STEPS, &ok), 1.0, "{step}");
        let timed = format!("{}_count", metric_names::STEP_DURATION);
        assert_eq!(value(&samples, &timed, &ok), 1.0, "{step}");
    }
    let decided = |kind| {
        let with = [
            cluster,
            ("trigger", "load-high"),
            ("direction", "out"),
            ("kind", kind),
        ];
        value(&samples, metric_names::DECISIONS, &with)
    };
    assert_eq!(decided("scale"), 1.0);
    assert!(decided("cooldown") >= 1.0);
    let high = [cluster, ("trigger", "load-high")];
    assert_eq!(value(&samples, metric_names::TRIGGER_VALUE, &high), 5.0);
    assert_eq!(value(&samples, metric_names::TRIGGER_THRESHOLD, &high), 2.0);
    assert!(
        value(
            &samples,
            metric_names::TRIGGER_EVALUATIONS,
            &[cluster, ("trigger", "load-high"), ("result", "breaching")]
        ) >= 1.0
    );
    assert_eq!(
        value(&samples, metric_names::CLUSTER_NODES, &[cluster]),
        1.0
    );
    assert_eq!(
        value(&samples, metric_names::NODES_ADDED, &[cluster, scale_out]),
        1.0
    );
    assert_eq!(
        value(&samples, metric_names::EVALUATION_STALLED, &high),
        0.0,
        "the trigger's loop is alive"
    );
    let launched = [
        ("provider", "EC2"),
        ("operation", "RunInstances"),
        ("error_kind", "none"),
    ];
    assert_eq!(
        value(&samples, metric_names::PROVIDER_CALLS, &launched),
        1.0
    );
    // Every provider's calls are counted: the run's SSH sessions and its
    // mail, the trigger's Prometheus queries, EC2's polls.
    for (provider, operation) in [
        ("SSH", "Session"),
        ("SMTP", "Send"),
        ("Prometheus", "Query"),
        ("EC2", "DescribeInstances"),
    ] {
        let calls = value(
            &samples,
            metric_names::PROVIDER_CALLS,
            &[("provider", provider), ("operation", operation)],
        );
        assert!(calls >= 1.0, "no {provider} {operation} counted");
    }
    let journal_writes = format!("{}_count", metric_names::JOURNAL_WRITE);
    assert!(value(&samples, &journal_writes, &[("entry", "step_finished")]) >= 5.0);

    // The report links to its journal entry, and the journal tells the
    // run and the skipped decision (`history`, `explain`).
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(stack.dir.join("metrics-watch.json")).expect("the report"),
    )
    .expect("the report is JSON");
    let run_id = report["run_id"].as_str().expect("a run id").to_owned();
    assert_eq!(report["journal"]["run_id"], run_id.as_str());
    assert!(
        printed.contains(&format!("explain {run_id}")),
        "the watch says how to explain the run:\n{printed}"
    );
    let told = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tomcat_cluster"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .expect("run tomcat_cluster");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let table = told(&["history", "--since", "1h"]);
    let lines: Vec<&str> = table.lines().collect();
    // One run; the skipped decisions are the cooldown's, and no data at
    // the start (before Prometheus had scraped a load), as the watch said.
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("History of cluster tomcat-demo: 1 run(s), ")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&run_id) && l.contains("tomcat-scale-out  succeeded")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("decision of load-high") && l.contains("skipped: cooldown")),
        "{table}"
    );
    let story = told(&["explain", &run_id]);
    assert!(
        story.starts_with(&format!("Run {run_id} of tomcat-scale-out, started ")),
        "{story}"
    );
    assert!(
        story.contains("The decision: load-high read 5.00 against the threshold 2.00; with 0 node(s) in the cluster, the scaler chose a scale-out"),
        "{story}"
    );

    // No label names a run or an instance.
    let journal =
        FileJournal::open(stack.dir.join("journal"), "tomcat-demo").expect("open the journal");
    let runs = journal.runs().await.expect("read the journal");
    let mut secret_or_unbounded: Vec<String> = vec![PASSWORD.to_owned()];
    for run in &runs {
        secret_or_unbounded.push(run.run_id.to_string());
        secret_or_unbounded.extend(run.new_nodes.iter().map(|n| n.id.clone()));
    }
    assert!(secret_or_unbounded.len() >= 3, "{runs:?}");
    for ((name, labels), _) in &samples {
        for (k, v) in labels {
            assert!(
                !secret_or_unbounded.iter().any(|s| v.contains(s.as_str())),
                "{name} has {k}={v}"
            );
        }
    }
}
