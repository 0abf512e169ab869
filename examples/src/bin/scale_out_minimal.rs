//! `scale_out_minimal`: a whole program that adds a Tomcat node: a VM on EC2
//! behind the load balancer, Puppet, the JVM options, and an email whatever
//! happens. The README shows this file as it is; it uses only the library
//! crates (and serde, toml, tokio), so it builds outside this workspace too.
//! `tomcat_cluster` is the full program.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pyscaler_aws::{discover, Aws, ClientConfig, DeployEc2Node, Ec2Profile};
use pyscaler_core::{print_progress, ActionExt, Context, FileJournal, Journal, Pipeline, Target};
use pyscaler_notify::{Email, SmtpConfig, SmtpMailer};
use pyscaler_ssh::{LocalScript, OsConfiguration, Ssh2Shell, SshConfig};

/// The parts of `examples/tomcat/aws.toml` this program reads (other tables are ignored).
#[derive(serde::Deserialize)]
struct Settings {
    cluster: String,
    journal_dir: PathBuf,
    assets: PathBuf,
    // [ec2]: region, image_id, instance_types, subnet_ids, load_balancers, [ec2.ssh] ...
    ec2: Ec2Profile,
    // [ssh]: set `auth` and `known_hosts`; `SshConfig::new(user)` alone uses
    // the SSH agent and ~/.ssh/known_hosts.
    ssh: SshConfig,
    // [smtp]: `tls = "starttls"` is the default; "tls" or "none" (loopback only) also exist.
    smtp: SmtpConfig,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = Path::new("examples/tomcat/aws.toml");
    let settings: Settings = toml::from_str(&std::fs::read_to_string(file)?)?;
    let assets = file
        .parent()
        .unwrap_or(Path::new("."))
        .join(&settings.assets);
    let password = std::env::var("TOMCAT_MANAGER_PASSWORD")
        .map_err(|_| "set TOMCAT_MANAGER_PASSWORD to the Tomcat manager's password")?;

    // EC2 and the classic ELB the profile names, through the SDK's credential chain.
    let aws = Aws::connect(&ClientConfig::for_profile(&settings.ec2), settings.ec2).await;
    let shell = Arc::new(Ssh2Shell::new(settings.ssh)?);
    let mailer = Arc::new(SmtpMailer::from_config(&settings.smtp)?);
    let journal = Arc::new(FileJournal::open(&settings.journal_dir, &settings.cluster)?);

    let deploy = DeployEc2Node::builder(&aws).build()?;
    let puppet = OsConfiguration::builder(shell.clone())
        .manifest_file(assets.join("manifests/tomcat.pp"))
        .sudo(true)
        .secret_fact("tomcat_manager_password", password)
        .build()?;
    let jvm = LocalScript::builder(shell)
        .file(assets.join("scripts/jvm-options.sh"))
        .args(["--heap", "512m"])
        .sudo(true)
        .build()?;
    let email = Email::builder(mailer)
        .addresses_from(&settings.smtp)
        .build()?;

    let pipeline = Pipeline::builder("scale-out")
        .journal(journal.clone()) // durable: a dead controller's runs can be recovered
        .step(deploy.on(Target::None)) // EC2 + ELB; the SDK retries each call itself
        .step(puppet.on(Target::NewNodes)) // OS configuration
        .step(jvm.on(Target::NewNodes)) // Tomcat configuration
        .finally(email.on(Target::None)) // after success and failure
        .build()?;
    tokio::spawn(print_progress(pipeline.subscribe())); // a line per step

    let runs = journal.runs().await?; // members: nodes of runs that succeeded
    let mut ctx = Context::new(discover(&aws, &settings.cluster, &runs).await?);
    println!("{}", pipeline.plan(&ctx)); // a dry run: touches nothing
    let report = pipeline.run(&mut ctx).await; // undoes what it did on failure
    println!("{report}");
    if !report.is_success() {
        return Err("the run failed; the report above says why".into());
    }
    Ok(())
}
