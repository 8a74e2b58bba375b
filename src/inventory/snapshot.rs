//! State-machine snapshots: the whole inventory in canonical order.
//!
//! An image is a header and a list of chunks, each a protobuf
//! `SnapshotChunk` of at most [`CHUNK_RECORDS_MAX`] records, so a state of
//! ten million counters is written, stored and sent in pieces instead of as
//! one huge buffer. Records are sorted (counters by sku then node,
//! reservations and transactions by id), which makes the image, and so its
//! digest, identical on every replica that applied the same entries.

use std::sync::Arc;

use prost::Message;
use thiserror::Error;
use xxhash_rust::xxh3::Xxh3;

use super::reservation::{HeldLine, Reservation, ReservationState};
use super::stock::{intern, StockLevel};
use super::{Finished, Inventory, TxnRecord};
use crate::proto::internal as pb;

/// Records per chunk: small enough that a chunk is a few hundred KiB.
pub const CHUNK_RECORDS_MAX: usize = 4_096;

/// Bumped whenever the image's meaning changes.
pub const FORMAT_VERSION: u32 = 1;

/// A snapshot of the inventory, ready to store or send.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub header: pb::SnapshotHeader,
    pub chunks: Vec<Vec<u8>>,
    pub digest: u64,
}

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot is damaged: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("snapshot format {0} is not one this build reads (it reads {FORMAT_VERSION})")]
    Version(u32),
    #[error("snapshot is damaged: digest {actual:#x}, header says {expected:#x}")]
    Digest { expected: u64, actual: u64 },
    #[error("snapshot is damaged: {0}")]
    Invalid(String),
}

/// Writes the inventory as an image.
pub fn write(inventory: &Inventory) -> Image {
    let mut digest = Xxh3::new();
    digest.update(&inventory.now_ms.to_le_bytes());
    let mut chunks = Vec::new();
    let mut chunk = pb::SnapshotChunk::default();
    let mut records = 0usize;
    let mut flush = |chunk: &mut pb::SnapshotChunk, records: &mut usize, force: bool| {
        if *records == 0 || (!force && *records < CHUNK_RECORDS_MAX) {
            return;
        }
        let bytes = chunk.encode_to_vec();
        digest.update(&bytes);
        chunks.push(bytes);
        *chunk = pb::SnapshotChunk::default();
        *records = 0;
    };

    let counters = inventory.shared.stock.sorted_counters();
    for (sku, node, level) in &counters {
        chunk.counters.push(pb::CounterRecord {
            sku: sku.to_string(),
            node: node.to_string(),
            on_hand: level.on_hand,
            reserved: level.reserved,
            safety_stock: level.safety_stock,
        });
        records += 1;
        flush(&mut chunk, &mut records, false);
    }

    let mut reservations: Vec<Reservation> = inventory
        .shared
        .reservations
        .iter()
        .map(|r| r.value().clone())
        .collect();
    reservations.sort_by(|a, b| a.id.cmp(&b.id));
    for r in &reservations {
        chunk.reservations.push(pb::ReservationRecord {
            reservation_id: r.id.to_string(),
            lines: r
                .lines
                .iter()
                .map(|l| pb::Line {
                    sku: l.sku.to_string(),
                    node: l.node.to_string(),
                    qty: l.qty,
                })
                .collect(),
            ttl_ms: r.ttl_ms,
            state: r.state.code(),
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
            finished_at_ms: r.finished_at_ms,
        });
        records += 1;
        flush(&mut chunk, &mut records, false);
    }

    let mut txns: Vec<(&Arc<str>, &TxnRecord)> = inventory.txns.iter().collect();
    txns.sort_by(|a, b| a.0.cmp(b.0));
    for (id, t) in &txns {
        chunk.txns.push(pb::TxnRecord {
            txn_id: id.to_string(),
            fingerprint: t.fingerprint,
            at_ms: t.at_ms,
            level: Some(pb::StockLevelRecord {
                on_hand: t.level.on_hand,
                reserved: t.level.reserved,
                safety_stock: t.level.safety_stock,
            }),
        });
        records += 1;
        flush(&mut chunk, &mut records, false);
    }
    flush(&mut chunk, &mut records, true);

    let digest = digest.digest();
    Image {
        header: pb::SnapshotHeader {
            format_version: FORMAT_VERSION,
            now_ms: inventory.now_ms,
            counters: counters.len() as u64,
            reservations: reservations.len() as u64,
            txns: txns.len() as u64,
            digest,
        },
        chunks,
        digest,
    }
}

/// Rebuilds an inventory from an image taken at log index `applied_index`.
/// Checks the digest first: a damaged snapshot is refused, never loaded.
pub fn read(image: &Image, applied_index: u64) -> Result<Inventory, SnapshotError> {
    let header = &image.header;
    if header.format_version != FORMAT_VERSION {
        return Err(SnapshotError::Version(header.format_version));
    }
    let mut digest = Xxh3::new();
    digest.update(&header.now_ms.to_le_bytes());
    for chunk in &image.chunks {
        digest.update(chunk);
    }
    let actual = digest.digest();
    if actual != header.digest {
        return Err(SnapshotError::Digest {
            expected: header.digest,
            actual,
        });
    }

    let mut inventory = Inventory::new();
    inventory.now_ms = header.now_ms;
    for bytes in &image.chunks {
        let chunk = pb::SnapshotChunk::decode(bytes.as_slice())?;
        for c in chunk.counters {
            let level = StockLevel {
                on_hand: c.on_hand,
                reserved: c.reserved,
                safety_stock: c.safety_stock,
            };
            inventory
                .shared
                .stock
                .update_or_create(&c.sku, &c.node, &mut inventory.node_names, |l| *l = level)
                .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        }
        for r in chunk.reservations {
            let state = ReservationState::from_code(r.state)
                .ok_or_else(|| SnapshotError::Invalid(format!("reservation state {}", r.state)))?;
            let id: Arc<str> = Arc::from(r.reservation_id.as_str());
            let mut lines = Vec::with_capacity(r.lines.len());
            for l in r.lines {
                let sku = inventory
                    .shared
                    .stock
                    .sku_key(&l.sku)
                    .unwrap_or_else(|| Arc::from(l.sku.as_str()));
                lines.push(HeldLine {
                    sku,
                    node: intern(&mut inventory.node_names, &l.node),
                    qty: l.qty,
                });
            }
            if state == ReservationState::Open {
                inventory.expiry.insert((r.expires_at_ms, id.clone()));
                inventory.open_count += 1;
            } else {
                inventory
                    .finished
                    .insert((r.finished_at_ms, Finished::Reservation(id.clone())));
            }
            inventory.shared.reservations.insert(
                id.clone(),
                Reservation {
                    id,
                    lines,
                    ttl_ms: r.ttl_ms,
                    state,
                    created_at_ms: r.created_at_ms,
                    expires_at_ms: r.expires_at_ms,
                    finished_at_ms: r.finished_at_ms,
                },
            );
        }
        for t in chunk.txns {
            let level = t.level.unwrap_or_default();
            let id: Arc<str> = Arc::from(t.txn_id.as_str());
            inventory
                .finished
                .insert((t.at_ms, Finished::Txn(id.clone())));
            inventory.txns.insert(
                id,
                TxnRecord {
                    fingerprint: t.fingerprint,
                    at_ms: t.at_ms,
                    level: StockLevel {
                        on_hand: level.on_hand,
                        reserved: level.reserved,
                        safety_stock: level.safety_stock,
                    },
                },
            );
        }
    }
    inventory.set_applied(applied_index);
    inventory
        .check_invariants()
        .map_err(SnapshotError::Invalid)?;
    Ok(inventory)
}

/// Joins an image into one buffer (header, then chunks, each
/// length-delimited), for a Raft snapshot message.
pub fn to_bytes(image: &Image) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = image.header.encode_length_delimited(&mut out);
    for chunk in &image.chunks {
        prost::encoding::encode_varint(chunk.len() as u64, &mut out);
        out.extend_from_slice(chunk);
    }
    out
}

/// Splits a buffer made by [`to_bytes`] back into an image.
pub fn from_bytes(bytes: &[u8]) -> Result<Image, SnapshotError> {
    let mut rest = bytes;
    let header = pb::SnapshotHeader::decode_length_delimited(&mut rest)?;
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let len = prost::encoding::decode_varint(&mut rest)? as usize;
        if len > rest.len() {
            return Err(SnapshotError::Invalid("chunk runs past the end".into()));
        }
        chunks.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    let digest = header.digest;
    Ok(Image {
        header,
        chunks,
        digest,
    })
}
