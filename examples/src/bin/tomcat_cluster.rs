//! `tomcat_cluster`: adds a Tomcat node to a cluster — launch a VM on EC2, put
//! it behind the load balancer, configure it with Puppet, configure Tomcat,
//! deploy the application, update the cluster, send an email.
//!
//! ```text
//! tomcat_cluster --config examples/tomcat/aws.toml --dry-run   # the plan; touches nothing
//! tomcat_cluster --config examples/tomcat/aws.toml run         # one scale-out, now
//! tomcat_cluster --config examples/tomcat/aws.toml watch       # scale out when the load stays high
//! tomcat_cluster --config examples/tomcat/aws.toml recover     # undo runs a dead controller left
//! tomcat_cluster --config examples/tomcat/aws.toml recover --resume  # or finish them
//! ```
//!
//! `run` and `watch` first recover the runs a dead controller left unfinished:
//! each started step is undone with the pipeline's own compensation (the
//! member lists rewritten, the instances deregistered and terminated), then
//! anything still tagged with the run (`pyscaler:run`) is terminated;
//! `--no-recover` skips that. `recover --resume` instead finishes each such
//! run from its interrupted step, when every step it has left is safe to
//! repeat, and undoes the others.
//!
//! Copy this file (and `src/pipeline.rs`) into your own tool: the providers
//! are built here, the pipeline there.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pyscaler_aws::{discover, ClassicElb, ClientConfig, Ec2RunCleanup, SdkEc2};
use pyscaler_core::{
    recover, CancellationToken, CleanupChain, Cluster, Comparison, Context, Direction, Event,
    FileJournal, Journal, Pipeline, PipelineCleanup, RunCleanup, RunReport, Scaler, ScalerOutcome,
    ThresholdTrigger, TriggerInfo,
};
use pyscaler_examples::{tomcat_pipeline, Providers, TomcatClusterConfig};
use pyscaler_notify::SmtpMailer;
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
    /// Watch the load counter and scale out when it stays above the threshold.
    Watch {
        /// Stop after this many runs (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        runs: usize,
        /// Stop after this long, whatever happened.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
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

    // The providers: EC2 and the classic ELB through the SDK's standard
    // credential chain, SSH with the configured key and known_hosts, SMTP.
    let aws = ClientConfig::for_profile(&config.ec2);
    let ec2 = Arc::new(SdkEc2::connect(&aws).await);
    let elb: Option<Arc<dyn pyscaler_aws::LoadBalancer>> = match config.ec2.load_balancer() {
        Some(_) => Some(Arc::new(ClassicElb::connect(&aws).await)),
        None => None,
    };
    let shell = Arc::new(Ssh2Shell::new(config.ssh.clone()).map_err(|e| format!("[ssh] {e}"))?);
    let mailer =
        Arc::new(SmtpMailer::from_config(&config.smtp).map_err(|e| format!("[smtp] {e}"))?);
    // What a dead controller's runs left on EC2 and the load balancer that
    // the pipeline's own undo did not reach (found by the run's tag).
    let ec2_cleanup: Arc<dyn RunCleanup> = Arc::new(
        Ec2RunCleanup::new(ec2.clone(), elb.clone(), &config.ec2).map_err(|e| e.to_string())?,
    );
    let providers = Providers {
        ec2: ec2.clone(),
        elb,
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

    let journal: Arc<dyn Journal> = Arc::new(
        FileJournal::open(&config.journal_dir, &config.cluster).map_err(|e| e.to_string())?,
    );
    let mode = args.mode.unwrap_or(Mode::Run {
        reason: "asked by hand".into(),
    });
    let pipeline = Arc::new(
        tomcat_pipeline(&config, &providers, Some(journal.clone())).map_err(|e| e.to_string())?,
    );
    let progress = tokio::spawn(print_progress(pipeline.subscribe()));
    // A restarted controller rebuilds its view of the cluster from EC2's tags.
    let discover_cluster = || async {
        discover(ec2.as_ref(), &config.cluster, &config.ec2)
            .await
            .map_err(|e| format!("cannot list the cluster's instances: {e}"))
    };
    let recover_mode = match &mode {
        Mode::Recover { resume } => Some(*resume),
        _ if args.no_recover => None,
        Mode::Run { .. } | Mode::Watch { .. } => Some(false),
    };
    let mut resumed_report = None;
    let mut all_recovered = true;
    let nothing_unfinished = journal
        .unfinished_runs()
        .await
        .map_err(|e| format!("cannot read the journal: {e}"))?
        .is_empty();
    if recover_mode.is_some() && nothing_unfinished {
        println!("No unfinished run to recover.");
    } else if let Some(resume) = recover_mode {
        // Before the cluster that runs are scaled from is read, so a dead
        // run's nodes are not counted as members. (A `Scaler` can also
        // recover when it starts, `.recover_with(journal, cleanup)`.)
        let now = discover_cluster().await?;
        if resume {
            resumed_report = resume_runs(&pipeline, journal.as_ref(), &now).await?;
        }
        let cleanup = CleanupChain::new()
            .then(Arc::new(PipelineCleanup::new(pipeline.clone(), now)))
            .then(ec2_cleanup);
        all_recovered = recover_runs(journal.as_ref(), &cleanup).await?;
    }
    if let Mode::Recover { .. } = mode {
        progress.abort();
        let resumed_ok = match &resumed_report {
            Some(report) => {
                println!("\n{report}");
                write_report(&args.report, report)?;
                println!("Report written to {}", args.report.display());
                report.is_success()
            }
            None => true,
        };
        return Ok(if all_recovered && resumed_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let cluster = discover_cluster().await?;
    println!("Cluster {}: {} node(s)", cluster.name(), cluster.len());

    let report = match mode {
        Mode::Run { reason } => {
            let mut ctx = Context::new(cluster).with_trigger(TriggerInfo::new("manual", reason));
            Some(pipeline.run(&mut ctx).await)
        }
        Mode::Watch { runs, timeout } => {
            watch(&config, shell, cluster, pipeline, runs, timeout).await?
        }
        Mode::Recover { .. } => None,
    };
    progress.abort();
    let Some(report) = report else {
        println!("No run happened.");
        return Ok(ExitCode::SUCCESS);
    };
    println!("\n{report}");
    write_report(&args.report, &report)?;
    println!("Report written to {}", args.report.display());
    Ok(if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Finishes the runs a dead controller left unfinished, each from its
/// interrupted step, on the cluster as it is `now`; a run that cannot be
/// resumed is said so and left to [`recover_runs`]. Returns the last
/// resumed run's report.
async fn resume_runs(
    pipeline: &Pipeline,
    journal: &dyn Journal,
    now: &Cluster,
) -> Result<Option<RunReport>, String> {
    let unfinished = journal
        .unfinished_runs()
        .await
        .map_err(|e| format!("cannot read the journal: {e}"))?;
    if unfinished.is_empty() {
        println!("No unfinished run to resume.");
    }
    let mut last = None;
    for run in unfinished {
        // The cluster without the run's own nodes: they come back from the journal.
        let mut cluster = now.clone();
        for node in &run.new_nodes {
            cluster.remove(&node.id);
        }
        let mut ctx = Context::new(cluster);
        match pipeline.resume(&run, &mut ctx).await {
            Ok(report) => {
                println!(
                    "Resumed run {} from {}: {}",
                    run.run_id,
                    report.resumed_from.as_deref().unwrap_or("-"),
                    report.status
                );
                last = Some(report);
            }
            Err(e) => println!("Not resuming run {}: {e}; undoing it instead.", run.run_id),
        }
    }
    Ok(last)
}

/// Recovers the runs a dead controller left unfinished, printing each;
/// returns whether every one was cleaned up.
async fn recover_runs(journal: &dyn Journal, cleanup: &dyn RunCleanup) -> Result<bool, String> {
    let recovered = recover(journal, cleanup)
        .await
        .map_err(|e| format!("cannot recover unfinished runs: {e}"))?;
    if recovered.is_empty() {
        println!("No unfinished run to recover.");
    }
    let mut all_recovered = true;
    for r in &recovered {
        let step = r.interrupted_step.as_deref().unwrap_or("between steps");
        let undone = if r.undone.is_empty() {
            "nothing to undo".to_owned()
        } else {
            r.undone.join("; ")
        };
        match &r.error {
            None => println!(
                "Recovered run {} (interrupted in {step}): {undone}",
                r.run_id
            ),
            Some(e) => {
                all_recovered = false;
                println!(
                    "Could NOT recover run {} (interrupted in {step}): {e}",
                    r.run_id
                );
            }
        }
    }
    Ok(all_recovered)
}

/// The automatic path: a threshold trigger on an SSH counter, bound to the
/// same pipeline, inside the scaler's min/max bounds and cooldown.
async fn watch(
    config: &TomcatClusterConfig,
    shell: Arc<Ssh2Shell>,
    cluster: Cluster,
    pipeline: Arc<Pipeline>,
    runs: usize,
    timeout: Option<Duration>,
) -> Result<Option<RunReport>, String> {
    let w = &config.watch;
    let counter = SshCounter::new("load", shell, w.counter_command.clone());
    let trigger = ThresholdTrigger::builder("load-high", Arc::new(counter))
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
        .bind(trigger, Direction::Out, pipeline)
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "Watching `{}` on every node: scale out when the average stays above {} for {}.",
        w.counter_command,
        w.threshold,
        humantime::format_duration(w.window)
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
        loop {
            tokio::select! {
                _ = &mut deadline => { println!("Watch timed out."); break; }
                _ = tokio::signal::ctrl_c() => { println!("Interrupted: finishing the current step, then stopping."); break; }
                event = events.recv() => match event {
                    Ok(Event::TriggerFired { trigger, reason }) => println!("Trigger {trigger} fired: {reason}"),
                    Ok(Event::RunSkipped { trigger, reason }) => println!("Trigger {trigger}: run skipped ({reason})"),
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

/// Step lines a person can follow on a terminal.
async fn print_progress(mut events: broadcast::Receiver<Event>) {
    let mut total = 0;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match event {
            Event::RunStarted {
                run_id,
                pipeline,
                cluster,
                reason,
                steps,
            } => {
                total = steps;
                println!("Run {run_id}: {pipeline} on {cluster} ({reason})");
            }
            Event::StepStarted {
                step,
                target,
                nodes,
                position,
                ..
            } => {
                let on = if nodes.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", nodes.join(", "))
                };
                let n =
                    position.map_or_else(|| "[finally]".to_owned(), |i| format!("[{i}/{total}]"));
                println!("  {n} {step} -> {target}{on} ...");
            }
            Event::StepFinished {
                step,
                status,
                duration,
                error,
                ..
            } => {
                let took =
                    humantime::format_duration(Duration::from_millis(duration.as_millis() as u64));
                match error {
                    None => println!("        {step}: {status} in {took}"),
                    Some(e) => println!("        {step}: {status} in {took}: {e}"),
                }
            }
            Event::NodeAdded { node, .. } => {
                let at = node.address.map(|a| format!(" at {a}")).unwrap_or_default();
                println!(
                    "        + {} {}{at}",
                    node.name,
                    node.instance_id.unwrap_or_default()
                );
            }
            Event::NodeRemoved { node, .. } => println!(
                "        - {} {}",
                node.name,
                node.instance_id.unwrap_or_default()
            ),
            Event::Compensating { step, .. } => println!("  undo {step} ..."),
            Event::Compensated {
                step, succeeded, ..
            } => {
                println!(
                    "        {step}: {}",
                    if succeeded { "undone" } else { "UNDO FAILED" }
                )
            }
            Event::RunFinished { status, .. } => println!("Run finished: {status}"),
            _ => {}
        }
    }
}

fn write_report(path: &PathBuf, report: &RunReport) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
