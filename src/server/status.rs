//! Typed errors to gRPC statuses: the one place that decides which code,
//! reason and details a caller sees.
//!
//! Every status a client gets carries google.rpc error details (the
//! `grpc-status-details-bin` trailer, or a stream error's `details`), as
//! Google's API design guide (AIP-193) asks:
//! - an ErrorInfo: domain [`DOMAIN`], a `reason` that never changes once
//!   released (clients branch on it, not on the message), and the facts of
//!   the case in `metadata` (the current on-hand of a stale compare-and-set,
//!   the state of a reservation that is no longer open, ...);
//! - a BadRequest naming the offending field, on INVALID_ARGUMENT;
//! - a RetryInfo when a retry can succeed (UNAVAILABLE, and the
//!   RESOURCE_EXHAUSTED that pass), mirrored in the `grpc-retry-pushback-ms`
//!   trailer that gRPC's own retry policy honours; a limit that no retry
//!   can pass sends a pushback of -1, which tells gRPC not to retry.
//!
//! Messages come from the errors' Display, written to tell a person what
//! to do next. The README's error table lists every reason.

use std::collections::HashMap;
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use super::node::SubmitError;
use crate::inventory::{
    CapacityError, ConsumeError, ExtendError, InvalidInput, ReleaseError, ReserveError,
    StockChangeError,
};
use crate::replica::{ProposeError, ReadError};

/// The ErrorInfo domain of every reason below.
pub const DOMAIN: &str = "stockraft";

/// Retry advice for a queue that was full: it drains in milliseconds.
const RETRY_OVERLOADED: Duration = Duration::from_millis(100);
/// Retry advice while there is no leader. The server has already waited
/// `--leader-wait` for one, so an election is slow: about one timeout more.
const RETRY_NO_LEADER: Duration = Duration::from_secs(1);
/// Retry advice when leadership moved or a member is going away: another
/// member (or the new leader) can answer at once.
const RETRY_SOON: Duration = Duration::from_millis(50);
/// Retry advice when the server holds as many open reservations as it may:
/// holds are committed, released or expire all the time.
const RETRY_TOO_MANY_OPEN: Duration = Duration::from_secs(1);

/// Whether, and when, a retry of the same call can succeed.
enum Retry {
    /// Not said (the code says it all: a retry of a refused payload gets
    /// the same answer).
    Unsaid,
    After(Duration),
    /// A limit no retry passes until an operator acts.
    Never,
}

/// A status under construction: its code, reason, facts and advice.
pub(crate) struct Problem {
    code: Code,
    reason: &'static str,
    message: String,
    facts: HashMap<String, String>,
    field: Option<String>,
    retry: Retry,
}

impl Problem {
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            code,
            reason,
            message: message.into(),
            facts: HashMap::new(),
            field: None,
            retry: Retry::Unsaid,
        }
    }

    /// A fact of the case, in ErrorInfo's metadata.
    pub fn fact(mut self, key: &str, value: impl ToString) -> Problem {
        self.facts.insert(key.to_string(), value.to_string());
        self
    }

    /// The request field at fault (BadRequest), as a path: `lines[2].qty`.
    pub fn field(mut self, path: impl Into<String>) -> Problem {
        self.field = Some(path.into());
        self
    }

    fn retry_after(mut self, delay: Duration) -> Problem {
        self.retry = Retry::After(delay);
        self
    }

    fn never_retry(mut self) -> Problem {
        self.retry = Retry::Never;
        self
    }

    pub fn into_status(self) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(self.reason, DOMAIN, self.facts);
        if let Some(field) = self.field {
            let mut violation = FieldViolation::new(field, self.message.clone());
            violation.reason = self.reason.to_string();
            details.set_bad_request(vec![violation]);
        }
        let mut metadata = MetadataMap::new();
        match self.retry {
            Retry::Unsaid => {}
            Retry::After(delay) => {
                details.set_retry_info(Some(delay));
                let millis = delay.as_millis().to_string();
                if let Ok(value) = millis.parse() {
                    metadata.insert("grpc-retry-pushback-ms", value);
                }
            }
            Retry::Never => {
                metadata.insert(
                    "grpc-retry-pushback-ms",
                    tonic::metadata::MetadataValue::from_static("-1"),
                );
            }
        }
        Status::with_error_details_and_metadata(self.code, self.message, details, metadata)
    }
}

/// INVALID_ARGUMENT for input the server refuses whatever its state.
pub(crate) fn invalid(error: InvalidInput) -> Status {
    invalid_problem(error, None).into_status()
}

/// INVALID_ARGUMENT for element `index` of the list field `list` (a SKU of
/// a read): BadRequest names it as `skus[3]`.
pub(crate) fn invalid_element(list: &str, index: usize, error: InvalidInput) -> Status {
    let path = format!("{list}[{index}]");
    let mut problem = invalid_problem(error, None);
    problem.message = format!("{path}: {}", problem.message);
    problem.field(path).into_status()
}

/// The reason and field of an invalid input; `prefix` is the path of the
/// message it was found in (a line of a reservation).
fn invalid_problem(error: InvalidInput, prefix: Option<String>) -> Problem {
    let path = |field: &str| match &prefix {
        Some(p) => format!("{p}.{field}"),
        None => field.to_string(),
    };
    let message = match &prefix {
        Some(p) => format!("{p}: {error}"),
        None => error.to_string(),
    };
    let problem = |reason, field: &str| {
        Problem::new(Code::InvalidArgument, reason, message.clone()).field(path(field))
    };
    match error {
        InvalidInput::Empty { field } => problem("FIELD_EMPTY", field),
        InvalidInput::TooLong { field, len, max } => problem("FIELD_TOO_LONG", field)
            .fact("length_bytes", len)
            .fact("max_bytes", max),
        InvalidInput::OutOfRange {
            field,
            value,
            min,
            max,
        } => problem("VALUE_OUT_OF_RANGE", field)
            .fact("value", value)
            .fact("min", min)
            .fact("max", max),
        InvalidInput::TtlTooLong { ttl_ms, max } => problem("TTL_TOO_LONG", "ttl_ms")
            .fact("ttl_ms", ttl_ms)
            .fact("max_ms", max),
        InvalidInput::NoLines => problem("NO_LINES", "lines"),
        InvalidInput::TooManyLines { count, max } => problem("TOO_MANY_LINES", "lines")
            .fact("count", count)
            .fact("max", max),
        InvalidInput::LineSumTooLarge { sku, node, max } => problem("LINE_SUM_TOO_LARGE", "lines")
            .fact("sku", sku)
            .fact("node", node)
            .fact("max", max),
        InvalidInput::UnknownEnum { field, value } => {
            problem("UNKNOWN_ENUM_VALUE", field).fact("value", value)
        }
        InvalidInput::ZeroDelta => problem("ZERO_DELTA", "delta"),
        InvalidInput::DeltaSignMismatch {
            reason,
            sign: _,
            delta,
        } => problem("DELTA_SIGN_MISMATCH", "delta")
            .fact("reason", reason)
            .fact("delta", delta),
        InvalidInput::TooManyItems { field, count, max } => problem("TOO_MANY_ITEMS", field)
            .fact("count", count)
            .fact("max", max),
        InvalidInput::TooManyRows { rows, max } => problem("TOO_MANY_ROWS", "skus")
            .fact("rows", rows)
            .fact("max", max),
        InvalidInput::InLine { index, error } => {
            invalid_problem(*error, Some(path(&format!("lines[{index}]"))))
        }
    }
}

/// UNAVAILABLE or RESOURCE_EXHAUSTED for a command or read that got no
/// answer. Everything but overload is "try again, maybe elsewhere": the id
/// makes a retry safe even when the first attempt's outcome is unknown.
pub(crate) fn submit(error: SubmitError) -> Status {
    let message = error.to_string();
    let unavailable =
        |reason, delay| Problem::new(Code::Unavailable, reason, message.clone()).retry_after(delay);
    let problem = match error {
        SubmitError::Overloaded => Problem::new(Code::ResourceExhausted, "OVERLOADED", message)
            .retry_after(RETRY_OVERLOADED),
        SubmitError::Stopped => unavailable("SHUTTING_DOWN", RETRY_SOON),
        SubmitError::Propose(e) => propose_problem(e, unavailable),
        SubmitError::Read(ReadError::NoLeader) => unavailable("NO_LEADER", RETRY_NO_LEADER),
        SubmitError::Read(ReadError::NotLeader { leader }) => {
            unavailable("NOT_LEADER", RETRY_SOON).fact("leader_id", leader)
        }
        SubmitError::Read(ReadError::TimedOut) => unavailable("LEADERSHIP_UNCONFIRMED", RETRY_SOON),
        SubmitError::Read(ReadError::Removed) => unavailable("MEMBER_REMOVED", RETRY_SOON),
    };
    problem.into_status()
}

fn propose_problem(
    error: ProposeError,
    unavailable: impl Fn(&'static str, Duration) -> Problem,
) -> Problem {
    match error {
        ProposeError::NoLeader => unavailable("NO_LEADER", RETRY_NO_LEADER),
        ProposeError::NotLeader { leader } => {
            unavailable("NOT_LEADER", RETRY_SOON).fact("leader_id", leader)
        }
        ProposeError::Unknown | ProposeError::ShuttingDown => {
            unavailable("OUTCOME_UNKNOWN", RETRY_SOON)
        }
        ProposeError::Dropped(_) => unavailable("PROPOSAL_DROPPED", RETRY_SOON),
        ProposeError::ClockUnconfirmed => unavailable("CLOCK_UNCONFIRMED", RETRY_SOON),
        ProposeError::RemovesLeader => unavailable("REMOVES_LEADER", RETRY_SOON),
    }
}

/// No leader came within the call's budget.
pub(crate) fn no_leader() -> Status {
    Problem::new(
        Code::Unavailable,
        "NO_LEADER",
        "no leader is known (an election is under way or a majority of members is down); retry with the same id",
    )
    .retry_after(RETRY_NO_LEADER)
    .into_status()
}

/// The leader is known but cannot be reached from here.
pub(crate) fn leader_unreachable(leader: u64, why: impl std::fmt::Display) -> Status {
    Problem::new(
        Code::Unavailable,
        "LEADER_UNREACHABLE",
        format!("the leader is member {leader}, which cannot be reached from here: {why}; retry with the same id"),
    )
    .fact("leader_id", leader)
    .retry_after(RETRY_SOON)
    .into_status()
}

/// A call forwarded once reached a member that does not lead either: two
/// members' views of the leader differ for a moment (an election).
pub(crate) fn forwarded_twice(leader: u64) -> Status {
    Problem::new(
        Code::Unavailable,
        "NOT_LEADER",
        format!("this member is not the leader (member {leader} is) and the call was already forwarded once; retry with the same id"),
    )
    .fact("leader_id", leader)
    .retry_after(RETRY_SOON)
    .into_status()
}

/// A member removed from the cluster gets no more entries: it forwards no
/// call and serves no read it cannot keep current, so callers move on at
/// once instead of waiting for a leader it will never hear from.
pub(crate) fn removed() -> Status {
    submit(SubmitError::Read(ReadError::Removed))
}

pub(crate) fn capacity(error: CapacityError) -> Status {
    let message = error.to_string();
    let problem = match error {
        CapacityError::TooManyCounters { max } => {
            Problem::new(Code::ResourceExhausted, "COUNTER_LIMIT", message).fact("max", max)
        }
        CapacityError::TooManyNodes { sku, max } => {
            Problem::new(Code::ResourceExhausted, "NODES_PER_SKU_LIMIT", message)
                .fact("sku", sku)
                .fact("max", max)
        }
    };
    problem.never_retry().into_status()
}

pub(crate) fn reserve(error: ReserveError) -> Status {
    let message = error.to_string();
    match error {
        ReserveError::IdReused { id } => {
            Problem::new(Code::AlreadyExists, "RESERVATION_ID_REUSED", message)
                .fact("reservation_id", id)
                .into_status()
        }
        ReserveError::TooManyOpen { open } => Problem::new(
            Code::ResourceExhausted,
            "TOO_MANY_OPEN_RESERVATIONS",
            message,
        )
        .fact("open", open)
        .retry_after(RETRY_TOO_MANY_OPEN)
        .into_status(),
        ReserveError::Capacity(e) => capacity(e),
    }
}

/// FAILED_PRECONDITION: the reservation exists but is no longer open.
fn not_active(message: String, id: String, state: &'static str) -> Status {
    Problem::new(Code::FailedPrecondition, "RESERVATION_NOT_ACTIVE", message)
        .fact("reservation_id", id)
        .fact("state", state)
        .into_status()
}

pub(crate) fn consume(error: ConsumeError) -> Status {
    let message = error.to_string();
    match error {
        ConsumeError::Released { id } => not_active(message, id, "RELEASED"),
    }
}

pub(crate) fn release(error: ReleaseError) -> Status {
    let message = error.to_string();
    match error {
        ReleaseError::Consumed { id } => not_active(message, id, "COMMITTED"),
    }
}

pub(crate) fn extend(error: ExtendError) -> Status {
    let message = error.to_string();
    match error {
        ExtendError::Consumed { id } => not_active(message, id, "COMMITTED"),
        ExtendError::Released { id } => not_active(message, id, "RELEASED"),
    }
}

pub(crate) fn stock_change(error: StockChangeError) -> Status {
    let message = error.to_string();
    match error {
        StockChangeError::IdReused { id } => {
            Problem::new(Code::AlreadyExists, "TXN_ID_REUSED", message)
                .fact("txn_id", id)
                .into_status()
        }
        StockChangeError::OutOfRange {
            sku,
            node,
            value,
            max,
        } => Problem::new(Code::OutOfRange, "ON_HAND_OUT_OF_RANGE", message)
            .fact("sku", sku)
            .fact("node", node)
            .fact("value", value)
            .fact("max", max)
            .into_status(),
        StockChangeError::Stale {
            sku,
            node,
            expected,
            actual,
        } => Problem::new(Code::FailedPrecondition, "STALE_ON_HAND", message)
            .fact("sku", sku)
            .fact("node", node)
            .fact("expected_on_hand", expected)
            .fact("on_hand", actual)
            .into_status(),
        StockChangeError::Capacity(e) => capacity(e),
    }
}

/// A stream request with no operation set.
pub(crate) fn operation_missing() -> Status {
    Problem::new(
        Code::InvalidArgument,
        "OPERATION_MISSING",
        "a stream request needs an operation",
    )
    .field("op")
    .into_status()
}

/// The google.rpc details a status carries (a stream error's `details`).
pub(crate) fn details_of(status: &Status) -> Vec<prost_types::Any> {
    use prost::Message;
    match tonic_types::pb::Status::decode(status.details()) {
        Ok(decoded) => decoded.details,
        Err(_) => Vec::new(),
    }
}

/// An answer that does not match its command: a bug, never input.
pub(crate) fn internal(message: &str) -> Status {
    Problem::new(
        Code::Internal,
        "INTERNAL",
        format!("internal error: {message}"),
    )
    .into_status()
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

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
