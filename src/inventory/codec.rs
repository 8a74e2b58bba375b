//! Encoding of batches (the data of Raft log entries) and the fingerprints
//! that recognise a retried transaction.
//!
//! The log format is `stockraft.internal.v1.Batch` (proto/), kept apart from
//! the public API so that either can change without the other. Decoding
//! re-validates every command: an entry is only ever written by a leader that
//! validated it, so a command that fails here means the log is damaged or was
//! written by an incompatible version, and the node must stop.

use prost::Message;
use thiserror::Error;
use xxhash_rust::xxh3::Xxh3;

use super::command::{
    Adjust, AdjustReason, Batch, Command, Extend, InvalidInput, Line, Reserve, Sell, SetOnHand,
    SetSafetyStock,
};
use crate::proto::internal as pb;

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("log entry is not a batch: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("log entry holds an empty command")]
    EmptyCommand,
    #[error("log entry holds an invalid command: {0}")]
    Invalid(#[from] InvalidInput),
}

fn line_to_pb(line: &Line) -> pb::Line {
    pb::Line {
        sku: line.sku.clone(),
        node: line.node.clone(),
        qty: line.qty,
    }
}

fn command_to_pb(command: &Command) -> pb::Command {
    use pb::command::Kind;
    let kind = match command {
        Command::Reserve(c) => Kind::Reserve(pb::Reserve {
            reservation_id: c.reservation_id.clone(),
            lines: c.lines.iter().map(line_to_pb).collect(),
            ttl_ms: c.ttl_ms,
        }),
        Command::Consume { reservation_id } => Kind::Commit(pb::ReservationRef {
            reservation_id: reservation_id.clone(),
        }),
        Command::Release { reservation_id } => Kind::Release(pb::ReservationRef {
            reservation_id: reservation_id.clone(),
        }),
        Command::Extend(c) => Kind::Extend(pb::Extend {
            reservation_id: c.reservation_id.clone(),
            ttl_ms: c.ttl_ms,
        }),
        Command::Sell(c) => Kind::Sell(pb::Sell {
            txn_id: c.txn_id.clone(),
            sku: c.sku.clone(),
            node: c.node.clone(),
            qty: c.qty,
        }),
        Command::Adjust(c) => Kind::Adjust(pb::Adjust {
            txn_id: c.txn_id.clone(),
            sku: c.sku.clone(),
            node: c.node.clone(),
            delta: c.delta,
            reason: c.reason.code(),
        }),
        Command::SetOnHand(c) => Kind::SetOnHand(pb::SetOnHand {
            txn_id: c.txn_id.clone(),
            sku: c.sku.clone(),
            node: c.node.clone(),
            on_hand: c.on_hand,
            expected_on_hand: c.expected_on_hand,
        }),
        Command::SetSafetyStock(c) => Kind::SetSafetyStock(pb::SetSafetyStock {
            sku: c.sku.clone(),
            node: c.node.clone(),
            safety_stock: c.safety_stock,
        }),
    };
    pb::Command { kind: Some(kind) }
}

fn command_from_pb(command: pb::Command) -> Result<Command, DecodeError> {
    use pb::command::Kind;
    let Some(kind) = command.kind else {
        return Err(DecodeError::EmptyCommand);
    };
    let decoded = match kind {
        Kind::Reserve(c) => {
            let lines = c
                .lines
                .into_iter()
                .map(|l| Line {
                    sku: l.sku,
                    node: l.node,
                    qty: l.qty,
                })
                .collect();
            Command::Reserve(Reserve::new(c.reservation_id, lines, c.ttl_ms)?)
        }
        Kind::Commit(c) => Command::Consume {
            reservation_id: super::command::reservation_ref(c.reservation_id)?,
        },
        Kind::Release(c) => Command::Release {
            reservation_id: super::command::reservation_ref(c.reservation_id)?,
        },
        Kind::Extend(c) => Command::Extend(Extend::new(c.reservation_id, c.ttl_ms)?),
        Kind::Sell(c) => Command::Sell(Sell::new(c.txn_id, c.sku, c.node, c.qty)?),
        Kind::Adjust(c) => Command::Adjust(Adjust::new(
            c.txn_id,
            c.sku,
            c.node,
            c.delta,
            AdjustReason::from_code(c.reason)?,
        )?),
        Kind::SetOnHand(c) => Command::SetOnHand(SetOnHand::new(
            c.txn_id,
            c.sku,
            c.node,
            c.on_hand,
            c.expected_on_hand,
        )?),
        Kind::SetSafetyStock(c) => {
            Command::SetSafetyStock(SetSafetyStock::new(c.sku, c.node, c.safety_stock)?)
        }
    };
    Ok(decoded)
}

/// Encodes a batch as the data of a log entry.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let message = pb::Batch {
        stamp_ms: batch.stamp_ms,
        id_retention_ms: batch.id_retention_ms,
        id_retained_max: batch.id_retained_max,
        commands: batch.commands.iter().map(command_to_pb).collect(),
    };
    message.encode_to_vec()
}

/// Decodes the data of a log entry.
pub fn decode_batch(data: &[u8]) -> Result<Batch, DecodeError> {
    let message = pb::Batch::decode(data)?;
    let mut commands = Vec::with_capacity(message.commands.len());
    for command in message.commands {
        commands.push(command_from_pb(command)?);
    }
    Ok(Batch {
        stamp_ms: message.stamp_ms,
        id_retention_ms: message.id_retention_ms,
        id_retained_max: message.id_retained_max,
        commands,
    })
}

/// Size of a command once encoded, to keep batches under their byte limit.
pub fn encoded_len(command: &Command) -> usize {
    command_to_pb(command).encoded_len()
}

/// A fingerprint of a command's payload: the same for a retry, different
/// (with overwhelming probability) for a different change under the same id.
/// Stored in snapshots, so its definition must never change: xxh3-64 of the
/// command's protobuf encoding, which prost writes deterministically.
pub fn fingerprint(command: &Command) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(&command_to_pb(command).encode_to_vec());
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Batch {
        Batch {
            stamp_ms: 1_700_000_000_000,
            id_retention_ms: 86_400_000,
            id_retained_max: 1_000,
            commands: vec![
                Command::Reserve(
                    Reserve::new(
                        "o-1".into(),
                        vec![Line {
                            sku: "s".into(),
                            node: "n".into(),
                            qty: 2,
                        }],
                        60_000,
                    )
                    .unwrap(),
                ),
                Command::Consume {
                    reservation_id: "o-1".into(),
                },
                Command::Adjust(
                    Adjust::new("t".into(), "s".into(), "n".into(), -3, AdjustReason::Damage)
                        .unwrap(),
                ),
                Command::SetOnHand(
                    SetOnHand::new("t2".into(), "s".into(), "n".into(), 5, Some(-2)).unwrap(),
                ),
            ],
        }
    }

    #[test]
    fn batches_round_trip() {
        let batch = sample();
        assert_eq!(decode_batch(&encode_batch(&batch)).unwrap(), batch);
    }

    #[test]
    fn damaged_entries_are_refused() {
        let bytes = encode_batch(&sample());
        assert!(decode_batch(&bytes[..bytes.len() - 3]).is_err());
        let invalid = pb::Batch {
            commands: vec![pb::Command {
                kind: Some(pb::command::Kind::Sell(pb::Sell {
                    txn_id: "t".into(),
                    sku: "s".into(),
                    node: "n".into(),
                    qty: -1,
                })),
            }],
            ..Default::default()
        };
        assert!(matches!(
            decode_batch(&invalid.encode_to_vec()),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn fingerprints_tell_payloads_apart() {
        let a = Command::Sell(Sell::new("t".into(), "s".into(), "n".into(), 1).unwrap());
        let b = Command::Sell(Sell::new("t".into(), "s".into(), "n".into(), 2).unwrap());
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
