//! The public `stockraft.v1.Inventory` service: a thin adapter.
//!
//! Each unary call: validate and convert the protobuf request into a
//! command (INVALID_ARGUMENT on bad input), hand it to the replication
//! thread, wait until it is committed and applied, and convert the answer
//! back, mapping typed errors to status codes in [`super::status`]. Reads go
//! straight to the shared state, after a ReadIndex barrier when
//! linearizable.
//!
//! The `Stream` call carries many operations on one HTTP/2 stream. Its
//! session (see [`session`]) reads every operation that has already
//! arrived, hands all of their writes to the replication thread as one
//! group, and answers them together when the group's answers come back:
//! one hand-over and one wake-up per group instead of per operation, which
//! is what lets a stream carry several times the operations of unary calls
//! on the same cores. LOCAL reads are answered on the spot. Anything the
//! group cannot do (a linearizable read, a write on a follower, a write
//! whose proposal failed and must be retried or forwarded) runs alone
//! exactly as the unary call would.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::forward::{Forwarder, Route};
use super::meters::{Meters, Method};
use super::node::{GroupAnswer, GroupReply, NodeHandle, Refused, SubmitError};
use super::status;
use crate::chunked::{chunked, ready_now, ChunkSender, Chunked};
use crate::inventory::command::{
    check_id, check_name, reservation_ref, resolve_ttl, Adjust, AdjustReason, Extend, Line,
    Reserve, Sell, SetOnHand, SetSafetyStock,
};
use crate::inventory::{Applied, Command, InvalidInput, Outcome, ReservationState, StockAnswer};
use crate::limits::{
    AVAILABILITY_ROWS_MAX, NODES_PER_READ_MAX, SKUS_PER_READ_MAX, STREAM_IN_FLIGHT_MAX,
};
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_client::InventoryClient;
use crate::proto::v1::inventory_server::Inventory;
use crate::replica::{ReadError, Unanswered};
use pb::stream_request::Op;
use pb::stream_response::Result as R;

/// Reservation settings applied where requests enter.
#[derive(Debug, Clone, Copy)]
pub struct ApiConfig {
    pub ttl_ms_default: u64,
    pub ttl_ms_max: u64,
}

#[derive(Clone)]
pub struct InventoryService {
    node: NodeHandle,
    api: ApiConfig,
    forwarder: Arc<Forwarder>,
    meters: Arc<Meters>,
    /// In a `Stream` session's copy: the caller's token, for the
    /// operations it runs alone (and may forward).
    session_token: Option<AsciiMetadataValue>,
}

/// A call of the same method on the leader.
type Forwarded<Resp> = Pin<Box<dyn Future<Output = Result<Response<Resp>, Status>> + Send>>;

impl InventoryService {
    pub fn new(node: NodeHandle, api: ApiConfig, forwarder: Arc<Forwarder>) -> InventoryService {
        InventoryService {
            node,
            api,
            forwarder,
            meters: Arc::new(Meters::new()),
            session_token: None,
        }
    }

    /// Runs a write: on the leader, propose and wait for the answer; on a
    /// follower, forward the request to the leader. While no leader is known,
    /// or when leadership changes under a proposal, it waits and retries until
    /// the budget runs out: retrying is safe because every command carries
    /// an id applied at most once (SetSafetyStock is an absolute set).
    async fn write<Req, Resp>(
        &self,
        request: Request<Req>,
        build: impl FnOnce(Req) -> Result<Command, Status>,
        answer: impl Fn(Applied) -> Result<Resp, Status>,
        forward: impl Fn(InventoryClient<Channel>, Request<Req>) -> Forwarded<Resp>,
    ) -> Result<Resp, Status>
    where
        Req: Clone + FromCommand + Send + 'static,
    {
        let deadline = Instant::now() + self.forwarder.budget;
        let origin = Forwarder::origin(request.metadata(), self.session_token.as_ref());
        let body = request.into_inner();
        // A follower forwards the request as it came; the leader, which
        // almost always runs it itself, keeps no copy, and should it lose
        // the leadership before the command is applied it forwards the
        // request rebuilt from the command.
        let kept = if self.node.status().is_leader {
            None
        } else {
            Some(body.clone())
        };
        let mut command = build(body)?;
        loop {
            if let Route::Leader { id, channel } =
                self.forwarder.route(origin.forwarded, deadline).await?
            {
                let body = match &kept {
                    Some(body) => body.clone(),
                    None => request_of(&command),
                };
                let mut call = Request::new(body);
                Forwarder::mark(&mut call, deadline, &origin);
                metrics::counter!("stockraft_forwarded_total").increment(1);
                match forward(InventoryClient::new(channel), call).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                        tracing::debug!(leader = id, "forwarding failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            // The command goes to the replication thread; a failed proposal
            // hands it back for the retry.
            match self.node.submit(command).await {
                Ok(applied) => return answer(applied),
                Err(Refused {
                    error: SubmitError::Propose(e),
                    command: Some(returned),
                }) if Instant::now() < deadline => {
                    tracing::debug!("retrying a proposal: {e}");
                    command = returned;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(refused) => return Err(status::submit(refused.error)),
            }
        }
    }

    /// Waits until a linearizable read may be served here (ReadIndex, on a
    /// follower through the leader), retrying through elections.
    async fn barrier(&self, consistency: i32) -> Result<(), Status> {
        let Ok(consistency) = pb::Consistency::try_from(consistency) else {
            return Err(status::invalid(InvalidInput::UnknownEnum {
                field: "consistency",
                value: consistency,
            }));
        };
        // A removed node's state stops where its removal was: even a LOCAL
        // read would lag without bound.
        if self.node.status().removed {
            return Err(status::removed());
        }
        if consistency == pb::Consistency::Local {
            return Ok(());
        }
        let deadline = Instant::now() + self.forwarder.budget;
        loop {
            match self.node.read_barrier().await {
                Ok(_) => return Ok(()),
                Err(SubmitError::Read(ReadError::Removed)) => return Err(status::removed()),
                Err(SubmitError::Read(e)) if Instant::now() < deadline => {
                    tracing::debug!("retrying a read barrier: {e}");
                    let wait = deadline.saturating_duration_since(Instant::now());
                    if self.node.wait_for_leader(wait).await.is_none() {
                        return Err(status::submit(SubmitError::Read(e)));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(status::submit(e)),
            }
        }
    }

    /// Availability from this node's applied state (no barrier).
    fn read_availability(
        &self,
        r: &pb::GetAvailabilityRequest,
    ) -> Result<pb::GetAvailabilityResponse, Status> {
        let shared = self.node.shared();
        let mut skus = Vec::with_capacity(r.skus.len());
        let mut rows = 0usize;
        for sku in &r.skus {
            let a = shared.stock.availability(sku, &r.nodes);
            rows += a.nodes.len();
            if rows > AVAILABILITY_ROWS_MAX {
                return Err(too_many_rows(rows));
            }
            skus.push(pb::SkuAvailability {
                sku: a.sku,
                total_available: a.total_available,
                nodes: a
                    .nodes
                    .into_iter()
                    .map(|(node, l)| pb::NodeAvailability {
                        node,
                        on_hand: l.on_hand,
                        reserved: l.reserved,
                        safety_stock: l.safety_stock,
                        available: l.available(),
                    })
                    .collect(),
            });
        }
        Ok(pb::GetAvailabilityResponse {
            skus,
            applied_index: shared.applied_index(),
        })
    }

    /// A reservation from this node's applied state (no barrier).
    fn read_reservation(&self, reservation_id: String) -> pb::GetReservationResponse {
        let shared = self.node.shared();
        let Some(found) = shared
            .reservations
            .get(reservation_id.as_str())
            .map(|e| Arc::clone(&e))
        else {
            return pb::GetReservationResponse {
                outcome: pb::Outcome::NotFound as i32,
                reservation_id,
                ..Default::default()
            };
        };
        let answer_outcome = match found.state {
            ReservationState::Open => pb::Outcome::Reserved,
            ReservationState::Consumed => pb::Outcome::Committed,
            ReservationState::Released => pb::Outcome::Released,
            ReservationState::Expired => pb::Outcome::Expired,
        };
        pb::GetReservationResponse {
            outcome: answer_outcome as i32,
            state: state(found.state),
            reservation_id: found.id.to_string(),
            lines: found
                .lines
                .iter()
                .map(|l| pb::Line {
                    sku: l.sku.to_string(),
                    node: l.node.to_string(),
                    qty: l.qty,
                })
                .collect(),
            created_at_ms: found.created_at_ms,
            expires_at_ms: found.expires_at_ms,
            finished_at_ms: found.finished_at_ms,
        }
    }
}

impl InventoryService {
    /// Records a call's status code and latency.
    async fn observed<T>(
        &self,
        method: Method,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = call.await;
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        self.meters.call(method, code, started);
        result.map(Response::new)
    }
}

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

fn level(answer: &StockAnswer) -> (Option<pb::StockLevel>, bool) {
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

fn state(state: ReservationState) -> i32 {
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
    Status::internal("internal error: answer does not match its command")
}

/// The answer of a Sell, Adjust or SetOnHand: outcome, level, short.
fn stock_change(
    m: &Meters,
    method: Method,
    applied: Applied,
) -> Result<(i32, Option<pb::StockLevel>, bool), Status> {
    match applied {
        Applied::StockChange(Ok(answer)) => {
            let (level, short) = level(&answer);
            Ok((m.outcome(method, pb::Outcome::Applied), level, short))
        }
        Applied::StockChange(Err(e)) => Err(status::stock_change(e)),
        other => Err(mismatch(other)),
    }
}

// Requests to commands (INVALID_ARGUMENT on bad input) and answers to
// responses, one pair per write, shared by the unary calls and streams.

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn reserve_command(api: ApiConfig, r: pb::ReserveRequest) -> Result<Command, Status> {
    let ttl_ms =
        resolve_ttl(r.ttl_ms, api.ttl_ms_default, api.ttl_ms_max).map_err(status::invalid)?;
    let lines = r
        .lines
        .into_iter()
        .map(|l| Line {
            sku: l.sku,
            node: l.node,
            qty: l.qty,
        })
        .collect();
    let command = Reserve::new(r.reservation_id, lines, ttl_ms).map_err(status::invalid)?;
    Ok(Command::Reserve(command))
}

fn reserve_answer(m: &Meters, applied: Applied) -> Result<pb::ReserveResponse, Status> {
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

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn commit_command(r: pb::CommitRequest) -> Result<Command, Status> {
    let id = reservation_ref(r.reservation_id).map_err(status::invalid)?;
    Ok(Command::Consume { reservation_id: id })
}

fn commit_answer(m: &Meters, applied: Applied) -> Result<pb::CommitResponse, Status> {
    match applied {
        Applied::Consume(Ok(o)) => Ok(pb::CommitResponse {
            outcome: outcome(m, Method::Commit, o),
        }),
        Applied::Consume(Err(e)) => Err(status::consume(e)),
        other => Err(mismatch(other)),
    }
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn release_command(r: pb::ReleaseRequest) -> Result<Command, Status> {
    let id = reservation_ref(r.reservation_id).map_err(status::invalid)?;
    Ok(Command::Release { reservation_id: id })
}

fn release_answer(m: &Meters, applied: Applied) -> Result<pb::ReleaseResponse, Status> {
    match applied {
        Applied::Release(Ok(o)) => Ok(pb::ReleaseResponse {
            outcome: outcome(m, Method::Release, o),
        }),
        Applied::Release(Err(e)) => Err(status::release(e)),
        other => Err(mismatch(other)),
    }
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn extend_command(api: ApiConfig, r: pb::ExtendRequest) -> Result<Command, Status> {
    let ttl_ms =
        resolve_ttl(r.ttl_ms, api.ttl_ms_default, api.ttl_ms_max).map_err(status::invalid)?;
    let command = Extend::new(r.reservation_id, ttl_ms).map_err(status::invalid)?;
    Ok(Command::Extend(command))
}

fn extend_answer(m: &Meters, applied: Applied) -> Result<pb::ExtendResponse, Status> {
    match applied {
        Applied::Extend(Ok(a)) => Ok(pb::ExtendResponse {
            outcome: outcome(m, Method::Extend, a.outcome),
            expires_at_ms: a.expires_at_ms,
        }),
        Applied::Extend(Err(e)) => Err(status::extend(e)),
        other => Err(mismatch(other)),
    }
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn sell_command(r: pb::SellRequest) -> Result<Command, Status> {
    let command = Sell::new(r.txn_id, r.sku, r.node, r.qty).map_err(status::invalid)?;
    Ok(Command::Sell(command))
}

fn sell_answer(m: &Meters, applied: Applied) -> Result<pb::SellResponse, Status> {
    let (outcome, level, short) = stock_change(m, Method::Sell, applied)?;
    Ok(pb::SellResponse {
        outcome,
        level,
        short,
    })
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn adjust_command(r: pb::AdjustRequest) -> Result<Command, Status> {
    let reason = AdjustReason::from_code(r.reason).map_err(status::invalid)?;
    let command = Adjust::new(r.txn_id, r.sku, r.node, r.delta, reason).map_err(status::invalid)?;
    Ok(Command::Adjust(command))
}

fn adjust_answer(m: &Meters, applied: Applied) -> Result<pb::AdjustResponse, Status> {
    let (outcome, level, short) = stock_change(m, Method::Adjust, applied)?;
    Ok(pb::AdjustResponse {
        outcome,
        level,
        short,
    })
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn set_on_hand_command(r: pb::SetOnHandRequest) -> Result<Command, Status> {
    let command = SetOnHand::new(r.txn_id, r.sku, r.node, r.on_hand, r.expected_on_hand)
        .map_err(status::invalid)?;
    Ok(Command::SetOnHand(command))
}

fn set_on_hand_answer(m: &Meters, applied: Applied) -> Result<pb::SetOnHandResponse, Status> {
    let (outcome, level, short) = stock_change(m, Method::SetOnHand, applied)?;
    Ok(pb::SetOnHandResponse {
        outcome,
        level,
        short,
    })
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn set_safety_stock_command(r: pb::SetSafetyStockRequest) -> Result<Command, Status> {
    let command = SetSafetyStock::new(r.sku, r.node, r.safety_stock).map_err(status::invalid)?;
    Ok(Command::SetSafetyStock(command))
}

fn set_safety_stock_answer(
    m: &Meters,
    applied: Applied,
) -> Result<pb::SetSafetyStockResponse, Status> {
    match applied {
        Applied::SetSafetyStock(Ok(answer)) => {
            let (level, short) = level(&answer);
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

/// A validated command back as the request that builds it: what a node
/// that stopped leading forwards to the new leader. Building the command
/// again from it gives the same command (the TTL is already resolved, the
/// lines already summed and sorted), so a retry is recognised as one.
fn request_of<Req: FromCommand>(command: &Command) -> Req {
    Req::from_command(command)
}

/// Requests that can be rebuilt from the command they were built into.
trait FromCommand {
    fn from_command(command: &Command) -> Self;
}

macro_rules! from_command {
    ($req:ty, $op:ident) => {
        impl FromCommand for $req {
            fn from_command(command: &Command) -> Self {
                match op_of(command) {
                    Op::$op(r) => r,
                    // Each write handler builds its own kind of command.
                    _ => <$req>::default(),
                }
            }
        }
    };
}

from_command!(pb::ReserveRequest, Reserve);
from_command!(pb::CommitRequest, Commit);
from_command!(pb::ReleaseRequest, Release);
from_command!(pb::ExtendRequest, Extend);
from_command!(pb::SellRequest, Sell);
from_command!(pb::AdjustRequest, Adjust);
from_command!(pb::SetOnHandRequest, SetOnHand);
from_command!(pb::SetSafetyStockRequest, SetSafetyStock);

fn op_of(command: &Command) -> Op {
    match command {
        Command::Reserve(c) => Op::Reserve(pb::ReserveRequest {
            reservation_id: c.reservation_id.clone(),
            lines: c
                .lines
                .iter()
                .map(|l| pb::Line {
                    sku: l.sku.clone(),
                    node: l.node.clone(),
                    qty: l.qty,
                })
                .collect(),
            ttl_ms: c.ttl_ms,
        }),
        Command::Consume { reservation_id } => Op::Commit(pb::CommitRequest {
            reservation_id: reservation_id.clone(),
        }),
        Command::Release { reservation_id } => Op::Release(pb::ReleaseRequest {
            reservation_id: reservation_id.clone(),
        }),
        Command::Extend(c) => Op::Extend(pb::ExtendRequest {
            reservation_id: c.reservation_id.clone(),
            ttl_ms: c.ttl_ms,
        }),
        Command::Sell(c) => Op::Sell(pb::SellRequest {
            txn_id: c.txn_id.clone(),
            sku: c.sku.clone(),
            node: c.node.clone(),
            qty: c.qty,
        }),
        Command::Adjust(c) => Op::Adjust(pb::AdjustRequest {
            txn_id: c.txn_id.clone(),
            sku: c.sku.clone(),
            node: c.node.clone(),
            delta: c.delta,
            reason: c.reason.code(),
        }),
        Command::SetOnHand(c) => Op::SetOnHand(pb::SetOnHandRequest {
            txn_id: c.txn_id.clone(),
            sku: c.sku.clone(),
            node: c.node.clone(),
            on_hand: c.on_hand,
            expected_on_hand: c.expected_on_hand,
        }),
        Command::SetSafetyStock(c) => Op::SetSafetyStock(pb::SetSafetyStockRequest {
            sku: c.sku.clone(),
            node: c.node.clone(),
            safety_stock: c.safety_stock,
        }),
    }
}

/// Checks an availability read and asks each SKU and node once (a
/// repeated one is answered once, in the order first asked). Public for
/// the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn checked_availability_request(r: &mut pb::GetAvailabilityRequest) -> Result<(), Status> {
    if r.skus.is_empty() {
        return Err(status::invalid(InvalidInput::Empty { field: "skus" }));
    }
    if r.skus.len() > SKUS_PER_READ_MAX {
        return Err(Status::invalid_argument(format!(
            "{} skus asked; at most {SKUS_PER_READ_MAX} per call",
            r.skus.len()
        )));
    }
    if r.nodes.len() > NODES_PER_READ_MAX {
        return Err(Status::invalid_argument(format!(
            "{} nodes asked; at most {NODES_PER_READ_MAX} per call",
            r.nodes.len()
        )));
    }
    for sku in &r.skus {
        check_name("sku", sku).map_err(status::invalid)?;
    }
    for node in &r.nodes {
        check_name("node", node).map_err(status::invalid)?;
    }
    dedup_in_order(&mut r.skus);
    dedup_in_order(&mut r.nodes);
    let rows = r.skus.len() * r.nodes.len();
    if rows > AVAILABILITY_ROWS_MAX {
        return Err(too_many_rows(rows));
    }
    Ok(())
}

fn too_many_rows(rows: usize) -> Status {
    Status::invalid_argument(format!(
        "the read would answer {rows} (sku, node) rows, more than {AVAILABILITY_ROWS_MAX}; \
         ask for fewer SKUs, or name the nodes"
    ))
}

/// Keeps the first of each repeated name.
fn dedup_in_order(names: &mut Vec<String>) {
    if names.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names.retain(|name| seen.insert(name.clone()));
}

fn stream_error(status: Status) -> R {
    R::Error(pb::StreamError {
        code: status.code() as i32,
        message: status.message().to_string(),
    })
}

fn stream_result<T>(result: Result<T, Status>, wrap: impl FnOnce(T) -> R) -> R {
    match result {
        Ok(value) => wrap(value),
        Err(status) => stream_error(status),
    }
}

/// Runs one operation of a stream alone, exactly as the matching unary
/// call would (forwarding, retries, barriers included).
async fn run_stream_op(
    service: InventoryService,
    request: pb::StreamRequest,
) -> pb::StreamResponse {
    fn done<T>(result: Result<Response<T>, Status>, wrap: impl FnOnce(T) -> R) -> R {
        stream_result(result.map(Response::into_inner), wrap)
    }
    let result = match request.op {
        None => stream_error(Status::invalid_argument(
            "a stream request needs an operation",
        )),
        Some(Op::Reserve(r)) => done(service.reserve(Request::new(r)).await, R::Reserve),
        Some(Op::Commit(r)) => done(service.commit(Request::new(r)).await, R::Commit),
        Some(Op::Release(r)) => done(service.release(Request::new(r)).await, R::Release),
        Some(Op::Extend(r)) => done(service.extend(Request::new(r)).await, R::Extend),
        Some(Op::Sell(r)) => done(service.sell(Request::new(r)).await, R::Sell),
        Some(Op::Adjust(r)) => done(service.adjust(Request::new(r)).await, R::Adjust),
        Some(Op::SetOnHand(r)) => done(service.set_on_hand(Request::new(r)).await, R::SetOnHand),
        Some(Op::SetSafetyStock(r)) => done(
            service.set_safety_stock(Request::new(r)).await,
            R::SetSafetyStock,
        ),
        Some(Op::GetAvailability(r)) => done(
            service.get_availability(Request::new(r)).await,
            R::GetAvailability,
        ),
        Some(Op::GetReservation(r)) => done(
            service.get_reservation(Request::new(r)).await,
            R::GetReservation,
        ),
    };
    pb::StreamResponse {
        id: request.id,
        result: Some(result),
    }
}

/// Turns a grouped write's answer into the response of its kind.
type Shape = fn(&Meters, Applied) -> R;

/// What one message of a stream turned into.
enum Step {
    /// Answered at once (bad input, a LOCAL read).
    Answered(R),
    /// A write that can go into this turn's group, built from the message
    /// (which is not kept: a failed proposal hands the command back).
    Write(Command, Shape),
    /// Must run alone (see [`run_stream_op`]); the operation, given back.
    Alone(Option<Op>),
}

/// Sorts one operation of a stream: the writes go into a group when this
/// node leads, LOCAL reads are answered here, the rest runs alone.
fn stream_step(service: &InventoryService, leading: bool, op: Option<Op>) -> Step {
    let api = service.api;
    let built: Result<(Command, Shape), Status> = match op {
        None => {
            return Step::Answered(stream_error(Status::invalid_argument(
                "a stream request needs an operation",
            )))
        }
        Some(Op::GetAvailability(mut r)) => {
            if r.consistency != pb::Consistency::Local as i32 {
                return Step::Alone(Some(Op::GetAvailability(r)));
            }
            let answer =
                checked_availability_request(&mut r).and_then(|()| service.read_availability(&r));
            return Step::Answered(stream_result(answer, R::GetAvailability));
        }
        Some(Op::GetReservation(r)) => {
            if r.consistency != pb::Consistency::Local as i32 {
                return Step::Alone(Some(Op::GetReservation(r)));
            }
            let answer = check_id("reservation_id", &r.reservation_id)
                .map_err(status::invalid)
                .map(|()| service.read_reservation(r.reservation_id));
            return Step::Answered(stream_result(answer, R::GetReservation));
        }
        Some(write) if !leading => return Step::Alone(Some(write)),
        Some(Op::Reserve(r)) => reserve_command(api, r).map(|c| (c, shape_reserve as Shape)),
        Some(Op::Commit(r)) => commit_command(r).map(|c| (c, shape_commit as Shape)),
        Some(Op::Release(r)) => release_command(r).map(|c| (c, shape_release as Shape)),
        Some(Op::Extend(r)) => extend_command(api, r).map(|c| (c, shape_extend as Shape)),
        Some(Op::Sell(r)) => sell_command(r).map(|c| (c, shape_sell as Shape)),
        Some(Op::Adjust(r)) => adjust_command(r).map(|c| (c, shape_adjust as Shape)),
        Some(Op::SetOnHand(r)) => set_on_hand_command(r).map(|c| (c, shape_set_on_hand as Shape)),
        Some(Op::SetSafetyStock(r)) => {
            set_safety_stock_command(r).map(|c| (c, shape_set_safety_stock as Shape))
        }
    };
    match built {
        Ok((command, shape)) => Step::Write(command, shape),
        Err(status) => Step::Answered(stream_error(status)),
    }
}

/// Defines the [`Shape`] of one kind of grouped write: its answer, as the
/// response of its kind.
macro_rules! shape {
    ($name:ident, $answer:ident, $kind:ident) => {
        fn $name(m: &Meters, applied: Applied) -> R {
            stream_result($answer(m, applied), R::$kind)
        }
    };
}

shape!(shape_reserve, reserve_answer, Reserve);
shape!(shape_commit, commit_answer, Commit);
shape!(shape_release, release_answer, Release);
shape!(shape_extend, extend_answer, Extend);
shape!(shape_sell, sell_answer, Sell);
shape!(shape_adjust, adjust_answer, Adjust);
shape!(shape_set_on_hand, set_on_hand_answer, SetOnHand);
shape!(
    shape_set_safety_stock,
    set_safety_stock_answer,
    SetSafetyStock
);

/// A write of a group in flight: what its answer needs, without the
/// operation itself (its command went to the replication thread).
struct GroupOp {
    id: u64,
    shape: Shape,
}

/// Where a session's answers go: a group's answers at a time (see
/// [`crate::chunked`]), at most [`STREAM_IN_FLIGHT_MAX`] waiting unsent.
type Outbound = ChunkSender<Result<pb::StreamResponse, Status>>;

/// One `Stream` call, until the client closes its side and every
/// operation is answered. A turn:
///
/// 1. Wait for a message (while fewer than [`STREAM_IN_FLIGHT_MAX`]
///    operations are in flight; beyond that the stream is not read, which
///    pushes back on the client) or for a group's answers.
/// 2. Take every further message already received, up to the bound.
/// 3. Answer what can be answered at once; hand the writes to the
///    replication thread as one group; start the rest alone.
/// 4. When a group's answers come back, send each response; a write whose
///    proposal failed (leadership changed) is retried alone, as a unary call
///    retries, with its id making that safe.
async fn session(
    service: InventoryService,
    mut inbound: tonic::Streaming<pb::StreamRequest>,
    tx: Outbound,
) {
    // Operations in flight: each holds a permit until it is answered.
    let permits = Arc::new(Semaphore::new(STREAM_IN_FLIGHT_MAX));
    let (answers_tx, mut answers_rx) = mpsc::unbounded_channel::<GroupAnswer>();
    // Groups in flight: their operations, in the order of their commands.
    let mut groups: HashMap<u64, Vec<GroupOp>> = HashMap::new();
    let mut next_group = 0u64;
    let mut reading = true;
    while reading || !groups.is_empty() {
        let room = permits.available_permits();
        tokio::select! {
            biased;
            Some(answer) = answers_rx.recv() => {
                let Some(ops) = groups.remove(&answer.id) else {
                    continue;
                };
                permits.add_permits(ops.len());
                if !finish_group(&service, &permits, &tx, ops, answer.answers).await {
                    return;
                }
            }
            first = inbound.message(), if reading && room > 0 => {
                let mut received = Vec::new();
                match first {
                    Ok(Some(request)) => received.push(request),
                    Ok(None) => reading = false,
                    Err(status) => {
                        let _ = tx.send_one(Err(status)).await;
                        return;
                    }
                }
                while reading && received.len() < room {
                    match ready_now(inbound.message()) {
                        Some(Ok(Some(request))) => received.push(request),
                        Some(Ok(None)) => reading = false,
                        Some(Err(status)) => {
                            let _ = tx.send_one(Err(status)).await;
                            return;
                        }
                        None => break,
                    }
                }
                if received.is_empty() {
                    continue;
                }
                let group = next_group;
                next_group += 1;
                let Some((ops, commands)) = start(&service, &permits, &tx, received).await else {
                    return;
                };
                if ops.is_empty() {
                    continue;
                }
                let Ok(taken) = permits.try_acquire_many(ops.len() as u32) else {
                    return;
                };
                taken.forget();
                let reply = GroupReply { id: group, tx: answers_tx.clone() };
                match service.node.submit_group(commands, reply) {
                    Ok(()) => {
                        groups.insert(group, ops);
                    }
                    Err(e) => {
                        permits.add_permits(ops.len());
                        let status = status::submit(e);
                        let responses = ops
                            .into_iter()
                            .map(|op| Ok(pb::StreamResponse { id: op.id, result: Some(stream_error(status.clone())) }))
                            .collect();
                        if tx.send(responses).await.is_err() {
                            return;
                        }
                    }
                }
            }
            // An operation running alone finished: there is room again.
            _ = permits.acquire(), if reading && room == 0 => {}
        }
    }
}

/// Turn 3 of [`session`]: answers, starts alone, or collects into the
/// group each received operation. Returns the group's operations and
/// commands, or None once the client is gone.
async fn start(
    service: &InventoryService,
    permits: &Arc<Semaphore>,
    tx: &Outbound,
    received: Vec<pb::StreamRequest>,
) -> Option<(Vec<GroupOp>, Vec<Command>)> {
    let status = service.node.status();
    let mut ops = Vec::with_capacity(received.len());
    let mut commands = Vec::with_capacity(received.len());
    let mut answered = Vec::new();
    for request in received {
        let id = request.id;
        let step = if status.removed {
            // Not even a LOCAL read: the state stopped at the removal.
            Step::Answered(stream_error(status::removed()))
        } else {
            stream_step(service, status.is_leader, request.op)
        };
        match step {
            Step::Answered(result) => answered.push(Ok(pb::StreamResponse {
                id,
                result: Some(result),
            })),
            Step::Write(command, shape) => {
                ops.push(GroupOp { id, shape });
                commands.push(command);
            }
            Step::Alone(op) => alone(service, permits, tx, pb::StreamRequest { id, op })?,
        }
    }
    tx.send(answered).await.ok()?;
    Some((ops, commands))
}

/// Runs one operation of a stream alone, holding one of its permits.
fn alone(
    service: &InventoryService,
    permits: &Arc<Semaphore>,
    tx: &Outbound,
    request: pb::StreamRequest,
) -> Option<()> {
    let permit = permits.clone().try_acquire_owned().ok()?;
    let service = service.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let response = run_stream_op(service, request).await;
        let _ = tx.send_one(Ok(response)).await;
        drop(permit);
    });
    Some(())
}

/// Turn 4 of [`session`]: sends a group's responses. False once the
/// client is gone.
async fn finish_group(
    service: &InventoryService,
    permits: &Arc<Semaphore>,
    tx: &Outbound,
    ops: Vec<GroupOp>,
    answers: Vec<Result<Applied, Unanswered>>,
) -> bool {
    if answers.len() != ops.len() {
        tracing::error!(
            ops = ops.len(),
            answers = answers.len(),
            "a group's answers do not match its operations"
        );
    }
    let mut answers = answers.into_iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match answers.next() {
            Some(Ok(applied)) => (op.shape)(&service.meters, applied),
            // Leadership changed under the proposal, or this node stopped
            // leading: retry alone, as the unary call would, with the
            // operation rebuilt from the command handed back (the same
            // command again: see `request_of`).
            Some(Err(Unanswered {
                command: Some(command),
                ..
            })) => {
                let request = pb::StreamRequest {
                    id: op.id,
                    op: Some(op_of(&command)),
                };
                if alone(service, permits, tx, request).is_none() {
                    return false;
                }
                continue;
            }
            // Only at shutdown (`ProposeError::ShuttingDown`): the command
            // stayed behind with the node.
            Some(Err(Unanswered {
                error,
                command: None,
            })) => stream_error(status::submit(SubmitError::Propose(error))),
            None => stream_error(Status::internal(
                "internal error: an operation of the stream got no answer",
            )),
        };
        responses.push(Ok(pb::StreamResponse {
            id: op.id,
            result: Some(result),
        }));
    }
    tx.send(responses).await.is_ok()
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    type StreamStream = Chunked<Result<pb::StreamResponse, Status>>;

    async fn stream(
        &self,
        request: Request<tonic::Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut service = self.clone();
        service.session_token = request
            .metadata()
            .get(crate::server::forward::AUTHORIZATION)
            .cloned();
        let inbound = request.into_inner();
        // Room for every operation in flight: answering never waits on the
        // client unless it stops reading.
        let (tx, rx) = chunked(Some(STREAM_IN_FLIGHT_MAX));
        tokio::spawn(session(service, inbound, tx));
        Ok(Response::new(rx))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let api = self.api;
        self.observed(
            Method::Reserve,
            self.write(
                request,
                |r| reserve_command(api, r),
                |applied| reserve_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.reserve(call).await }),
            ),
        )
        .await
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        self.observed(
            Method::Commit,
            self.write(
                request,
                commit_command,
                |applied| commit_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.commit(call).await }),
            ),
        )
        .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.observed(
            Method::Release,
            self.write(
                request,
                release_command,
                |applied| release_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.release(call).await }),
            ),
        )
        .await
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        let api = self.api;
        self.observed(
            Method::Extend,
            self.write(
                request,
                |r| extend_command(api, r),
                |applied| extend_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.extend(call).await }),
            ),
        )
        .await
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        self.observed(Method::GetReservation, async {
            let r = request.into_inner();
            check_id("reservation_id", &r.reservation_id).map_err(status::invalid)?;
            self.barrier(r.consistency).await?;
            Ok(self.read_reservation(r.reservation_id))
        })
        .await
    }

    async fn sell(
        &self,
        request: Request<pb::SellRequest>,
    ) -> Result<Response<pb::SellResponse>, Status> {
        self.observed(
            Method::Sell,
            self.write(
                request,
                sell_command,
                |applied| sell_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.sell(call).await }),
            ),
        )
        .await
    }

    async fn adjust(
        &self,
        request: Request<pb::AdjustRequest>,
    ) -> Result<Response<pb::AdjustResponse>, Status> {
        self.observed(
            Method::Adjust,
            self.write(
                request,
                adjust_command,
                |applied| adjust_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.adjust(call).await }),
            ),
        )
        .await
    }

    async fn set_on_hand(
        &self,
        request: Request<pb::SetOnHandRequest>,
    ) -> Result<Response<pb::SetOnHandResponse>, Status> {
        self.observed(
            Method::SetOnHand,
            self.write(
                request,
                set_on_hand_command,
                |applied| set_on_hand_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.set_on_hand(call).await }),
            ),
        )
        .await
    }

    async fn set_safety_stock(
        &self,
        request: Request<pb::SetSafetyStockRequest>,
    ) -> Result<Response<pb::SetSafetyStockResponse>, Status> {
        self.observed(
            Method::SetSafetyStock,
            self.write(
                request,
                set_safety_stock_command,
                |applied| set_safety_stock_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.set_safety_stock(call).await }),
            ),
        )
        .await
    }

    async fn get_availability(
        &self,
        request: Request<pb::GetAvailabilityRequest>,
    ) -> Result<Response<pb::GetAvailabilityResponse>, Status> {
        self.observed(Method::GetAvailability, async {
            let mut r = request.into_inner();
            checked_availability_request(&mut r)?;
            self.barrier(r.consistency).await?;
            self.read_availability(&r)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> ApiConfig {
        ApiConfig {
            ttl_ms_default: 60_000,
            ttl_ms_max: 3_600_000,
        }
    }

    fn reserve_op() -> pb::ReserveRequest {
        pb::ReserveRequest {
            reservation_id: "o-1".into(),
            lines: vec![
                pb::Line {
                    sku: "b".into(),
                    node: "n".into(),
                    qty: 2,
                },
                pb::Line {
                    sku: "a".into(),
                    node: "n".into(),
                    qty: 1,
                },
                pb::Line {
                    sku: "b".into(),
                    node: "n".into(),
                    qty: 3,
                },
            ],
            ttl_ms: 0,
        }
    }

    /// A node that stopped leading forwards the request rebuilt from its
    /// command: building that request again must give the same command, or
    /// the retry would be refused as an id reused with another payload.
    #[test]
    fn requests_rebuilt_from_commands_build_the_same_commands() {
        let commands = vec![
            reserve_command(api(), reserve_op()).unwrap(),
            commit_command(pb::CommitRequest {
                reservation_id: "o-1".into(),
            })
            .unwrap(),
            release_command(pb::ReleaseRequest {
                reservation_id: "o-2".into(),
            })
            .unwrap(),
            extend_command(
                api(),
                pb::ExtendRequest {
                    reservation_id: "o-3".into(),
                    ttl_ms: 0,
                },
            )
            .unwrap(),
            sell_command(pb::SellRequest {
                txn_id: "t".into(),
                sku: "s".into(),
                node: "n".into(),
                qty: 2,
            })
            .unwrap(),
            adjust_command(pb::AdjustRequest {
                txn_id: "t2".into(),
                sku: "s".into(),
                node: "n".into(),
                delta: -2,
                reason: pb::AdjustReason::Damage as i32,
            })
            .unwrap(),
            set_on_hand_command(pb::SetOnHandRequest {
                txn_id: "t3".into(),
                sku: "s".into(),
                node: "n".into(),
                on_hand: 0,
                expected_on_hand: Some(4),
            })
            .unwrap(),
            set_safety_stock_command(pb::SetSafetyStockRequest {
                sku: "s".into(),
                node: "n".into(),
                safety_stock: 3,
            })
            .unwrap(),
        ];
        for command in commands {
            let rebuilt = match op_of(&command) {
                Op::Reserve(r) => {
                    reserve_command(api(), request_of::<pb::ReserveRequest>(&command))
                        .map(|c| (c, r.ttl_ms))
                }
                Op::Commit(_) => commit_command(request_of(&command)).map(|c| (c, 0)),
                Op::Release(_) => release_command(request_of(&command)).map(|c| (c, 0)),
                Op::Extend(r) => extend_command(api(), request_of(&command)).map(|c| (c, r.ttl_ms)),
                Op::Sell(_) => sell_command(request_of(&command)).map(|c| (c, 0)),
                Op::Adjust(_) => adjust_command(request_of(&command)).map(|c| (c, 0)),
                Op::SetOnHand(_) => set_on_hand_command(request_of(&command)).map(|c| (c, 0)),
                Op::SetSafetyStock(_) => {
                    set_safety_stock_command(request_of(&command)).map(|c| (c, 0))
                }
                other => panic!("not a write: {other:?}"),
            };
            let (again, _) = rebuilt.unwrap();
            assert_eq!(again, command);
        }
        // The default TTL was resolved into the command, so the rebuilt
        // request names it: a leader with another default still agrees.
        let Op::Reserve(r) = op_of(&reserve_command(api(), reserve_op()).unwrap()) else {
            panic!("not a reserve");
        };
        assert_eq!(r.ttl_ms, 60_000);
        assert_eq!(r.lines.len(), 2);
    }
}
