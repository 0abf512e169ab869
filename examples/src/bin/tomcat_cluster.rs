//! `tomcat_cluster`: adds a Tomcat node to a cluster — launch a VM on EC2, put
//! it behind the load balancer, configure it with Puppet, configure Tomcat,
//! deploy the application, update the cluster, send an email.
//!
//! ```text
//! tomcat_cluster --config examples/tomcat/aws.toml --dry-run   # the plan; touches nothing
//! tomcat_cluster --config examples/tomcat/aws.toml run         # one scale-out, now
//! tomcat_cluster --config examples/tomcat/aws.toml scale-in    # one scale-in, now (the newest node)
//! tomcat_cluster --config examples/tomcat/aws.toml watch       # scale out (and in) as the load stays high (low)
//! tomcat_cluster --config examples/tomcat/aws.toml recover     # undo runs a dead controller left
//! tomcat_cluster --config examples/tomcat/aws.toml recover --resume  # or finish them
//! tomcat_cluster --metrics-listen 127.0.0.1:9464 watch  # and serve pyscaler's own metrics
//! tomcat_cluster --config examples/tomcat/aws.toml history --since 1h  # runs and skipped decisions
//! tomcat_cluster --config examples/tomcat/aws.toml explain RUN_ID      # why one run happened, step by step
//! ```
//!
//! `run` and `watch` first recover the runs a dead controller left unfinished
//! (one [`Recovery`]): each started step is undone with the pipeline's own
//! compensation (the member lists rewritten, the instances deregistered and
//! terminated), then anything still tagged with the run (`pyscaler:run`) is
//! terminated. With `--no-recover` a run over an unfinished one refuses to
//! start. `recover --resume` instead finishes each such run from its
//! interrupted step, when every step it has left is safe to repeat, and
//! undoes the others.
//!
//! Copy this file (and `src/pipeline.rs`) into your own tool: the providers
//! are built here, the pipeline there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pyscaler_aws::{discover, dynamodb_client, Aws, ClientConfig, DynamoLease, Ec2RunCleanup};
use pyscaler_core::{
    print_progress, progress_line, CancellationToken, Cluster, Comparison, Context, Direction,
    Event, FileJournal, HeldLease, History, Journal, MetricSource, Pipeline, Recovery, RunReport,
    Scaler, ScalerOutcome, ThresholdTrigger, TriggerInfo, Verdict,
};
use pyscaler_examples::{
    open_journal, scale_in_pipeline, serve_metrics, tomcat_pipeline, JournalStore, Providers,
    TomcatClusterConfig,
};
use pyscaler_notify::SmtpMailer;
use pyscaler_prometheus::PrometheusSource;
use pyscaler_ssh::{Ssh2Shell, SshCounter};
use tokio::sync::broadcast;

#[derive(Debug, Parser)]
#[command(about = "Add Tomcat nodes to a cluster on EC2 (the pyscaler example)")]
struct Args {
    /// The cluster's configuration file.
    #[arg(long, default_value = "examples/tomcat/aws.toml")]
    config: PathBuf,
    /// Where to write the run report as JSON.
    #[arg(long, default_value = "target/tomcat-cluster-report.json")]
    report: PathBuf,
    /// Print the plan and touch nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not recover unfinished runs before `run` or `watch`.
    #[arg(long)]
    no_recover: bool,
    /// Serve pyscaler's own metrics (Prometheus' text format) on this
    /// address while the program runs: `127.0.0.1:9464`.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Scale out once, now (the default).
    Run {
        /// Why, for the report and the email.
        #[arg(long, default_value = "asked by hand")]
        reason: String,
    },
    /// Scale in once, now: the newest nodes (never a protected one, never
    /// below `[watch] min_nodes`) leave the load balancer, drain and are
    /// terminated; the other nodes' member lists are rewritten.
    ScaleIn {
        /// How many nodes to remove (at least 1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        count: u16,
        /// Why, for the report and the email.
        #[arg(long, default_value = "asked by hand")]
        reason: String,
    },
    /// Watch the load and scale out when it stays above the threshold (and
    /// in when it stays below `[watch] scale_in_below`).
    Watch {
        /// Stop after this many runs (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        runs: usize,
        /// Stop after this long, whatever happened.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// The cluster's runs and skipped decisions, from the journal (also
    /// while a controller runs it).
    History {
        /// Only what happened in this last while (`1h`, `30m`).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// As JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One run's story, in plain words: why it started, what each step did
    /// on which node, what was undone and why.
    Explain {
        /// The run (`run-20261202T034107Z-dc891df5`).
        run_id: String,
    },
    /// Undo the runs a dead controller left unfinished, then exit.
    Recover {
        /// Finish each run from its interrupted step instead, when every
        /// step it has left is safe to repeat (the others are undone).
        #[arg(long)]
        resume: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("tomcat_cluster: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let config = TomcatClusterConfig::load(&args.config).map_err(|e| e.to_string())?;
    if let Some(addr) = args.metrics_listen {
        serve_metrics(addr)?;
        println!("Serving pyscaler's metrics on http://{addr}/metrics");
    }
    match &args.mode {
        Some(Mode::History { since, json }) => return history(&config, *since, *json).await,
        Some(Mode::Explain { run_id }) => return explain(&config, run_id).await,
        _ => {}
    }

    // The providers: EC2 and the classic ELB through the SDK's standard
    // credential chain, SSH with the configured key and known_hosts, SMTP.
    let aws = Aws::connect(&ClientConfig::for_profile(&config.ec2), config.ec2.clone()).await;
    let shell = Arc::new(Ssh2Shell::new(config.ssh.clone()).map_err(|e| format!("[ssh] {e}"))?);
    let mailer =
        Arc::new(SmtpMailer::from_config(&config.smtp).map_err(|e| format!("[smtp] {e}"))?);
    // What a dead controller's runs left on EC2 and the load balancer that
    // the pipeline's own undo did not reach (found by the run's tag).
    let ec2_cleanup = Ec2RunCleanup::new(&aws);
    let providers = Providers {
        aws: aws.clone(),
        shell: shell.clone(),
        mailer,
    };

    if args.dry_run {
        let pipeline = tomcat_pipeline(&config, &providers, None).map_err(|e| e.to_string())?;
        let ctx = Context::new(Cluster::new(&config.cluster));
        println!("{}", pipeline.plan(&ctx));
        println!("(cluster membership is not read in a dry run)");
        return Ok(ExitCode::SUCCESS);
    }

    // The journal; with a shared store, the lease first (a standby waits).
    let interrupted = CancellationToken::new();
    let on_signal = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let Some((journal, held)) = open_journal(&config, &interrupted).await? else {
        println!("Interrupted while standing by.");
        return Ok(ExitCode::SUCCESS);
    };
    let mode = args.mode.unwrap_or(Mode::Run {
        reason: "asked by hand".into(),
    });
    let pipeline = Arc::new(
        tomcat_pipeline(&config, &providers, Some(journal.clone())).map_err(|e| e.to_string())?,
    );
    let scale_in = Arc::new(
        scale_in_pipeline(&config, &providers, Some(journal.clone())).map_err(|e| e.to_string())?,
    );
    let progress = tokio::spawn(print_progress(pipeline.subscribe()));
    let progress_in = tokio::spawn(print_progress(scale_in.subscribe()));
    // A restarted controller rebuilds its view of the cluster from EC2's tags.
    let discover_cluster = || async {
        // Members are the nodes of runs the journal shows as succeeded.
        let runs = journal
            .runs()
            .await
            .map_err(|e| format!("cannot read the journal: {e}"))?;
        discover(&aws, &config.cluster, &runs)
            .await
            .map_err(|e| format!("cannot list the cluster's instances: {e}"))
    };
    // Runs a dead controller left unfinished are recovered first (a run over
    // one refuses to start), from the cluster as EC2 shows it: each is undone
    // with the pipeline's own steps, then what is still tagged with it is
    // terminated; `--resume` finishes those whose steps left are repeatable.
    let mut cluster = discover_cluster().await?;
    let recover_only = matches!(mode, Mode::Recover { .. });
    if recover_only || !args.no_recover {
        let mut recovery = Recovery::new(journal.clone());
        if let Some(held) = &held {
            recovery = recovery.under_lease(held);
        }
        let report = recovery
            .pipeline(pipeline.clone())
            .pipeline(scale_in.clone())
            .then(ec2_cleanup)
            .resume(matches!(mode, Mode::Recover { resume: true }))
            .run(&cluster)
            .await
            .map_err(|e| format!("cannot recover unfinished runs: {e}"))?;
        print!("{report}");
        if recover_only {
            progress.abort();
            progress_in.abort();
            for resumed in report.resumed() {
                println!("\n{resumed}");
                write_report(&args.report, resumed, &config)?;
                println!("Report written to {}", args.report.display());
                print_journal_link(&args.config, &config, resumed);
            }
            return Ok(exit_code(report.is_success()));
        }
        if !report.runs.is_empty() {
            // What the recovery terminated is gone from EC2 now.
            cluster = discover_cluster().await?;
        }
    }
    println!("Cluster {}: {} node(s)", cluster.name(), cluster.len());

    let report = match mode {
        Mode::Run { reason } => {
            let trigger = TriggerInfo::new("manual", reason);
            Some(run_once(&pipeline, cluster, trigger, held).await)
        }
        Mode::ScaleIn { count, reason } => {
            let trigger = TriggerInfo::new("manual", reason).with_nodes(usize::from(count));
            Some(run_once(&scale_in, cluster, trigger, held).await)
        }
        Mode::Watch { runs, timeout } => {
            let pipelines = (pipeline, scale_in);
            watch(
                &config,
                shell,
                cluster,
                pipelines,
                journal,
                held,
                (runs, timeout),
            )
            .await?
        }
        Mode::Recover { .. } | Mode::History { .. } | Mode::Explain { .. } => None,
    };
    progress.abort();
    progress_in.abort();
    let Some(report) = report else {
        println!("No run happened.");
        return Ok(ExitCode::SUCCESS);
    };
    println!("\n{report}");
    write_report(&args.report, &report, &config)?;
    println!("Report written to {}", args.report.display());
    print_journal_link(&args.config, &config, &report);
    Ok(exit_code(report.is_success()))
}

/// One run of `pipeline` asked by hand, under the lease when there is one
/// (released after it).
async fn run_once(
    pipeline: &Pipeline,
    cluster: Cluster,
    trigger: TriggerInfo,
    held: Option<HeldLease>,
) -> RunReport {
    let mut ctx = Context::new(cluster).with_trigger(trigger);
    if let Some(held) = &held {
        ctx = ctx.with_lease(held.lost().clone());
    }
    let report = pipeline.run(&mut ctx).await;
    if let Some(held) = held {
        held.release().await;
    }
    report
}

fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The automatic path: a scale-out trigger on the cluster's load (from
/// Prometheus, or an SSH counter on every node) bound to the scale-out
/// pipeline and, when `[watch] scale_in_below` is set, a scale-in trigger
/// on the same load bound to the scale-in pipeline; inside the scaler's
/// min/max bounds and cooldowns. Prints every decision. Returns the last
/// run's report.
async fn watch(
    config: &TomcatClusterConfig,
    shell: Arc<Ssh2Shell>,
    cluster: Cluster,
    (scale_out, scale_in): (Arc<Pipeline>, Arc<Pipeline>),
    journal: Arc<dyn Journal>,
    held: Option<HeldLease>,
    (runs, timeout): (usize, Option<Duration>),
) -> Result<Option<RunReport>, String> {
    let w = &config.watch;
    let load: Arc<dyn MetricSource> = match &w.prometheus {
        Some(p) => Arc::new(
            // One test query first: a query Prometheus refuses stops here.
            PrometheusSource::builder(p.url.clone(), p.query.clone())
                .name("load")
                .timeout(w.interval.min(Duration::from_secs(10)))
                .build()
                .await
                .map_err(|e| format!("[watch] prometheus: {e}"))?,
        ),
        None => Arc::new(SshCounter::new("load", shell, w.counter_command.clone())),
    };
    let high = ThresholdTrigger::builder("load-high", load.clone())
        .when(Comparison::Greater, w.threshold)
        .interval(w.interval)
        .window(w.window)
        .cooldown(w.cooldown)
        .build()
        .map_err(|e| e.to_string())?;
    let mut scaler = Scaler::builder(cluster)
        .min_nodes(w.min_nodes)
        .max_nodes(w.max_nodes)
        .cooldown(Direction::Out, w.cooldown)
        .cooldown(Direction::In, w.scale_in_cooldown)
        .journal_decisions(journal)
        .bind(high, Direction::Out, scale_out);
    if let Some(below) = w.scale_in_below {
        let mut low = ThresholdTrigger::builder("load-low", load)
            .when(Comparison::Less, below)
            .interval(w.interval)
            .cooldown(w.scale_in_cooldown);
        if let Some(window) = w.scale_in_window {
            low = low.window(window);
        }
        scaler = scaler.bind(
            low.build().map_err(|e| e.to_string())?,
            Direction::In,
            scale_in,
        );
    }
    if let Some(held) = held {
        scaler = scaler.held_lease(held);
    }
    let mut scaler = scaler.build().map_err(|e| e.to_string())?;
    println!(
        "Watching the load ({}): scale out when it stays above {} for {}{}.",
        match &w.prometheus {
            Some(p) => format!("Prometheus: {}", p.query),
            None => format!("`{}` on every node", w.counter_command),
        },
        w.threshold,
        humantime::format_duration(w.window),
        match w.scale_in_below {
            Some(below) => format!(
                ", scale in when it stays below {below} for {}",
                humantime::format_duration(w.scale_in_window.unwrap_or(Duration::from_secs(300)))
            ),
            None => String::new(),
        }
    );
    let stop = CancellationToken::new();
    let mut events = scaler.subscribe();
    let stopper = stop.clone();
    tokio::spawn(async move {
        let mut finished = 0;
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        // The last no-data line printed: one line when it starts, not one a tick.
        let mut no_data = false;
        loop {
            tokio::select! {
                _ = &mut deadline => { println!("Watch timed out."); break; }
                _ = tokio::signal::ctrl_c() => { println!("Interrupted: finishing the current step, then stopping."); break; }
                event = events.recv() => match event {
                    Ok(Event::TriggerFired { trigger, reason }) => println!("Trigger {trigger} fired: {reason}"),
                    Ok(event @ Event::Decided(_)) => {
                        let Event::Decided(d) = &event else { continue };
                        let held = d.verdict == Verdict::NoData;
                        if !(held && no_data) {
                            if let Some(line) = progress_line(&event, 0) { println!("{line}"); }
                        }
                        no_data = held;
                    }
                    Ok(event @ (Event::LeaseLost { .. } | Event::LeaseAcquired { .. })) => {
                        if let Some(line) = progress_line(&event, 0) { println!("{line}"); }
                    }
                    Ok(Event::RunFinished { .. }) => {
                        finished += 1;
                        if runs > 0 && finished >= runs { break; }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        stopper.cancel();
    });
    let outcomes = scaler.run(stop).await;
    Ok(outcomes.into_iter().rev().find_map(|o| match o {
        ScalerOutcome::Ran(report) => Some(*report),
        _ => None,
    }))
}

/// The journal's history of the cluster, as a table or JSON.
async fn history(
    config: &TomcatClusterConfig,
    since: Option<Duration>,
    json: bool,
) -> Result<ExitCode, String> {
    let since = match since {
        Some(d) => Some(
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
                .ok_or_else(|| {
                    format!("--since: {} is too far back", humantime::format_duration(d))
                })?,
        ),
        None => None,
    };
    let history = History::from_entries(read_journal(config).await?, &config.cluster, since);
    if json {
        let text = serde_json::to_string_pretty(&history)
            .map_err(|e| format!("cannot encode the history: {e}"))?;
        println!("{text}");
    } else {
        print!("{}", history.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// One run's story; fails when the journal does not know the run.
async fn explain(config: &TomcatClusterConfig, run_id: &str) -> Result<ExitCode, String> {
    let history = History::from_entries(read_journal(config).await?, &config.cluster, None);
    match history.run(run_id) {
        Some(run) => {
            print!("{}", run.explain());
            Ok(ExitCode::SUCCESS)
        }
        None => Err(format!(
            "the journal of cluster {} has no run {run_id} (tomcat_cluster history lists them)",
            config.cluster
        )),
    }
}

/// Every entry of the cluster's journal, without taking its lock or lease
/// (a watch may be running).
async fn read_journal(
    config: &TomcatClusterConfig,
) -> Result<Vec<pyscaler_core::JournalEntry>, String> {
    match config.journal.store {
        JournalStore::File => FileJournal::read(&config.journal_dir, &config.cluster)
            .map_err(|e| format!("cannot read the journal: {e}")),
        JournalStore::Dynamodb => {
            let client = dynamodb_client(&ClientConfig::for_profile(&config.ec2)).await;
            DynamoLease::from_client(
                client,
                &config.journal.table,
                &config.cluster,
                config.journal.lease,
            )
            .journal()
            .entries()
            .await
            .map_err(|e| format!("cannot read the journal: {e}"))
        }
    }
}

/// Where the run's entry is in the journal, and how to tell its story.
fn print_journal_link(
    config_path: &std::path::Path,
    config: &TomcatClusterConfig,
    report: &RunReport,
) {
    println!(
        "Journal: {} (run {}); its story: tomcat_cluster --config {} explain {}",
        journal_location(config),
        report.run_id,
        config_path.display(),
        report.run_id
    );
}

/// Where the journal is, for a person.
fn journal_location(config: &TomcatClusterConfig) -> String {
    match config.journal.store {
        JournalStore::File => FileJournal::path_of(&config.journal_dir, &config.cluster)
            .display()
            .to_string(),
        JournalStore::Dynamodb => format!("DynamoDB table {}", config.journal.table),
    }
}

/// Writes the report as JSON, with a link to its journal entry
/// (`"journal": {"path": ..., "run_id": ...}`).
fn write_report(
    path: &PathBuf,
    report: &RunReport,
    config: &TomcatClusterConfig,
) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut value =
        serde_json::to_value(report).map_err(|e| format!("cannot encode the report: {e}"))?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert(
            "journal".into(),
            match config.journal.store {
                JournalStore::File => serde_json::json!({
                    "path": FileJournal::path_of(&config.journal_dir, &config.cluster),
                    "run_id": report.run_id,
                }),
                JournalStore::Dynamodb => serde_json::json!({
                    "dynamodb_table": config.journal.table,
                    "run_id": report.run_id,
                }),
            },
        );
    }
    let json = serde_json::to_string_pretty(&value)
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
