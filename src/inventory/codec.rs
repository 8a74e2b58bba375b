//! Encoding of batches (the data of Raft log entries) and the fingerprints
//! that recognise a retried transaction.
//!
//! The log format is `stockraft.internal.v1.Batch` (proto/), kept apart from
//! the public API so that either can change without the other. Decoding
//! re-validates every command: an entry is only ever written by a leader that
//! validated it, so a command that fails here means the log is damaged or was
//! written by an incompatible version, and the node must stop.

use prost::bytes::BufMut;
use prost::Message;
use thiserror::Error;

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

/// The protobuf wire format of `stockraft.internal.v1`'s log messages,
/// written straight from the commands' own fields. Building prost's message
/// types first would copy every id and name of every command of every batch
/// once more on the replication thread, only to write them out.
///
/// Byte for byte what prost writes for the same message (tested against it
/// below): fields in tag order, proto3 defaults (0, "") left out, a oneof's
/// message and a `optional` field written whenever present.
mod wire {
    use prost::bytes::BufMut;
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

    pub fn uint_len(tag: u32, value: u64) -> usize {
        if value == 0 {
            return 0;
        }
        key_len(tag) + encoded_len_varint(value)
    }

    pub fn uint(tag: u32, value: u64, buf: &mut impl BufMut) {
        if value == 0 {
            return;
        }
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }

    /// int64 and int32 alike: prost writes a negative value as its 64-bit
    /// two's complement (ten bytes), so both sign-extend to u64.
    pub fn int_len(tag: u32, value: i64) -> usize {
        uint_len(tag, value as u64)
    }

    pub fn int(tag: u32, value: i64, buf: &mut impl BufMut) {
        uint(tag, value as u64, buf);
    }

    /// A proto3 `optional` scalar: written when present, even when 0.
    pub fn optional_int_len(tag: u32, value: Option<i64>) -> usize {
        match value {
            Some(v) => key_len(tag) + encoded_len_varint(v as u64),
            None => 0,
        }
    }

    pub fn optional_int(tag: u32, value: Option<i64>, buf: &mut impl BufMut) {
        if let Some(v) = value {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(v as u64, buf);
        }
    }

    pub fn str_len(tag: u32, value: &str) -> usize {
        if value.is_empty() {
            return 0;
        }
        key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    }

    pub fn str(tag: u32, value: &str, buf: &mut impl BufMut) {
        if value.is_empty() {
            return;
        }
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }

    /// A nested message whose body is `body_len` bytes: key, length, body.
    pub fn message_len(tag: u32, body_len: usize) -> usize {
        key_len(tag) + encoded_len_varint(body_len as u64) + body_len
    }

    /// Writes a nested message's key and length; the caller writes the body.
    pub fn message_start(tag: u32, body_len: usize, buf: &mut impl BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(body_len as u64, buf);
    }
}

fn line_len(line: &Line) -> usize {
    wire::str_len(1, &line.sku) + wire::str_len(2, &line.node) + wire::int_len(3, line.qty)
}

fn encode_line(line: &Line, buf: &mut impl BufMut) {
    wire::str(1, &line.sku, buf);
    wire::str(2, &line.node, buf);
    wire::int(3, line.qty, buf);
}

/// The `pb::Command` oneof tag of a command and the length of its body.
fn kind_len(command: &Command) -> (u32, usize) {
    match command {
        Command::Reserve(c) => {
            let mut len = wire::str_len(1, &c.reservation_id) + wire::uint_len(3, c.ttl_ms);
            for line in &c.lines {
                len += wire::message_len(2, line_len(line));
            }
            (1, len)
        }
        Command::Consume { reservation_id } => (2, wire::str_len(1, reservation_id)),
        Command::Release { reservation_id } => (3, wire::str_len(1, reservation_id)),
        Command::Extend(c) => (
            4,
            wire::str_len(1, &c.reservation_id) + wire::uint_len(2, c.ttl_ms),
        ),
        Command::Sell(c) => (
            5,
            wire::str_len(1, &c.txn_id)
                + wire::str_len(2, &c.sku)
                + wire::str_len(3, &c.node)
                + wire::int_len(4, c.qty),
        ),
        Command::Adjust(c) => (
            6,
            wire::str_len(1, &c.txn_id)
                + wire::str_len(2, &c.sku)
                + wire::str_len(3, &c.node)
                + wire::int_len(4, c.delta)
                + wire::int_len(5, i64::from(c.reason.code())),
        ),
        Command::SetOnHand(c) => (
            7,
            wire::str_len(1, &c.txn_id)
                + wire::str_len(2, &c.sku)
                + wire::str_len(3, &c.node)
                + wire::int_len(4, c.on_hand)
                + wire::optional_int_len(5, c.expected_on_hand),
        ),
        Command::SetSafetyStock(c) => (
            8,
            wire::str_len(1, &c.sku) + wire::str_len(2, &c.node) + wire::int_len(3, c.safety_stock),
        ),
    }
}

/// Length of a command's `pb::Command` encoding (without a key or length
/// of its own).
fn command_len(command: &Command) -> usize {
    let (tag, body) = kind_len(command);
    wire::message_len(tag, body)
}

/// Writes a command as `pb::Command`.
fn encode_command(command: &Command, buf: &mut impl BufMut) {
    let (tag, body) = kind_len(command);
    wire::message_start(tag, body, buf);
    match command {
        Command::Reserve(c) => {
            wire::str(1, &c.reservation_id, buf);
            for line in &c.lines {
                wire::message_start(2, line_len(line), buf);
                encode_line(line, buf);
            }
            wire::uint(3, c.ttl_ms, buf);
        }
        Command::Consume { reservation_id } | Command::Release { reservation_id } => {
            wire::str(1, reservation_id, buf);
        }
        Command::Extend(c) => {
            wire::str(1, &c.reservation_id, buf);
            wire::uint(2, c.ttl_ms, buf);
        }
        Command::Sell(c) => {
            wire::str(1, &c.txn_id, buf);
            wire::str(2, &c.sku, buf);
            wire::str(3, &c.node, buf);
            wire::int(4, c.qty, buf);
        }
        Command::Adjust(c) => {
            wire::str(1, &c.txn_id, buf);
            wire::str(2, &c.sku, buf);
            wire::str(3, &c.node, buf);
            wire::int(4, c.delta, buf);
            wire::int(5, i64::from(c.reason.code()), buf);
        }
        Command::SetOnHand(c) => {
            wire::str(1, &c.txn_id, buf);
            wire::str(2, &c.sku, buf);
            wire::str(3, &c.node, buf);
            wire::int(4, c.on_hand, buf);
            wire::optional_int(5, c.expected_on_hand, buf);
        }
        Command::SetSafetyStock(c) => {
            wire::str(1, &c.sku, buf);
            wire::str(2, &c.node, buf);
            wire::int(3, c.safety_stock, buf);
        }
    }
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

/// Encodes a batch as the data of a log entry, in one buffer of exactly
/// its size.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut len = wire::uint_len(1, batch.stamp_ms)
        + wire::uint_len(2, batch.id_retention_ms)
        + wire::uint_len(3, batch.id_retained_max);
    for command in &batch.commands {
        len += wire::message_len(4, command_len(command));
    }
    let mut buf = Vec::with_capacity(len);
    wire::uint(1, batch.stamp_ms, &mut buf);
    wire::uint(2, batch.id_retention_ms, &mut buf);
    wire::uint(3, batch.id_retained_max, &mut buf);
    for command in &batch.commands {
        wire::message_start(4, command_len(command), &mut buf);
        encode_command(command, &mut buf);
    }
    debug_assert_eq!(buf.len(), len, "batch length computed wrongly");
    buf
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

/// Bytes a command adds to a batch's encoding, to keep batches under their
/// byte limit. Computed from the command's fields; nothing is allocated.
pub(crate) fn encoded_len(command: &Command) -> usize {
    wire::message_len(4, command_len(command))
}

/// A fingerprint of a command's payload: the same for a retry, different
/// (with overwhelming probability) for a different change under the same id.
/// Stored in snapshots, so its definition must never change: xxh3-64 of the
/// command's protobuf encoding (`stockraft.internal.v1.Command`), which is
/// deterministic (the encoding above, byte for byte prost's).
pub(crate) fn fingerprint(command: &Command) -> u64 {
    let mut buf = Vec::with_capacity(command_len(command));
    encode_command(command, &mut buf);
    xxhash_rust::xxh3::xxh3_64(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // prost's own encoding, the reference the wire module must match.
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

    fn prost_batch(batch: &Batch) -> Vec<u8> {
        pb::Batch {
            stamp_ms: batch.stamp_ms,
            id_retention_ms: batch.id_retention_ms,
            id_retained_max: batch.id_retained_max,
            commands: batch.commands.iter().map(command_to_pb).collect(),
        }
        .encode_to_vec()
    }

    fn prost_fingerprint(command: &Command) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&command_to_pb(command).encode_to_vec())
    }

    fn text() -> impl Strategy<Value = String> {
        // Empty strings and multi-byte characters included: the writer
        // must leave out what prost leaves out and count bytes, not chars.
        prop_oneof![Just(String::new()), "[a-zé-]{1,12}", "x{120,200}"]
    }

    fn number() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(0i64),
            Just(-1i64),
            Just(i64::MIN),
            Just(i64::MAX),
            any::<i64>()
        ]
    }

    fn reason() -> impl Strategy<Value = AdjustReason> {
        prop_oneof![
            Just(AdjustReason::Receive),
            Just(AdjustReason::ReturnRestock),
            Just(AdjustReason::Damage),
            Just(AdjustReason::Shrink),
            Just(AdjustReason::Correction),
        ]
    }

    /// Any command, not only valid ones: field values at the edges of the
    /// wire format (0, negative, huge, empty) are what an encoder gets wrong.
    fn command() -> impl Strategy<Value = Command> {
        let line = (text(), text(), number()).prop_map(|(sku, node, qty)| Line { sku, node, qty });
        prop_oneof![
            (text(), proptest::collection::vec(line, 0..4), any::<u64>()).prop_map(
                |(reservation_id, lines, ttl_ms)| Command::Reserve(Reserve {
                    reservation_id,
                    lines,
                    ttl_ms
                })
            ),
            text().prop_map(|reservation_id| Command::Consume { reservation_id }),
            text().prop_map(|reservation_id| Command::Release { reservation_id }),
            (text(), any::<u64>()).prop_map(|(reservation_id, ttl_ms)| Command::Extend(Extend {
                reservation_id,
                ttl_ms
            })),
            (text(), text(), text(), number()).prop_map(|(txn_id, sku, node, qty)| {
                Command::Sell(Sell {
                    txn_id,
                    sku,
                    node,
                    qty,
                })
            }),
            (text(), text(), text(), number(), reason()).prop_map(
                |(txn_id, sku, node, delta, reason)| Command::Adjust(Adjust {
                    txn_id,
                    sku,
                    node,
                    delta,
                    reason
                })
            ),
            (
                text(),
                text(),
                text(),
                number(),
                proptest::option::of(number())
            )
                .prop_map(|(txn_id, sku, node, on_hand, expected_on_hand)| {
                    Command::SetOnHand(SetOnHand {
                        txn_id,
                        sku,
                        node,
                        on_hand,
                        expected_on_hand,
                    })
                }),
            (text(), text(), number()).prop_map(|(sku, node, safety_stock)| {
                Command::SetSafetyStock(SetSafetyStock {
                    sku,
                    node,
                    safety_stock,
                })
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_writer_matches_prost_byte_for_byte(
            commands in proptest::collection::vec(command(), 0..6),
            stamp_ms in prop_oneof![Just(0u64), any::<u64>()],
            id_retention_ms in prop_oneof![Just(0u64), any::<u64>()],
            id_retained_max in prop_oneof![Just(0u64), any::<u64>()],
        ) {
            let batch = Batch { stamp_ms, id_retention_ms, id_retained_max, commands };
            let ours = encode_batch(&batch);
            prop_assert_eq!(&ours, &prost_batch(&batch));
            let mut total = ours.len();
            for command in &batch.commands {
                prop_assert_eq!(fingerprint(command), prost_fingerprint(command));
                let alone = pb::Batch { commands: vec![command_to_pb(command)], ..Default::default() };
                prop_assert_eq!(encoded_len(command), alone.encoded_len());
                total -= encoded_len(command);
            }
            // What is left is the three header fields.
            prop_assert_eq!(total, prost_batch(&Batch { commands: Vec::new(), ..batch.clone() }).len());
        }
    }

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
