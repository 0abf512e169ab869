//! What a provider crate reports of each call to its provider's API: the
//! core records it with the other metrics, so every provider's calls are
//! counted the same way.

use metrics::counter;

use super::names;
use super::record::error_kind;
use crate::ErrorKind;

/// One call to a provider's API, as a provider crate reports it with
/// [`record_provider_call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderCall {
    /// The provider (`EC2`, `ELBv2`, `DynamoDB`, `SSH`, `SMTP`, `Prometheus`): a fixed name, never a host.
    pub provider: &'static str,
    /// The operation (`RunInstances`): a fixed name, never an id.
    pub operation: &'static str,
    /// How many attempts the provider's client made (1: no retry).
    pub attempts: u32,
    /// How the call failed, as classified; `None` when it succeeded.
    pub error: Option<ErrorKind>,
}

/// Records one call to a provider's API: `pyscaler_provider_calls_total`
/// (by its error kind, `none` when it succeeded) and, for the attempts
/// beyond the first, `pyscaler_provider_retries_total`.
///
/// ```
/// use pyscaler_core::{record_provider_call, ErrorKind, ProviderCall};
///
/// record_provider_call(ProviderCall {
///     provider: "ec2",
///     operation: "RunInstances",
///     attempts: 3,
///     error: Some(ErrorKind::Throttled),
/// });
/// ```
pub fn record_provider_call(call: ProviderCall) {
    counter!(
        names::PROVIDER_CALLS,
        "provider" => call.provider,
        "operation" => call.operation,
        "error_kind" => call.error.map_or("none", error_kind),
    )
    .increment(1);
    if call.attempts > 1 {
        counter!(
            names::PROVIDER_RETRIES,
            "provider" => call.provider,
            "operation" => call.operation,
        )
        .increment(u64::from(call.attempts - 1));
    }
}
