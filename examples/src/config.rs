//! The configuration file of the Tomcat cluster example.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pyscaler_aws::Ec2Profile;
use pyscaler_core::ErrorKind;
use pyscaler_notify::SmtpConfig;
use pyscaler_ssh::SshConfig;
use serde::Deserialize;

/// Why a configuration file could not be used. Every variant names the file.
///
/// Its `Debug` output is its message: the TOML parser's own error carries
/// the whole file, and the file may hold a password.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of this format (a wrong type, an unknown
    /// key, a bad `[ec2]` profile); the message names the key and the line.
    #[error("{}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's account, with the line, the column and the key;
        /// never the line itself (the parser's own `Display` quotes it, and
        /// it may be the password cut short).
        message: String,
    },
    /// A section parsed but is not usable (an SSH key that does not exist,
    /// a malformed mail address).
    #[error("{}: [{section}] {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The section: `ssh`, `smtp` or `deploy`.
        section: &'static str,
        /// The section's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let variant = match self {
            Self::Unreadable { .. } => "Unreadable",
            Self::Malformed { .. } => "Malformed",
            Self::Invalid { .. } => "Invalid",
        };
        write!(f, "ConfigError::{variant}({self})")
    }
}

impl ConfigError {
    /// The core's classification: a configuration error is always bad input.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }

    /// Never: the file has to change first.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Unreadable { path, .. }
            | Self::Malformed { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }
}

/// Everything `tomcat_cluster` needs, read from one TOML file.
///
/// The same file format drives the local stack (moto, a loopback sshd,
/// aiosmtpd) and real AWS: only `[ec2]` (endpoint, how nodes are reached) and
/// the credentials differ. See `examples/tomcat/aws.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TomcatClusterConfig {
    /// The cluster's name (the `pyscaler:cluster` tag).
    pub cluster: String,
    /// What to launch and how to reach it.
    pub ec2: Ec2Profile,
    /// How to log in to the nodes.
    pub ssh: SshConfig,
    /// Where notifications go (from/to come from here too).
    pub smtp: SmtpConfig,
    /// Tomcat and the application.
    #[serde(default)]
    pub tomcat: TomcatSettings,
    /// How many nodes one scale-out adds, and bounds on waiting for them.
    #[serde(default)]
    pub deploy: DeploySettings,
    /// The automatic path: the counter, its threshold and the bounds.
    #[serde(default)]
    pub watch: WatchSettings,
    /// Where the run journal lives (one file per cluster), with the file store.
    #[serde(default = "default_journal_dir")]
    pub journal_dir: PathBuf,
    /// Which store holds the journal and the controller's lease.
    #[serde(default)]
    pub journal: JournalSettings,
    /// The folder of the shipped assets (manifest, scripts, web app);
    /// relative paths are taken from the config file's folder.
    #[serde(default = "default_assets")]
    pub assets: PathBuf,
}

fn default_journal_dir() -> PathBuf {
    PathBuf::from("target/pyscaler-journal")
}

fn default_assets() -> PathBuf {
    PathBuf::from(".")
}

/// Where the run journal and the lease live: `[journal] store = "file"`
/// (the default: `journal_dir`, one machine) or `"dynamodb"` (a table the
/// controllers of the cluster share, so a standby takes over).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSettings {
    /// `file` or `dynamodb`.
    pub store: JournalStore,
    /// The DynamoDB table (layout: `pyscaler_aws::dynamo`).
    pub table: String,
    /// Create the table when it is missing (first use, tests).
    pub create_table: bool,
    /// How long the lease lasts without a renewal.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often it is renewed, and how often a standby asks for it.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            store: JournalStore::File,
            table: "pyscaler".into(),
            create_table: false,
            lease: Duration::from_secs(20),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// Which store the journal is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalStore {
    /// A file in `journal_dir`, locked by one controller.
    File,
    /// DynamoDB, fenced by a lease.
    Dynamodb,
}

/// Tomcat and the application deployed on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TomcatSettings {
    /// The HTTP connector's port.
    pub http_port: u16,
    /// The JVM's maximum heap (`-Xmx`).
    pub heap: String,
    /// The JMX port.
    pub jmx_port: u16,
    /// The application's name (its URL path).
    pub app: String,
    /// Text the application's page must contain to count as deployed.
    pub expected_text: String,
    /// The environment variable holding the Tomcat manager's password
    /// (never in the file, never in a log line).
    pub manager_password_env: String,
    /// Run the node-side commands with `sudo -n`.
    pub sudo: bool,
    /// Bound on the application answering after deployment.
    #[serde(with = "humantime_serde")]
    pub ready_within: Duration,
    /// After the node's own check, check the application over HTTP from the
    /// controller too, as a client would (default). Turn it off when the
    /// controller cannot reach the nodes' HTTP port, such as behind a bastion.
    pub check_from_controller: bool,
    /// Bound on Puppet (the first run installs Java and Tomcat).
    #[serde(with = "humantime_serde")]
    pub puppet_timeout: Duration,
}

impl Default for TomcatSettings {
    fn default() -> Self {
        Self {
            http_port: 8080,
            heap: "256m".into(),
            jmx_port: 9010,
            app: "demo".into(),
            expected_text: "pyscaler demo app".into(),
            manager_password_env: "TOMCAT_MANAGER_PASSWORD".into(),
            sudo: true,
            ready_within: Duration::from_secs(120),
            check_from_controller: true,
            puppet_timeout: Duration::from_secs(900),
        }
    }
}

/// How a scale-out launches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploySettings {
    /// Nodes added by one run.
    pub count: u32,
    /// Bound on the SSH port answering after launch.
    #[serde(with = "humantime_serde")]
    pub ssh_within: Duration,
    /// Bound on the load balancer reporting the nodes InService.
    #[serde(with = "humantime_serde")]
    pub in_service_within: Duration,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            count: 1,
            ssh_within: Duration::from_secs(300),
            in_service_within: Duration::from_secs(300),
        }
    }
}

/// The automatic path: a scale-out trigger on the cluster's load (from
/// Prometheus when `prometheus` is set, else an `SshCounter` on every node)
/// and, when `scale_in_below` is set, a scale-in trigger on the same load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchSettings {
    /// The command printing the load figure on each node (without `prometheus`).
    pub counter_command: String,
    /// Where the load comes from instead of SSH: a Prometheus server and a
    /// PromQL expression giving one value for the cluster.
    pub prometheus: Option<PrometheusWatch>,
    /// Scale out when the average across nodes is above this.
    pub threshold: f64,
    /// How often the counter is read.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long it must stay above the threshold.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Quiet time after a scale-out.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Scale in (remove the newest node) when the load stays below this;
    /// no scale-in when unset.
    pub scale_in_below: Option<f64>,
    /// How long it must stay below (default: the scale-in default, 5 minutes).
    #[serde(default, with = "humantime_serde")]
    pub scale_in_window: Option<Duration>,
    /// Quiet time after a scale-in.
    #[serde(with = "humantime_serde")]
    pub scale_in_cooldown: Duration,
    /// How long a removed node drains after leaving a classic load balancer
    /// (a target group says its own; default 30 s).
    #[serde(default, with = "humantime_serde")]
    pub draining: Option<Duration>,
    /// The fewest nodes.
    pub min_nodes: usize,
    /// The most nodes.
    pub max_nodes: usize,
}

/// The load from Prometheus: `query` on the server at `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusWatch {
    /// The server (`http://prometheus:9090`); credentials written in it are
    /// sent as basic authentication and never logged.
    pub url: String,
    /// A PromQL expression giving one value for the cluster
    /// (`avg(node_load1{job="web"})`).
    pub query: String,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            counter_command: "cut -d' ' -f1 /proc/loadavg".into(),
            prometheus: None,
            threshold: 4.0,
            interval: Duration::from_secs(10),
            window: Duration::from_secs(300),
            cooldown: Duration::from_secs(600),
            scale_in_below: None,
            scale_in_window: None,
            scale_in_cooldown: Duration::from_secs(600),
            draining: None,
            min_nodes: 1,
            max_nodes: 10,
        }
    }
}

impl TomcatClusterConfig {
    /// Reads and checks the file at `path`; relative paths in it are taken
    /// from the file's folder.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|e| ConfigError::Malformed {
            path: path.to_owned(),
            message: pyscaler_core::config_error_at(&text, e.span(), e.message()),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.assets.is_relative() {
            config.assets = base.join(&config.assets);
        }
        let invalid =
            |section, source: Box<dyn std::error::Error + Send + Sync>| ConfigError::Invalid {
                path: path.to_owned(),
                section,
                source,
            };
        config
            .ssh
            .validate()
            .map_err(|e| invalid("ssh", Box::new(e)))?;
        config
            .smtp
            .validate()
            .map_err(|e| invalid("smtp", Box::new(e)))?;
        if config.deploy.count == 0 {
            return Err(invalid("deploy", "count must be at least 1".into()));
        }
        // The SSH steps can only check keys the deploy step read.
        if config.ssh.host_keys == pyscaler_ssh::HostKeyPolicy::Published
            && config.ec2.ssh().host_keys != pyscaler_aws::HostKeySource::ConsoleOutput
        {
            return Err(invalid(
                "ssh",
                "host_keys = \"published\" needs [ec2.ssh] host_keys = \"console-output\" \
                 (where the deploy step reads the keys it publishes)"
                    .into(),
            ));
        }
        Ok(config)
    }

    /// A shipped asset's path.
    pub fn asset(&self, relative: &str) -> PathBuf {
        self.assets.join(relative)
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_aws_sample_matches_the_format() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tomcat/aws.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config: TomcatClusterConfig = toml::from_str(&text).unwrap();
        // An ALB target group over two zones, as a team on AWS starts today.
        assert_eq!(config.ec2.load_balancer(), None);
        assert!(config
            .ec2
            .target_group()
            .is_some_and(|arn| arn.contains(":targetgroup/web/")));
        assert_eq!(config.ec2.target_port(), Some(8080));
        assert_eq!(config.ec2.subnet_ids().len(), 2);
        assert_eq!(config.watch.min_nodes, 2);
        assert_eq!(config.watch.scale_in_below, Some(1.0));
        assert_eq!(config.watch.scale_in_window, Some(Duration::from_secs(600)));
        assert!(config.watch.prometheus.is_none());
        // Loading checks what the file points at: the sample's key is a placeholder.
        let err = TomcatClusterConfig::load(&path).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { section: "ssh", .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("/home/ops/.ssh/id_ed25519 does not exist"),
            "{err}"
        );
    }

    #[test]
    fn the_samples_bastion_lines_work_once_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tomcat/aws.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let default: TomcatClusterConfig = toml::from_str(&text).unwrap();
        assert!(default.ssh.proxy_command.is_none());
        assert!(default.tomcat.check_from_controller);
        let behind_bastion = text
            .replace("# proxy_command = ", "proxy_command = ")
            .replace("# check_from_controller = ", "check_from_controller = ");
        let config: TomcatClusterConfig = toml::from_str(&behind_bastion).unwrap();
        let proxy = config.ssh.proxy_command.as_ref().expect("proxy_command");
        assert!(proxy.validate().is_ok(), "{proxy}");
        assert!(proxy.template().contains("-W %h:%p"), "{proxy}");
        assert!(!config.tomcat.check_from_controller);
    }

    #[test]
    fn published_host_keys_need_the_console_output_read_by_the_deploy_step() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tomcat/aws.toml");
        let text = std::fs::read_to_string(&sample).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let text = text
            .replace("/home/ops/.ssh/id_ed25519", &key.display().to_string())
            .replace(
                "/home/ops/.ssh/known_hosts",
                &dir.path().join("known_hosts").display().to_string(),
            )
            .replace(
                "assets = \".\"",
                &format!("assets = {:?}", sample.parent().unwrap()),
            );
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let config = TomcatClusterConfig::load(&write("ok.toml", &text)).unwrap();
        assert_eq!(config.ssh.host_keys, pyscaler_ssh::HostKeyPolicy::Published);
        let without = text.replace("host_keys = \"console-output\"", "");
        let err = TomcatClusterConfig::load(&write("without.toml", &without)).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { section: "ssh", .. }),
            "{err:?}"
        );
        assert!(
            format!("{err:#}").contains("[ec2.ssh] host_keys = \"console-output\""),
            "{err:#}"
        );
    }

    #[test]
    fn the_samples_alternatives_load_once_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tomcat/aws.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // The classic ELB instead of the target group.
        let start = text.find("load_balancers = [\n").unwrap();
        let end = start + text[start..].find("]\n").unwrap() + 2;
        let classic = format!("{}{}", &text[..start], &text[end..]).replace(
            "# load_balancers = [{ classic",
            "load_balancers = [{ classic",
        );
        let config: TomcatClusterConfig = toml::from_str(&classic).unwrap();
        assert_eq!(config.ec2.load_balancer(), Some("web-lb"));
        assert_eq!(config.ec2.target_group(), None);
        // The journal and the lease in DynamoDB.
        let shared = text
            .replace("# [journal]", "[journal]")
            .replace("# store = ", "store = ")
            .replace("# table = ", "table = ")
            .replace("# lease = ", "lease = ")
            .replace("# heartbeat = ", "heartbeat = ");
        let config: TomcatClusterConfig = toml::from_str(&shared).unwrap();
        assert_eq!(config.journal.store, JournalStore::Dynamodb);
        assert_eq!(config.journal.lease, Duration::from_secs(20));
        assert_eq!(config.assets, Path::new("."));
        // A launch template, with Spot.
        let templated = text
            .replace("# launch_template = ", "launch_template = ")
            .replace("# market = ", "market = ")
            .replace("# spot_fallback = ", "spot_fallback = ");
        let config: TomcatClusterConfig = toml::from_str(&templated).unwrap();
        let template = config.ec2.launch_template().expect("launch_template");
        assert_eq!(template.to_string(), "`web` version $Latest");
        assert_eq!(config.ec2.market(), pyscaler_aws::Market::Spot);
    }

    #[test]
    fn a_malformed_file_does_not_show_the_rest_of_the_file_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "cluster = \"web\"\n[smtp]\npassword = \"hunter2-secret\"\n[ec2]\nregion = 3\n",
        )
        .unwrap();
        let err = TomcatClusterConfig::load(&path).unwrap_err();
        let debug = format!("{err:?}");
        assert!(debug.starts_with("ConfigError::Malformed("), "{debug}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(!err.to_string().contains("hunter2-secret"), "{err}");
    }

    #[test]
    fn a_malformed_file_names_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "cluster = \"web\"\n[ec2]\nregion = 3\n").unwrap();
        let err = TomcatClusterConfig::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.path(), path);
        let message = err.to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("region"), "{message}");
    }
}
