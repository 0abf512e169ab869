//! How nodes are reached over SSH: which address, which user, which port,
//! and where their host keys are learned.

use pyscaler_core::NodeAddress;
use serde::{Deserialize, Serialize};

use crate::{AwsError, Instance};

/// Which address of an instance pyscaler connects to over SSH.
///
/// A node behind a bastion (jump host) is reached by its private address
/// through pyscaler-ssh's `SshConfig::proxy_command`
/// (`ssh -W %h:%p ops@bastion`): keep `PrivateIp` here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SshVia {
    /// The private IP (the controller runs in the same VPC, or reaches it
    /// through a bastion's proxy command).
    #[default]
    PrivateIp,
    /// The public IP.
    PublicIp,
    /// The public DNS name.
    PublicDns,
    /// A fixed address for every node, whatever EC2 reports: one port forward
    /// to a single node, or a test stack where one loopback sshd stands in for
    /// every VM. Every node gets the same address, so this is no jump host:
    /// for a bastion in front of many nodes use `PrivateIp` and a proxy command.
    /// The port is the profile's `ssh.port`, as for every other address.
    Fixed {
        /// Host name or IP address.
        host: String,
    },
}

/// How nodes are reached over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshAccess {
    /// Which address to use.
    #[serde(default)]
    pub via: SshVia,
    /// The SSH user (`ec2-user` by default).
    #[serde(default = "default_user")]
    pub user: String,
    /// The SSH port of every node the profile launches, whichever address
    /// `via` picks (22 by default): the one place the port is set. (An
    /// `SshConfig`'s own port is only for nodes whose address names none,
    /// such as nodes an application makes itself.)
    #[serde(default = "default_port")]
    pub port: u16,
    /// Where new instances' host keys are learned, beside the SSH
    /// connection itself (`host_keys = "console-output"`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub host_keys: HostKeySource,
}

fn is_default(source: &HostKeySource) -> bool {
    *source == HostKeySource::default()
}

/// Where the SSH host keys of new instances are learned, beside the SSH
/// connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum HostKeySource {
    /// Nowhere else: the SSH side's own policy decides (a `known_hosts`
    /// file written beforehand, or `accept-new`).
    #[default]
    None,
    /// The instance's console output, which reaches the controller through
    /// the EC2 API rather than the network: `DeployEc2Node` waits (bounded,
    /// [`DeployEc2NodeBuilder::host_keys_within`](crate::DeployEc2NodeBuilder::host_keys_within))
    /// until cloud-init's fingerprints appear there and gives them to the
    /// new nodes ([`Node::host_key_fingerprints`](pyscaler_core::Node::host_key_fingerprints)),
    /// for pyscaler-ssh's `HostKeyPolicy::Published` to accept only a
    /// matching key. An instance that publishes none in time fails the step,
    /// and the launch is undone.
    ConsoleOutput,
}

fn default_user() -> String {
    "ec2-user".to_owned()
}

fn default_port() -> u16 {
    22
}

impl Default for SshAccess {
    fn default() -> Self {
        Self {
            via: SshVia::default(),
            user: default_user(),
            port: default_port(),
            host_keys: HostKeySource::default(),
        }
    }
}

impl SshAccess {
    /// The address of `instance` as this says, if the instance has one.
    ///
    /// # Errors
    /// [`AwsError::NoAddress`] when the instance lacks that kind of address.
    pub fn address_of(&self, instance: &Instance) -> Result<NodeAddress, AwsError> {
        let (host, wanted) = match &self.via {
            SshVia::PrivateIp => (instance.private_ip.clone(), "private IP"),
            SshVia::PublicIp => (instance.public_ip.clone(), "public IP"),
            SshVia::PublicDns => (instance.public_dns.clone(), "public DNS name"),
            SshVia::Fixed { host } => (Some(host.clone()), "fixed address"),
        };
        host.map(|h| NodeAddress::new(h).with_port(self.port))
            .ok_or_else(|| AwsError::NoAddress {
                instance_id: instance.id.clone(),
                wanted,
            })
    }
}
