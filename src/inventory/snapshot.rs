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
use super::reservation::{HeldLine, HeldLines, Reservation, ReservationState, TimedId};
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
    pub(crate) fn record_count(&self) -> usize {
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
    let mut chunks = Vec::new();
    let header = if !two {
        infallible(encode(frozen, &mut |bytes| {
            chunks.push(bytes);
            Ok(())
        }))
    } else {
        // The reservations and transactions are encoded into a buffer on a
        // second thread while this one encodes the counters, which come
        // first in the image.
        let (counters, (others, reservations, txns)) = std::thread::scope(|scope| {
            let others = scope.spawn(|| {
                let mut others = Vec::new();
                let mut collect = |bytes| {
                    others.push(bytes);
                    Ok(())
                };
                let reservations = infallible(write_reservations(frozen, &mut collect));
                let txns = infallible(write_txns(frozen, &mut collect));
                (others, reservations, txns)
            });
            let counters = infallible(write_counters(frozen, &mut |bytes| {
                chunks.push(bytes);
                Ok(())
            }));
            match others.join() {
                Ok(others) => (counters, others),
                // A broken invariant found there stops the node as it would here.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        chunks.extend(others);
        let mut digest = Xxh3::new();
        digest.update(&frozen.now_ms.to_le_bytes());
        for bytes in &chunks {
            digest.update(bytes);
        }
        header(frozen, [counters, reservations, txns], digest.digest())
    };
    let digest = header.digest;
    Image {
        header,
        chunks,
        digest,
    }
}

/// The value of an encoding into memory, which cannot fail.
fn infallible<T>(result: Result<T, std::convert::Infallible>) -> T {
    match result {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// Encodes a frozen inventory chunk by chunk, handing each chunk to `sink`
/// as soon as it is encoded and keeping none: counters, then reservations,
/// then transactions, each section in its canonical order. Returns the
/// image's header (its record counts and the digest of every chunk in
/// order), or the first error `sink` returned. A snapshot taken by the
/// server goes through here, so the whole image (660 MB for ten million
/// counters and as many retained ids) is never held beside the state.
pub fn encode<E>(
    frozen: &Frozen,
    sink: &mut dyn FnMut(Vec<u8>) -> Result<(), E>,
) -> Result<pb::SnapshotHeader, E> {
    let mut digest = Xxh3::new();
    digest.update(&frozen.now_ms.to_le_bytes());
    let mut out = |bytes: Vec<u8>| -> Result<(), E> {
        digest.update(&bytes);
        sink(bytes)
    };
    let counters = write_counters(frozen, &mut out)?;
    let reservations = write_reservations(frozen, &mut out)?;
    let txns = write_txns(frozen, &mut out)?;
    Ok(header(
        frozen,
        [counters, reservations, txns],
        digest.digest(),
    ))
}

/// An image's header: format, time, record counts of the three sections.
fn header(frozen: &Frozen, counts: [u64; 3], digest: u64) -> pb::SnapshotHeader {
    pb::SnapshotHeader {
        format_version: FORMAT_VERSION,
        now_ms: frozen.now_ms,
        counters: counts[0],
        reservations: counts[1],
        txns: counts[2],
        digest,
    }
}

/// States of fewer records are written on the calling thread: a thread
/// costs more than it saves on a small state (every digest the simulator
/// compares is a write).
const WRITE_THREAD_RECORDS_MIN: usize = 100_000;

/// One section of an image being encoded: records gather in a chunk, and
/// each full chunk is encoded and handed to `out`.
struct Section<'a, E> {
    out: &'a mut dyn FnMut(Vec<u8>) -> Result<(), E>,
    chunk: pb::SnapshotChunk,
    in_chunk: usize,
    records: u64,
}

impl<'a, E> Section<'a, E> {
    fn new(out: &'a mut dyn FnMut(Vec<u8>) -> Result<(), E>) -> Section<'a, E> {
        Section {
            out,
            chunk: pb::SnapshotChunk::default(),
            in_chunk: 0,
            records: 0,
        }
    }

    /// Counts a record just pushed into `chunk`; encodes the chunk when full.
    fn added(&mut self) -> Result<(), E> {
        self.in_chunk += 1;
        self.records += 1;
        if self.in_chunk >= CHUNK_RECORDS_MAX {
            return self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), E> {
        if self.in_chunk == 0 {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.chunk);
        self.in_chunk = 0;
        (self.out)(chunk.encode_to_vec())
    }

    /// Hands out the last, partly filled chunk; the section's record count.
    fn finish(mut self) -> Result<u64, E> {
        self.flush()?;
        Ok(self.records)
    }
}

/// Counters SKU by SKU in sorted order.
fn write_counters<E>(
    frozen: &Frozen,
    out: &mut dyn FnMut(Vec<u8>) -> Result<(), E>,
) -> Result<u64, E> {
    let mut section = Section::new(out);
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
            section.added()?;
        }
    }
    section.finish()
}

/// Reservations, open and finished, sorted by id.
fn write_reservations<E>(
    frozen: &Frozen,
    out: &mut dyn FnMut(Vec<u8>) -> Result<(), E>,
) -> Result<u64, E> {
    let mut section = Section::new(out);
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
        section.added()?;
    }
    section.finish()
}

/// Transactions in the order they are forgotten (finish time, then the
/// order they were applied in): already canonical, no sort needed.
fn write_txns<E>(frozen: &Frozen, out: &mut dyn FnMut(Vec<u8>) -> Result<(), E>) -> Result<u64, E> {
    let mut section = Section::new(out);
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
        section.added()?;
    }
    section.finish()
}

/// Rebuilds an inventory from a whole image taken at log index
/// `applied_index` (see [`ImageReader`]). A damaged image is refused, never
/// loaded.
pub fn read(image: &Image, applied_index: u64) -> Result<Inventory, SnapshotError> {
    let mut reader = ImageReader::new(&image.header, image.chunks.len() as u64)?;
    for bytes in &image.chunks {
        reader.chunk(bytes);
    }
    reader.finish(applied_index)
}

/// [`read`], rebuilding on a second thread or not as told.
#[cfg(test)]
pub(crate) fn read_threads(
    image: &Image,
    applied_index: u64,
    two: bool,
) -> Result<Inventory, SnapshotError> {
    let mut reader = ImageReader::with_threads(&image.header, image.chunks.len() as u64, two)?;
    for bytes in &image.chunks {
        reader.chunk(bytes);
    }
    reader.finish(applied_index)
}

/// Rebuilds an inventory from an image handed over chunk by chunk, so that
/// a restart never holds the whole image (660 MB for ten million counters
/// and as many retained ids) beside the state rebuilt from it: the store
/// reads a chunk, [`ImageReader::chunk`] decodes it and lets it go.
///
/// The digest covers every chunk, so it is known only at the end:
/// [`ImageReader::finish`] checks it before it hands anything out. A damaged
/// image is still refused, never loaded; and when a chunk fails to decode,
/// the chunks after it are still hashed, so that damage is reported as a
/// digest mismatch rather than as whatever the damaged bytes decoded to.
///
/// On a large image the maps are rebuilt on a second thread while the
/// calling thread reads, hashes and decodes: on a 2-core machine that is
/// most of a ten-million-counter restart. Chunks are rebuilt in the order
/// given, so the result does not depend on the threads' timing.
pub struct ImageReader {
    expected_digest: u64,
    digest: Xxh3,
    /// The first error met; later chunks are only hashed.
    failed: Option<SnapshotError>,
    builder: Builder,
}

/// Where an [`ImageReader`]'s chunks are rebuilt.
enum Builder {
    Here(Box<Rebuild>),
    Worker {
        /// Dropped when the worker stopped early (it met an error).
        sender: Option<crossbeam_channel::Sender<pb::SnapshotChunk>>,
        worker: std::thread::JoinHandle<Result<Rebuild, SnapshotError>>,
    },
}

impl ImageReader {
    /// Starts reading an image with `header` and `chunk_count` chunks.
    /// Refuses a format this build does not read.
    pub fn new(
        header: &pb::SnapshotHeader,
        chunk_count: u64,
    ) -> Result<ImageReader, SnapshotError> {
        let records = header
            .counters
            .saturating_add(header.reservations)
            .saturating_add(header.txns);
        let two = records >= REBUILD_THREAD_RECORDS_MIN;
        ImageReader::with_threads(header, chunk_count, two)
    }

    /// [`ImageReader::new`], with a rebuild thread or not as told.
    fn with_threads(
        header: &pb::SnapshotHeader,
        chunk_count: u64,
        two: bool,
    ) -> Result<ImageReader, SnapshotError> {
        if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&header.format_version) {
            return Err(SnapshotError::Version(header.format_version));
        }
        let mut digest = Xxh3::new();
        digest.update(&header.now_ms.to_le_bytes());
        let builder = if two {
            spawn_rebuild(header, chunk_count)
        } else {
            Builder::Here(Box::new(Rebuild::new(header, chunk_count)))
        };
        Ok(ImageReader {
            expected_digest: header.digest,
            digest,
            failed: None,
            builder,
        })
    }

    /// Takes the next chunk's bytes. Errors are kept for
    /// [`ImageReader::finish`], which reports the first.
    pub fn chunk(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
        let worker_stopped = matches!(self.builder, Builder::Worker { sender: None, .. });
        if self.failed.is_some() || worker_stopped {
            return;
        }
        let decoded = match pb::SnapshotChunk::decode(bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.failed = Some(SnapshotError::Decode(e));
                return;
            }
        };
        match &mut self.builder {
            Builder::Here(rebuild) => {
                if let Err(e) = rebuild.chunk(decoded) {
                    self.failed = Some(e);
                }
            }
            Builder::Worker { sender, .. } => {
                let sent = sender.as_ref().map(|to_worker| to_worker.send(decoded));
                if let Some(Err(_)) = sent {
                    // The worker stopped at an error; `finish` learns it,
                    // and the chunks after this one are only hashed.
                    *sender = None;
                }
            }
        }
    }

    /// Checks the digest over every chunk taken, then finishes the rebuild
    /// at log index `applied_index`.
    pub fn finish(self, applied_index: u64) -> Result<Inventory, SnapshotError> {
        let rebuilt = match self.builder {
            Builder::Here(rebuild) => Ok(*rebuild),
            Builder::Worker { sender, worker } => {
                drop(sender);
                match worker.join() {
                    Ok(rebuilt) => rebuilt,
                    // A broken invariant found there stops the node as it
                    // would here.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        };
        let actual = self.digest.digest();
        if actual != self.expected_digest {
            return Err(SnapshotError::Digest {
                expected: self.expected_digest,
                actual,
            });
        }
        if let Some(e) = self.failed {
            return Err(e);
        }
        rebuilt?.finish(applied_index)
    }
}

/// Starts the thread that rebuilds the maps from decoded chunks; rebuilds
/// on the calling thread when no thread can be started.
fn spawn_rebuild(header: &pb::SnapshotHeader, chunk_count: u64) -> Builder {
    let (sender, receiver) = crossbeam_channel::bounded::<pb::SnapshotChunk>(DECODE_AHEAD_CHUNKS);
    let mut rebuild = Rebuild::new(header, chunk_count);
    let spawned = std::thread::Builder::new()
        .name("snapshot-load".into())
        .spawn(move || -> Result<Rebuild, SnapshotError> {
            for decoded in receiver {
                rebuild.chunk(decoded)?;
            }
            Ok(rebuild)
        });
    match spawned {
        Ok(worker) => Builder::Worker {
            sender: Some(sender),
            worker,
        },
        Err(_) => Builder::Here(Box::new(Rebuild::new(header, chunk_count))),
    }
}

/// Images of fewer records are rebuilt on the calling thread: a thread
/// costs more than it saves on a small state (the simulator reads
/// thousands).
const REBUILD_THREAD_RECORDS_MIN: u64 = 16 * CHUNK_RECORDS_MAX as u64;

/// Retained ids reserved for up front, at most: the default bound on them
/// (about 300 MB of index), so an image of the default size loads without
/// the index growing; a larger one grows it as its ids arrive.
const TXNS_RESERVED_MAX: u64 = crate::limits::ID_RETAINED_MAX_DEFAULT;

/// Chunks decoded ahead of the rebuild, at most.
const DECODE_AHEAD_CHUNKS: usize = 8;

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
    /// `chunk_count` bounds the up-front room for retained ids by what the
    /// image can hold, whatever a damaged header claims; and so does
    /// [`TXNS_RESERVED_MAX`], because chunks can be empty: a 20 KB image of
    /// empty chunks whose header claimed 2^63 ids reserved 1.2 GB, and one
    /// at a peer's 16 GiB limit would ask room for 2^46
    /// (fuzz/regressions/snapshot_image/).
    fn new(header: &pb::SnapshotHeader, chunk_count: u64) -> Rebuild {
        let mut inventory = Inventory::new();
        inventory.now_ms = header.now_ms;
        let txns = header
            .txns
            .min(chunk_count.saturating_mul(CHUNK_RECORDS_MAX as u64))
            .min(TXNS_RESERVED_MAX);
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
        let mut lines = HeldLines::with_capacity(r.lines.len());
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

/// Appends an image's header to `out`, length-delimited: the start of an
/// image joined into one buffer (for a Raft snapshot message), which
/// [`put_chunk`] continues and [`split_bytes`] splits again. The buffer is
/// built as the chunks are read, without the whole image in memory.
pub(crate) fn put_header(header: &pb::SnapshotHeader, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = header.encode_length_delimited(out);
}

/// Appends one chunk to `out`, length-delimited (see [`put_header`]).
pub(crate) fn put_chunk(chunk: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_varint(chunk.len() as u64, out);
    out.extend_from_slice(chunk);
}

/// Bytes [`put_header`] and [`put_chunk`] add beyond the chunks
/// themselves, at most: room to reserve up front for an exact fit.
pub(crate) fn framing_bytes_max(header: &pb::SnapshotHeader, chunk_count: u64) -> u64 {
    const VARINT_BYTES_MAX: u64 = 10;
    let header_bytes = header.encoded_len();
    let delimited = header_bytes + prost::length_delimiter_len(header_bytes);
    (delimited as u64).saturating_add(chunk_count.saturating_mul(VARINT_BYTES_MAX))
}

/// Splits a buffer made by [`put_header`] and [`put_chunk`] into its
/// header and its chunks,
/// borrowed from `bytes`: a follower installing a snapshot of hundreds of
/// megabytes rebuilds and stores it from the buffer it received, with no
/// second copy of the image beside it.
pub(crate) fn split_bytes(bytes: &[u8]) -> Result<(pb::SnapshotHeader, Vec<&[u8]>), SnapshotError> {
    let mut rest = bytes;
    let header = pb::SnapshotHeader::decode_length_delimited(&mut rest)?;
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let len = prost::encoding::decode_varint(&mut rest)?;
        let Some(len) = usize::try_from(len).ok().filter(|&len| len <= rest.len()) else {
            return Err(SnapshotError::Invalid("chunk runs past the end".into()));
        };
        let (chunk, after) = rest.split_at(len);
        chunks.push(chunk);
        rest = after;
    }
    Ok((header, chunks))
}
