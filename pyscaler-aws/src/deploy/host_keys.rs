//! Learning new instances' SSH host keys from their console output, before
//! anyone connects to them.

use pyscaler_core::{Classify, Context, Node, Result};
use tracing::{info, warn};

use super::DeployEc2Node;
use crate::wait::Poller;
use crate::{host_key_fingerprints, AwsError, HostKeySource};

impl DeployEc2Node {
    /// When the profile reads host keys from the console output
    /// (`ssh.host_keys = "console-output"`), waits until each new
    /// instance's console output holds cloud-init's fingerprints, and gives
    /// them to its node
    /// ([`Node::host_key_fingerprints`](pyscaler_core::Node::host_key_fingerprints)).
    ///
    /// # Errors
    /// [`AwsError::WaitTimedOut`] when an instance publishes none within
    /// [`DeployEc2NodeBuilder::host_keys_within`](super::DeployEc2NodeBuilder::host_keys_within);
    /// [`AwsError::NoHostKeyFingerprints`] when its block names no SHA256
    /// fingerprint; the API's refusal. The step fails, and its launch is undone.
    pub(super) async fn read_host_keys(&self, ctx: &Context, nodes: &mut [Node]) -> Result<()> {
        if self.aws.profile.ssh().host_keys != HostKeySource::ConsoleOutput {
            return Ok(());
        }
        let mut poller = Poller::new(&self.poll, self.host_keys_within);
        let mut waiting: Vec<usize> = (0..nodes.len()).collect();
        let mut last = Vec::new();
        loop {
            let mut still = Vec::new();
            last.clear();
            for i in waiting {
                let node = &mut nodes[i];
                let id = node.instance_id.clone().unwrap_or_else(|| node.id.clone());
                let text = match self.aws.ec2.console_output(&id).await {
                    Ok(text) => text,
                    Err(e) if e.is_retryable() => {
                        warn!(instance = %id, error = %e, "Reading the console output failed; polling again.");
                        last.push(format!("{id}: {e}"));
                        still.push(i);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                match text.as_deref().and_then(host_key_fingerprints) {
                    Some(found) if found.is_empty() => {
                        return Err(AwsError::NoHostKeyFingerprints { instance_id: id }.into())
                    }
                    Some(found) => {
                        info!(instance = %id, fingerprints = ?found,
                            "Host key fingerprints read from the console output.");
                        node.host_key_fingerprints = found;
                    }
                    None => {
                        let seen = if text.is_some() {
                            "console output without the fingerprints yet"
                        } else {
                            "no console output yet"
                        };
                        last.push(format!("{id}: {seen}"));
                        still.push(i);
                    }
                }
            }
            waiting = still;
            if waiting.is_empty() {
                return Ok(());
            }
            if !poller.tick(ctx.cancellation()).await? {
                break;
            }
        }
        Err(AwsError::WaitTimedOut {
            what: format!(
                "the host key fingerprints in the console output (last seen: {})",
                last.join("; ")
            ),
            after: poller.within(),
        }
        .into())
    }
}
