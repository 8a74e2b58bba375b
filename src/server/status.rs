//! Typed errors to gRPC status codes: the one place that decides which code
//! a caller sees. Messages come from the errors' Display, written to tell a
//! person what to do next.

use tonic::{Code, Status};

use super::node::SubmitError;
use crate::inventory::{
    CapacityError, ConsumeError, ExtendError, InvalidInput, ReleaseError, ReserveError,
    StockChangeError,
};

pub(crate) fn invalid(error: InvalidInput) -> Status {
    Status::invalid_argument(error.to_string())
}

pub(crate) fn submit(error: SubmitError) -> Status {
    // Everything but overload is "try again, maybe elsewhere": the id makes
    // a retry safe even when the first attempt's outcome is unknown.
    let code = match &error {
        SubmitError::Overloaded => Code::ResourceExhausted,
        SubmitError::Stopped | SubmitError::Propose(_) | SubmitError::Read(_) => Code::Unavailable,
    };
    Status::new(code, error.to_string())
}

/// A node removed from the cluster gets no more entries: it forwards no
/// call and serves no read it cannot keep current, so callers move on at
/// once instead of waiting for a leader it will never hear from.
pub(crate) fn removed() -> Status {
    Status::unavailable(
        "this node was removed from the cluster and serves nothing more; call another member",
    )
}

pub(crate) fn capacity(error: CapacityError) -> Status {
    Status::resource_exhausted(error.to_string())
}

pub(crate) fn reserve(error: ReserveError) -> Status {
    match error {
        ReserveError::IdReused { .. } => Status::already_exists(error.to_string()),
        ReserveError::TooManyOpen { .. } => Status::resource_exhausted(error.to_string()),
        ReserveError::Capacity(e) => capacity(e),
    }
}

pub(crate) fn consume(error: ConsumeError) -> Status {
    Status::failed_precondition(error.to_string())
}

pub(crate) fn release(error: ReleaseError) -> Status {
    Status::failed_precondition(error.to_string())
}

pub(crate) fn extend(error: ExtendError) -> Status {
    Status::failed_precondition(error.to_string())
}

pub(crate) fn stock_change(error: StockChangeError) -> Status {
    match error {
        StockChangeError::IdReused { .. } => Status::already_exists(error.to_string()),
        StockChangeError::OutOfRange { .. } => Status::out_of_range(error.to_string()),
        StockChangeError::Stale { .. } => Status::failed_precondition(error.to_string()),
        StockChangeError::Capacity(e) => capacity(e),
    }
}

/// The label used for a status code in metrics.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
