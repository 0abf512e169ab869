//! What the unit tests share: the calls the mocks saw, instances and API
//! errors made to order, and the mock set-ups several actions are tested
//! against (an EC2 that terminates, a load balancer that takes instances out).

use std::sync::{Arc, Mutex};

use mockall::TimesRange;
use pyscaler_core::{Pipeline, Step};

use crate::{AwsError, Instance, InstanceState, MockEc2, MockLoadBalancer};

/// Calls in the order they reached the providers.
pub(crate) type Calls = Arc<Mutex<Vec<String>>>;

/// Writes down one call.
pub(crate) fn note(calls: &Calls, what: impl Into<String>) {
    calls.lock().expect("calls lock").push(what.into());
}

/// The calls so far.
pub(crate) fn calls_of(calls: &Calls) -> Vec<String> {
    calls.lock().expect("calls lock").clone()
}

/// An EC2 API error with `code`, classified as the provider classifies it.
pub(crate) fn api_err(code: &str) -> AwsError {
    AwsError::Api {
        service: "EC2",
        operation: "Test",
        code: Some(code.to_owned()),
        message: format!("{code} from the mock"),
        subject: None,
        kind: crate::kind_of_code(code),
        source: None,
    }
}

/// The ELB's refusal to deregister, with `code`, classified as the provider
/// classifies it.
pub(crate) fn deregister_refusal(code: &str, message: &str) -> AwsError {
    AwsError::Api {
        service: "ELB",
        operation: "DeregisterInstancesFromLoadBalancer",
        code: Some(code.to_owned()),
        message: message.to_owned(),
        subject: None,
        kind: crate::kind_of_code(code),
        source: None,
    }
}

/// Instance `i-<n>`, the `n`th of its launch, at 10.0.0.`n + 10`.
pub(crate) fn instance(n: u32, state: InstanceState) -> Instance {
    Instance {
        id: format!("i-{n}"),
        state,
        launch_index: n,
        private_ip: Some(format!("10.0.0.{}", n + 10)),
        tags: [("Name".to_owned(), "web-03..04".to_owned())].into(),
        ..Instance::default()
    }
}

/// Each of `ids` in `state`, and nothing else known about them: a describe's answer.
pub(crate) fn instances_in(ids: &[String], state: InstanceState) -> Vec<Instance> {
    ids.iter()
        .map(|id| Instance {
            id: id.clone(),
            state,
            ..Instance::default()
        })
        .collect()
}

/// Raised by a mock's terminate, so its describe can say the instances are gone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Terminated(Arc<Mutex<bool>>);

impl Terminated {
    /// Whether terminate has been called.
    pub(crate) fn is_raised(&self) -> bool {
        *self.0.lock().expect("terminated lock")
    }

    /// `before` until terminate has been called, then terminated.
    pub(crate) fn or(&self, before: InstanceState) -> InstanceState {
        if self.is_raised() {
            InstanceState::Terminated
        } else {
            before
        }
    }

    fn raise(&self) {
        *self.0.lock().expect("terminated lock") = true;
    }
}

/// Expects terminate `times`: each call is noted as `terminate <ids>`, raises
/// `terminated`, and succeeds.
pub(crate) fn expect_terminate_raising(
    ec2: &mut MockEc2,
    calls: &Calls,
    terminated: &Terminated,
    times: impl Into<TimesRange>,
) {
    let (c, t) = (calls.clone(), terminated.clone());
    ec2.expect_terminate().times(times).returning(move |ids| {
        note(&c, format!("terminate {}", ids.join(",")));
        t.raise();
        Ok(())
    });
}

/// Expects terminate `times`: each call is noted as `terminate <ids>` and succeeds.
pub(crate) fn expect_terminate_noted(
    ec2: &mut MockEc2,
    calls: &Calls,
    times: impl Into<TimesRange>,
) {
    expect_terminate_raising(ec2, calls, &Terminated::default(), times);
}

/// Expects describe, any number of times, and not noted: every instance asked
/// for is terminated.
pub(crate) fn expect_describe_terminated(ec2: &mut MockEc2) {
    ec2.expect_describe()
        .returning(|ids| Ok(instances_in(ids, InstanceState::Terminated)));
}

/// An EC2 whose terminate (expected `times`) is noted and succeeds, and whose
/// describe then says the instances are terminated.
pub(crate) fn ec2_terminating(calls: &Calls, times: impl Into<TimesRange>) -> MockEc2 {
    let mut ec2 = MockEc2::new();
    expect_terminate_noted(&mut ec2, calls, times);
    expect_describe_terminated(&mut ec2);
    ec2
}

/// Expects register, any number of times: each call is noted as
/// `register <lb> <ids>` and succeeds.
pub(crate) fn expect_register_noted(elb: &mut MockLoadBalancer, calls: &Calls) {
    let c = calls.clone();
    elb.expect_register().returning(move |lb, ids| {
        note(&c, format!("register {lb} {}", ids.join(",")));
        Ok(())
    });
}

/// Expects deregister, any number of times: each call is noted as
/// `deregister <lb> <ids>` and succeeds.
pub(crate) fn expect_deregister_noted(elb: &mut MockLoadBalancer, calls: &Calls) {
    let c = calls.clone();
    elb.expect_deregister().returning(move |lb, ids| {
        note(&c, format!("deregister {lb} {}", ids.join(",")));
        Ok(())
    });
    // A classic ELB: it cannot say how long it drains.
    elb.expect_draining_timeout().returning(|_| Ok(None));
}

/// A load balancer that only takes instances out, noting each deregistration.
pub(crate) fn elb_deregistering(calls: &Calls) -> MockLoadBalancer {
    let mut elb = MockLoadBalancer::new();
    expect_deregister_noted(&mut elb, calls);
    elb
}

/// Pipeline `p`, of the one `step`.
pub(crate) fn pipeline_of(step: Step) -> Pipeline {
    Pipeline::builder("p").step(step).build().expect("pipeline")
}
