//! The error codes AWS answers with, and what kind of failure each is: the
//! one place codes are mapped ([`kind_of_code`]) and capacity refusals are
//! named ([`is_capacity_code`]).

use pyscaler_core::ErrorKind;

/// Whether an EC2 RunInstances error code says "not here, not this type"
/// rather than "not at all": the launch may go to another Availability Zone
/// or instance type. The one place these codes are listed.
pub fn is_capacity_code(code: &str) -> bool {
    // `InsufficientInstanceCapacity`: no capacity for the type in the zone now.
    // `Unsupported`: the type (or the request) is not offered in the zone.
    // `InstanceLimitExceeded`: the account's limit of running instances of
    // the type's family; another type may be of another family.
    // `SpotMaxPriceTooLow`: the Spot price in the zone is above the maximum;
    // `MaxSpotInstanceCountExceeded`: the account's Spot limit (a Spot
    // launch with `spot_fallback = "on-demand"` goes On-Demand).
    matches!(
        code,
        "InsufficientInstanceCapacity"
            | "Unsupported"
            | "InstanceLimitExceeded"
            | "SpotMaxPriceTooLow"
            | "MaxSpotInstanceCountExceeded"
    )
}

/// The kind of an EC2, ELB or CloudWatch error code. The one place codes are mapped.
///
/// EC2 errors reach the Rust SDK as unhandled variants, so the code is read from
/// the error metadata; the classic ELB's wire codes (`LoadBalancerNotFound`)
/// differ from its Rust variant names (`AccessPointNotFoundException`), and it
/// is the wire code that is matched here. CloudWatch's CBOR answers carry the
/// query-compatible code (`InvalidParameterValue`) in their
/// `x-amzn-query-error` header, and the shape name
/// (`InvalidParameterValueException`) in the body: both are matched.
pub fn kind_of_code(code: &str) -> ErrorKind {
    match code {
        // EC2 `RequestLimitExceeded`: the account's API rate limit. ELB, CloudWatch
        // and the SDK say `Throttling` / `ThrottlingException`; CloudWatch's
        // `LimitExceeded` (`LimitExceededFault`) is its request quota.
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "LimitExceeded" => {
            ErrorKind::Throttled
        }
        // EC2 `InsufficientInstanceCapacity`: no capacity for this type in this zone now.
        // `Unavailable` / `ServiceUnavailable`: the service is overloaded.
        // `InternalError` / `InternalFailure`: the service failed.
        "InsufficientInstanceCapacity"
        | "Unavailable"
        | "ServiceUnavailable"
        | "InternalError"
        | "InternalFailure" => ErrorKind::Transient,
        // CloudWatch `InternalServiceError` (`InternalServiceFault`): the service failed.
        // `InvalidNextToken`: a page token it no longer takes; the next sample asks afresh.
        "InternalServiceError" | "InternalServiceFault" | "InvalidNextToken" => {
            ErrorKind::Transient
        }
        // EC2 `Unsupported`: not offered in this zone (a launch falls back on
        // another zone or type first, [`is_capacity_code`]); as is, never.
        "Unsupported" => ErrorKind::InvalidInput,
        // EC2 `InstanceLimitExceeded`: the account's instance quota is used up;
        // it does not pass by itself, so it is not retried (a launch falls back
        // on another type first).
        "InstanceLimitExceeded" => ErrorKind::Conflict,
        // EC2 `SpotMaxPriceTooLow`: the maximum price is below the Spot price;
        // `MaxSpotInstanceCountExceeded`: the account's Spot quota. Not retried
        // as they are (a launch falls back on another zone, or On-Demand, first).
        "SpotMaxPriceTooLow" => ErrorKind::InvalidInput,
        "MaxSpotInstanceCountExceeded" => ErrorKind::Conflict,
        // EC2 `InvalidAMIID.NotFound` / `.Malformed` / `.Unavailable`: a bad image id.
        c if c.starts_with("InvalidAMIID.") => ErrorKind::InvalidInput,
        // EC2 `InvalidInstanceType` (and moto's `InvalidInstanceType.NotFound`).
        c if c.starts_with("InvalidInstanceType") => ErrorKind::InvalidInput,
        // EC2 `InvalidParameterValue` / `InvalidParameterCombination` / `MissingParameter`:
        // the request itself is wrong.
        "InvalidParameterValue" | "InvalidParameterCombination" | "MissingParameter" => {
            ErrorKind::InvalidInput
        }
        // CloudWatch: the same three by their shape names, and `ValidationError`
        // (a metric-math expression it cannot parse): the query itself is wrong.
        "InvalidParameterValueException"
        | "InvalidParameterCombinationException"
        | "MissingRequiredParameterException"
        | "ValidationError"
        | "ValidationException" => ErrorKind::InvalidInput,
        // EC2 `InvalidKeyPair.NotFound`, `InvalidGroup.NotFound`, `InvalidSubnetID.NotFound`:
        // the profile names something that does not exist.
        "InvalidKeyPair.NotFound" | "InvalidGroup.NotFound" | "InvalidSubnetID.NotFound" => {
            ErrorKind::InvalidInput
        }
        // EC2 `InvalidLaunchTemplateName.NotFoundException`, `.MalformedException`,
        // `InvalidLaunchTemplateId.NotFound`, `.Malformed`, `.VersionNotFound`:
        // the profile's launch template (or its version) does not exist.
        c if c.starts_with("InvalidLaunchTemplate") => ErrorKind::InvalidInput,
        // ELB `LoadBalancerNotFound` (Rust variant `AccessPointNotFoundException`): the
        // profile's load balancer does not exist. Bad input, never retried.
        "LoadBalancerNotFound" => ErrorKind::InvalidInput,
        // ELB `InvalidInstance` (Rust variant `InvalidEndPointException`): the instance
        // cannot be registered (not running, other VPC).
        "InvalidInstance" => ErrorKind::InvalidInput,
        // elbv2 `TargetGroupNotFound`, `LoadBalancerNotFound` (above): the profile's
        // target group does not exist; `InvalidTarget`: the instance cannot be a
        // target (not running, other VPC); `TooManyTargets`: the group is full.
        "TargetGroupNotFound" | "InvalidTarget" | "TooManyTargets" => ErrorKind::InvalidInput,
        // DynamoDB `ProvisionedThroughputExceededException`: the table's
        // capacity; `TransactionConflictException`: another transaction on
        // the item; `InternalServerError`: the service failed.
        "ProvisionedThroughputExceededException" => ErrorKind::Throttled,
        "TransactionConflictException" | "InternalServerError" => ErrorKind::Transient,
        // DynamoDB `ConditionalCheckFailedException`, `TransactionCanceledException`:
        // a condition refused the write (the lease is another's).
        "ConditionalCheckFailedException" | "TransactionCanceledException" => ErrorKind::Conflict,
        // DynamoDB `ResourceNotFoundException`: no such table.
        "ResourceNotFoundException" => ErrorKind::InvalidInput,
        // EC2 `InvalidInstanceID.NotFound`: not visible (yet: EC2 is eventually
        // consistent right after a launch) or long gone.
        "InvalidInstanceID.NotFound" => ErrorKind::NotFound,
        // EC2 `InvalidInstanceID.Malformed`.
        "InvalidInstanceID.Malformed" => ErrorKind::InvalidInput,
        // EC2 `UnauthorizedOperation`, `AuthFailure`; `InvalidClientTokenId`,
        // `SignatureDoesNotMatch`, `AccessDenied`: credentials refused or too weak.
        "UnauthorizedOperation"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "AccessDenied" => ErrorKind::PermissionDenied,
        // EC2 `IdempotentParameterMismatch`: the ClientToken was used before with other
        // parameters (a retried launch asking for something else).
        "IdempotentParameterMismatch" => ErrorKind::Conflict,
        _ => ErrorKind::Unexpected,
    }
}
