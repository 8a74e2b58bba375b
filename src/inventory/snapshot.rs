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

use super::cow_table;
use super::reservation::{HeldLine, Reservation, ReservationState, TimedId};
use super::retained::{FrozenTxns, RetainedTxn};
use super::stock::{intern, NodeStock, SkuStock, StockLevel};
use super::{Inventory, TxnKey, TxnRecord};
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

/// What an image is encoded from: references to the inventory's counters
/// and reservations and a copy of its transactions, as of one applied
/// index. Taking it ([`freeze`]) is the only part of a snapshot that must
/// run on the replication thread; encoding ([`write_frozen`]) and storing
/// can run elsewhere while entries go on being applied, because the
/// counter lists and reservations it references are copied on write by
/// the inventory, never changed in place while shared.
pub struct Frozen {
    now_ms: u64,
    /// Unsorted; sorted by SKU when encoded.
    skus: cow_table::FrozenTable<SkuStock>,
    /// Unsorted; sorted by id when encoded.
    reservations: cow_table::FrozenTable<Reservation>,
    /// Retained transaction outcomes in the order they are forgotten.
    txns: FrozenTxns,
}

impl Frozen {
    /// Counters, reservations and transactions: the size of the image.
    pub fn record_count(&self) -> usize {
        let mut counters = 0;
        for sku in self.skus.iter() {
            counters += sku.nodes.len();
        }
        counters + self.reservations.len() + self.txns.len()
    }
}

/// Takes what an image of `inventory` is encoded from: one pass over the
/// SKUs and reservations and the blocks of retained outcomes, taking
/// references, copying no record (figures in BENCHMARKS.md).
pub fn freeze(inventory: &Inventory) -> Frozen {
    let reservations = inventory.shared.reservations.freeze();
    Frozen {
        now_ms: inventory.now_ms,
        skus: inventory.shared.stock.freeze(),
        reservations,
        txns: inventory.txns.freeze(),
    }
}

/// Writes the inventory as an image (see [`write_frozen`]).
pub fn write(inventory: &Inventory) -> Image {
    write_frozen(&freeze(inventory))
}

/// Writes a frozen inventory as an image: counters, then reservations, then
/// transactions, each section in its canonical order and cut into chunks.
/// The counters are encoded on this thread and the other two sections on a
/// second one when the state is large: with ten million counters and as
/// many retained ids, this halves the encoding time on two cores. The
/// result does not depend on the threads' timing.
pub fn write_frozen(frozen: &Frozen) -> Image {
    write_threads(frozen, frozen.record_count() >= WRITE_THREAD_RECORDS_MIN)
}

/// [`write_frozen`], on one thread or two as told.
pub(crate) fn write_threads(frozen: &Frozen, two: bool) -> Image {
    let (counters, (reservations, txns)) = if !two {
        (
            write_counters(frozen),
            (write_reservations(frozen), write_txns(frozen)),
        )
    } else {
        std::thread::scope(|scope| {
            let others = scope.spawn(|| (write_reservations(frozen), write_txns(frozen)));
            let counters = write_counters(frozen);
            match others.join() {
                Ok(others) => (counters, others),
                // A broken invariant found there stops the node as it would here.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    };
    let counts = (counters.records, reservations.records, txns.records);
    let mut digest = Xxh3::new();
    digest.update(&frozen.now_ms.to_le_bytes());
    let mut chunks = Vec::new();
    for section in [counters, reservations, txns] {
        for bytes in section.chunks {
            digest.update(&bytes);
            chunks.push(bytes);
        }
    }
    let digest = digest.digest();
    Image {
        header: pb::SnapshotHeader {
            format_version: FORMAT_VERSION,
            now_ms: frozen.now_ms,
            counters: counts.0,
            reservations: counts.1,
            txns: counts.2,
            digest,
        },
        chunks,
        digest,
    }
}

/// States of fewer records are written on the calling thread: a thread
/// costs more than it saves on a small state (every digest the simulator
/// compares is a write).
const WRITE_THREAD_RECORDS_MIN: usize = 100_000;

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

/// Counters SKU by SKU in sorted order.
fn write_counters(frozen: &Frozen) -> Section {
    let mut section = Section::default();
    let mut order: Vec<&SkuStock> = frozen.skus.iter().map(|s| &**s).collect();
    order.sort_unstable_by(|a, b| a.sku.cmp(&b.sku));
    for stock in order {
        for n in stock.nodes.iter() {
            section.chunk.counters.push(pb::CounterRecord {
                sku: stock.sku.to_string(),
                node: n.node.to_string(),
                on_hand: n.level.on_hand,
                reserved: n.level.reserved,
                safety_stock: n.level.safety_stock,
            });
            section.added();
        }
    }
    section.finish()
}

/// Reservations, open and finished, sorted by id.
fn write_reservations(frozen: &Frozen) -> Section {
    let mut section = Section::default();
    let mut order: Vec<&Reservation> = frozen.reservations.iter().map(|r| &**r).collect();
    order.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    for r in order {
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

/// Transactions in the order they are forgotten (finish time, then the
/// order they were applied in): already canonical, no sort needed.
fn write_txns(frozen: &Frozen) -> Section {
    let mut section = Section::default();
    for t in frozen.txns.iter() {
        let level = t.record.level;
        section.chunk.txns.push(pb::TxnRecord {
            txn_id: String::new(),
            fingerprint: t.record.fingerprint,
            at_ms: t.at_ms,
            level: Some(pb::StockLevelRecord {
                on_hand: level.on_hand,
                reserved: level.reserved,
                safety_stock: level.safety_stock,
            }),
            key_high: t.key.0[0],
            key_low: t.key.0[1],
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

    read_threads(
        image,
        applied_index,
        image.chunks.len() >= DECODE_THREAD_CHUNKS_MIN,
    )
}

/// [`read`] after its checks, decoding on a second thread or not as told.
pub(crate) fn read_threads(
    image: &Image,
    applied_index: u64,
    two: bool,
) -> Result<Inventory, SnapshotError> {
    let mut rebuild = Rebuild::new(&image.header, image.byte_count());
    if !two {
        for bytes in &image.chunks {
            rebuild.chunk(pb::SnapshotChunk::decode(bytes.as_slice())?)?;
        }
    } else {
        // Protobuf decoding runs on a second thread while this one rebuilds
        // the maps: on a 2-core machine that is most of a 10-million-counter
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
                rebuild.chunk(decoded?)?;
            }
            Ok(())
        })?;
    }
    rebuild.finish(applied_index)
}

/// Images of fewer chunks are decoded on the calling thread: a thread costs
/// more than it saves on a small state (the simulator reads thousands).
const DECODE_THREAD_CHUNKS_MIN: usize = 16;

/// Chunks decoded ahead of the rebuild, at most.
const DECODE_AHEAD_CHUNKS: usize = 8;

/// The fewest bytes a format-2 transaction record takes in a chunk (two
/// fixed64 halves of the key alone take 18): bounds the up-front reserve
/// by the image's real size rather than by the header's word.
const TXN_RECORD_BYTES_MIN: u64 = 24;

/// An inventory being rebuilt from an image's chunks, in order.
struct Rebuild {
    inventory: Inventory,
    format_version: u32,
    /// Finished reservations, gathered for one bulk build.
    finished: Vec<TimedId>,
    /// Format 1 only: its outcomes were sorted by id, not finish order.
    format_one_txns: Vec<RetainedTxn>,
    /// The SKU whose counters are being gathered (they arrive sorted, SKU
    /// by SKU) so that it goes into the table in one insert.
    sku: Option<Arc<str>>,
    nodes: Vec<NodeStock>,
}

impl Rebuild {
    fn new(header: &pb::SnapshotHeader, image_bytes: u64) -> Rebuild {
        let mut inventory = Inventory::new();
        inventory.now_ms = header.now_ms;
        let txns = header.txns.min(image_bytes / TXN_RECORD_BYTES_MIN);
        inventory.txns.reserve(txns as usize);
        Rebuild {
            inventory,
            format_version: header.format_version,
            finished: Vec::new(),
            format_one_txns: Vec::new(),
            sku: None,
            nodes: Vec::new(),
        }
    }

    fn chunk(&mut self, chunk: pb::SnapshotChunk) -> Result<(), SnapshotError> {
        for c in chunk.counters {
            self.counter(c)?;
        }
        if chunk.reservations.is_empty() && chunk.txns.is_empty() {
            return Ok(());
        }
        // Counters come first in an image: the last SKU is complete.
        self.end_sku()?;
        for r in chunk.reservations {
            self.reservation(r)?;
        }
        for t in chunk.txns {
            self.txn(t)?;
        }
        Ok(())
    }

    fn counter(&mut self, c: pb::CounterRecord) -> Result<(), SnapshotError> {
        let same = matches!(&self.sku, Some(sku) if **sku == *c.sku);
        if !same {
            self.end_sku()?;
            self.sku = Some(Arc::from(c.sku.as_str()));
        }
        self.nodes.push(NodeStock {
            node: intern(&mut self.inventory.node_names, &c.node),
            level: StockLevel {
                on_hand: c.on_hand,
                reserved: c.reserved,
                safety_stock: c.safety_stock,
            },
        });
        Ok(())
    }

    fn end_sku(&mut self) -> Result<(), SnapshotError> {
        let Some(sku) = self.sku.take() else {
            return Ok(());
        };
        let nodes = std::mem::take(&mut self.nodes);
        self.inventory
            .shared
            .stock
            .load_sku(sku, nodes)
            .map_err(SnapshotError::Invalid)
    }

    fn reservation(&mut self, r: pb::ReservationRecord) -> Result<(), SnapshotError> {
        let inventory = &mut self.inventory;
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
            inventory
                .expiry
                .insert(TimedId::new(r.expires_at_ms, id.clone()));
            inventory.open_count += 1;
        } else {
            self.finished
                .push(TimedId::new(r.finished_at_ms, id.clone()));
        }
        let replaced = inventory.shared.reservations.insert(Arc::new(Reservation {
            id,
            lines,
            ttl_ms: r.ttl_ms,
            state,
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
            finished_at_ms: r.finished_at_ms,
        }));
        if let Some(twice) = replaced {
            return Err(SnapshotError::Invalid(format!(
                "reservation {:?} appears twice",
                twice.id
            )));
        }
        Ok(())
    }

    fn txn(&mut self, t: pb::TxnRecord) -> Result<(), SnapshotError> {
        let key = if self.format_version == 1 {
            // Format 1 kept the id's text.
            TxnKey::of(&t.txn_id)
        } else {
            TxnKey([t.key_high, t.key_low])
        };
        let level = t.level.unwrap_or_default();
        let record = TxnRecord {
            fingerprint: t.fingerprint,
            level: StockLevel {
                on_hand: level.on_hand,
                reserved: level.reserved,
                safety_stock: level.safety_stock,
            },
        };
        if self.format_version == 1 {
            self.format_one_txns.push(RetainedTxn {
                at_ms: t.at_ms,
                key,
                record,
            });
            return Ok(());
        }
        if !self.inventory.txns.push(t.at_ms, key, record) {
            return Err(SnapshotError::Invalid(format!(
                "transaction {key:?} appears twice or out of time order"
            )));
        }
        Ok(())
    }

    fn finish(mut self, applied_index: u64) -> Result<Inventory, SnapshotError> {
        self.end_sku()?;
        // Collecting sorts them (by finish time, then id hash and id),
        // the order in which they are forgotten.
        let retained = self.finished.len();
        self.inventory.finished = self.finished.into_iter().collect();
        if self.inventory.finished.len() != retained {
            return Err(SnapshotError::Invalid("a finished id appears twice".into()));
        }
        // Format 1 kept no finish order of its own: finish time, then key,
        // as that build forgot them.
        let mut format_one = self.format_one_txns;
        format_one.sort_unstable_by_key(|t| (t.at_ms, t.key));
        for t in format_one {
            if !self.inventory.txns.push(t.at_ms, t.key, t.record) {
                return Err(SnapshotError::Invalid(format!(
                    "transaction {:?} appears twice",
                    t.key
                )));
            }
        }
        let mut inventory = self.inventory;
        inventory.set_applied(applied_index);
        inventory
            .check_invariants()
            .map_err(SnapshotError::Invalid)?;
        Ok(inventory)
    }
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
