//! `DeployEc2NodeBuilder`: a `DeployEc2Node`'s count and bounds, checked by `build()`.

use std::fmt;
use std::time::Duration;

use super::DeployEc2Node;
use crate::wait::{default_poll, Backoff};
use crate::{Aws, AwsError};

/// Builds a [`DeployEc2Node`]; [`DeployEc2NodeBuilder::build`] reports the first mistake.
pub struct DeployEc2NodeBuilder {
    inner: DeployEc2Node,
    min_count: Option<u32>,
}

impl fmt::Debug for DeployEc2NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployEc2NodeBuilder")
            .field("inner", &self.inner)
            .finish()
    }
}

impl DeployEc2Node {
    /// Starts building: the cluster's providers and profile ([`Aws`]).
    pub fn builder(aws: &Aws) -> DeployEc2NodeBuilder {
        DeployEc2NodeBuilder {
            inner: DeployEc2Node {
                aws: aws.clone(),
                count: 1,
                min_count: 1,
                poll: default_poll(),
                running_within: Duration::from_secs(300),
                ssh_within: None,
                host_keys_within: Duration::from_secs(300),
                in_service_within: Duration::from_secs(300),
                terminated_within: Duration::from_secs(300),
                unanswered_within: Duration::from_secs(30),
                withdrawn_within: Duration::from_secs(20),
            },
            min_count: None,
        }
    }
}

impl DeployEc2NodeBuilder {
    /// How many instances to launch (1 by default).
    pub fn count(mut self, n: u32) -> Self {
        self.inner.count = n;
        self
    }

    /// Accepts a launch that starts at least `min` instances (MinCount) instead of all.
    pub fn allow_partial(mut self, min: u32) -> Self {
        self.min_count = Some(min);
        self
    }

    /// How polls are spaced (first after ~0.5 s, doubling, capped at 5 s by default).
    pub fn poll(mut self, policy: Backoff) -> Self {
        self.inner.poll = policy;
        self
    }

    /// Bounds the wait until the instances run (5 min by default).
    pub fn running_within(mut self, d: Duration) -> Self {
        self.inner.running_within = d;
        self
    }

    /// Also waits, up to `d`, until each node's SSH port accepts connections.
    pub fn wait_for_ssh(mut self, d: Duration) -> Self {
        self.inner.ssh_within = Some(d);
        self
    }

    /// Bounds the wait until each new instance's console output lists its
    /// host key fingerprints, when the profile reads them from there
    /// (`ssh.host_keys = "console-output"`; 5 min by default).
    pub fn host_keys_within(mut self, d: Duration) -> Self {
        self.inner.host_keys_within = d;
        self
    }

    /// Bounds the wait until the load balancer says InService (5 min by default).
    pub fn in_service_within(mut self, d: Duration) -> Self {
        self.inner.in_service_within = d;
        self
    }

    /// Bounds compensation's wait until the instances are terminated (5 min by default).
    pub fn terminated_within(mut self, d: Duration) -> Self {
        self.inner.terminated_within = d;
        self
    }

    /// Bounds how long compensation keeps looking for the instances of a
    /// launch whose answer never came (30 s by default).
    ///
    /// EC2 may act on a RunInstances call whose answer is lost (a timeout, a
    /// dropped connection, a run cut short), and a search by tags right after
    /// a launch can miss instances that are starting (DescribeInstances is
    /// eventually consistent). So after such a launch compensation searches
    /// the run's tags until it has found `count` instances or this bound
    /// passes. Instances that appear even later are the orphan sweep's
    /// ([`crate::SweepOrphans`]): they carry the run's tags.
    pub fn unanswered_launch_within(mut self, d: Duration) -> Self {
        self.inner.unanswered_within = d;
        self
    }

    /// Bounds the withdrawal of a failed run ([`Action::withdraw`](pyscaler_core::Action::withdraw)): the one
    /// deregistration call that takes the step's instances out of the load
    /// balancer before the run's slower undos start (20 s by default). It does
    /// not wait for connection draining. When it runs out, compensation
    /// deregisters again before it terminates.
    pub fn withdrawn_within(mut self, d: Duration) -> Self {
        self.inner.withdrawn_within = d;
        self
    }

    /// Checks the settings and builds the action.
    ///
    /// # Errors
    /// [`AwsError::InvalidSetting`] for a zero count, a minimum above the
    /// count, or a zero bound.
    pub fn build(self) -> Result<DeployEc2Node, AwsError> {
        let mut a = self.inner;
        if a.count == 0 {
            return Err(AwsError::invalid(
                "count",
                "is 0: launch at least one instance",
            ));
        }
        a.min_count = self.min_count.unwrap_or(a.count);
        if a.min_count == 0 || a.min_count > a.count {
            return Err(AwsError::invalid(
                "allow_partial",
                format!(
                    "minimum {} must be between 1 and the count {}",
                    a.min_count, a.count
                ),
            ));
        }
        for (name, d) in [
            ("running_within", Some(a.running_within)),
            ("wait_for_ssh", a.ssh_within),
            ("host_keys_within", Some(a.host_keys_within)),
            ("in_service_within", Some(a.in_service_within)),
            ("terminated_within", Some(a.terminated_within)),
            ("unanswered_launch_within", Some(a.unanswered_within)),
            ("withdrawn_within", Some(a.withdrawn_within)),
        ] {
            if d == Some(Duration::ZERO) {
                return Err(AwsError::invalid(name, "is 0"));
            }
        }
        Ok(a)
    }
}
