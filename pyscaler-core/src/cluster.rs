//! The vocabulary: clusters, nodes and run ids.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The id of one run of a pipeline: `run-<UTC time>-<random>`, unique enough to
/// tag instances with and to derive idempotency tokens from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A fresh run id.
    pub fn generate() -> Self {
        let now = Utc::now().format("%Y%m%dT%H%M%SZ");
        Self(format!("run-{now}-{:08x}", fastrand::u32(..)))
    }

    /// A run id with the given text (from a journal, a tag, or a test).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a node's SSH server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (22 unless a bastion, a port forward or a test stack says otherwise).
    pub port: u16,
}

impl NodeAddress {
    /// An address on port 22.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: 22,
        }
    }

    /// The same address on another port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == 22 {
            f.write_str(&self.host)
        } else if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The life-cycle state of a node, as its provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeState {
    /// Launched, not yet running.
    Pending,
    /// Running.
    Running,
    /// Shutting down or stopping.
    Stopping,
    /// Stopped.
    Stopped,
    /// Terminated: gone.
    Terminated,
    /// Not known (a node given by hand).
    #[default]
    Unknown,
}

/// The tag that protects a node from scale-in when it is `"true"`
/// ([`Node::is_protected`]).
pub const PROTECTED_TAG: &str = "pyscaler:protected";

/// One machine of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Node {
    /// A stable id within pyscaler (for EC2 nodes, the instance id).
    pub id: String,
    /// A human name (`web-03`), used in logs and reports.
    pub name: String,
    /// Where to reach the node over SSH, when it can be reached.
    pub address: Option<NodeAddress>,
    /// The SSH user for this node, when its profile names one.
    pub ssh_user: Option<String>,
    /// The provider's id of the instance (`i-0abc...`), when it has one.
    pub instance_id: Option<String>,
    /// Tags or labels.
    pub tags: BTreeMap<String, String>,
    /// When the provider launched it.
    pub launched_at: Option<DateTime<Utc>>,
    /// Its state as last seen.
    pub state: NodeState,
    /// The fingerprints of the node's SSH host keys (`SHA256:...`, as
    /// `ssh-keygen -l` prints them), as its provider published them through a
    /// channel that does not cross the network the SSH connection does (on
    /// EC2, the instance's console output), when known. pyscaler-ssh's
    /// `HostKeyPolicy::Published` accepts a first key only when it is among
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_key_fingerprints: Vec<String>,
}

impl Node {
    /// A node with an id and a name and nothing else known.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            address: None,
            ssh_user: None,
            instance_id: None,
            tags: BTreeMap::new(),
            launched_at: None,
            state: NodeState::Unknown,
            host_key_fingerprints: Vec::new(),
        }
    }

    /// Sets the SSH address.
    pub fn with_address(mut self, address: NodeAddress) -> Self {
        self.address = Some(address);
        self
    }

    /// Sets the SSH user.
    pub fn with_ssh_user(mut self, user: impl Into<String>) -> Self {
        self.ssh_user = Some(user.into());
        self
    }

    /// Sets the provider's instance id.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the launch time.
    pub fn with_launched_at(mut self, at: DateTime<Utc>) -> Self {
        self.launched_at = Some(at);
        self
    }

    /// Sets the state.
    pub fn with_state(mut self, state: NodeState) -> Self {
        self.state = state;
        self
    }

    /// Sets the fingerprints of the node's host keys, as published off the
    /// network ([`host_key_fingerprints`](Self::host_key_fingerprints)).
    pub fn with_host_key_fingerprints<I, S>(mut self, fingerprints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.host_key_fingerprints = fingerprints.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the node is protected from scale-in: tagged
    /// [`PROTECTED_TAG`]` = "true"` (on EC2, an instance tag; or marked through
    /// [`ScalerControls::protect`](crate::ScalerControls::protect)). No
    /// scale-in picks a protected node.
    pub fn is_protected(&self) -> bool {
        self.tags.get(PROTECTED_TAG).is_some_and(|v| v == "true")
    }

    /// Marks the node protected from scale-in, or takes the mark away.
    pub fn set_protected(&mut self, protected: bool) {
        if protected {
            self.tags
                .insert(PROTECTED_TAG.to_owned(), "true".to_owned());
        } else {
            self.tags.remove(PROTECTED_TAG);
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(i) = &self.instance_id {
            if i != &self.name {
                write!(f, " ({i})")?;
            }
        }
        Ok(())
    }
}

/// A named set of nodes that scale together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    name: String,
    nodes: Vec<Node>,
}

impl Cluster {
    /// An empty cluster.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            nodes: Vec::new(),
        }
    }

    /// The cluster with these nodes.
    pub fn with_nodes(mut self, nodes: impl IntoIterator<Item = Node>) -> Self {
        self.nodes.extend(nodes);
        self
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its nodes, in the order they joined.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// How many nodes it has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Adds a node, or replaces the node with the same id.
    pub fn upsert(&mut self, node: Node) {
        match self.nodes.iter_mut().find(|n| n.id == node.id) {
            Some(existing) => *existing = node,
            None => self.nodes.push(node),
        }
    }

    /// The node with this id, to change.
    pub fn node_mut(&mut self, id: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// Removes the node with this id and returns it.
    pub fn remove(&mut self, id: &str) -> Option<Node> {
        let at = self.nodes.iter().position(|n| n.id == id)?;
        Some(self.nodes.remove(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_show_ports_other_than_22() {
        assert_eq!(NodeAddress::new("10.0.0.1").to_string(), "10.0.0.1");
        assert_eq!(
            NodeAddress::new("127.0.0.1").with_port(2222).to_string(),
            "127.0.0.1:2222"
        );
        assert_eq!(
            NodeAddress::new("::1").with_port(2222).to_string(),
            "[::1]:2222"
        );
    }

    #[test]
    fn upsert_replaces_by_id_and_remove_returns_the_node() {
        let mut c = Cluster::new("web").with_nodes([Node::new("i-1", "web-01")]);
        c.upsert(Node::new("i-1", "web-01").with_state(NodeState::Running));
        c.upsert(Node::new("i-2", "web-02"));
        assert_eq!(c.len(), 2);
        assert_eq!(c.node("i-1").map(|n| n.state), Some(NodeState::Running));
        assert_eq!(c.remove("i-2").map(|n| n.name), Some("web-02".to_string()));
        assert!(c.remove("i-2").is_none());
    }

    #[test]
    fn run_ids_are_distinct() {
        assert_ne!(RunId::generate(), RunId::generate());
    }
}
