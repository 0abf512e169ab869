//! The Tomcat example's config file, written for one local stack.

use std::path::Path;

use pyscaler_testkit::moto::{self, MotoServer};
use pyscaler_testkit::prometheus::Prometheus;
use pyscaler_testkit::smtp::SmtpServer;

use crate::LOAD_METRIC;

/// How the config reaches the nodes.
#[derive(Debug)]
pub(crate) enum Reach<'a> {
    /// Every instance at the one loopback sshd's port (its key pinned in
    /// `known_hosts`).
    OneSshd { port: u16 },
    /// Every instance at its own private IP, port 22, launched with key
    /// pair `key_name`; each node's key is trusted on first use and stored
    /// under its instance id (an address moto gives again is a new host).
    OwnHosts { key_name: &'a str },
}

/// Everything the config names.
#[derive(Debug)]
pub(crate) struct Rendered<'a> {
    pub(crate) moto: &'a MotoServer,
    pub(crate) smtp: &'a SmtpServer,
    pub(crate) prometheus: &'a Prometheus,
    pub(crate) dir: &'a Path,
    pub(crate) assets: &'a Path,
    pub(crate) placement: &'a str,
    pub(crate) reach: Reach<'a>,
    pub(crate) user: &'a str,
    pub(crate) client_key: &'a Path,
}

pub(crate) fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

impl Rendered<'_> {
    pub(crate) fn render(&self) -> String {
        // Both in the stack's folder, as `start_with` made them.
        let known_hosts = self.dir.join("known_hosts");
        let journal = self.dir.join("journal");
        let user = toml_str(self.user);
        let (key_name, ec2_ssh, ssh_reach) = match self.reach {
            Reach::OneSshd { port } => (
                String::new(),
                format!(
                    "# Every new VM is reached through the loopback sshd standing in for it.\n\
                     [ec2.ssh]\nvia = {{ fixed = {{ host = \"127.0.0.1\" }} }}\nport = {port}\nuser = {user}\n"
                ),
                format!("port = {port}\nhost_keys = \"strict\"\n"),
            ),
            Reach::OwnHosts { key_name } => (
                format!("key_name = {}\n", toml_str(key_name)),
                format!(
                    "# Each new VM is a host of its own, reached at its private IP.\n\
                     [ec2.ssh]\nvia = \"private_ip\"\nuser = {user}\n"
                ),
                "port = 22\n\
                 # Each node's key is trusted when first seen and kept under its\n\
                 # instance id: moto, like EC2, gives a terminated instance's address\n\
                 # to the next one, which has a key of its own.\n\
                 host_keys = \"accept-new\"\n\
                 known_hosts_name = \"node-id\"\n"
                    .to_owned(),
            ),
        };
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
{key_name}{placement}
tags = {{ app = "tomcat-demo" }}

{ec2_ssh}
[ssh]
user = {user}
{ssh_reach}auth = {{ method = "key-file", path = {key} }}
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
            assets = toml_str(&self.assets.display().to_string()),
            region = moto::REGION,
            endpoint = toml_str(&self.moto.endpoint_url()),
            ami = moto::AMI,
            placement = self.placement,
            key = toml_str(&self.client_key.display().to_string()),
            known_hosts = toml_str(&known_hosts.display().to_string()),
            smtp_port = self.smtp.port(),
            prometheus = toml_str(&self.prometheus.endpoint_url()),
            load_metric = LOAD_METRIC,
        )
    }
}
