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
use super::stock::{intern, NodeStock, StockLevel};
use super::{Finished, Inventory, TxnKey, TxnRecord};
use crate::proto::internal as pb;

/// Records per chunk: small enough that a chunk is a few hundred KiB.
pub const CHUNK_RECORDS_MAX: usize = 4_096;

/// Bumped whenever the image's meaning changes.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format this build still reads. Format 1 kept transaction ids
/// as text; reading it hashes them, so a data dir written before format 2
/// opens without loss.
pub const FORMAT_VERSION_OLDEST: u32 = 1;

/// A snapshot of the inventory, ready to store or send.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub header: pb::SnapshotHeader,
    pub chunks: Vec<Vec<u8>>,
    pub digest: u64,
}

impl Image {
    /// Bytes of all chunks (the header is small and not counted).
    pub fn byte_count(&self) -> u64 {
        let mut total = 0u64;
        for chunk in &self.chunks {
            total += chunk.len() as u64;
        }
        total
    }
}

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot is damaged: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("snapshot format {0} is not one this build reads (it reads {FORMAT_VERSION_OLDEST} to {FORMAT_VERSION})")]
    Version(u32),
    #[error("snapshot is damaged: digest {actual:#x}, header says {expected:#x}")]
    Digest { expected: u64, actual: u64 },
    #[error("snapshot is damaged: {0}")]
    Invalid(String),
}

/// Writes the inventory as an image: counters, then reservations, then
/// transactions, each section in its canonical order and cut into chunks.
/// The counters are encoded on this thread and the other two sections on a
/// second one (the caller holds the only writer, so both only read): with
/// ten million counters and as many retained ids, this halves the time the
/// replication thread is held on two cores. The result does not depend on
/// the threads' timing.
pub fn write(inventory: &Inventory) -> Image {
    let (counters, (reservations, txns)) = std::thread::scope(|scope| {
        let others = scope.spawn(|| (write_reservations(inventory), write_txns(inventory)));
        let counters = write_counters(inventory);
        match others.join() {
            Ok(others) => (counters, others),
            // A broken invariant found there stops the node as it would here.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let mut digest = Xxh3::new();
    digest.update(&inventory.now_ms.to_le_bytes());
    let mut chunks =
        Vec::with_capacity(counters.chunks.len() + reservations.chunks.len() + txns.chunks.len());
    let header = pb::SnapshotHeader {
        format_version: FORMAT_VERSION,
        now_ms: inventory.now_ms,
        counters: counters.records,
        reservations: reservations.records,
        txns: txns.records,
        digest: 0,
    };
    for section in [counters, reservations, txns] {
        for bytes in section.chunks {
            digest.update(&bytes);
            chunks.push(bytes);
        }
    }
    let digest = digest.digest();
    Image {
        header: pb::SnapshotHeader { digest, ..header },
        chunks,
        digest,
    }
}

/// Encoded chunks of one section of an image.
#[derive(Default)]
struct Section {
    chunks: Vec<Vec<u8>>,
    chunk: pb::SnapshotChunk,
    in_chunk: usize,
    records: u64,
}

impl Section {
    /// Counts a record just pushed into `chunk`; encodes the chunk when full.
    fn added(&mut self) {
        self.in_chunk += 1;
        self.records += 1;
        if self.in_chunk >= CHUNK_RECORDS_MAX {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.in_chunk == 0 {
            return;
        }
        let chunk = std::mem::take(&mut self.chunk);
        self.chunks.push(chunk.encode_to_vec());
        self.in_chunk = 0;
    }

    fn finish(mut self) -> Section {
        self.flush();
        self
    }
}

/// Counters SKU by SKU in sorted order, without first copying ten million
/// of them into a list.
fn write_counters(inventory: &Inventory) -> Section {
    let mut section = Section::default();
    inventory
        .shared
        .stock
        .visit_sorted(|sku: &str, node: &str, level: &StockLevel| {
            section.chunk.counters.push(pb::CounterRecord {
                sku: sku.to_string(),
                node: node.to_string(),
                on_hand: level.on_hand,
                reserved: level.reserved,
                safety_stock: level.safety_stock,
            });
            section.added();
        });
    section.finish()
}

/// Reservations, open and finished, sorted by id.
fn write_reservations(inventory: &Inventory) -> Section {
    let mut section = Section::default();
    let mut reservations: Vec<Reservation> = inventory
        .shared
        .reservations
        .iter()
        .map(|r| r.value().clone())
        .collect();
    reservations.sort_by(|a, b| a.id.cmp(&b.id));
    for r in &reservations {
        section.chunk.reservations.push(pb::ReservationRecord {
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
        section.added();
    }
    section.finish()
}

/// Transactions in the order they are forgotten (finish time, then key):
/// already canonical, no sort needed.
fn write_txns(inventory: &Inventory) -> Section {
    let mut section = Section::default();
    for (at_ms, which) in &inventory.finished {
        let Finished::Txn(key) = which else {
            continue;
        };
        let Some(t) = inventory.txns.get(key) else {
            panic!("retained transaction {key:?} has no record");
        };
        section.chunk.txns.push(pb::TxnRecord {
            txn_id: String::new(),
            fingerprint: t.fingerprint,
            at_ms: *at_ms,
            level: Some(pb::StockLevelRecord {
                on_hand: t.level.on_hand,
                reserved: t.level.reserved,
                safety_stock: t.level.safety_stock,
            }),
            key_high: key.0[0],
            key_low: key.0[1],
        });
        section.added();
    }
    section.finish()
}

/// Rebuilds an inventory from an image taken at log index `applied_index`.
/// Checks the digest first: a damaged snapshot is refused, never loaded.
pub fn read(image: &Image, applied_index: u64) -> Result<Inventory, SnapshotError> {
    let header = &image.header;
    if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&header.format_version) {
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
    inventory
        .txns
        .reserve(header.txns.min(TXNS_RESERVE_MAX) as usize);
    let mut finished: Vec<(u64, Finished)> = Vec::new();
    let mut loader = SkuLoader::default();
    // Protobuf decoding runs on a second thread while this one rebuilds the
    // maps: on a 2-core machine that is most of a 10-million-counter
    // restart. Chunks arrive in order, so the result is the same.
    std::thread::scope(|scope| -> Result<(), SnapshotError> {
        let (sender, receiver) = crossbeam_channel::bounded(DECODE_AHEAD_CHUNKS);
        scope.spawn(move || {
            for bytes in &image.chunks {
                let decoded = pb::SnapshotChunk::decode(bytes.as_slice());
                let failed = decoded.is_err();
                if sender.send(decoded).is_err() || failed {
                    return;
                }
            }
        });
        for decoded in receiver {
            let chunk = decoded?;
            load_chunk(&mut inventory, &mut loader, &mut finished, chunk)?;
        }
        loader.flush(&mut inventory)
    })?;
    // Sorted already (the image writes them in this order); a bulk build.
    let retained = finished.len();
    inventory.finished = finished.into_iter().collect();
    if inventory.finished.len() != retained {
        return Err(SnapshotError::Invalid("a finished id appears twice".into()));
    }
    inventory.set_applied(applied_index);
    inventory
        .check_invariants()
        .map_err(SnapshotError::Invalid)?;
    Ok(inventory)
}

/// Chunks decoded ahead of the rebuild, at most.
const DECODE_AHEAD_CHUNKS: usize = 8;

/// Transaction records reserved up front at most, whatever a header says.
const TXNS_RESERVE_MAX: u64 = 64 * 1024 * 1024;

/// Gathers one SKU's counters (they arrive sorted, SKU by SKU) so the SKU
/// goes into the table in one insert.
#[derive(Default)]
struct SkuLoader {
    sku: Option<Arc<str>>,
    nodes: Vec<NodeStock>,
}

impl SkuLoader {
    fn add(
        &mut self,
        inventory: &mut Inventory,
        c: pb::CounterRecord,
    ) -> Result<(), SnapshotError> {
        let same = matches!(&self.sku, Some(sku) if **sku == *c.sku);
        if !same {
            self.flush(inventory)?;
            self.sku = Some(Arc::from(c.sku.as_str()));
        }
        self.nodes.push(NodeStock {
            node: intern(&mut inventory.node_names, &c.node),
            level: StockLevel {
                on_hand: c.on_hand,
                reserved: c.reserved,
                safety_stock: c.safety_stock,
            },
        });
        Ok(())
    }

    fn flush(&mut self, inventory: &mut Inventory) -> Result<(), SnapshotError> {
        let Some(sku) = self.sku.take() else {
            return Ok(());
        };
        let nodes = std::mem::take(&mut self.nodes);
        inventory
            .shared
            .stock
            .load_sku(sku, nodes)
            .map_err(SnapshotError::Invalid)
    }
}

fn load_chunk(
    inventory: &mut Inventory,
    loader: &mut SkuLoader,
    finished: &mut Vec<(u64, Finished)>,
    chunk: pb::SnapshotChunk,
) -> Result<(), SnapshotError> {
    for c in chunk.counters {
        loader.add(inventory, c)?;
    }
    if chunk.reservations.is_empty() && chunk.txns.is_empty() {
        return Ok(());
    }
    // Counters come first in an image: the last SKU is complete.
    loader.flush(inventory)?;
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
            finished.push((r.finished_at_ms, Finished::Reservation(id.clone())));
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
        let key = if t.txn_id.is_empty() {
            TxnKey([t.key_high, t.key_low])
        } else {
            // Format 1: the id's text.
            TxnKey::of(&t.txn_id)
        };
        finished.push((t.at_ms, Finished::Txn(key)));
        let record = TxnRecord {
            fingerprint: t.fingerprint,
            level: StockLevel {
                on_hand: level.on_hand,
                reserved: level.reserved,
                safety_stock: level.safety_stock,
            },
        };
        if inventory.txns.insert(key, record).is_some() {
            return Err(SnapshotError::Invalid(format!(
                "transaction {key:?} appears twice"
            )));
        }
    }
    Ok(())
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
