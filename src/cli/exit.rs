//! Exit statuses for scripts, and how a failed client command is told.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done as asked |
//! | 1 | anything else (a server error, a bad TLS setting, ...) |
//! | 2 | usage: the command line or the request is malformed (INVALID_ARGUMENT) |
//! | 3 | refused by the rules: INSUFFICIENT_STOCK, an expired hold, a stale compare-and-set, an id reused with another payload, a counter out of range (FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE) |
//! | 4 | not found: no such reservation or member |
//! | 5 | unavailable: no server reachable, no leader, overloaded, out of time; safe to retry with the same id |
//!
//! 2 is also what clap exits with when it cannot parse the command line.

use tonic::Code;

use stockraft::proto::v1 as pb;

/// The process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Other = 1,
    Usage = 2,
    Refused = 3,
    NotFound = 4,
    Unavailable = 5,
}

impl Exit {
    /// The exit status of a call refused with `code`.
    pub fn of_code(code: Code) -> Exit {
        match code {
            Code::Ok => Exit::Ok,
            Code::InvalidArgument => Exit::Usage,
            Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => Exit::Refused,
            Code::NotFound => Exit::NotFound,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Cancelled => Exit::Unavailable,
            _ => Exit::Other,
        }
    }

    /// The exit status of an answer whose outcome is `outcome`, from a
    /// command that asked for `wanted`: NOT_FOUND is not found; an outcome
    /// other than the one asked for (INSUFFICIENT_STOCK for a reserve,
    /// EXPIRED for a commit) is a refusal; an outcome in `also_fine` is
    /// done (a release finding the hold already expired: its stock is
    /// back either way).
    pub fn of_outcome(outcome: i32, wanted: pb::Outcome, also_fine: &[pb::Outcome]) -> Exit {
        let Ok(outcome) = pb::Outcome::try_from(outcome) else {
            return Exit::Other;
        };
        if outcome == wanted || also_fine.contains(&outcome) {
            return Exit::Ok;
        }
        if outcome == pb::Outcome::NotFound {
            return Exit::NotFound;
        }
        Exit::Refused
    }
}

/// A command line the server was never asked about: a bad SKU@NODE:QTY,
/// a bad address.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A call the server refused, with what the CLI adds to its message.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{hint}", stockraft::server::status::code_label(.status.code()), .status.message())]
pub struct CallFailed {
    pub status: tonic::Status,
    /// A likely cause the message does not say, or retry advice.
    pub hint: String,
}

/// The exit status of a failed command, from its error.
pub fn of_error(error: &anyhow::Error) -> Exit {
    if error.downcast_ref::<UsageError>().is_some()
        || error
            .downcast_ref::<super::counter_arg::CounterArgError>()
            .is_some()
    {
        return Exit::Usage;
    }
    if let Some(failed) = error.downcast_ref::<CallFailed>() {
        return Exit::of_code(failed.status.code());
    }
    if let Some(client) = error.downcast_ref::<stockraft::client::ClientError>() {
        return match client {
            stockraft::client::ClientError::Connect { .. } => Exit::Unavailable,
            stockraft::client::ClientError::BadAddress(_) => Exit::Usage,
            _ => Exit::Other,
        };
    }
    Exit::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fall_in_the_documented_classes() {
        assert_eq!(Exit::of_code(Code::InvalidArgument), Exit::Usage);
        assert_eq!(Exit::of_code(Code::FailedPrecondition), Exit::Refused);
        assert_eq!(Exit::of_code(Code::AlreadyExists), Exit::Refused);
        assert_eq!(Exit::of_code(Code::NotFound), Exit::NotFound);
        assert_eq!(Exit::of_code(Code::Unavailable), Exit::Unavailable);
        assert_eq!(Exit::of_code(Code::ResourceExhausted), Exit::Unavailable);
        assert_eq!(Exit::of_code(Code::PermissionDenied), Exit::Other);
        assert_eq!(Exit::of_code(Code::Internal), Exit::Other);
    }

    #[test]
    fn outcomes_other_than_the_one_asked_are_refusals() {
        let reserved = pb::Outcome::Reserved;
        assert_eq!(Exit::of_outcome(reserved as i32, reserved, &[]), Exit::Ok);
        let short = pb::Outcome::InsufficientStock as i32;
        assert_eq!(Exit::of_outcome(short, reserved, &[]), Exit::Refused);
        let gone = pb::Outcome::NotFound as i32;
        assert_eq!(Exit::of_outcome(gone, reserved, &[]), Exit::NotFound);
        let expired = pb::Outcome::Expired;
        let released = pb::Outcome::Released;
        assert_eq!(
            Exit::of_outcome(expired as i32, released, &[expired]),
            Exit::Ok
        );
        assert_eq!(Exit::of_outcome(99, reserved, &[]), Exit::Other);
    }
}
