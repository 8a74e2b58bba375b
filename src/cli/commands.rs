//! The client commands of the Inventory service, and `health`: each makes
//! its call and returns the answer for [`super::render`] to print.

use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;

use stockraft::proto::v1 as pb;

use super::connection::{status_error, ClientArgs};
use super::counter_arg::parse_counter_arg;
use super::exit::Exit;
use super::millis;
use super::render::{self, Answer};

/// Why on_hand changed, for `adjust --reason`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Reason {
    Receive,
    ReturnRestock,
    Damage,
    Shrink,
    Correction,
}

impl From<Reason> for pb::AdjustReason {
    fn from(reason: Reason) -> pb::AdjustReason {
        match reason {
            Reason::Receive => pb::AdjustReason::Receive,
            Reason::ReturnRestock => pb::AdjustReason::ReturnRestock,
            Reason::Damage => pb::AdjustReason::Damage,
            Reason::Shrink => pb::AdjustReason::Shrink,
            Reason::Correction => pb::AdjustReason::Correction,
        }
    }
}

/// `reserve`. Every line is parsed before the server is called.
pub(super) async fn reserve(
    client: &ClientArgs,
    id: String,
    lines: &[String],
    ttl: Option<Duration>,
) -> Result<Answer> {
    let mut parsed = Vec::new();
    for line in lines {
        let c = parse_counter_arg(line)?;
        parsed.push(pb::Line {
            sku: c.sku,
            node: c.node,
            qty: c.number,
        });
    }
    let mut api = client.connect().await?;
    let answer = api
        .reserve(pb::ReserveRequest {
            reservation_id: id.clone(),
            lines: parsed,
            ttl_ms: ttl.map(millis).unwrap_or(0),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(render::reserved(&id, &answer))
}

pub(super) async fn commit(client: &ClientArgs, id: String) -> Result<Answer> {
    let mut api = client.connect().await?;
    let answer = api
        .commit(pb::CommitRequest {
            reservation_id: id.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let exit = Exit::of_outcome(answer.outcome, pb::Outcome::Committed, &[]);
    Ok(render::finished(&id, &answer, answer.outcome, exit))
}

/// `release`. A hold that already expired has its stock back: done too.
pub(super) async fn release(client: &ClientArgs, id: String) -> Result<Answer> {
    let mut api = client.connect().await?;
    let answer = api
        .release(pb::ReleaseRequest {
            reservation_id: id.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let exit = Exit::of_outcome(
        answer.outcome,
        pb::Outcome::Released,
        &[pb::Outcome::Expired],
    );
    Ok(render::finished(&id, &answer, answer.outcome, exit))
}

pub(super) async fn extend(
    client: &ClientArgs,
    id: String,
    ttl: Option<Duration>,
) -> Result<Answer> {
    let mut api = client.connect().await?;
    let answer = api
        .extend(pb::ExtendRequest {
            reservation_id: id.clone(),
            ttl_ms: ttl.map(millis).unwrap_or(0),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(render::extended(&id, &answer))
}

pub(super) async fn get(client: &ClientArgs, id: String, local: bool) -> Result<Answer> {
    let mut api = client.connect().await?;
    let answer = api
        .get_reservation(pb::GetReservationRequest {
            reservation_id: id.clone(),
            consistency: consistency(local),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(render::reservation(&id, &answer))
}

/// The txn id of a change: the one given, or a new one. Told on stderr
/// before the call is sent, so that a call that times out or fails can be
/// retried with `--txn` and is applied at most once.
fn txn_id_of(txn: Option<String>) -> String {
    let id = txn.unwrap_or_else(new_txn_id);
    eprintln!("txn_id: {id}");
    id
}

pub(super) async fn sell(client: &ClientArgs, line: &str, txn: Option<String>) -> Result<Answer> {
    let c = parse_counter_arg(line)?;
    let txn_id = txn_id_of(txn);
    let mut api = client.connect().await?;
    let r = api
        .sell(pb::SellRequest {
            txn_id: txn_id.clone(),
            sku: c.sku.clone(),
            node: c.node.clone(),
            qty: c.number,
        })
        .await
        .map_err(|s| retry_with(s, &txn_id))?
        .into_inner();
    Ok(render::counter_change(&r, Some(&txn_id), &c.sku, &c.node))
}

pub(super) async fn adjust(
    client: &ClientArgs,
    line: &str,
    reason: Reason,
    txn: Option<String>,
) -> Result<Answer> {
    let c = parse_counter_arg(line)?;
    let txn_id = txn_id_of(txn);
    let mut api = client.connect().await?;
    let r = api
        .adjust(pb::AdjustRequest {
            txn_id: txn_id.clone(),
            sku: c.sku.clone(),
            node: c.node.clone(),
            delta: c.number,
            reason: pb::AdjustReason::from(reason) as i32,
        })
        .await
        .map_err(|s| retry_with(s, &txn_id))?
        .into_inner();
    Ok(render::counter_change(&r, Some(&txn_id), &c.sku, &c.node))
}

/// `set`: on_hand to a count, compare-and-set when `expected` is given.
pub(super) async fn set_on_hand(
    client: &ClientArgs,
    line: &str,
    expected: Option<i64>,
    txn: Option<String>,
) -> Result<Answer> {
    let c = parse_counter_arg(line)?;
    let txn_id = txn_id_of(txn);
    let mut api = client.connect().await?;
    let r = api
        .set_on_hand(pb::SetOnHandRequest {
            txn_id: txn_id.clone(),
            sku: c.sku.clone(),
            node: c.node.clone(),
            on_hand: c.number,
            expected_on_hand: expected,
        })
        .await
        .map_err(|s| retry_with(s, &txn_id))?
        .into_inner();
    Ok(render::counter_change(&r, Some(&txn_id), &c.sku, &c.node))
}

/// `safety`. Setting the same value again is harmless, so it takes no txn id.
pub(super) async fn safety(client: &ClientArgs, line: &str) -> Result<Answer> {
    let c = parse_counter_arg(line)?;
    let mut api = client.connect().await?;
    let r = api
        .set_safety_stock(pb::SetSafetyStockRequest {
            sku: c.sku.clone(),
            node: c.node.clone(),
            safety_stock: c.number,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(render::counter_change(&r, None, &c.sku, &c.node))
}

pub(super) async fn avail(
    client: &ClientArgs,
    skus: Vec<String>,
    nodes: Vec<String>,
    local: bool,
) -> Result<Answer> {
    let mut api = client.connect().await?;
    let answer = api
        .get_availability(pb::GetAvailabilityRequest {
            skus,
            nodes,
            consistency: consistency(local),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(render::availability(&answer))
}

/// `health`: the gRPC health service's answer for the whole server.
pub(super) async fn health(client: &ClientArgs) -> Result<Answer> {
    let channel = client.channel().await?;
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(render::health(&answer))
}

/// `--local` reads this member's applied state; otherwise a read is
/// linearizable (confirmed with the leader).
fn consistency(local: bool) -> i32 {
    if local {
        pb::Consistency::Local as i32
    } else {
        pb::Consistency::Linearizable as i32
    }
}

/// A failed change, with the way to retry it safely when its outcome is
/// unknown (a timeout, no leader, an unknown error); a refusal is not.
fn retry_with(status: tonic::Status, txn_id: &str) -> anyhow::Error {
    let retryable =
        Exit::of_code(status.code()) == Exit::Unavailable || status.code() == tonic::Code::Unknown;
    let error = status_error(status);
    if !retryable {
        return error;
    }
    error.context(format!(
        "the change may or may not have been applied; retry with --txn {txn_id}, which applies it at most once"
    ))
}

/// A random transaction id for commands run by hand.
fn new_txn_id() -> String {
    format!("cli-{:016x}", rand::random::<u64>())
}
