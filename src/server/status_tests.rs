//! Every error the server maps, reached or not by the integration tests
//! (tests/errors.rs): its code, reason, facts, field and retry advice.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetail, StatusExt};

use super::*;

/// What a client library reads back from a status.
#[derive(Debug, Default)]
struct Read {
    reason: String,
    facts: Vec<(String, String)>,
    field: Option<String>,
    retry: Option<Duration>,
    pushback: Option<String>,
}

fn read(status: &Status) -> Read {
    let mut out = Read {
        pushback: status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .map(|v| v.to_str().unwrap().to_string()),
        ..Read::default()
    };
    for detail in status.check_error_details_vec().unwrap() {
        match detail {
            ErrorDetail::ErrorInfo(info) => {
                assert_eq!(info.domain, DOMAIN);
                out.reason = info.reason;
                let mut facts: Vec<_> = info.metadata.into_iter().collect();
                facts.sort();
                out.facts = facts;
            }
            ErrorDetail::BadRequest(bad) => {
                assert_eq!(bad.field_violations.len(), 1);
                let violation = &bad.field_violations[0];
                assert_eq!(violation.description, status.message());
                out.field = Some(violation.field.clone());
            }
            ErrorDetail::RetryInfo(retry) => out.retry = retry.retry_delay,
            other => panic!("unexpected detail {other:?}"),
        }
    }
    out
}

fn facts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<_> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}

#[test]
fn invalid_input_names_its_field_and_reason() {
    let cases = [
        (InvalidInput::Empty { field: "sku" }, "FIELD_EMPTY", "sku"),
        (
            InvalidInput::TooLong {
                field: "txn_id",
                len: 200,
                max: 128,
            },
            "FIELD_TOO_LONG",
            "txn_id",
        ),
        (InvalidInput::NoLines, "NO_LINES", "lines"),
        (
            InvalidInput::TooManyLines {
                count: 1_001,
                max: 1_000,
            },
            "TOO_MANY_LINES",
            "lines",
        ),
        (
            InvalidInput::LineSumTooLarge {
                sku: "S".into(),
                node: "N".into(),
                max: 5,
            },
            "LINE_SUM_TOO_LARGE",
            "lines",
        ),
        (
            InvalidInput::TtlTooLong { ttl_ms: 9, max: 8 },
            "TTL_TOO_LONG",
            "ttl_ms",
        ),
        (InvalidInput::ZeroDelta, "ZERO_DELTA", "delta"),
        (
            InvalidInput::TooManyRows { rows: 9, max: 8 },
            "TOO_MANY_ROWS",
            "skus",
        ),
    ];
    for (error, reason, field) in cases {
        let status = invalid(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        let r = read(&status);
        assert_eq!(r.reason, reason);
        assert_eq!(r.field.as_deref(), Some(field));
        assert_eq!((r.retry, r.pushback), (None, None), "{reason}");
    }
}

#[test]
fn an_error_in_a_line_is_found_by_its_path() {
    let status = invalid(InvalidInput::InLine {
        index: 4,
        error: Box::new(InvalidInput::OutOfRange {
            field: "qty",
            value: 0,
            min: 1,
            max: 10,
        }),
    });
    let r = read(&status);
    assert_eq!(r.reason, "VALUE_OUT_OF_RANGE");
    assert_eq!(r.field.as_deref(), Some("lines[4].qty"));
    assert_eq!(
        r.facts,
        facts(&[("value", "0"), ("min", "1"), ("max", "10")])
    );
    assert!(
        status.message().starts_with("lines[4]: qty is 0"),
        "{status:?}"
    );
    let element = invalid_element("skus", 2, InvalidInput::Empty { field: "sku" });
    assert_eq!(read(&element).field.as_deref(), Some("skus[2]"));
}

#[test]
fn unavailable_always_says_when_to_retry() {
    let cases = [
        (SubmitError::Stopped, "SHUTTING_DOWN"),
        (SubmitError::Propose(ProposeError::NoLeader), "NO_LEADER"),
        (
            SubmitError::Propose(ProposeError::NotLeader { leader: 3 }),
            "NOT_LEADER",
        ),
        (
            SubmitError::Propose(ProposeError::Unknown),
            "OUTCOME_UNKNOWN",
        ),
        (
            SubmitError::Propose(ProposeError::ShuttingDown),
            "OUTCOME_UNKNOWN",
        ),
        (
            SubmitError::Propose(ProposeError::Dropped("busy".into())),
            "PROPOSAL_DROPPED",
        ),
        (
            SubmitError::Propose(ProposeError::ClockUnconfirmed),
            "CLOCK_UNCONFIRMED",
        ),
        (
            SubmitError::Propose(ProposeError::RemovesLeader),
            "REMOVES_LEADER",
        ),
        (SubmitError::Read(ReadError::NoLeader), "NO_LEADER"),
        (
            SubmitError::Read(ReadError::TimedOut),
            "LEADERSHIP_UNCONFIRMED",
        ),
        (SubmitError::Read(ReadError::Removed), "MEMBER_REMOVED"),
    ];
    for (error, reason) in cases {
        let status = submit(error);
        assert_eq!(status.code(), Code::Unavailable, "{reason}");
        let r = read(&status);
        assert_eq!(r.reason, reason);
        let delay = r.retry.expect("RetryInfo");
        assert!(delay > Duration::ZERO, "{reason}");
        assert_eq!(r.pushback, Some(delay.as_millis().to_string()), "{reason}");
    }
    let forwarded = read(&forwarded_twice(2));
    assert_eq!(forwarded.reason, "NOT_LEADER");
    assert_eq!(forwarded.facts, facts(&[("leader_id", "2")]));
    let unreachable = read(&leader_unreachable(2, "refused"));
    assert_eq!(unreachable.reason, "LEADER_UNREACHABLE");
    assert!(unreachable.retry.is_some());
    assert_eq!(read(&no_leader()).retry, Some(RETRY_NO_LEADER));
}

#[test]
fn exhausted_resources_say_whether_a_retry_can_pass() {
    let overloaded = submit(SubmitError::Overloaded);
    assert_eq!(overloaded.code(), Code::ResourceExhausted);
    let r = read(&overloaded);
    assert_eq!(r.reason, "OVERLOADED");
    assert_eq!(r.retry, Some(RETRY_OVERLOADED));
    let open = read(&reserve(ReserveError::TooManyOpen { open: 7 }));
    assert_eq!(open.reason, "TOO_MANY_OPEN_RESERVATIONS");
    assert_eq!(open.facts, facts(&[("open", "7")]));
    assert_eq!(open.retry, Some(RETRY_TOO_MANY_OPEN));
    // Table limits: no RetryInfo, and a pushback that tells gRPC not to.
    for (error, reason) in [
        (CapacityError::TooManyCounters { max: 5 }, "COUNTER_LIMIT"),
        (
            CapacityError::TooManyNodes {
                sku: "S".into(),
                max: 5,
            },
            "NODES_PER_SKU_LIMIT",
        ),
    ] {
        let status = stock_change(StockChangeError::Capacity(error));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let r = read(&status);
        assert_eq!(r.reason, reason);
        assert_eq!((r.retry, r.pushback.as_deref()), (None, Some("-1")));
    }
}

#[test]
fn refusals_by_state_carry_the_state() {
    let stale = read(&stock_change(StockChangeError::Stale {
        sku: "S".into(),
        node: "N".into(),
        expected: 4,
        actual: 9,
    }));
    assert_eq!(stale.reason, "STALE_ON_HAND");
    assert_eq!(
        stale.facts,
        facts(&[
            ("sku", "S"),
            ("node", "N"),
            ("expected_on_hand", "4"),
            ("on_hand", "9")
        ])
    );
    let cases = [
        (
            consume(ConsumeError::Released { id: "r".into() }),
            "RELEASED",
        ),
        (
            release(ReleaseError::Consumed { id: "r".into() }),
            "COMMITTED",
        ),
        (
            extend(ExtendError::Consumed { id: "r".into() }),
            "COMMITTED",
        ),
        (extend(ExtendError::Released { id: "r".into() }), "RELEASED"),
    ];
    for (status, state) in cases {
        assert_eq!(status.code(), Code::FailedPrecondition);
        let r = read(&status);
        assert_eq!(r.reason, "RESERVATION_NOT_ACTIVE");
        assert_eq!(r.facts, facts(&[("reservation_id", "r"), ("state", state)]));
        assert_eq!(r.retry, None);
    }
    let reused = read(&reserve(ReserveError::IdReused { id: "r".into() }));
    assert_eq!(reused.reason, "RESERVATION_ID_REUSED");
    let txn = read(&stock_change(StockChangeError::IdReused { id: "t".into() }));
    assert_eq!(txn.reason, "TXN_ID_REUSED");
    let range = stock_change(StockChangeError::OutOfRange {
        sku: "S".into(),
        node: "N".into(),
        value: 11,
        max: 10,
    });
    assert_eq!(range.code(), Code::OutOfRange);
    assert_eq!(read(&range).reason, "ON_HAND_OUT_OF_RANGE");
}

#[test]
fn a_stream_error_carries_the_unary_details() {
    let status = reserve(ReserveError::IdReused { id: "r".into() });
    let details = details_of(&status);
    assert_eq!(details.len(), 1);
    assert!(details[0].type_url.ends_with("google.rpc.ErrorInfo"));
    assert!(details_of(&Status::internal("plain")).is_empty());
}
