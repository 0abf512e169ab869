//! The crate's one error type, and the one place where EC2, ELB and
//! CloudWatch error codes become core [`ErrorKind`]s.

use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use pyscaler_core::{BoxError, Classify, ErrorKind};

use crate::codes::{is_capacity_code, kind_of_code};
use crate::InstanceState;

/// What went wrong talking to EC2, the Elastic Load Balancers or CloudWatch.
///
/// Every variant answers [`Classify::kind`]; API errors are classified from
/// their error code by [`kind_of_code`], the one place codes are mapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// A profile or builder setting is wrong; nothing was sent to AWS.
    #[error("invalid {field}: {message}")]
    InvalidSetting {
        /// The setting (`image_id`, `count`).
        field: String,
        /// What is wrong with it, naming the value.
        message: String,
    },
    /// An EC2, ELB or CloudWatch call failed.
    #[error("{service} {operation} failed{}: {}{message}",
        subject.as_ref().map(|s| format!(" for {s}")).unwrap_or_default(),
        code.as_ref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Api {
        /// `EC2`, `ELB`, `ELBv2` or `CloudWatch`.
        service: &'static str,
        /// The API operation (`RunInstances`).
        operation: &'static str,
        /// The service's error code (`InvalidAMIID.NotFound`), when it sent one.
        code: Option<String>,
        /// The service's message, or what failed on the way.
        message: String,
        /// The value the error is about (`image ami-123`), when known.
        subject: Option<String>,
        /// The classification, from the code.
        kind: ErrorKind,
        /// The SDK's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The DynamoDB table of the lease and the journal does not exist:
    /// create it (`pyscaler_aws::create_table`, feature `dynamodb`) or name
    /// the right one.
    #[error("DynamoDB table {table} does not exist: create it (pyscaler_aws::create_table) or name another")]
    TableNotFound {
        /// The table.
        table: String,
    },
    /// An instance's console output lists its host keys without a SHA256
    /// fingerprint (a cloud-init too old to print them), so no key can be
    /// checked against it.
    #[error("the console output of {instance_id} lists its host keys without SHA256 fingerprints: no key can be checked against it")]
    NoHostKeyFingerprints {
        /// The instance.
        instance_id: String,
    },
    /// An instance left the way to `running` (it was stopped or terminated).
    #[error("instance {instance_id} is {state} instead of running{}",
        reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    InstanceLost {
        /// The instance.
        instance_id: String,
        /// The state it reached.
        state: InstanceState,
        /// EC2's state reason, when it gave one.
        reason: Option<String>,
    },
    /// A bounded wait ran out.
    #[error("gave up after {} waiting for {what}", humantime_serde::re::humantime::format_duration(*after))]
    WaitTimedOut {
        /// What was awaited, naming the instances and what they were still doing.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A running instance lacks the address the profile asks for.
    #[error("instance {instance_id} has no {wanted} (see the profile's `ssh.via`)")]
    NoAddress {
        /// The instance.
        instance_id: String,
        /// The kind of address (`public IP`).
        wanted: &'static str,
    },
    /// A load balancer the profile names does not exist: found out before
    /// anything was launched, or when a registration was refused for it.
    #[error("load balancer {load_balancer} does not exist")]
    LoadBalancerNotFound {
        /// The load balancer.
        load_balancer: String,
    },
    /// The launch template the profile names does not exist, or not at
    /// that version: found out before anything was launched.
    #[error("launch template {template} does not exist{}",
        latest.map(|n| format!(" (its latest version is {n})")).unwrap_or_default())]
    LaunchTemplateNotFound {
        /// The template and version, as the profile names them.
        template: String,
        /// The template's latest version, when the template exists.
        latest: Option<u64>,
    },
    /// Registering new instances with a load balancer failed, after the
    /// registration itself was retried. Not retryable as a step: the instances
    /// exist, and repeating the step would only repeat the registration.
    #[error("registering {} with load balancer {load_balancer} failed after {attempts} attempt(s): {source}",
        instance_ids.join(", "))]
    RegistrationFailed {
        /// The load balancer.
        load_balancer: String,
        /// The instances.
        instance_ids: Vec<String>,
        /// How many registrations were tried.
        attempts: u32,
        /// The last refusal.
        #[source]
        source: Box<AwsError>,
    },
    /// EC2 had no capacity for the launch in any Availability Zone of the
    /// profile's subnets, with any of its instance types.
    #[error("EC2 had no capacity for {missing} of {wanted} instance(s) in any zone with any instance type: {}",
        attempts.join("; "))]
    NoCapacity {
        /// How many instances the launch asked for.
        wanted: usize,
        /// How many could not be launched.
        missing: usize,
        /// Each refused call: type, zone and EC2's code.
        attempts: Vec<String>,
    },
    /// Removing nodes would take the cluster below its minimum size.
    #[error("removing {removing} node(s) from cluster {cluster} of {size} would go below its minimum of {minimum}")]
    BelowMinimum {
        /// The cluster.
        cluster: String,
        /// Its size now.
        size: usize,
        /// How many nodes were to be removed.
        removing: usize,
        /// The minimum.
        minimum: usize,
    },
    /// A CloudWatch query returned nothing to decide on: no point in its
    /// window for any node, or only NaN. Missing data is not zero: the
    /// trigger takes this as no data, and the next period may bring some.
    #[cfg(feature = "cloudwatch")]
    #[error("no data: CloudWatch returned {what} for the {query}")]
    NoData {
        /// The query (`metric AWS/EC2 CPUUtilization`, `expression ...`).
        query: String,
        /// What it returned instead.
        what: String,
    },
    /// CloudWatch's answer was not what the query should give (several
    /// series for one cluster-wide value).
    #[cfg(feature = "cloudwatch")]
    #[error("unexpected CloudWatch answer for the {query}: {problem}")]
    UnexpectedAnswer {
        /// The query.
        query: String,
        /// What is wrong with the answer.
        problem: String,
    },
}

impl AwsError {
    /// A setting error.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidSetting {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The service's error code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Says, for an API error, how many attempts the AWS SDK made (when more
    /// than one), so a report never shows one attempt for a call that took three.
    pub(crate) fn after_attempts(mut self, attempts: u32) -> Self {
        if let Self::Api { message, .. } = &mut self {
            if attempts > 1 {
                message.push_str(&format!(" (after {attempts} attempts of the AWS SDK)"));
            }
        }
        self
    }

    /// Whether a deregistration refused this way has nothing to take out:
    /// the load balancer (or target group) or the registration is gone.
    /// (elbv2 succeeds for an unknown target; moto answers `InvalidTarget`.)
    pub(crate) fn nothing_registered(&self) -> bool {
        [
            "LoadBalancerNotFound",
            "InvalidInstance",
            "TargetGroupNotFound",
            "InvalidTarget",
        ]
        .iter()
        .any(|c| self.has_code(c))
    }

    /// Whether EC2 refused a launch for want of capacity where and as it was
    /// asked for, so that another Availability Zone or instance type may
    /// take it ([`is_capacity_code`]).
    pub fn is_capacity_refusal(&self) -> bool {
        self.code().is_some_and(is_capacity_code)
    }

    /// Whether this is an API error with this code.
    pub(crate) fn has_code(&self, wanted: &str) -> bool {
        self.code() == Some(wanted)
    }

    /// Classifies an SDK error of `service`'s `operation`; `subjects` name the
    /// values the call was about, so the message can say which one was refused.
    pub(crate) fn from_sdk<E>(
        service: &'static str,
        operation: &'static str,
        err: SdkError<E, HttpResponse>,
        subjects: &Subjects,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_owned);
        let (kind, message) = match &err {
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                let kind = match code.as_deref() {
                    Some(c) => kind_of_code(c),
                    None if status >= 500 => ErrorKind::Transient,
                    None => ErrorKind::Unexpected,
                };
                // Codes we do not know, on a 5xx answer, are the service's fault.
                let kind = if kind == ErrorKind::Unexpected && status >= 500 {
                    ErrorKind::Transient
                } else {
                    kind
                };
                let message = err
                    .message()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("HTTP status {status}"));
                (kind, message)
            }
            // No answer in time, or no connection: a passing fault. Only calls that are
            // safe to repeat (reads, or RunInstances with its ClientToken) are retried.
            SdkError::TimeoutError(_) => (ErrorKind::Transient, "no answer in time".to_owned()),
            SdkError::DispatchFailure(_) => (
                ErrorKind::Transient,
                "could not send the request".to_owned(),
            ),
            SdkError::ResponseError(_) => {
                (ErrorKind::Transient, "could not read the answer".to_owned())
            }
            SdkError::ConstructionFailure(_) => (
                ErrorKind::InvalidInput,
                "could not build the request".to_owned(),
            ),
            _ => (ErrorKind::Unexpected, "unexpected SDK error".to_owned()),
        };
        let subject = subjects.about(code.as_deref());
        Self::Api {
            service,
            operation,
            code,
            message,
            subject,
            kind,
            source: Some(Box::new(err)),
        }
    }
}

/// The values a call was about, so an error can name the one that was refused.
#[derive(Debug, Default, Clone)]
pub(crate) struct Subjects {
    pub(crate) image_id: Option<String>,
    pub(crate) instance_type: Option<String>,
    pub(crate) key_name: Option<String>,
    pub(crate) security_groups: Vec<String>,
    pub(crate) subnet_id: Option<String>,
    pub(crate) launch_template: Option<String>,
    pub(crate) load_balancer: Option<String>,
    pub(crate) instance_ids: Vec<String>,
    /// A CloudWatch query (`metric AWS/EC2 CPUUtilization`): every error
    /// of its call names it.
    pub(crate) metric: Option<String>,
    /// A DynamoDB table: every error of its calls names it.
    pub(crate) table: Option<String>,
}

impl Subjects {
    /// The values an error with `code` (or without one) is about. An error of
    /// a load balancer call always names the load balancer.
    fn about(&self, code: Option<&str>) -> Option<String> {
        if let Some(metric) = &self.metric {
            return Some(metric.clone());
        }
        if let Some(table) = &self.table {
            return Some(format!("DynamoDB table {table}"));
        }
        let specific = code.and_then(|c| self.for_code(c));
        match (&self.load_balancer, specific) {
            (Some(lb), Some(s)) if !s.starts_with("load balancer") => {
                Some(format!("load balancer {lb}, {s}"))
            }
            (Some(lb), None) => Some(format!("load balancer {lb}")),
            (_, s) => s,
        }
    }

    fn for_code(&self, code: &str) -> Option<String> {
        let one = |what: &str, v: &Option<String>| v.as_ref().map(|v| format!("{what} {v}"));
        let many =
            |what: &str, v: &[String]| (!v.is_empty()).then(|| format!("{what} {}", v.join(", ")));
        if code.starts_with("InvalidAMIID") {
            one("image", &self.image_id)
        } else if code.starts_with("InvalidInstanceType") {
            one("instance type", &self.instance_type)
        } else if code.starts_with("InvalidKeyPair") {
            one("key pair", &self.key_name)
        } else if code.starts_with("InvalidGroup") {
            many("security group(s)", &self.security_groups)
        } else if code.starts_with("InvalidSubnet") {
            one("subnet", &self.subnet_id)
        } else if code.starts_with("InvalidLaunchTemplate") {
            one("launch template", &self.launch_template)
        } else if code == "LoadBalancerNotFound" || code == "TargetGroupNotFound" {
            one("load balancer", &self.load_balancer)
        } else if code.starts_with("InvalidInstance") || code == "InvalidTarget" {
            many("instance(s)", &self.instance_ids)
        } else {
            None
        }
    }
}

impl Classify for AwsError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidSetting { .. }
            | Self::BelowMinimum { .. }
            | Self::LoadBalancerNotFound { .. }
            | Self::LaunchTemplateNotFound { .. }
            | Self::TableNotFound { .. } => ErrorKind::InvalidInput,
            Self::RegistrationFailed { source, .. } => source.kind(),
            Self::Api { kind, .. } => *kind,
            // Retrying with the same ClientToken would return the same lost instances.
            Self::InstanceLost { .. }
            | Self::NoAddress { .. }
            | Self::NoHostKeyFingerprints { .. } => ErrorKind::Unexpected,
            // Capacity comes back: as `InsufficientInstanceCapacity`, a passing fault.
            Self::NoCapacity { .. } => ErrorKind::Transient,
            Self::WaitTimedOut { .. } => ErrorKind::Timeout,
            #[cfg(feature = "cloudwatch")]
            Self::NoData { .. } => ErrorKind::NotFound,
            #[cfg(feature = "cloudwatch")]
            Self::UnexpectedAnswer { .. } => ErrorKind::Unexpected,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            // Retried inside the step already; a step retry would only repeat it.
            Self::RegistrationFailed { .. } => false,
            // The next period may bring data; a refusal would not change.
            #[cfg(feature = "cloudwatch")]
            Self::NoData { .. } => true,
            _ => self.kind().is_retryable_by_default(),
        }
    }

    fn node(&self) -> Option<&str> {
        match self {
            Self::InstanceLost { instance_id, .. } | Self::NoAddress { instance_id, .. } => {
                Some(instance_id)
            }
            _ => None,
        }
    }
}

impl From<AwsError> for pyscaler_core::Error {
    fn from(e: AwsError) -> Self {
        pyscaler_core::Error::provider(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_kinds_the_issue_names() {
        let cases = [
            ("RequestLimitExceeded", ErrorKind::Throttled, true),
            ("Throttling", ErrorKind::Throttled, true),
            ("InsufficientInstanceCapacity", ErrorKind::Transient, true),
            ("Unsupported", ErrorKind::InvalidInput, false),
            ("InstanceLimitExceeded", ErrorKind::Conflict, false),
            ("Unavailable", ErrorKind::Transient, true),
            ("InternalError", ErrorKind::Transient, true),
            ("InvalidAMIID.NotFound", ErrorKind::InvalidInput, false),
            ("InvalidAMIID.Malformed", ErrorKind::InvalidInput, false),
            (
                "InvalidLaunchTemplateName.NotFoundException",
                ErrorKind::InvalidInput,
                false,
            ),
            (
                "InvalidLaunchTemplateId.VersionNotFound",
                ErrorKind::InvalidInput,
                false,
            ),
            ("InvalidInstanceType", ErrorKind::InvalidInput, false),
            ("InvalidParameterValue", ErrorKind::InvalidInput, false),
            ("InvalidKeyPair.NotFound", ErrorKind::InvalidInput, false),
            ("InvalidGroup.NotFound", ErrorKind::InvalidInput, false),
            ("LoadBalancerNotFound", ErrorKind::InvalidInput, false),
            ("UnauthorizedOperation", ErrorKind::PermissionDenied, false),
            ("AuthFailure", ErrorKind::PermissionDenied, false),
            ("IdempotentParameterMismatch", ErrorKind::Conflict, false),
            ("InvalidInstanceID.NotFound", ErrorKind::NotFound, false),
            (
                "InvalidParameterCombination",
                ErrorKind::InvalidInput,
                false,
            ),
            ("MissingParameter", ErrorKind::InvalidInput, false),
            (
                "InvalidParameterValueException",
                ErrorKind::InvalidInput,
                false,
            ),
            (
                "MissingRequiredParameterException",
                ErrorKind::InvalidInput,
                false,
            ),
            ("ValidationError", ErrorKind::InvalidInput, false),
            ("InternalServiceError", ErrorKind::Transient, true),
            ("LimitExceeded", ErrorKind::Throttled, true),
            ("SomethingNew", ErrorKind::Unexpected, false),
        ];
        for (code, kind, retryable) in cases {
            assert_eq!(kind_of_code(code), kind, "{code}");
            assert_eq!(kind.is_retryable_by_default(), retryable, "{code}");
        }
    }

    #[test]
    fn core_errors_keep_the_classification_and_the_message() {
        let e = AwsError::Api {
            service: "EC2",
            operation: "RunInstances",
            code: Some("InvalidAMIID.NotFound".into()),
            message: "The image id '[ami-bad]' does not exist".into(),
            subject: Some("image ami-bad".into()),
            kind: ErrorKind::InvalidInput,
            source: None,
        };
        assert_eq!(
            e.to_string(),
            "EC2 RunInstances failed for image ami-bad: InvalidAMIID.NotFound: The image id '[ami-bad]' does not exist"
        );
        let core: pyscaler_core::Error = e.into();
        assert_eq!(core.kind(), ErrorKind::InvalidInput);
        assert!(!core.is_retryable());
    }

    #[test]
    fn timeouts_are_retryable_and_lost_instances_are_not() {
        let t = AwsError::WaitTimedOut {
            what: "i-1 to run".into(),
            after: Duration::from_secs(300),
        };
        assert!(t.is_retryable());
        assert_eq!(t.to_string(), "gave up after 5m waiting for i-1 to run");
        let lost = AwsError::InstanceLost {
            instance_id: "i-1".into(),
            state: InstanceState::Terminated,
            reason: Some("Server.InternalError".into()),
        };
        assert!(!lost.is_retryable());
        assert_eq!(Classify::node(&lost), Some("i-1"));
        let core: pyscaler_core::Error = lost.into();
        assert_eq!(core.node(), Some("i-1"));
    }

    #[test]
    fn capacity_codes_are_the_three_the_fallback_moves_on_for() {
        for code in [
            "InsufficientInstanceCapacity",
            "Unsupported",
            "InstanceLimitExceeded",
        ] {
            assert!(is_capacity_code(code), "{code}");
        }
        for code in [
            "InvalidAMIID.NotFound",
            "InvalidParameterValue",
            "RequestLimitExceeded",
            "InvalidInstanceType",
        ] {
            assert!(!is_capacity_code(code), "{code}");
        }
    }
}
