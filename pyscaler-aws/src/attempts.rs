//! Counting the attempts the AWS SDK makes for each call, so that a step's
//! report shows the SDK's own retries ("1 attempt" is never shown for a call
//! that took three).
//!
//! [`CountAttempts`] is an SDK interceptor on every client this crate builds:
//! it sees each attempt (`read_before_attempt`, once per retry) and the end of
//! each call (`read_after_execution`). It adds them to the [`SdkAttempts`]
//! of the task it runs in, set with [`SdkAttempts::scope`] by an action around
//! its run (a task-local, so the provider traits stay free of SDK notions and
//! concurrent steps never mix their counts). Outside a scope it counts nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::Subjects;
use crate::AwsError;

tokio::task_local! {
    static TALLY: SdkAttempts;
}

/// Calls and attempts of one API operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Calls made (each `send()`).
    pub(crate) calls: u32,
    /// Attempts the SDK made for them (a call retried twice counts 3).
    pub(crate) attempts: u32,
}

/// The SDK's calls and attempts, by operation (`RunInstances`), in one scope.
#[derive(Debug, Clone, Default)]
pub(crate) struct SdkAttempts(Arc<Mutex<BTreeMap<String, Tally>>>);

/// Sends one SDK request in a tally of its own ([`SdkAttempts::counted`])
/// and classifies its refusal, saying how many attempts the SDK made:
/// `service`'s `operation`, about `subjects`.
pub(crate) async fn call<O, E>(
    service: &'static str,
    operation: &'static str,
    subjects: &Subjects,
    send: impl Future<Output = Result<O, SdkError<E, HttpResponse>>>,
) -> Result<O, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (sent, tally) = SdkAttempts::counted(send).await;
    let sent = sent.map_err(|e| {
        AwsError::from_sdk(service, operation, e, subjects).after_attempts(tally.attempts)
    });
    // The core's metrics: calls by error kind (as classified), and the SDK's retries.
    pyscaler_core::record_provider_call(pyscaler_core::ProviderCall {
        provider: service,
        operation,
        attempts: tally.attempts.max(1),
        error: sent.as_ref().err().map(pyscaler_core::Classify::kind),
    });
    sent
}

/// Records, for the core's metrics, a call made outside [`call`] (one
/// whose error is built by hand); returns `result` unchanged.
pub(crate) fn counted<T>(
    service: &'static str,
    operation: &'static str,
    result: Result<T, AwsError>,
) -> Result<T, AwsError> {
    pyscaler_core::record_provider_call(pyscaler_core::ProviderCall {
        provider: service,
        operation,
        attempts: 1,
        error: result.as_ref().err().map(pyscaler_core::Classify::kind),
    });
    result
}

impl SdkAttempts {
    /// Runs `f` with this tally counting the SDK calls made in it.
    pub(crate) async fn scope<F: Future>(&self, f: F) -> F::Output {
        TALLY.scope(self.clone(), f).await
    }

    /// Runs `f` in a tally of its own, also added to the enclosing one: what
    /// one provider call cost, attempts included.
    pub(crate) async fn counted<F: Future>(f: F) -> (F::Output, Tally) {
        let own = Self::default();
        let out = own.scope(f).await;
        let _ = TALLY.try_with(|outer| outer.add_all(&own));
        let total = own.total();
        (out, total)
    }

    /// The tally of `operation`.
    pub(crate) fn of(&self, operation: &str) -> Tally {
        self.lock().get(operation).copied().unwrap_or_default()
    }

    fn total(&self) -> Tally {
        self.lock().values().fold(Tally::default(), |a, t| Tally {
            calls: a.calls + t.calls,
            attempts: a.attempts + t.attempts,
        })
    }

    /// The operations the SDK retried, in words for a report:
    /// `the AWS SDK retried: RunInstances 3 attempts for 1 call`.
    pub(crate) fn retries(&self) -> Option<String> {
        let retried: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, t)| t.attempts > t.calls)
            .map(|(op, t)| {
                format!(
                    "{op} {} attempts for {} call{}",
                    t.attempts,
                    t.calls,
                    if t.calls == 1 { "" } else { "s" }
                )
            })
            .collect();
        (!retried.is_empty()).then(|| format!("the AWS SDK retried: {}", retried.join(", ")))
    }

    fn add_all(&self, other: &Self) {
        let theirs = other.lock().clone();
        let mut mine = self.lock();
        for (op, t) in theirs {
            let e = mine.entry(op).or_default();
            e.calls += t.calls;
            e.attempts += t.attempts;
        }
    }

    fn note(&self, operation: &str, call: bool) {
        let mut m = self.lock();
        let e = m.entry(operation.to_owned()).or_default();
        if call {
            e.calls += 1;
        } else {
            e.attempts += 1;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Tally>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The SDK interceptor that feeds the task's [`SdkAttempts`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CountAttempts;

fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        .map_or_else(|| "unknown".to_owned(), |m| m.name().to_owned())
}

impl Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "pyscaler-count-attempts"
    }

    // The call is counted at its end: the operation's name is not in the
    // configuration yet when an execution starts.
    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = operation(cfg);
        let _ = TALLY.try_with(|t| t.note(&op, true));
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = operation(cfg);
        let _ = TALLY.try_with(|t| t.note(&op, false));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_are_told_per_operation_and_nested_counts_reach_the_outer_scope() {
        let outer = SdkAttempts::default();
        let ((), inner) = outer
            .scope(SdkAttempts::counted(async {
                let _ = TALLY.try_with(|t| {
                    t.note("RunInstances", true);
                    t.note("RunInstances", false);
                    t.note("RunInstances", false);
                    t.note("RunInstances", false);
                });
            }))
            .await;
        assert_eq!(
            inner,
            Tally {
                calls: 1,
                attempts: 3
            }
        );
        assert_eq!(outer.of("RunInstances"), inner);
        assert_eq!(
            outer.retries().as_deref(),
            Some("the AWS SDK retried: RunInstances 3 attempts for 1 call")
        );
        // Outside any scope nothing is counted, and nothing fails.
        assert!(TALLY.try_with(|_| ()).is_err());
        assert!(SdkAttempts::default().retries().is_none());
    }
}
