//! # pyscaler-demo
//!
//! The local stack the demo (`scripts/demo`) and the Tomcat example's
//! end-to-end tests run against: moto for the AWS API (with an Application
//! Load Balancer's target group over two subnets in two Availability Zones,
//! or a classic load balancer: [`Balancing`]), an sshd on loopback standing
//! in for every new VM, aiosmtpd catching the mail, and Debian's Prometheus scraping the cluster's load
//! from a Pushgateway (the demo pushes the load it wants the trigger to
//! see) and the controller's own metrics (`tomcat_cluster --metrics-listen`
//! on [`LocalStack::metrics_addr`]). Started through the same harness as the integration tests
//! (`pyscaler-testkit`); stopped when dropped.
//!
//! It lives apart from `examples/` so that the programs a team copies do not
//! link the test harness, and so that `cargo build` at the root does not
//! build it (it is not a default member).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pyscaler_testkit::moto::{self, MotoServer};
use pyscaler_testkit::prometheus::Prometheus;
use pyscaler_testkit::smtp::SmtpServer;
use pyscaler_testkit::sshd::Sshd;

/// The name of the classic load balancer the stack creates in moto
/// ([`Balancing::Classic`]).
pub const LOAD_BALANCER: &str = "tomcat-lb";
/// The name of the Application Load Balancer and of its target group
/// ([`Balancing::TargetGroup`]).
pub const TARGET_GROUP: &str = "tomcat-tg";

/// Which load balancer the stack's cluster sits behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balancing {
    /// An Application Load Balancer's target group, the nodes spread over
    /// two subnets in two Availability Zones (the default, as a team on AWS
    /// starts today).
    #[default]
    TargetGroup,
    /// A classic ELB, in one zone.
    Classic,
}
/// The metric the demo pushes as the cluster's load, and the watch reads
/// through Prometheus (`avg(pyscaler_demo_load)`).
pub const LOAD_METRIC: &str = "pyscaler_demo_load";

/// The running local stack.
#[derive(Debug)]
pub struct LocalStack {
    /// The AWS API.
    pub moto: MotoServer,
    /// The stand-in VM.
    pub sshd: Sshd,
    /// The mail server.
    pub smtp: SmtpServer,
    /// The monitoring: Prometheus and the Pushgateway it scrapes.
    pub prometheus: Prometheus,
    /// Where `tomcat_cluster --metrics-listen` serves pyscaler's own
    /// metrics for this stack: Prometheus scrapes it (job `pyscaler`).
    pub metrics_addr: SocketAddr,
    /// The example's config file, written for this stack.
    pub config: PathBuf,
    /// The folder holding the config, known_hosts and the journal.
    pub dir: PathBuf,
    /// Which load balancer the cluster sits behind.
    pub balancing: Balancing,
    /// What the config names it by: the target group's ARN, or the classic
    /// load balancer's name.
    pub load_balancer: String,
}

impl LocalStack {
    /// [`start_with`](Self::start_with) an Application Load Balancer's
    /// target group over two zones.
    ///
    /// # Panics
    /// When a service cannot start (with its log), as a test harness does.
    pub async fn start() -> Self {
        Self::start_with(Balancing::default()).await
    }

    /// Starts the services, creates the load balancer (and for a target
    /// group, an ALB over two subnets in two zones that forwards to it),
    /// lets the SSH user use `sudo -n` (as root), and writes the example's
    /// config file.
    ///
    /// # Panics
    /// When a service cannot start (with its log), as a test harness does.
    pub async fn start_with(balancing: Balancing) -> Self {
        let moto = MotoServer::start();
        let sshd = Sshd::start();
        let smtp = SmtpServer::start();
        // The controller's own metrics, scraped while it runs.
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], pyscaler_testkit::free_port()));
        let prometheus = Prometheus::start_scraping(&[("pyscaler", metrics_addr)]);
        let dir = sshd.dir().join("local-stack");
        std::fs::create_dir_all(&dir).expect("create the local stack folder");
        let (load_balancer, placement) = match balancing {
            Balancing::Classic => {
                moto.create_load_balancer(LOAD_BALANCER).await;
                (
                    LOAD_BALANCER.to_owned(),
                    format!("load_balancer = {}", toml_str(LOAD_BALANCER)),
                )
            }
            Balancing::TargetGroup => {
                let subnets = vec![
                    moto.create_subnet(&format!("{}a", moto::REGION), 0).await,
                    moto.create_subnet(&format!("{}b", moto::REGION), 1).await,
                ];
                let arn = moto.create_target_group(TARGET_GROUP).await;
                moto.create_application_load_balancer(TARGET_GROUP, &subnets, &arn)
                    .await;
                let placement = format!(
                    "subnet_ids = [{}, {}]\nload_balancers = [{{ target_group = {} }}]",
                    toml_str(&subnets[0]),
                    toml_str(&subnets[1]),
                    toml_str(&arn)
                );
                (arn, placement)
            }
        };
        allow_sudo(sshd.user());
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, sshd.known_hosts_line("ssh-ed25519"))
            .expect("write known_hosts");
        let config = dir.join("tomcat-local.toml");
        // The example's assets (manifest, scripts, the WAR's sources).
        let assets = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("examples")
            .join("tomcat");
        std::fs::write(
            &config,
            render_config(&moto, &sshd, &smtp, &prometheus, &dir, &assets, &placement),
        )
        .expect("write the config");
        Self {
            moto,
            sshd,
            smtp,
            prometheus,
            metrics_addr,
            config,
            dir,
            balancing,
            load_balancer,
        }
    }

    /// Sets the cluster's load the watch sees (through the Pushgateway and
    /// Prometheus' next scrape, about a second later).
    pub fn set_load(&self, load: f64) {
        self.prometheus.push(
            "demo",
            &format!("{LOAD_METRIC}{{cluster=\"tomcat-demo\"}} {load}\n"),
        );
    }

    /// The environment `tomcat_cluster` needs against this stack: moto's
    /// test credentials (the SDK's standard chain reads them).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", moto::SECRET_ACCESS_KEY.to_owned()),
            ("AWS_REGION", moto::REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }
}

impl Drop for LocalStack {
    /// The stand-in VM goes away with the stack: stop the Tomcat the
    /// pipeline started on it (through the manifest's service script, on
    /// machines without systemd).
    fn drop(&mut self) {
        let stop = Path::new("/usr/local/sbin/pyscaler-tomcat");
        if stop.exists() {
            let _ = std::process::Command::new(stop)
                .arg("stop")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

fn render_config(
    moto: &MotoServer,
    sshd: &Sshd,
    smtp: &SmtpServer,
    prometheus: &Prometheus,
    dir: &Path,
    assets: &Path,
    placement: &str,
) -> String {
    // Both in the stack's folder, as `start_with` made them.
    let known_hosts = dir.join("known_hosts");
    let journal = dir.join("journal");
    format!(
        r#"# The Tomcat cluster against the local stack (written by LocalStack).
cluster = "tomcat-demo"
journal_dir = {journal}
assets = {assets}

[ec2]
region = "{region}"
endpoint_url = {endpoint}
image_id = "{ami}"
instance_type = "t3.small"
{placement}
tags = {{ app = "tomcat-demo" }}

# Every new VM is reached through the loopback sshd standing in for it.
[ec2.ssh]
via = {{ fixed = {{ host = "127.0.0.1" }} }}
port = {ssh_port}
user = {user}

[ssh]
user = {user}
port = {ssh_port}
auth = {{ method = "key-file", path = {key} }}
host_keys = "strict"
known_hosts = {known_hosts}
connect_timeout = "5s"
command_timeout = "15m"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
connect_timeout = "5s"
from = "pyscaler@localhost"
to = ["ops@localhost"]

[tomcat]
http_port = 8080
heap = "256m"
jmx_port = 9010
app = "demo"
ready_within = "120s"

[deploy]
count = 1
ssh_within = "30s"
in_service_within = "60s"

# The load comes from Prometheus (pushed by the demo through the
# Pushgateway); no data (nothing pushed yet, Prometheus down) never scales.
[watch]
prometheus = {{ url = {prometheus}, query = "avg({load_metric})" }}
threshold = 2.0
interval = "2s"
window = "6s"
cooldown = "60s"
scale_in_below = 0.5
scale_in_window = "10s"
scale_in_cooldown = "60s"
draining = "3s"
min_nodes = 1
max_nodes = 5
"#,
        journal = toml_str(&journal.display().to_string()),
        assets = toml_str(&assets.display().to_string()),
        region = moto::REGION,
        endpoint = toml_str(&moto.endpoint_url()),
        ami = moto::AMI,
        ssh_port = sshd.port(),
        user = toml_str(sshd.user()),
        key = toml_str(&sshd.client_key().display().to_string()),
        known_hosts = toml_str(&known_hosts.display().to_string()),
        smtp_port = smtp.port(),
        prometheus = toml_str(&prometheus.endpoint_url()),
        load_metric = LOAD_METRIC,
    )
}

/// Lets the SSH user run `sudo -n` (Puppet installs packages): the stand-in
/// VM is this machine, and a real VM's login user has the same right.
fn allow_sudo(user: &str) {
    if user == "root" || !Path::new("/etc/sudoers.d").is_dir() {
        return;
    }
    let rule = format!("{user} ALL=(ALL) NOPASSWD:ALL\n");
    let path = Path::new("/etc/sudoers.d/pyscaler-local-stack");
    if std::fs::read_to_string(path).ok().as_deref() != Some(rule.as_str()) {
        if let Err(e) = std::fs::write(path, &rule) {
            eprintln!(
                "local stack: cannot write {} ({e}); Puppet will need sudo",
                path.display()
            );
            return;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o440));
    }
}
