//! The public `stockraft.v1.Inventory` service: a thin adapter.
//!
//! Each call: validate and convert the protobuf request into a command
//! (INVALID_ARGUMENT on bad input), hand it to the replication thread, wait
//! until it is committed and applied, and convert the answer back, mapping
//! typed errors to status codes in [`super::status`]. Reads go straight to
//! the shared state, after a ReadIndex barrier when linearizable.

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use super::node::NodeHandle;
use super::status;
use crate::inventory::command::{
    check_id, check_name, reservation_ref, resolve_ttl, Adjust, AdjustReason, Extend, Line,
    Reserve, Sell, SetOnHand, SetSafetyStock,
};
use crate::inventory::{Applied, Command, InvalidInput, Outcome, ReservationState, StockAnswer};
use crate::limits::{NODES_PER_READ_MAX, SKUS_PER_READ_MAX};
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_server::Inventory;

/// Reservation settings applied where requests enter.
#[derive(Debug, Clone, Copy)]
pub struct ApiConfig {
    pub ttl_ms_default: u64,
    pub ttl_ms_max: u64,
}

pub struct InventoryService {
    node: NodeHandle,
    api: ApiConfig,
}

impl InventoryService {
    pub fn new(node: NodeHandle, api: ApiConfig) -> InventoryService {
        InventoryService { node, api }
    }

    async fn submit(&self, command: Command) -> Result<Applied, Status> {
        self.node.submit(command).await.map_err(status::submit)
    }

    async fn barrier(&self, consistency: i32) -> Result<(), Status> {
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => {
                self.node.read_barrier().await.map_err(status::submit)?;
                Ok(())
            }
            Ok(pb::Consistency::Local) => Ok(()),
            Err(_) => Err(status::invalid(InvalidInput::UnknownEnum {
                field: "consistency",
                value: consistency,
            })),
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

impl InventoryService {
    async fn stock_change(
        &self,
        method: &'static str,
        command: Command,
    ) -> Result<(i32, Option<pb::StockLevel>, bool), Status> {
        match self.submit(command).await? {
            Applied::StockChange(Ok(answer)) => {
                let (level, short) = level(&answer);
                Ok((applied_outcome(method), level, short))
            }
            Applied::StockChange(Err(e)) => Err(status::stock_change(e)),
            other => Err(mismatch(other)),
        }
    }
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        observed("Reserve", async {
            let r = request.into_inner();
            let ttl_ms = resolve_ttl(r.ttl_ms, self.api.ttl_ms_default, self.api.ttl_ms_max)
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
            let command = Reserve::new(r.reservation_id, lines, ttl_ms).map_err(status::invalid)?;
            match self.submit(Command::Reserve(command)).await? {
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
            }
        })
        .await
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        observed("Commit", async {
            let id =
                reservation_ref(request.into_inner().reservation_id).map_err(status::invalid)?;
            match self.submit(Command::Consume { reservation_id: id }).await? {
                Applied::Consume(Ok(o)) => Ok(pb::CommitResponse {
                    outcome: outcome("Commit", o),
                }),
                Applied::Consume(Err(e)) => Err(status::consume(e)),
                other => Err(mismatch(other)),
            }
        })
        .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        observed("Release", async {
            let id =
                reservation_ref(request.into_inner().reservation_id).map_err(status::invalid)?;
            match self.submit(Command::Release { reservation_id: id }).await? {
                Applied::Release(Ok(o)) => Ok(pb::ReleaseResponse {
                    outcome: outcome("Release", o),
                }),
                Applied::Release(Err(e)) => Err(status::release(e)),
                other => Err(mismatch(other)),
            }
        })
        .await
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        observed("Extend", async {
            let r = request.into_inner();
            let ttl_ms = resolve_ttl(r.ttl_ms, self.api.ttl_ms_default, self.api.ttl_ms_max)
                .map_err(status::invalid)?;
            let command = Extend::new(r.reservation_id, ttl_ms).map_err(status::invalid)?;
            match self.submit(Command::Extend(command)).await? {
                Applied::Extend(Ok(a)) => Ok(pb::ExtendResponse {
                    outcome: outcome("Extend", a.outcome),
                    expires_at_ms: a.expires_at_ms,
                }),
                Applied::Extend(Err(e)) => Err(status::extend(e)),
                other => Err(mismatch(other)),
            }
        })
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
                .map(|e| e.clone())
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
        observed("Sell", async {
            let r = request.into_inner();
            let command = Sell::new(r.txn_id, r.sku, r.node, r.qty).map_err(status::invalid)?;
            let (outcome, level, short) = self.stock_change("Sell", Command::Sell(command)).await?;
            Ok(pb::SellResponse {
                outcome,
                level,
                short,
            })
        })
        .await
    }

    async fn adjust(
        &self,
        request: Request<pb::AdjustRequest>,
    ) -> Result<Response<pb::AdjustResponse>, Status> {
        observed("Adjust", async {
            let r = request.into_inner();
            let reason = AdjustReason::from_code(r.reason).map_err(status::invalid)?;
            let command =
                Adjust::new(r.txn_id, r.sku, r.node, r.delta, reason).map_err(status::invalid)?;
            let (outcome, level, short) = self
                .stock_change("Adjust", Command::Adjust(command))
                .await?;
            Ok(pb::AdjustResponse {
                outcome,
                level,
                short,
            })
        })
        .await
    }

    async fn set_on_hand(
        &self,
        request: Request<pb::SetOnHandRequest>,
    ) -> Result<Response<pb::SetOnHandResponse>, Status> {
        observed("SetOnHand", async {
            let r = request.into_inner();
            let command = SetOnHand::new(r.txn_id, r.sku, r.node, r.on_hand, r.expected_on_hand)
                .map_err(status::invalid)?;
            let (outcome, level, short) = self
                .stock_change("SetOnHand", Command::SetOnHand(command))
                .await?;
            Ok(pb::SetOnHandResponse {
                outcome,
                level,
                short,
            })
        })
        .await
    }

    async fn set_safety_stock(
        &self,
        request: Request<pb::SetSafetyStockRequest>,
    ) -> Result<Response<pb::SetSafetyStockResponse>, Status> {
        observed("SetSafetyStock", async {
            let r = request.into_inner();
            let command =
                SetSafetyStock::new(r.sku, r.node, r.safety_stock).map_err(status::invalid)?;
            match self.submit(Command::SetSafetyStock(command)).await? {
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
            }
        })
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
