//! Every error reason a client can meet on one server, with its google.rpc
//! details: the ErrorInfo's reason, domain and facts, the BadRequest's
//! field, and the RetryInfo and `grpc-retry-pushback-ms` where a retry can
//! succeed. Each operation is sent twice, as its unary call and inside a
//! `Stream`, whose error must carry the same details. Reasons that need a
//! cluster or an overloaded queue are checked in overload.rs and
//! security.rs; the mapping of every reason is unit-tested in
//! src/server/status.rs.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{line, reserve, set_on_hand, Server};
use stockraft::proto::v1 as pb;
use stockraft::proto::v1::inventory_client::InventoryClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use pb::stream_request::Op;
use pb::stream_response::Result as R;

/// What one refused call must carry.
struct Expect {
    what: &'static str,
    code: Code,
    reason: &'static str,
    /// BadRequest's field path, on INVALID_ARGUMENT.
    field: Option<&'static str>,
    /// Facts that must be in ErrorInfo's metadata, with these values.
    facts: &'static [(&'static str, &'static str)],
}

/// The details of `status` as a client library reads them.
struct Details {
    reason: String,
    domain: String,
    facts: HashMap<String, String>,
    fields: Vec<String>,
    retry_delay: Option<Duration>,
}

fn details(status: &Status) -> Details {
    let d = status
        .check_error_details_vec()
        .expect("grpc-status-details-bin decodes");
    let mut out = Details {
        reason: String::new(),
        domain: String::new(),
        facts: HashMap::new(),
        fields: Vec::new(),
        retry_delay: None,
    };
    for detail in d {
        match detail {
            tonic_types::ErrorDetail::ErrorInfo(info) => {
                out.reason = info.reason;
                out.domain = info.domain;
                out.facts = info.metadata;
            }
            tonic_types::ErrorDetail::BadRequest(bad) => {
                out.fields = bad.field_violations.into_iter().map(|v| v.field).collect();
            }
            tonic_types::ErrorDetail::RetryInfo(retry) => out.retry_delay = retry.retry_delay,
            _ => {}
        }
    }
    out
}

fn check(status: &Status, e: &Expect, path: &str) {
    let what = format!("{} ({path})", e.what);
    assert_eq!(status.code(), e.code, "{what}: {status:?}");
    assert!(!status.message().is_empty(), "{what}: no message");
    let d = details(status);
    assert_eq!(d.domain, "stockraft", "{what}");
    assert_eq!(d.reason, e.reason, "{what}: {status:?}");
    for (key, value) in e.facts {
        assert_eq!(
            d.facts.get(*key).map(String::as_str),
            Some(*value),
            "{what}: fact {key} in {:?}",
            d.facts
        );
    }
    match e.field {
        Some(field) => assert_eq!(d.fields, vec![field.to_string()], "{what}"),
        None => assert!(d.fields.is_empty(), "{what}: fields {:?}", d.fields),
    }
    // Nothing on one server is worth retrying unchanged.
    assert_eq!(d.retry_delay, None, "{what}");
}

/// Sends `op` as its unary call.
async fn unary(c: &mut InventoryClient<Channel>, op: Op) -> Result<(), Status> {
    match op {
        Op::Reserve(r) => c.reserve(r).await.map(drop),
        Op::Commit(r) => c.commit(r).await.map(drop),
        Op::Release(r) => c.release(r).await.map(drop),
        Op::Extend(r) => c.extend(r).await.map(drop),
        Op::Sell(r) => c.sell(r).await.map(drop),
        Op::Adjust(r) => c.adjust(r).await.map(drop),
        Op::SetOnHand(r) => c.set_on_hand(r).await.map(drop),
        Op::SetSafetyStock(r) => c.set_safety_stock(r).await.map(drop),
        Op::GetAvailability(r) => c.get_availability(r).await.map(drop),
        Op::GetReservation(r) => c.get_reservation(r).await.map(drop),
    }
}

/// Sends each op in one `Stream` and returns its error as a Status (the
/// way client libraries turn a StreamError back into one).
async fn streamed(c: &mut InventoryClient<Channel>, ops: Vec<Option<Op>>) -> Vec<Status> {
    let count = ops.len();
    let requests: Vec<pb::StreamRequest> = ops
        .into_iter()
        .enumerate()
        .map(|(id, op)| pb::StreamRequest { id: id as u64, op })
        .collect();
    let mut answers = c
        .stream(tokio_stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();
    let mut by_id: Vec<Option<Status>> = vec![None; count];
    while let Some(answer) = answers.message().await.expect("stream answers") {
        let status = match answer.result {
            Some(R::Error(e)) => stockraft::client::operation::status_of(e),
            other => panic!("operation {} was not refused: {other:?}", answer.id),
        };
        by_id[answer.id as usize] = Some(status);
    }
    by_id
        .into_iter()
        .map(|s| s.expect("every operation answered"))
        .collect()
}

fn reserve_op(id: &str, lines: Vec<pb::Line>, ttl_ms: u64) -> Op {
    Op::Reserve(pb::ReserveRequest {
        reservation_id: id.into(),
        lines,
        ttl_ms,
    })
}

fn adjust_op(txn: &str, delta: i64, reason: i32) -> Op {
    Op::Adjust(pb::AdjustRequest {
        txn_id: txn.into(),
        sku: "S".into(),
        node: "N".into(),
        delta,
        reason,
    })
}

fn availability_op(skus: Vec<String>, nodes: Vec<String>, consistency: i32) -> Op {
    Op::GetAvailability(pb::GetAvailabilityRequest {
        skus,
        nodes,
        consistency,
    })
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

/// Input refused whatever the state: INVALID_ARGUMENT with the field.
fn invalid_cases() -> Vec<(Op, Expect)> {
    let ok = || vec![line("S", "N", 1)];
    let invalid = |what, reason, field, facts| Expect {
        what,
        code: Code::InvalidArgument,
        reason,
        field: Some(field),
        facts,
    };
    vec![
        (
            reserve_op("", ok(), 0),
            invalid("empty id", "FIELD_EMPTY", "reservation_id", &[]),
        ),
        (
            reserve_op(&"x".repeat(129), ok(), 0),
            invalid(
                "long id",
                "FIELD_TOO_LONG",
                "reservation_id",
                &[("length_bytes", "129"), ("max_bytes", "128")],
            ),
        ),
        (
            reserve_op("o", vec![line("S", "N", 1), line("S", "M", 0)], 0),
            invalid(
                "zero qty",
                "VALUE_OUT_OF_RANGE",
                "lines[1].qty",
                &[("value", "0"), ("min", "1"), ("max", "1000000000")],
            ),
        ),
        (
            reserve_op("o", vec![line("S", "N", -1)], 0),
            invalid(
                "negative qty",
                "VALUE_OUT_OF_RANGE",
                "lines[0].qty",
                &[("value", "-1")],
            ),
        ),
        (
            reserve_op("o", vec![line("S", "N", 2_000_000_000)], 0),
            invalid(
                "qty over its limit",
                "VALUE_OUT_OF_RANGE",
                "lines[0].qty",
                &[("value", "2000000000")],
            ),
        ),
        (
            Op::Sell(pb::SellRequest {
                txn_id: "s".into(),
                sku: "S".into(),
                node: "N".into(),
                qty: 0,
            }),
            invalid(
                "sale of nothing",
                "VALUE_OUT_OF_RANGE",
                "qty",
                &[("value", "0")],
            ),
        ),
        (
            reserve_op("o", vec![line("", "N", 1)], 0),
            invalid("empty sku", "FIELD_EMPTY", "lines[0].sku", &[]),
        ),
        (
            reserve_op("o", vec![line("S", &"n".repeat(129), 1)], 0),
            invalid("long node", "FIELD_TOO_LONG", "lines[0].node", &[]),
        ),
        (
            reserve_op("o", vec![], 0),
            invalid("no lines", "NO_LINES", "lines", &[]),
        ),
        (
            reserve_op("o", vec![line("S", "N", 1); 1_001], 0),
            invalid(
                "1,001 lines",
                "TOO_MANY_LINES",
                "lines",
                &[("count", "1001"), ("max", "1000")],
            ),
        ),
        (
            reserve_op("o", ok(), 3_600_001),
            invalid(
                "ttl over --max-ttl",
                "TTL_TOO_LONG",
                "ttl_ms",
                &[("ttl_ms", "3600001"), ("max_ms", "3600000")],
            ),
        ),
        (
            adjust_op("a", 1, 99),
            invalid(
                "unknown reason",
                "UNKNOWN_ENUM_VALUE",
                "reason",
                &[("value", "99")],
            ),
        ),
        (
            adjust_op("a", 0, pb::AdjustReason::Correction as i32),
            invalid("zero delta", "ZERO_DELTA", "delta", &[]),
        ),
        (
            adjust_op("a", -1, pb::AdjustReason::Receive as i32),
            invalid(
                "negative receipt",
                "DELTA_SIGN_MISMATCH",
                "delta",
                &[("reason", "RECEIVE"), ("delta", "-1")],
            ),
        ),
        (
            availability_op(vec!["S".into()], vec![], 7),
            invalid(
                "unknown consistency",
                "UNKNOWN_ENUM_VALUE",
                "consistency",
                &[("value", "7")],
            ),
        ),
        (
            availability_op(vec![], vec![], 0),
            invalid("no skus", "FIELD_EMPTY", "skus", &[]),
        ),
        (
            availability_op(vec!["S".into(), String::new()], vec![], 0),
            invalid("an empty sku in a read", "FIELD_EMPTY", "skus[1]", &[]),
        ),
        (
            availability_op(names("S", 1_001), vec![], 0),
            invalid(
                "1,001 skus",
                "TOO_MANY_ITEMS",
                "skus",
                &[("count", "1001"), ("max", "1000")],
            ),
        ),
        (
            availability_op(names("S", 101), names("N", 100), 0),
            invalid(
                "10,100 rows",
                "TOO_MANY_ROWS",
                "skus",
                &[("rows", "10100"), ("max", "10000")],
            ),
        ),
    ]
}

/// Refusals that depend on the state `prepare` leaves behind.
fn state_cases() -> Vec<(Op, Expect)> {
    vec![
        (
            reserve_op("dup", vec![line("S", "N", 2)], 0),
            Expect {
                what: "reservation id reused",
                code: Code::AlreadyExists,
                reason: "RESERVATION_ID_REUSED",
                field: None,
                facts: &[("reservation_id", "dup")],
            },
        ),
        (
            Op::Sell(pb::SellRequest {
                txn_id: "t1".into(),
                sku: "S".into(),
                node: "N".into(),
                qty: 2,
            }),
            Expect {
                what: "txn id reused",
                code: Code::AlreadyExists,
                reason: "TXN_ID_REUSED",
                field: None,
                facts: &[("txn_id", "t1")],
            },
        ),
        (
            Op::SetOnHand(pb::SetOnHandRequest {
                txn_id: "cas".into(),
                sku: "S".into(),
                node: "N".into(),
                on_hand: 3,
                expected_on_hand: Some(42),
            }),
            Expect {
                what: "stale compare-and-set",
                code: Code::FailedPrecondition,
                reason: "STALE_ON_HAND",
                field: None,
                facts: &[
                    ("on_hand", "8"),
                    ("expected_on_hand", "42"),
                    ("sku", "S"),
                    ("node", "N"),
                ],
            },
        ),
        (
            Op::Commit(pb::CommitRequest {
                reservation_id: "rel".into(),
            }),
            Expect {
                what: "commit after release",
                code: Code::FailedPrecondition,
                reason: "RESERVATION_NOT_ACTIVE",
                field: None,
                facts: &[("reservation_id", "rel"), ("state", "RELEASED")],
            },
        ),
        (
            Op::Release(pb::ReleaseRequest {
                reservation_id: "com".into(),
            }),
            Expect {
                what: "release after commit",
                code: Code::FailedPrecondition,
                reason: "RESERVATION_NOT_ACTIVE",
                field: None,
                facts: &[("reservation_id", "com"), ("state", "COMMITTED")],
            },
        ),
        (
            Op::Extend(pb::ExtendRequest {
                reservation_id: "com".into(),
                ttl_ms: 1_000,
            }),
            Expect {
                what: "extend after commit",
                code: Code::FailedPrecondition,
                reason: "RESERVATION_NOT_ACTIVE",
                field: None,
                facts: &[("state", "COMMITTED")],
            },
        ),
        (
            Op::Extend(pb::ExtendRequest {
                reservation_id: "rel".into(),
                ttl_ms: 1_000,
            }),
            Expect {
                what: "extend after release",
                code: Code::FailedPrecondition,
                reason: "RESERVATION_NOT_ACTIVE",
                field: None,
                facts: &[("state", "RELEASED")],
            },
        ),
        (
            adjust_op("over", 1, pb::AdjustReason::Receive as i32).with_node("BIG"),
            Expect {
                what: "on_hand past its range",
                code: Code::OutOfRange,
                reason: "ON_HAND_OUT_OF_RANGE",
                field: None,
                facts: &[("node", "BIG"), ("value", "1000000000001")],
            },
        ),
    ]
}

trait WithNode {
    fn with_node(self, node: &str) -> Op;
}

impl WithNode for Op {
    fn with_node(self, node: &str) -> Op {
        match self {
            Op::Adjust(mut r) => {
                r.node = node.into();
                Op::Adjust(r)
            }
            other => other,
        }
    }
}

/// Leaves the state `state_cases` refuse against: a reservation `dup`,
/// a sale `t1`, on_hand 9 at S@N, reservations `rel` (released) and `com`
/// (committed), and on_hand at its limit at S@BIG.
async fn prepare(c: &mut InventoryClient<Channel>) {
    set_on_hand(c, "seed", "S", "N", 10).await;
    reserve(c, "dup", vec![line("S", "N", 1)], 0).await.unwrap();
    c.sell(pb::SellRequest {
        txn_id: "t1".into(),
        sku: "S".into(),
        node: "N".into(),
        qty: 1,
    })
    .await
    .unwrap();
    for id in ["rel", "com"] {
        reserve(c, id, vec![line("S", "N", 1)], 0).await.unwrap();
    }
    c.release(pb::ReleaseRequest {
        reservation_id: "rel".into(),
    })
    .await
    .unwrap();
    c.commit(pb::CommitRequest {
        reservation_id: "com".into(),
    })
    .await
    .unwrap();
    set_on_hand(c, "big", "S", "BIG", 1_000_000_000_000).await;
}

#[tokio::test]
async fn every_refusal_carries_its_reason_and_details_unary_and_streamed() {
    let mut server = Server::start(&["--max-ttl", "1h"]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    prepare(&mut c).await;
    // on_hand at S@N: 10 seeded, 1 sold, 1 committed ("dup" still holds 1).
    let mut cases = invalid_cases();
    cases.extend(state_cases());
    let mut ops = Vec::new();
    for (op, expect) in &cases {
        let status = unary(&mut c, op.clone())
            .await
            .expect_err("the call is refused");
        check(&status, expect, "unary");
        ops.push(Some(op.clone()));
    }
    // No operation at all: a stream's own refusal.
    ops.push(None);
    let streamed = streamed(&mut c, ops).await;
    for (status, (_, expect)) in streamed.iter().zip(&cases) {
        check(status, expect, "stream");
    }
    check(
        streamed.last().unwrap(),
        &Expect {
            what: "stream request without an operation",
            code: Code::InvalidArgument,
            reason: "OPERATION_MISSING",
            field: Some("op"),
            facts: &[],
        },
        "stream",
    );
    // Nothing refused changed anything: on_hand 10 - 1 sold - 1 committed.
    let level = common::level(&mut c, "S", "N").await;
    assert_eq!((level.on_hand, level.reserved), (8, 1));
}

/// A SKU stocked at its most nodes refuses one more, and says no retry
/// can pass (pushback -1, no RetryInfo): only an operator can act.
#[tokio::test]
async fn a_table_limit_is_exhausted_and_says_not_to_retry() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    let max = stockraft::limits::NODES_PER_SKU_MAX;
    let ops: Vec<pb::StreamRequest> = (0..max)
        .map(|i| pb::StreamRequest {
            id: i as u64,
            op: Some(Op::SetOnHand(pb::SetOnHandRequest {
                txn_id: format!("t{i}"),
                sku: "WIDE".into(),
                node: format!("n{i}"),
                on_hand: 1,
                expected_on_hand: None,
            })),
        })
        .collect();
    let mut answers = c
        .stream(tokio_stream::iter(ops))
        .await
        .unwrap()
        .into_inner();
    let mut applied = 0;
    while let Some(answer) = answers.message().await.unwrap() {
        assert!(matches!(answer.result, Some(R::SetOnHand(_))), "{answer:?}");
        applied += 1;
    }
    assert_eq!(applied, max);
    let status = c
        .set_on_hand(pb::SetOnHandRequest {
            txn_id: "one-more".into(),
            sku: "WIDE".into(),
            node: "n-last".into(),
            on_hand: 1,
            expected_on_hand: None,
        })
        .await
        .expect_err("one node past the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let d = details(&status);
    assert_eq!(d.reason, "NODES_PER_SKU_LIMIT");
    assert_eq!(d.facts["sku"], "WIDE");
    assert_eq!(d.facts["max"], max.to_string());
    assert_eq!(d.retry_delay, None);
    assert_eq!(
        status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .map(|v| v.to_str().unwrap()),
        Some("-1")
    );
}

/// A cluster call's result, and the reason, code and field it must carry.
type ClusterCase = (Result<(), Status>, &'static str, Code, Option<&'static str>);

/// The cluster service's refusals on a one-member cluster.
#[tokio::test]
async fn cluster_refusals_carry_reasons() {
    use stockraft::proto::v1::cluster_client::ClusterClient;

    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let channel = stockraft::client::channel(&server.addr, Duration::from_secs(5))
        .await
        .unwrap();
    let mut c = ClusterClient::new(channel);
    let add = |member_id: u64, address: &str| pb::AddMemberRequest {
        member_id,
        address: address.into(),
        peer_address: String::new(),
    };
    let cases: Vec<ClusterCase> = vec![
        (
            c.add_member(add(0, "127.0.0.1:1")).await.map(drop),
            "VALUE_OUT_OF_RANGE",
            Code::InvalidArgument,
            Some("member_id"),
        ),
        (
            c.add_member(add(2, "no-port")).await.map(drop),
            "ADDRESS_MALFORMED",
            Code::InvalidArgument,
            Some("address"),
        ),
        (
            c.add_member(add(1, "127.0.0.1:1")).await.map(drop),
            "MEMBER_EXISTS",
            Code::AlreadyExists,
            None,
        ),
        (
            c.remove_member(pb::RemoveMemberRequest { member_id: 9 })
                .await
                .map(drop),
            "MEMBER_NOT_FOUND",
            Code::NotFound,
            None,
        ),
        (
            c.remove_member(pb::RemoveMemberRequest { member_id: 1 })
                .await
                .map(drop),
            "LAST_VOTER",
            Code::FailedPrecondition,
            None,
        ),
        (
            c.transfer_leader(pb::TransferLeaderRequest { member_id: 9 })
                .await
                .map(drop),
            "NOT_A_VOTER",
            Code::FailedPrecondition,
            None,
        ),
    ];
    for (result, reason, code, field) in cases {
        let status = result.expect_err(reason);
        assert_eq!(status.code(), code, "{reason}: {status:?}");
        let d = details(&status);
        assert_eq!(d.reason, reason, "{status:?}");
        assert_eq!(
            d.fields,
            field.map(String::from).into_iter().collect::<Vec<_>>()
        );
    }
}
