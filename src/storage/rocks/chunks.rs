//! Snapshot chunks: written ahead of their record from any thread, and
//! scanned back in order to rebuild, send or load a snapshot.

use std::sync::Arc;

use prost::Message as _;
use raft::eraftpb::SnapshotMetadata;
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::{chunk_key, corrupt, encode_pb, io, RocksStore, CHUNK_BATCH_BYTES_MAX, KEY_SNAPSHOT};
use crate::inventory::snapshot::Image;
use crate::proto::internal as pb;
use crate::replica::membership::to_records;
use crate::replica::wire;
use crate::replica::{ChunkWriter, SnapshotRecord, StoreError};

/// Chunk handles reserved up front when a snapshot is read whole: a
/// damaged record's count is believed no further (the vector still grows
/// past it for an image that really has more chunks).
const CHUNKS_RESERVED_MAX: usize = 65_536;

/// Writes snapshot chunks ahead of their record, from any thread, in
/// unsynced batches of at most [`CHUNK_BATCH_BYTES_MAX`]: one batch of a
/// whole image of ten million counters would sit in one memtable and double
/// the node's memory.
pub(super) struct RocksChunks {
    pub(super) db: Arc<DB>,
    pub(super) batch: WriteBatch,
    pub(super) batch_bytes: usize,
}

impl ChunkWriter for RocksChunks {
    fn put_chunk(&mut self, index: u64, number: u32, bytes: &[u8]) -> Result<(), StoreError> {
        self.batch.put(chunk_key(index, number), bytes);
        self.batch_bytes += bytes.len();
        if self.batch_bytes >= CHUNK_BATCH_BYTES_MAX {
            return self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.batch_bytes == 0 {
            return Ok(());
        }
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.batch_bytes = 0;
        self.db
            .write_opt(std::mem::take(&mut self.batch), &options)
            .map_err(|e| io("writing snapshot chunks", e))
    }
}

impl RocksStore {
    pub(super) fn read_image(
        &self,
        stored: &pb::StoredSnapshot,
        index: u64,
    ) -> Result<Image, StoreError> {
        let Some(header) = stored.header else {
            return Err(corrupt("snapshot record", "no header"));
        };
        // The count comes from disk: a damaged record must not reserve room
        // for billions of chunks (the scan stops at the chunks there are).
        let mut chunks = Vec::with_capacity((stored.chunk_count as usize).min(CHUNKS_RESERVED_MAX));
        // The scan hands over RocksDB's own buffer: into_vec keeps it, no copy.
        self.scan_chunks(index, u64::from(stored.chunk_count), &mut |bytes| {
            chunks.push(bytes.into_vec())
        })?;
        let digest = header.digest;
        Ok(Image {
            header,
            chunks,
            digest,
        })
    }

    /// Hands the `chunk_count` chunks of the snapshot at `index` to `each`,
    /// in order. One forward scan over the chunks' keys (they sort in chunk
    /// order) instead of a point lookup per chunk: thousands of chunks for
    /// ten million counters, read with the store's readahead. Each chunk is
    /// handed over as the buffer the iterator allocated, so a caller that
    /// keeps the chunks does not copy them.
    pub(super) fn scan_chunks(
        &self,
        index: u64,
        chunk_count: u64,
        each: &mut dyn FnMut(Box<[u8]>),
    ) -> Result<(), StoreError> {
        let start = chunk_key(index, 0);
        let mut scan = self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward));
        for chunk in 0..chunk_count {
            let missing = || corrupt("snapshot", format!("chunk {chunk} of {index} is missing"));
            let number = u32::try_from(chunk).map_err(|_| missing())?;
            let Some(item) = scan.next() else {
                return Err(missing());
            };
            let (key, bytes) = item.map_err(|e| io("reading snapshot chunk", e))?;
            if *key != chunk_key(index, number) {
                return Err(missing());
            }
            each(bytes);
        }
        Ok(())
    }

    /// The stored snapshot record and its Raft metadata.
    pub(super) fn stored_snapshot(
        &self,
    ) -> Result<Option<(pb::StoredSnapshot, SnapshotMetadata)>, StoreError> {
        let Some(bytes) = self
            .db
            .get(KEY_SNAPSHOT)
            .map_err(|e| io("reading snapshot record", e))?
        else {
            return Ok(None);
        };
        let stored = pb::StoredSnapshot::decode(bytes.as_slice())
            .map_err(|e| corrupt("snapshot record", e))?;
        let meta = wire::decode_snapshot_metadata(&stored.raft_metadata)
            .map_err(|e| corrupt("snapshot metadata", e))?;
        Ok(Some((stored, meta)))
    }

    /// Puts the snapshot's record into `batch`, after its chunks were
    /// written by [`RocksChunks`].
    pub(super) fn put_snapshot(
        &self,
        batch: &mut WriteBatch,
        snapshot: &SnapshotRecord,
    ) -> Result<(), StoreError> {
        let index = snapshot.meta.index;
        let chunk_count = u32::try_from(snapshot.chunk_count)
            .map_err(|_| corrupt("snapshot", format!("{} chunks", snapshot.chunk_count)))?;
        let stored = pb::StoredSnapshot {
            raft_metadata: encode_pb(&snapshot.meta)?,
            header: Some(snapshot.header),
            chunk_count,
            members: to_records(&snapshot.members),
            chunk_bytes: snapshot.chunk_bytes,
            cluster_id: snapshot
                .cluster_id
                .map(|id| id.to_vec())
                .unwrap_or_default(),
        };
        batch.put(KEY_SNAPSHOT, stored.encode_to_vec());
        // Older snapshots' chunks go in the same write.
        batch.delete_range(chunk_key(0, 0).as_slice(), chunk_key(index, 0).as_slice());
        Ok(())
    }
}
