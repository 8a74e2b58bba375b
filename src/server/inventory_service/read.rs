//! The read path of a call: checks, the ReadIndex barrier of a
//! linearizable read, and the answer read from this node's applied state.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Status;

use super::answer::state;
use super::InventoryService;
use crate::inventory::command::check_name;
use crate::inventory::{InvalidInput, ReservationState};
use crate::limits::{AVAILABILITY_ROWS_MAX, NODES_PER_READ_MAX, SKUS_PER_READ_MAX};
use crate::proto::v1 as pb;
use crate::replica::ReadError;
use crate::server::node::SubmitError;
use crate::server::status;

impl InventoryService {
    /// Waits until a linearizable read may be served here (ReadIndex, on a
    /// follower through the leader), retrying through elections.
    pub(super) async fn barrier(&self, consistency: i32) -> Result<(), Status> {
        let Ok(level) = pb::Consistency::try_from(consistency) else {
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
        if level == pb::Consistency::Local {
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
    pub(super) fn read_availability(
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
    pub(super) fn read_reservation(&self, reservation_id: String) -> pb::GetReservationResponse {
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

/// Checks an availability read and asks each SKU and node once (a
/// repeated one is answered once, in the order first asked). Public for
/// the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn checked_availability_request(r: &mut pb::GetAvailabilityRequest) -> Result<(), Status> {
    if r.skus.is_empty() {
        return Err(status::invalid(InvalidInput::Empty { field: "skus" }));
    }
    if r.skus.len() > SKUS_PER_READ_MAX {
        return Err(status::invalid(InvalidInput::TooManyItems {
            field: "skus",
            count: r.skus.len(),
            max: SKUS_PER_READ_MAX,
        }));
    }
    if r.nodes.len() > NODES_PER_READ_MAX {
        return Err(status::invalid(InvalidInput::TooManyItems {
            field: "nodes",
            count: r.nodes.len(),
            max: NODES_PER_READ_MAX,
        }));
    }
    for (index, sku) in r.skus.iter().enumerate() {
        check_name("sku", sku).map_err(|e| status::invalid_element("skus", index, e))?;
    }
    for (index, node) in r.nodes.iter().enumerate() {
        check_name("node", node).map_err(|e| status::invalid_element("nodes", index, e))?;
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
    status::invalid(InvalidInput::TooManyRows {
        rows,
        max: AVAILABILITY_ROWS_MAX,
    })
}

/// Keeps the first of each repeated name.
fn dedup_in_order(names: &mut Vec<String>) {
    if names.len() < 2 {
        return;
    }
    let mut seen = HashSet::with_capacity(names.len());
    names.retain(|name| seen.insert(name.clone()));
}
