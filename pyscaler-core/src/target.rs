//! Where a step applies.

use serde::{Deserialize, Serialize};

use crate::{Context, Node};

/// The nodes a step applies to, resolved when the step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Target {
    /// The nodes this run created: the "new node" that the steps after deployment
    /// configure. Taken from what earlier steps of this run recorded, never
    /// guessed from the cluster.
    NewNodes,
    /// The whole cluster, the nodes this run created included.
    Cluster,
    /// The cluster's nodes that this run did not create.
    Existing,
    /// No node (a notification, a launch).
    None,
}

impl Target {
    /// The nodes this target stands for in `ctx`, in cluster order.
    pub fn resolve(self, ctx: &Context) -> Vec<Node> {
        match self {
            Self::NewNodes => ctx.new_nodes().to_vec(),
            Self::Cluster => ctx.cluster().nodes().to_vec(),
            Self::Existing => ctx
                .cluster()
                .nodes()
                .iter()
                .filter(|n| !ctx.is_new(&n.id))
                .cloned()
                .collect(),
            Self::None => Vec::new(),
        }
    }

    /// Whether the step runs per node (every target but `None`).
    pub fn is_per_node(self) -> bool {
        !matches!(self, Self::None)
    }

    /// A short name, as in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewNodes => "new nodes",
            Self::Cluster => "cluster",
            Self::Existing => "existing nodes",
            Self::None => "none",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cluster;

    #[test]
    fn targets_split_new_and_existing_nodes() {
        let cluster =
            Cluster::new("web").with_nodes([Node::new("a", "web-01"), Node::new("b", "web-02")]);
        let mut ctx = Context::new(cluster);
        ctx.add_new_nodes([Node::new("c", "web-03")]);
        let names = |t: Target| {
            t.resolve(&ctx)
                .into_iter()
                .map(|n| n.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Target::NewNodes), ["web-03"]);
        assert_eq!(names(Target::Existing), ["web-01", "web-02"]);
        assert_eq!(names(Target::Cluster), ["web-01", "web-02", "web-03"]);
        assert!(names(Target::None).is_empty());
    }
}
