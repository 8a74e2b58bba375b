//! The public `stockraft.v1.Inventory` service: a thin adapter.
//!
//! Each call: validate and convert the protobuf request into a command
//! (INVALID_ARGUMENT on bad input), hand it to the replication thread, wait
//! until it is committed and applied, and convert the answer back, mapping
//! typed errors to status codes in [`super::status`]. Reads go straight to
//! the shared state, after a ReadIndex barrier when linearizable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::forward::{Forwarder, Route};
use super::node::{NodeHandle, SubmitError};
use super::status;
use crate::inventory::command::{
    check_id, check_name, reservation_ref, resolve_ttl, Adjust, AdjustReason, Extend, Line,
    Reserve, Sell, SetOnHand, SetSafetyStock,
};
use crate::inventory::{Applied, Command, InvalidInput, Outcome, ReservationState, StockAnswer};
use crate::limits::{NODES_PER_READ_MAX, SKUS_PER_READ_MAX, STREAM_IN_FLIGHT_MAX};
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_client::InventoryClient;
use crate::proto::v1::inventory_server::Inventory;

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
}

/// A call of the same method on the leader.
type Forwarded<Resp> = Pin<Box<dyn Future<Output = Result<Response<Resp>, Status>> + Send>>;

impl InventoryService {
    pub fn new(node: NodeHandle, api: ApiConfig, forwarder: Arc<Forwarder>) -> InventoryService {
        InventoryService {
            node,
            api,
            forwarder,
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
        Req: Clone + Send + 'static,
    {
        let deadline = Instant::now() + self.forwarder.budget;
        let forwarded = Forwarder::is_forwarded(request.metadata());
        let body = request.into_inner();
        let command = build(body.clone())?;
        loop {
            if let Route::Leader { id, channel } = self.forwarder.route(forwarded, deadline).await?
            {
                let mut call = Request::new(body.clone());
                Forwarder::mark(&mut call, deadline);
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
            match self.node.submit(command.clone()).await {
                Ok(applied) => return answer(applied),
                Err(SubmitError::Propose(e)) if Instant::now() < deadline => {
                    tracing::debug!("retrying a proposal: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(status::submit(e)),
            }
        }
    }

    /// Waits until a linearizable read may be served here (ReadIndex, on a
    /// follower through the leader), retrying through elections.
    async fn barrier(&self, consistency: i32) -> Result<(), Status> {
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => {}
            Ok(pb::Consistency::Local) => return Ok(()),
            Err(_) => {
                return Err(status::invalid(InvalidInput::UnknownEnum {
                    field: "consistency",
                    value: consistency,
                }))
            }
        }
        let deadline = Instant::now() + self.forwarder.budget;
        loop {
            match self.node.read_barrier().await {
                Ok(_) => return Ok(()),
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
}

/// Records calls, status codes and latency per method.
async fn observed<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.await;
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    metrics::counter!("stockraft_requests_total", "method" => method, "code" => status::code_label(code))
        .increment(1);
    metrics::histogram!("stockraft_request_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    result.map(Response::new)
}

fn outcome(method: &'static str, outcome: Outcome) -> i32 {
    let (value, label) = match outcome {
        Outcome::Reserved => (pb::Outcome::Reserved, "RESERVED"),
        Outcome::InsufficientStock => (pb::Outcome::InsufficientStock, "INSUFFICIENT_STOCK"),
        Outcome::Consumed => (pb::Outcome::Committed, "COMMITTED"),
        Outcome::Released => (pb::Outcome::Released, "RELEASED"),
        Outcome::Expired => (pb::Outcome::Expired, "EXPIRED"),
        Outcome::NotFound => (pb::Outcome::NotFound, "NOT_FOUND"),
    };
    metrics::counter!("stockraft_outcomes_total", "method" => method, "outcome" => label)
        .increment(1);
    value as i32
}

fn applied_outcome(method: &'static str) -> i32 {
    metrics::counter!("stockraft_outcomes_total", "method" => method, "outcome" => "APPLIED")
        .increment(1);
    pb::Outcome::Applied as i32
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
    method: &'static str,
    applied: Applied,
) -> Result<(i32, Option<pb::StockLevel>, bool), Status> {
    match applied {
        Applied::StockChange(Ok(answer)) => {
            let (level, short) = level(&answer);
            Ok((applied_outcome(method), level, short))
        }
        Applied::StockChange(Err(e)) => Err(status::stock_change(e)),
        other => Err(mismatch(other)),
    }
}

/// Runs one operation of a stream as the matching unary call would.
async fn run_stream_op(
    service: InventoryService,
    request: pb::StreamRequest,
) -> pb::StreamResponse {
    use pb::stream_request::Op;
    use pb::stream_response::Result as R;
    fn done<T>(result: Result<Response<T>, Status>, wrap: impl FnOnce(T) -> R) -> R {
        match result {
            Ok(response) => wrap(response.into_inner()),
            Err(status) => R::Error(pb::StreamError {
                code: status.code() as i32,
                message: status.message().to_string(),
            }),
        }
    }
    let result = match request.op {
        None => R::Error(pb::StreamError {
            code: Code::InvalidArgument as i32,
            message: "a stream request needs an operation".into(),
        }),
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

#[tonic::async_trait]
impl Inventory for InventoryService {
    type StreamStream = tokio_stream::wrappers::ReceiverStream<Result<pb::StreamResponse, Status>>;

    async fn stream(
        &self,
        request: Request<tonic::Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_IN_FLIGHT_MAX);
        let service = self.clone();
        tokio::spawn(async move {
            // At most STREAM_IN_FLIGHT_MAX operations run at once; beyond
            // that the stream is not read, which pushes back on the client.
            let permits = Arc::new(tokio::sync::Semaphore::new(STREAM_IN_FLIGHT_MAX));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let next = match inbound.message().await {
                    Ok(Some(next)) => next,
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let service = service.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let response = run_stream_op(service, next).await;
                    let _ = tx.send(Ok(response)).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let api = self.api;
        observed(
            "Reserve",
            self.write(
                request,
                |r| {
                    let ttl_ms = resolve_ttl(r.ttl_ms, api.ttl_ms_default, api.ttl_ms_max)
                        .map_err(status::invalid)?;
                    let lines = r
                        .lines
                        .into_iter()
                        .map(|l| Line {
                            sku: l.sku,
                            node: l.node,
                            qty: l.qty,
                        })
                        .collect();
                    let command =
                        Reserve::new(r.reservation_id, lines, ttl_ms).map_err(status::invalid)?;
                    Ok(Command::Reserve(command))
                },
                |applied| match applied {
                    Applied::Reserve(Ok(a)) => Ok(pb::ReserveResponse {
                        outcome: outcome("Reserve", a.outcome),
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
                },
                |mut leader, call| Box::pin(async move { leader.reserve(call).await }),
            ),
        )
        .await
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        observed(
            "Commit",
            self.write(
                request,
                |r| {
                    let id = reservation_ref(r.reservation_id).map_err(status::invalid)?;
                    Ok(Command::Consume { reservation_id: id })
                },
                |applied| match applied {
                    Applied::Consume(Ok(o)) => Ok(pb::CommitResponse {
                        outcome: outcome("Commit", o),
                    }),
                    Applied::Consume(Err(e)) => Err(status::consume(e)),
                    other => Err(mismatch(other)),
                },
                |mut leader, call| Box::pin(async move { leader.commit(call).await }),
            ),
        )
        .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        observed(
            "Release",
            self.write(
                request,
                |r| {
                    let id = reservation_ref(r.reservation_id).map_err(status::invalid)?;
                    Ok(Command::Release { reservation_id: id })
                },
                |applied| match applied {
                    Applied::Release(Ok(o)) => Ok(pb::ReleaseResponse {
                        outcome: outcome("Release", o),
                    }),
                    Applied::Release(Err(e)) => Err(status::release(e)),
                    other => Err(mismatch(other)),
                },
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
        observed(
            "Extend",
            self.write(
                request,
                |r| {
                    let ttl_ms = resolve_ttl(r.ttl_ms, api.ttl_ms_default, api.ttl_ms_max)
                        .map_err(status::invalid)?;
                    let command = Extend::new(r.reservation_id, ttl_ms).map_err(status::invalid)?;
                    Ok(Command::Extend(command))
                },
                |applied| match applied {
                    Applied::Extend(Ok(a)) => Ok(pb::ExtendResponse {
                        outcome: outcome("Extend", a.outcome),
                        expires_at_ms: a.expires_at_ms,
                    }),
                    Applied::Extend(Err(e)) => Err(status::extend(e)),
                    other => Err(mismatch(other)),
                },
                |mut leader, call| Box::pin(async move { leader.extend(call).await }),
            ),
        )
        .await
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        observed("GetReservation", async {
            let r = request.into_inner();
            check_id("reservation_id", &r.reservation_id).map_err(status::invalid)?;
            self.barrier(r.consistency).await?;
            let shared = self.node.shared();
            let Some(found) = shared
                .reservations
                .get(r.reservation_id.as_str())
                .map(|e| Arc::clone(&e))
            else {
                return Ok(pb::GetReservationResponse {
                    outcome: pb::Outcome::NotFound as i32,
                    reservation_id: r.reservation_id,
                    ..Default::default()
                });
            };
            let answer_outcome = match found.state {
                ReservationState::Open => pb::Outcome::Reserved,
                ReservationState::Consumed => pb::Outcome::Committed,
                ReservationState::Released => pb::Outcome::Released,
                ReservationState::Expired => pb::Outcome::Expired,
            };
            Ok(pb::GetReservationResponse {
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
            })
        })
        .await
    }

    async fn sell(
        &self,
        request: Request<pb::SellRequest>,
    ) -> Result<Response<pb::SellResponse>, Status> {
        observed(
            "Sell",
            self.write(
                request,
                |r| {
                    let command =
                        Sell::new(r.txn_id, r.sku, r.node, r.qty).map_err(status::invalid)?;
                    Ok(Command::Sell(command))
                },
                |applied| {
                    let (outcome, level, short) = stock_change("Sell", applied)?;
                    Ok(pb::SellResponse {
                        outcome,
                        level,
                        short,
                    })
                },
                |mut leader, call| Box::pin(async move { leader.sell(call).await }),
            ),
        )
        .await
    }

    async fn adjust(
        &self,
        request: Request<pb::AdjustRequest>,
    ) -> Result<Response<pb::AdjustResponse>, Status> {
        observed(
            "Adjust",
            self.write(
                request,
                |r| {
                    let reason = AdjustReason::from_code(r.reason).map_err(status::invalid)?;
                    let command = Adjust::new(r.txn_id, r.sku, r.node, r.delta, reason)
                        .map_err(status::invalid)?;
                    Ok(Command::Adjust(command))
                },
                |applied| {
                    let (outcome, level, short) = stock_change("Adjust", applied)?;
                    Ok(pb::AdjustResponse {
                        outcome,
                        level,
                        short,
                    })
                },
                |mut leader, call| Box::pin(async move { leader.adjust(call).await }),
            ),
        )
        .await
    }

    async fn set_on_hand(
        &self,
        request: Request<pb::SetOnHandRequest>,
    ) -> Result<Response<pb::SetOnHandResponse>, Status> {
        observed(
            "SetOnHand",
            self.write(
                request,
                |r| {
                    let command =
                        SetOnHand::new(r.txn_id, r.sku, r.node, r.on_hand, r.expected_on_hand)
                            .map_err(status::invalid)?;
                    Ok(Command::SetOnHand(command))
                },
                |applied| {
                    let (outcome, level, short) = stock_change("SetOnHand", applied)?;
                    Ok(pb::SetOnHandResponse {
                        outcome,
                        level,
                        short,
                    })
                },
                |mut leader, call| Box::pin(async move { leader.set_on_hand(call).await }),
            ),
        )
        .await
    }

    async fn set_safety_stock(
        &self,
        request: Request<pb::SetSafetyStockRequest>,
    ) -> Result<Response<pb::SetSafetyStockResponse>, Status> {
        observed(
            "SetSafetyStock",
            self.write(
                request,
                |r| {
                    let command = SetSafetyStock::new(r.sku, r.node, r.safety_stock)
                        .map_err(status::invalid)?;
                    Ok(Command::SetSafetyStock(command))
                },
                |applied| match applied {
                    Applied::SetSafetyStock(Ok(answer)) => {
                        let (level, short) = level(&answer);
                        Ok(pb::SetSafetyStockResponse {
                            outcome: applied_outcome("SetSafetyStock"),
                            level,
                            short,
                        })
                    }
                    Applied::SetSafetyStock(Err(e)) => Err(status::capacity(e)),
                    other => Err(mismatch(other)),
                },
                |mut leader, call| Box::pin(async move { leader.set_safety_stock(call).await }),
            ),
        )
        .await
    }

    async fn get_availability(
        &self,
        request: Request<pb::GetAvailabilityRequest>,
    ) -> Result<Response<pb::GetAvailabilityResponse>, Status> {
        observed("GetAvailability", async {
            let r = request.into_inner();
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
            self.barrier(r.consistency).await?;
            let shared = self.node.shared();
            let mut skus = Vec::with_capacity(r.skus.len());
            for sku in &r.skus {
                let a = shared.stock.availability(sku, &r.nodes);
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
        })
        .await
    }
}
