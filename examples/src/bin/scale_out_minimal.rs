//! `scale_out_minimal`: a whole program that adds a Tomcat node: a VM on EC2
//! behind the load balancer, Puppet, the JVM options, and an email whatever
//! happens. The README shows this file; `tomcat_cluster` is the full program.

use std::path::Path;
use std::sync::Arc;

use pyscaler_aws::{discover, ClassicElb, ClientConfig, DeployEc2Node, SdkEc2};
use pyscaler_core::{ActionExt, Context, FileJournal, Pipeline, RetryPolicy, Target};
use pyscaler_examples::TomcatClusterConfig;
use pyscaler_notify::{Email, SmtpMailer};
use pyscaler_ssh::{LocalScript, OsConfiguration, Ssh2Shell};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = TomcatClusterConfig::load(Path::new("examples/tomcat/aws.toml"))?;
    let aws = ClientConfig::for_profile(&config.ec2);
    let ec2 = Arc::new(SdkEc2::connect(&aws).await);
    let elb = Arc::new(ClassicElb::connect(&aws).await);
    let shell = Arc::new(Ssh2Shell::new(config.ssh.clone())?);
    let mailer = Arc::new(SmtpMailer::from_config(&config.smtp)?);
    let password = std::env::var(&config.tomcat.manager_password_env)?;
    let journal = Arc::new(FileJournal::open(&config.journal_dir, &config.cluster)?);

    let deploy = DeployEc2Node::builder(ec2.clone(), Some(elb), config.ec2.clone()).build()?;
    let puppet = OsConfiguration::builder(shell.clone())
        .manifest_file(config.asset("manifests/tomcat.pp"))
        .sudo(true)
        .secret_fact("tomcat_manager_password", password)
        .build()?;
    let jvm = LocalScript::builder(shell)
        .file(config.asset("scripts/jvm-options.sh"))
        .args(["--heap", "512m"])
        .sudo(true)
        .build()?;
    let email = Email::builder(mailer)
        .addresses_from(&config.smtp)
        .build()?;

    let pipeline = Pipeline::builder("scale-out")
        .journal(journal) // durable: a dead controller's runs can be recovered
        .step(deploy.on(Target::None).retry(RetryPolicy::attempts(3))) // EC2 + ELB, ClientToken
        .step(puppet.on(Target::NewNodes)) // OS configuration
        .step(jvm.on(Target::NewNodes)) // Tomcat configuration
        .finally(email.on(Target::None)) // after success and failure
        .build()?;

    let mut ctx = Context::new(discover(ec2.as_ref(), &config.cluster, &config.ec2).await?);
    println!("{}", pipeline.plan(&ctx)); // a dry run: touches nothing
    let report = pipeline.run(&mut ctx).await; // undoes what it did on failure
    println!("{report}");
    if !report.is_success() {
        return Err("the run failed; the report above says why".into());
    }
    Ok(())
}
