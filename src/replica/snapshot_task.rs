//! A snapshot handed to the caller to encode and store off the replication
//! thread.
//!
//! Writing a snapshot takes time in proportion to the whole state: with ten
//! million counters and as many retained ids, seconds. Done on the thread
//! that applies entries, every client call waits that long. So a snapshot
//! is split in three steps, and only the first and last run there:
//!
//! 1. The replica freezes its state at the applied index (references to
//!    the counter lists and reservations, which the inventory copies on
//!    write from then on, and a block copy of the transactions) and hands
//!    a [`SnapshotTask`] to the caller in [`super::Output::snapshot`].
//! 2. The caller runs [`SnapshotTask::run`] wherever it likes: the server
//!    on a thread of its own, while entries go on being applied. It encodes
//!    the image and writes each chunk through a [`ChunkWriter`] as soon as
//!    it is encoded, so the whole image is never held in memory.
//! 3. The caller hands the [`WrittenSnapshot`] back to
//!    [`super::Replica::snapshot_written`], which writes the synced record
//!    that names the chunks and compacts the log behind it.
//!
//! Until step 3 no other snapshot is started. A snapshot installed from the
//! leader meanwhile makes the written one stale: step 3 then drops it (its
//! chunks, never named by a record, go with the next record's deletion).

use std::time::{Duration, Instant};

use raft::eraftpb::SnapshotMetadata;

use super::log_store::{ChunkWriter, SnapshotRecord, StoreError};
use super::membership::{ClusterId, Members};
use crate::inventory::snapshot::{self, Frozen};

/// A snapshot frozen at one applied index, to be encoded and stored.
pub struct SnapshotTask {
    pub(super) frozen: Frozen,
    pub(super) meta: SnapshotMetadata,
    pub(super) members: Members,
    pub(super) cluster_id: Option<ClusterId>,
    pub(super) compact_to: u64,
    /// Bytes of log held when it was frozen, for the log line.
    pub(super) log_bytes: u64,
    /// How long freezing held the replication thread.
    pub(super) freeze_time: Duration,
}

impl std::fmt::Debug for SnapshotTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTask")
            .field("index", &self.meta.index)
            .field("records", &self.frozen.record_count())
            .finish()
    }
}

impl SnapshotTask {
    /// The log index the snapshot is taken at.
    pub fn index(&self) -> u64 {
        self.meta.index
    }

    /// Encodes the image and writes its chunks: the slow part, safe on any
    /// thread. Each chunk is written as soon as it is encoded, so the
    /// whole image is never held; the frozen state is released as soon as
    /// it is encoded. Encoded on this one thread: off the replication
    /// thread, a second encoding thread would only take the other core from
    /// the calls being served.
    pub fn run(self, writer: &mut dyn ChunkWriter) -> Result<WrittenSnapshot, StoreError> {
        let started = Instant::now();
        let index = self.meta.index;
        let mut chunk_count = 0u32;
        let mut image_bytes = 0u64;
        let mut write_time = Duration::ZERO;
        let header = snapshot::encode(&self.frozen, &mut |bytes| {
            let writing = Instant::now();
            writer.put_chunk(index, chunk_count, &bytes)?;
            write_time += writing.elapsed();
            chunk_count = chunk_count.checked_add(1).ok_or_else(|| {
                StoreError::Corrupt(format!("snapshot {index} has too many chunks"))
            })?;
            image_bytes += bytes.len() as u64;
            Ok(())
        })?;
        drop(self.frozen);
        let flushing = Instant::now();
        writer.flush()?;
        write_time += flushing.elapsed();
        Ok(WrittenSnapshot {
            record: SnapshotRecord {
                meta: self.meta,
                members: self.members,
                cluster_id: self.cluster_id,
                header,
                chunk_count: u64::from(chunk_count),
                chunk_bytes: image_bytes,
            },
            compact_to: self.compact_to,
            log_bytes: self.log_bytes,
            freeze_time: self.freeze_time,
            encode_time: started.elapsed().saturating_sub(write_time),
            write_time,
        })
    }
}

/// A snapshot whose chunks are written; its record is not yet.
pub struct WrittenSnapshot {
    pub(super) record: SnapshotRecord,
    pub(super) compact_to: u64,
    pub(super) log_bytes: u64,
    pub(super) freeze_time: Duration,
    pub(super) encode_time: Duration,
    /// Time the encoder spent in the writer's calls. When the writer hands
    /// chunks to a thread of its own (the server's), this is the time the
    /// encoder waited for that thread, not the time the writes took.
    pub(super) write_time: Duration,
}

impl WrittenSnapshot {
    /// The log index the snapshot was taken at.
    pub fn index(&self) -> u64 {
        self.record.meta.index
    }
}
