//! How the SDK clients are configured: region, endpoint, credentials, SDK retries.

use std::fmt;
use std::time::Duration;

use crate::Ec2Profile;

/// Access keys given explicitly (a test stack such as moto), instead of the standard chain.
///
/// The secret never appears in `Debug` output.
#[derive(Clone)]
pub struct StaticCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl StaticCredentials {
    /// An access key id and its secret.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// Adds a session token (temporary credentials).
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How [`SdkEc2`](crate::SdkEc2) and [`ClassicElb`](crate::ClassicElb) reach AWS.
///
/// Credentials come from aws-config's standard chain (environment, profile
/// files, container and instance metadata) unless [`ClientConfig::credentials`]
/// gives them. [`ClientConfig::endpoint_url`] points both clients at another
/// endpoint (LocalStack, moto).
///
/// # Retries, in two layers
/// The SDK retries each API call on throttling and transient faults, with its
/// standard exponential backoff, up to [`ClientConfig::max_attempts`] attempts
/// (3 by default), each attempt bounded by [`ClientConfig::attempt_timeout`].
/// A pipeline step's [`RetryPolicy`](pyscaler_core::RetryPolicy) then repeats
/// the whole action when the error is still retryable. The two multiply: a step
/// with 3 attempts over an SDK with 3 attempts may send a call 9 times. That is
/// safe for reads, and for RunInstances because every launch carries the same
/// ClientToken across both layers. Set `max_attempts(1)` to leave all retrying
/// to the pipeline.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    region: String,
    endpoint_url: Option<String>,
    credentials: Option<StaticCredentials>,
    max_attempts: u32,
    attempt_timeout: Duration,
    connect_timeout: Duration,
}

impl ClientConfig {
    /// Clients for `region`, with the standard credential chain and 3 SDK attempts per call.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint_url: None,
            credentials: None,
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Clients for the profile's region and endpoint.
    pub fn for_profile(profile: &Ec2Profile) -> Self {
        let c = Self::new(profile.region());
        match profile.endpoint_url() {
            Some(url) => c.endpoint_url(url),
            None => c,
        }
    }

    /// Sends every call to this endpoint instead of AWS's.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Uses these credentials instead of the standard chain.
    pub fn credentials(mut self, credentials: StaticCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// How many attempts the SDK makes per call (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Bounds each attempt of each call.
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = d;
        self
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    pub(crate) async fn sdk_config(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(self.max_attempts),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .operation_attempt_timeout(self.attempt_timeout)
                    .build(),
            );
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(c) = &self.credentials {
            loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "pyscaler-static",
            ));
        }
        loader.load().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = ClientConfig::new("us-east-1")
            .credentials(StaticCredentials::new("AKIDEXAMPLE", "s3cr3t").with_session_token("tok"));
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("tok\""), "{shown}");
    }

    #[tokio::test]
    async fn the_sdk_config_carries_region_endpoint_and_attempts() {
        let c = ClientConfig::new("eu-west-1")
            .endpoint_url("http://127.0.0.1:5000")
            .credentials(StaticCredentials::new("testing", "testing"))
            .max_attempts(0);
        let sdk = c.sdk_config().await;
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert_eq!(sdk.retry_config().map(|r| r.max_attempts()), Some(1));
    }
}
