//! # pyscaler-demo
//!
//! The local stack the demo (`scripts/demo`) and the Tomcat example's
//! end-to-end tests run against: moto for the AWS API (with an Application
//! Load Balancer's target group over two subnets in two Availability Zones,
//! or a classic load balancer: [`Balancing`]), a host of its own for every
//! instance moto launches ([`Hosts::OwnHost`]: its own network namespace at
//! its private IP, its own sshd, disk and Tomcat; or, for tests that need
//! many cheap nodes, [`Hosts::OneSshd`]), aiosmtpd catching the mail, and
//! Debian's Prometheus scraping the cluster's load from a Pushgateway (the
//! demo pushes the load it wants the trigger to see) and the controller's
//! own metrics (`tomcat_cluster --metrics-listen` on
//! [`LocalStack::metrics_addr`]). Started through the same harness as the
//! integration tests (`pyscaler-testkit`); stopped when dropped.
//!
//! It lives apart from `examples/` so that the programs a team copies do not
//! link the test harness, and so that `cargo build` at the root does not
//! build it (it is not a default member).

mod config;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pyscaler_testkit::moto::{self, MotoServer};
use pyscaler_testkit::nodes::NodeHosts;
use pyscaler_testkit::prometheus::Prometheus;
use pyscaler_testkit::smtp::SmtpServer;
use pyscaler_testkit::sshd::Sshd;

use config::{toml_str, Reach, Rendered};

/// The name of the classic load balancer the stack creates in moto
/// ([`Balancing::Classic`]).
pub const LOAD_BALANCER: &str = "tomcat-lb";
/// The name of the Application Load Balancer and of its target group
/// ([`Balancing::TargetGroup`]).
pub const TARGET_GROUP: &str = "tomcat-tg";
/// The EC2 key pair the stack imports (its client key's public half) and
/// the config launches with ([`Hosts::OwnHost`]).
pub const KEY_PAIR: &str = "tomcat-demo";

/// Which load balancer the cluster sits behind.
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

/// What stands in for the VMs moto launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hosts {
    /// Each running instance is a host of its own
    /// ([`pyscaler_testkit::nodes`]): its private IP in its own network
    /// namespace, its own sshd and host key, its own disk, its own Tomcat;
    /// gone when the instance is terminated. The default: what a node's
    /// configuration does is then done once per node, as on EC2.
    #[default]
    OwnHost,
    /// One sshd on loopback answers for every instance, so "the cluster"
    /// is this one machine (its Tomcat on 8080 shared by every node, a
    /// terminated instance still answering). Cheap: for tests that need
    /// many nodes, or count the logins of one server.
    OneSshd,
}

/// What answers for the instances.
#[derive(Debug)]
enum StandIn {
    OneSshd(Sshd),
    OwnHosts(NodeHosts),
}

/// The running local stack.
#[derive(Debug)]
pub struct LocalStack {
    /// The AWS API.
    pub moto: MotoServer,
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
    stand_in: StandIn,
    user: String,
    client_key: PathBuf,
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

    /// [`start_with_hosts`](Self::start_with_hosts) a host of its own for
    /// every instance.
    ///
    /// # Panics
    /// When a service cannot start (with its log), as a test harness does.
    pub async fn start_with(balancing: Balancing) -> Self {
        Self::start_with_hosts(balancing, Hosts::default()).await
    }

    /// Starts the services, creates the load balancer (and for a target
    /// group, an ALB over two subnets in two zones that forwards to it),
    /// starts what stands in for the instances (with [`Hosts::OwnHost`],
    /// the subnets are the node slot's, and the key pair [`KEY_PAIR`] is
    /// imported), lets the SSH user use `sudo -n` (as root), and writes
    /// the example's config file.
    ///
    /// # Panics
    /// When a service cannot start (with its log), as a test harness does.
    pub async fn start_with_hosts(balancing: Balancing, hosts: Hosts) -> Self {
        let moto = MotoServer::start();
        let smtp = SmtpServer::start();
        // The controller's own metrics, scraped while it runs.
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], pyscaler_testkit::free_port()));
        let prometheus = Prometheus::start_scraping(&[("pyscaler", metrics_addr)]);
        let dir = pyscaler_testkit::service_dir("local-stack", moto.port());
        let user = pyscaler_testkit::sshd::login_user();
        allow_sudo(&user);
        let (stand_in, client_key) = match hosts {
            Hosts::OneSshd => {
                let sshd = Sshd::start();
                let key = sshd.client_key().to_path_buf();
                std::fs::write(
                    dir.join("known_hosts"),
                    sshd.known_hosts_line("ssh-ed25519"),
                )
                .expect("write known_hosts");
                (StandIn::OneSshd(sshd), key)
            }
            Hosts::OwnHost => {
                let key = dir.join("client_key");
                pyscaler_testkit::sshd::generate_key(&key, "ed25519");
                let public = std::fs::read_to_string(key.with_extension("pub"))
                    .expect("read the client's public key");
                moto.import_key_pair(KEY_PAIR, &public).await;
                let nodes = NodeHosts::start();
                nodes.follow(&moto);
                (StandIn::OwnHosts(nodes), key)
            }
        };
        let subnet = |n: u8| match &stand_in {
            StandIn::OwnHosts(nodes) => nodes.subnet_cidr(n),
            StandIn::OneSshd(_) => format!("172.31.{}.0/24", 200 + n),
        };
        let (load_balancer, placement) = match balancing {
            Balancing::Classic => {
                moto.create_load_balancer(LOAD_BALANCER).await;
                // In the classic load balancer's zone.
                let subnet = moto
                    .create_subnet_with_cidr(&format!("{}a", moto::REGION), &subnet(0))
                    .await;
                (
                    LOAD_BALANCER.to_owned(),
                    format!(
                        "subnet_ids = [{}]\nload_balancer = {}",
                        toml_str(&subnet),
                        toml_str(LOAD_BALANCER)
                    ),
                )
            }
            Balancing::TargetGroup => {
                let subnets = vec![
                    moto.create_subnet_with_cidr(&format!("{}a", moto::REGION), &subnet(0))
                        .await,
                    moto.create_subnet_with_cidr(&format!("{}b", moto::REGION), &subnet(1))
                        .await,
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
        let config = dir.join("tomcat-local.toml");
        // The example's assets (manifest, scripts, the WAR's sources).
        let assets = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("examples")
            .join("tomcat");
        let reach = match &stand_in {
            StandIn::OneSshd(sshd) => Reach::OneSshd { port: sshd.port() },
            StandIn::OwnHosts(_) => Reach::OwnHosts { key_name: KEY_PAIR },
        };
        let text = Rendered {
            moto: &moto,
            smtp: &smtp,
            prometheus: &prometheus,
            dir: &dir,
            assets: &assets,
            placement: &placement,
            reach,
            user: &user,
            client_key: &client_key,
        }
        .render();
        std::fs::write(&config, text).expect("write the config");
        Self {
            moto,
            smtp,
            prometheus,
            metrics_addr,
            config,
            dir,
            balancing,
            load_balancer,
            stand_in,
            user,
            client_key,
        }
    }

    /// What stands in for the instances.
    pub fn hosts(&self) -> Hosts {
        match self.stand_in {
            StandIn::OneSshd(_) => Hosts::OneSshd,
            StandIn::OwnHosts(_) => Hosts::OwnHost,
        }
    }

    /// The one sshd answering for every instance.
    ///
    /// # Panics
    /// When the stack gives each instance a host of its own ([`Hosts::OwnHost`]).
    pub fn sshd(&self) -> &Sshd {
        match &self.stand_in {
            StandIn::OneSshd(sshd) => sshd,
            StandIn::OwnHosts(_) => {
                panic!("this stack gives each instance a host of its own: use nodes()")
            }
        }
    }

    /// [`sshd`](Self::sshd), to stop or restart it.
    ///
    /// # Panics
    /// When the stack gives each instance a host of its own ([`Hosts::OwnHost`]).
    pub fn sshd_mut(&mut self) -> &mut Sshd {
        match &mut self.stand_in {
            StandIn::OneSshd(sshd) => sshd,
            StandIn::OwnHosts(_) => {
                panic!("this stack gives each instance a host of its own: use nodes()")
            }
        }
    }

    /// The node hosts, one per running instance.
    ///
    /// # Panics
    /// When one sshd answers for every instance ([`Hosts::OneSshd`]).
    pub fn nodes(&self) -> &NodeHosts {
        match &self.stand_in {
            StandIn::OwnHosts(nodes) => nodes,
            StandIn::OneSshd(_) => panic!("this stack has one sshd for every instance: use sshd()"),
        }
    }

    /// The login user on the nodes.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key the nodes accept.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The `known_hosts` file the config names.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
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
    /// With one sshd, the stand-in VM is this machine: stop the Tomcat the
    /// pipeline started on it (through the manifest's service script, on
    /// machines without systemd). Node hosts take theirs with them.
    fn drop(&mut self) {
        if !matches!(self.stand_in, StandIn::OneSshd(_)) {
            return;
        }
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
