//! Applied answers to responses, one per write, shared by the unary calls
//! and streams. Each counts the outcome it answers; an answer that does not
//! match its command is a bug and answers INTERNAL.

use tonic::Status;

use super::meters::{Meters, Method};
use crate::inventory::{Applied, Outcome, ReservationState, StockAnswer};
use crate::proto::v1 as pb;
use crate::server::status;

/// The wire value of an outcome of `method`, counted.
fn outcome(m: &Meters, method: Method, outcome: Outcome) -> i32 {
    let value = match outcome {
        Outcome::Reserved => pb::Outcome::Reserved,
        Outcome::InsufficientStock => pb::Outcome::InsufficientStock,
        Outcome::Consumed => pb::Outcome::Committed,
        Outcome::Released => pb::Outcome::Released,
        Outcome::Expired => pb::Outcome::Expired,
        Outcome::NotFound => pb::Outcome::NotFound,
    };
    m.outcome(method, value)
}

fn stock_level(answer: &StockAnswer) -> (Option<pb::StockLevel>, bool) {
    let l = answer.level;
    (
        Some(pb::StockLevel {
            on_hand: l.on_hand,
            reserved: l.reserved,
            safety_stock: l.safety_stock,
            available: l.available(),
        }),
        l.is_short(),
    )
}

pub(super) fn state(state: ReservationState) -> i32 {
    let value = match state {
        ReservationState::Open => pb::ReservationState::Open,
        ReservationState::Consumed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
        ReservationState::Expired => pb::ReservationState::Expired,
    };
    value as i32
}

/// The answer did not match the command: a bug, never input.
fn mismatch(applied: Applied) -> Status {
    tracing::error!(?applied, "answer does not match its command");
    status::internal("answer does not match its command")
}

/// The answer of a Sell, Adjust or SetOnHand: outcome, level, short.
fn stock_change(
    m: &Meters,
    method: Method,
    applied: Applied,
) -> Result<(i32, Option<pb::StockLevel>, bool), Status> {
    match applied {
        Applied::StockChange(Ok(answer)) => {
            let (level, short) = stock_level(&answer);
            Ok((m.outcome(method, pb::Outcome::Applied), level, short))
        }
        Applied::StockChange(Err(e)) => Err(status::stock_change(e)),
        other => Err(mismatch(other)),
    }
}

pub(super) fn reserve_answer(m: &Meters, applied: Applied) -> Result<pb::ReserveResponse, Status> {
    match applied {
        Applied::Reserve(Ok(a)) => Ok(pb::ReserveResponse {
            outcome: outcome(m, Method::Reserve, a.outcome),
            shortages: a
                .shortages
                .into_iter()
                .map(|s| pb::Shortage {
                    sku: s.sku,
                    node: s.node,
                    requested: s.requested,
                    available: s.available,
                })
                .collect(),
            expires_at_ms: a.expires_at_ms,
        }),
        Applied::Reserve(Err(e)) => Err(status::reserve(e)),
        other => Err(mismatch(other)),
    }
}

pub(super) fn commit_answer(m: &Meters, applied: Applied) -> Result<pb::CommitResponse, Status> {
    match applied {
        Applied::Consume(Ok(o)) => Ok(pb::CommitResponse {
            outcome: outcome(m, Method::Commit, o),
        }),
        Applied::Consume(Err(e)) => Err(status::consume(e)),
        other => Err(mismatch(other)),
    }
}

pub(super) fn release_answer(m: &Meters, applied: Applied) -> Result<pb::ReleaseResponse, Status> {
    match applied {
        Applied::Release(Ok(o)) => Ok(pb::ReleaseResponse {
            outcome: outcome(m, Method::Release, o),
        }),
        Applied::Release(Err(e)) => Err(status::release(e)),
        other => Err(mismatch(other)),
    }
}

pub(super) fn extend_answer(m: &Meters, applied: Applied) -> Result<pb::ExtendResponse, Status> {
    match applied {
        Applied::Extend(Ok(a)) => Ok(pb::ExtendResponse {
            outcome: outcome(m, Method::Extend, a.outcome),
            expires_at_ms: a.expires_at_ms,
        }),
        Applied::Extend(Err(e)) => Err(status::extend(e)),
        other => Err(mismatch(other)),
    }
}

pub(super) fn sell_answer(m: &Meters, applied: Applied) -> Result<pb::SellResponse, Status> {
    let (outcome, level, short) = stock_change(m, Method::Sell, applied)?;
    Ok(pb::SellResponse {
        outcome,
        level,
        short,
    })
}

pub(super) fn adjust_answer(m: &Meters, applied: Applied) -> Result<pb::AdjustResponse, Status> {
    let (outcome, level, short) = stock_change(m, Method::Adjust, applied)?;
    Ok(pb::AdjustResponse {
        outcome,
        level,
        short,
    })
}

pub(super) fn set_on_hand_answer(
    m: &Meters,
    applied: Applied,
) -> Result<pb::SetOnHandResponse, Status> {
    let (outcome, level, short) = stock_change(m, Method::SetOnHand, applied)?;
    Ok(pb::SetOnHandResponse {
        outcome,
        level,
        short,
    })
}

pub(super) fn set_safety_stock_answer(
    m: &Meters,
    applied: Applied,
) -> Result<pb::SetSafetyStockResponse, Status> {
    match applied {
        Applied::SetSafetyStock(Ok(answer)) => {
            let (level, short) = stock_level(&answer);
            Ok(pb::SetSafetyStockResponse {
                outcome: m.outcome(Method::SetSafetyStock, pb::Outcome::Applied),
                level,
                short,
            })
        }
        Applied::SetSafetyStock(Err(e)) => Err(status::capacity(e)),
        other => Err(mismatch(other)),
    }
}
