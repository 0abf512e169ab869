//! What a test asks the fault proxy to do to a call, and the error answers it
//! sends in the shape each AWS query API uses.

use std::fmt::Write as _;

/// How many calls a [`Fault`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Times {
    /// The next `n` matching calls.
    Next(usize),
    /// Every matching call.
    Always,
}

/// What the proxy answers instead of moto's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// An AWS error: `code` with `message`, in the API's XML error body, with this HTTP status.
    Error {
        code: String,
        message: String,
        status: u16,
    },
    /// A bare HTTP status with an HTML page and no error code (what moto's
    /// Flask server answers when it fails, and what a proxy or load balancer
    /// in front of AWS may answer).
    Status(u16),
    /// A successful answer the test wrote itself (HTTP 200, an XML body):
    /// what AWS answers where moto's answer is canned.
    Body(String),
}

/// One fault the proxy injects: which calls it matches (an action, and
/// optionally parameters such as `SubnetId`), what it answers, whether moto
/// executes the call first (a lost answer), and for how many calls.
///
/// ```
/// use pyscaler_testkit::fault_proxy::Fault;
/// // The next RunInstances in subnet-a is refused for capacity.
/// let f = Fault::error("RunInstances", "InsufficientInstanceCapacity").matching("SubnetId", "subnet-a");
/// // The next RunInstances runs, but its answer is lost behind a 503.
/// let lost = Fault::error("RunInstances", "ServiceUnavailable").after_execution();
/// # let _ = (f, lost);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub(crate) action: String,
    pub(crate) matching: Vec<(String, String)>,
    pub(crate) answer: Answer,
    pub(crate) after_execution: bool,
    pub(crate) times: Times,
}

impl Fault {
    /// Answers the next call of `action` with the AWS error `code`, with the
    /// HTTP status AWS uses for it: 503 for `RequestLimitExceeded`,
    /// `ServiceUnavailable`, `Unavailable` and `Throttling`; 500 for
    /// `InsufficientInstanceCapacity`, `InternalError` and `InternalFailure`;
    /// 400 for anything else (a client error).
    pub fn error(action: impl Into<String>, code: impl Into<String>) -> Self {
        let code = code.into();
        let status = match code.as_str() {
            "RequestLimitExceeded" | "ServiceUnavailable" | "Unavailable" | "Throttling" => 503,
            "InsufficientInstanceCapacity" | "InternalError" | "InternalFailure" => 500,
            _ => 400,
        };
        Self {
            action: action.into(),
            matching: Vec::new(),
            answer: Answer::Error {
                message: format!("{code} (injected by the test's fault proxy)"),
                code,
                status,
            },
            after_execution: false,
            times: Times::Next(1),
        }
    }

    /// Answers the next call of `action` with a bare HTTP `status` (500, 503)
    /// and an HTML page: no error code reaches the client.
    pub fn status(action: impl Into<String>, status: u16) -> Self {
        Self {
            action: action.into(),
            matching: Vec::new(),
            answer: Answer::Status(status),
            after_execution: false,
            times: Times::Next(1),
        }
    }

    /// Answers the next call of `action` with HTTP 200 and `xml`, as AWS
    /// would, instead of moto's answer (the call does not reach moto).
    pub fn answer(action: impl Into<String>, xml: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            matching: Vec::new(),
            answer: Answer::Body(xml.into()),
            after_execution: false,
            times: Times::Next(1),
        }
    }

    /// Answers the next GetConsoleOutput with `text` as the console output
    /// (base64-encoded, as EC2 sends it). moto's console output is canned;
    /// this is how a test shows pyscaler what cloud-init printed.
    pub fn console_output(text: &str) -> Self {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        Self::answer(
            "GetConsoleOutput",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <GetConsoleOutputResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                 <requestId>fault-proxy</requestId><timestamp>2026-01-01T00:00:00.000Z</timestamp>\
                 <output>{encoded}</output></GetConsoleOutputResponse>"
            ),
        )
    }

    /// Only calls whose parameter `name` is `value` (`SubnetId`, `InstanceType`,
    /// `LoadBalancerName`); several conditions must all hold.
    pub fn matching(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.matching.push((name.into(), value.into()));
        self
    }

    /// Overrides the HTTP status of an [`error`](Self::error) answer.
    pub fn with_status(mut self, status: u16) -> Self {
        match &mut self.answer {
            Answer::Error { status: s, .. } | Answer::Status(s) => *s = status,
            Answer::Body(_) => {}
        }
        self
    }

    /// Lets moto execute the call first and throws its answer away: the call
    /// took effect, but the client hears only the error (a lost answer).
    pub fn after_execution(mut self) -> Self {
        self.after_execution = true;
        self
    }

    /// Applies to the next `n` matching calls (1 by default).
    pub fn times(mut self, n: usize) -> Self {
        self.times = Times::Next(n);
        self
    }

    /// Applies to every matching call until [`FaultProxy::clear_faults`](super::FaultProxy::clear_faults).
    pub fn always(mut self) -> Self {
        self.times = Times::Always;
        self
    }

    pub(crate) fn matches(&self, action: &str, params: &[(String, String)]) -> bool {
        self.action == action
            && self
                .matching
                .iter()
                .all(|(k, v)| params.iter().any(|(pk, pv)| pk == k && pv == v))
    }
}

/// One call that reached the proxy, as the tests count them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The service of the request's signature (`ec2`, `elasticloadbalancing`).
    pub service: String,
    /// The query API's `Action` (`RunInstances`).
    pub action: String,
    /// Its `ClientToken`, when it has one.
    pub client_token: Option<String>,
    /// The HTTP status the client got.
    pub status: u16,
    /// Whether moto executed it (false for a fault injected before it, or a replay).
    pub executed: bool,
    /// Whether the answer was a fault the test injected.
    pub injected: bool,
    /// Whether the answer was replayed for a ClientToken seen before.
    pub replayed: bool,
    /// The instance ids the call names (`InstanceId.1`, `Targets.member.1.Id`,
    /// `Instances.member.1.InstanceId`), in order: what a test needs to tell
    /// which instances a deregistration or a termination was about.
    pub instance_ids: Vec<String>,
}

/// An error body in the shape of the API `service` speaks:
/// EC2's `<Response><Errors><Error>` or the awsQuery `<ErrorResponse>` of the
/// classic and v2 Elastic Load Balancers (namespace from the `Version`).
pub(crate) fn error_body(
    service: &str,
    version: Option<&str>,
    code: &str,
    message: &str,
) -> String {
    let request_id = "c0ffee00-0000-4000-8000-00000000fa17";
    if service == "dynamodb" {
        // The JSON protocol: `__type` names the error, as DynamoDB sends it.
        return serde_json::json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
            "message": message,
        })
        .to_string();
    }
    let (code, message) = (escape(code), escape(message));
    if service == "ec2" {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
             <Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
    } else {
        let version = version.unwrap_or("2012-06-01");
        format!(
            "<ErrorResponse xmlns=\"http://{service}.amazonaws.com/doc/{version}/\"><Error>\
             <Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    }
}

/// The HTML page a bare status comes with (as Flask's, under moto, looks).
pub(crate) fn status_page(status: u16) -> String {
    format!(
        "<!doctype html>\n<html lang=en>\n<title>{status}</title>\n<h1>{status}</h1>\n\
         <p>Injected by the test's fault proxy.</p>\n"
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => {
                let _ = out.write_char(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_match_the_action_and_every_parameter_asked_for() {
        let f = Fault::error("RunInstances", "InsufficientInstanceCapacity")
            .matching("SubnetId", "subnet-a");
        let p = |s: &str| vec![("SubnetId".to_owned(), s.to_owned())];
        assert!(f.matches("RunInstances", &p("subnet-a")));
        assert!(!f.matches("RunInstances", &p("subnet-b")));
        assert!(!f.matches("DescribeInstances", &p("subnet-a")));
        assert_eq!(
            f.answer,
            Answer::Error {
                code: "InsufficientInstanceCapacity".into(),
                message: "InsufficientInstanceCapacity (injected by the test's fault proxy)".into(),
                status: 500
            }
        );
        assert!(matches!(
            Fault::error("X", "RequestLimitExceeded").answer,
            Answer::Error { status: 503, .. }
        ));
        assert!(matches!(
            Fault::error("X", "LoadBalancerNotFound").answer,
            Answer::Error { status: 400, .. }
        ));
    }

    #[test]
    fn error_bodies_have_each_apis_shape() {
        let ec2 = error_body("ec2", Some("2016-11-15"), "RequestLimitExceeded", "a<b");
        assert!(ec2.contains("<Response><Errors><Error><Code>RequestLimitExceeded</Code>"));
        assert!(ec2.contains("<Message>a&lt;b</Message>"));
        let elb = error_body(
            "elasticloadbalancing",
            Some("2012-06-01"),
            "LoadBalancerNotFound",
            "no",
        );
        assert!(elb.starts_with(
            "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/\">"
        ));
        assert!(elb.contains("<Code>LoadBalancerNotFound</Code>"));
    }
}
