//! Requests to commands and back.
//!
//! Each write's request is validated into its command here (INVALID_ARGUMENT
//! on bad input), the same way for unary calls and streams. The reverse,
//! a command rebuilt into its request, is what a node that stopped leading
//! forwards to the new leader.

use tonic::Status;

use super::ApiConfig;
use crate::inventory::command::{
    reservation_ref, resolve_ttl, Adjust, AdjustReason, Extend, Line, Reserve, Sell, SetOnHand,
    SetSafetyStock,
};
use crate::inventory::Command;
use crate::proto::v1 as pb;
use crate::server::status;
use pb::stream_request::Op;

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

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn commit_command(r: pb::CommitRequest) -> Result<Command, Status> {
    let id = reservation_ref(r.reservation_id).map_err(status::invalid)?;
    Ok(Command::Consume { reservation_id: id })
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn release_command(r: pb::ReleaseRequest) -> Result<Command, Status> {
    let id = reservation_ref(r.reservation_id).map_err(status::invalid)?;
    Ok(Command::Release { reservation_id: id })
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn extend_command(api: ApiConfig, r: pb::ExtendRequest) -> Result<Command, Status> {
    let ttl_ms =
        resolve_ttl(r.ttl_ms, api.ttl_ms_default, api.ttl_ms_max).map_err(status::invalid)?;
    let command = Extend::new(r.reservation_id, ttl_ms).map_err(status::invalid)?;
    Ok(Command::Extend(command))
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn sell_command(r: pb::SellRequest) -> Result<Command, Status> {
    let command = Sell::new(r.txn_id, r.sku, r.node, r.qty).map_err(status::invalid)?;
    Ok(Command::Sell(command))
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn adjust_command(r: pb::AdjustRequest) -> Result<Command, Status> {
    let reason = AdjustReason::from_code(r.reason).map_err(status::invalid)?;
    let command = Adjust::new(r.txn_id, r.sku, r.node, r.delta, reason).map_err(status::invalid)?;
    Ok(Command::Adjust(command))
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn set_on_hand_command(r: pb::SetOnHandRequest) -> Result<Command, Status> {
    let command = SetOnHand::new(r.txn_id, r.sku, r.node, r.on_hand, r.expected_on_hand)
        .map_err(status::invalid)?;
    Ok(Command::SetOnHand(command))
}

/// The gRPC layer's validation of a request (INVALID_ARGUMENT on bad input);
/// public for the fuzz targets (fuzz/harness.rs), which run it on decoded bytes.
pub fn set_safety_stock_command(r: pb::SetSafetyStockRequest) -> Result<Command, Status> {
    let command = SetSafetyStock::new(r.sku, r.node, r.safety_stock).map_err(status::invalid)?;
    Ok(Command::SetSafetyStock(command))
}

/// A validated command back as the request that builds it: what a node
/// that stopped leading forwards to the new leader. Building the command
/// again from it gives the same command (the TTL is already resolved, the
/// lines already summed and sorted), so a retry is recognised as one.
pub(super) fn request_of<Req: FromCommand>(command: &Command) -> Req {
    Req::from_command(command)
}

/// Requests that can be rebuilt from the command they were built into.
pub(super) trait FromCommand {
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

pub(super) fn op_of(command: &Command) -> Op {
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

    /// One command of each kind of write, built from its request.
    fn one_command_of_each_write() -> Vec<Command> {
        vec![
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
        ]
    }

    /// The command built again from the request rebuilt from `command`.
    fn built_again(command: &Command) -> Command {
        let again = match op_of(command) {
            Op::Reserve(_) => reserve_command(api(), request_of(command)),
            Op::Commit(_) => commit_command(request_of(command)),
            Op::Release(_) => release_command(request_of(command)),
            Op::Extend(_) => extend_command(api(), request_of(command)),
            Op::Sell(_) => sell_command(request_of(command)),
            Op::Adjust(_) => adjust_command(request_of(command)),
            Op::SetOnHand(_) => set_on_hand_command(request_of(command)),
            Op::SetSafetyStock(_) => set_safety_stock_command(request_of(command)),
            other => panic!("not a write: {other:?}"),
        };
        again.unwrap()
    }

    /// A node that stopped leading forwards the request rebuilt from its
    /// command: building that request again must give the same command, or
    /// the retry would be refused as an id reused with another payload.
    #[test]
    fn requests_rebuilt_from_commands_build_the_same_commands() {
        for command in one_command_of_each_write() {
            assert_eq!(built_again(&command), command);
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
