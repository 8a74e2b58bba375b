//! The per-call metrics of the public service, registered once.
//!
//! `metrics::counter!(name, labels)` finds its metric by hashing the name
//! and labels on every call; for a streamed operation that lookup costs
//! more than the rest of its bookkeeping. The handles of the metrics every
//! call touches (a call's method, its outcome, its latency) are registered
//! here once, when the service is built (after the recorder is installed),
//! and used by index. Rare ones (error codes) are looked up when they occur.

use std::time::Instant;

use metrics::{Counter, Histogram};
use tonic::Code;

use crate::proto::v1 as pb;
use crate::server::status;

/// The methods of `stockraft.v1.Inventory` that count calls and outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Reserve,
    Commit,
    Release,
    Extend,
    GetReservation,
    Sell,
    Adjust,
    SetOnHand,
    SetSafetyStock,
    GetAvailability,
}

const METHODS: [Method; 10] = [
    Method::Reserve,
    Method::Commit,
    Method::Release,
    Method::Extend,
    Method::GetReservation,
    Method::Sell,
    Method::Adjust,
    Method::SetOnHand,
    Method::SetSafetyStock,
    Method::GetAvailability,
];

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Reserve => "Reserve",
            Method::Commit => "Commit",
            Method::Release => "Release",
            Method::Extend => "Extend",
            Method::GetReservation => "GetReservation",
            Method::Sell => "Sell",
            Method::Adjust => "Adjust",
            Method::SetOnHand => "SetOnHand",
            Method::SetSafetyStock => "SetSafetyStock",
            Method::GetAvailability => "GetAvailability",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The outcomes counted, in the order of their handles.
const OUTCOMES: [pb::Outcome; 7] = [
    pb::Outcome::Reserved,
    pb::Outcome::InsufficientStock,
    pb::Outcome::Committed,
    pb::Outcome::Released,
    pb::Outcome::Expired,
    pb::Outcome::NotFound,
    pb::Outcome::Applied,
];

fn outcome_index(outcome: pb::Outcome) -> Option<usize> {
    OUTCOMES.iter().position(|o| *o == outcome)
}

/// Handles of `stockraft_requests_total{code="OK"}`,
/// `stockraft_request_seconds` and `stockraft_outcomes_total`, by method.
pub(super) struct Meters {
    requests_ok: Vec<Counter>,
    seconds: Vec<Histogram>,
    /// By method, then by outcome (see [`OUTCOMES`]).
    outcomes: Vec<Vec<Counter>>,
}

impl Meters {
    /// Registers every handle with the installed recorder (none installed:
    /// the handles do nothing).
    pub(super) fn new() -> Meters {
        let mut requests_ok = Vec::with_capacity(METHODS.len());
        let mut seconds = Vec::with_capacity(METHODS.len());
        let mut outcomes = Vec::with_capacity(METHODS.len());
        for method in METHODS {
            let name = method.name();
            requests_ok.push(
                metrics::counter!("stockraft_requests_total", "method" => name, "code" => "OK"),
            );
            seconds.push(metrics::histogram!("stockraft_request_seconds", "method" => name));
            let mut by_outcome = Vec::with_capacity(OUTCOMES.len());
            for outcome in OUTCOMES {
                by_outcome.push(metrics::counter!(
                    "stockraft_outcomes_total",
                    "method" => name,
                    "outcome" => outcome.short_name()
                ));
            }
            outcomes.push(by_outcome);
        }
        Meters {
            requests_ok,
            seconds,
            outcomes,
        }
    }

    /// Counts a finished call and its latency.
    pub(super) fn call(&self, method: Method, code: Code, started: Instant) {
        let i = method.index();
        if code == Code::Ok {
            self.requests_ok[i].increment(1);
        } else {
            metrics::counter!("stockraft_requests_total", "method" => method.name(), "code" => status::code_label(code))
                .increment(1);
        }
        self.seconds[i].record(started.elapsed().as_secs_f64());
    }

    /// Counts an outcome and returns its wire value.
    pub(super) fn outcome(&self, method: Method, outcome: pb::Outcome) -> i32 {
        if let Some(o) = outcome_index(outcome) {
            self.outcomes[method.index()][o].increment(1);
        }
        outcome as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_and_outcome_has_its_handle() {
        for (i, method) in METHODS.iter().enumerate() {
            assert_eq!(method.index(), i, "{method:?} is out of place");
        }
        for outcome in OUTCOMES {
            assert!(outcome_index(outcome).is_some());
        }
        let meters = Meters::new();
        assert_eq!(meters.outcomes.len(), METHODS.len());
        assert_eq!(
            meters.outcome(Method::Sell, pb::Outcome::Applied),
            pb::Outcome::Applied as i32
        );
    }
}
