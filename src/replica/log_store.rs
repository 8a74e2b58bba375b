//! The storage trait the replication core writes through.
//!
//! raft-rs reads the log through [`raft::Storage`]; this trait adds the
//! writes the Ready loop performs. The server implements it over RocksDB
//! ([`crate::storage::RocksStore`]); tests and the simulator use an
//! in-memory disk ([`crate::storage::MemStore`]). Every method either
//! completes or returns an error, and the core treats any error as fatal: a
//! node whose disk refused a write stops instead of answering from state it
//! cannot trust.

use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use thiserror::Error;

use super::membership::{ClusterId, Members};
use crate::inventory::snapshot::Image;
use crate::proto::internal as pb;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("storage holds damaged data: {0}")]
    Corrupt(String),
}

/// A state-machine snapshot as stored: where it sits in the log (index,
/// term, membership), the members' addresses, and the image.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedSnapshot {
    pub meta: SnapshotMetadata,
    pub members: Members,
    pub cluster_id: Option<ClusterId>,
    pub image: Image,
}

/// A stored snapshot's record without its image: what a restart reads
/// first, before it reads the chunks one at a time
/// ([`LogStore::read_snapshot_chunks`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    pub meta: SnapshotMetadata,
    pub members: Members,
    pub cluster_id: Option<ClusterId>,
    pub header: pb::SnapshotHeader,
    pub chunk_count: u64,
    /// Bytes of all chunks: the room a leader reserves to send the image
    /// in one message. 0 in a record written before it was kept.
    pub chunk_bytes: u64,
}

impl SnapshotRecord {
    /// The record of a whole snapshot.
    pub fn of(saved: &SavedSnapshot) -> SnapshotRecord {
        SnapshotRecord {
            meta: saved.meta.clone(),
            members: saved.members.clone(),
            cluster_id: saved.cluster_id,
            header: saved.image.header,
            chunk_count: saved.image.chunks.len() as u64,
            chunk_bytes: saved.image.byte_count(),
        }
    }

    /// Refuses `chunks` that are not as many as this record names, before
    /// a store writes any of them: a record must name exactly the chunks
    /// stored under it, or a restart would stop at a missing one.
    pub(crate) fn check_chunks(&self, chunks: &[&[u8]]) -> Result<(), StoreError> {
        if chunks.len() as u64 == self.chunk_count {
            return Ok(());
        }
        Err(StoreError::Corrupt(format!(
            "snapshot {}: {} chunks for a record of {}",
            self.meta.index,
            chunks.len(),
            self.chunk_count
        )))
    }
}

/// Writes a snapshot's chunks, from any thread: the part of storing a
/// snapshot whose time grows with the whole state (hundreds of megabytes
/// for ten million counters), so the server runs it off the replication
/// thread. Chunks stay unreferenced until [`LogStore::save_snapshot`]
/// writes the record that names them; chunks a crash left unreferenced are
/// deleted by the next snapshot's record.
pub trait ChunkWriter: Send {
    /// Stores chunk `number` (counted from 0, handed in order) of the
    /// snapshot at log index `index`. May be buffered until
    /// [`ChunkWriter::flush`]; need not be durable on return: the synced
    /// record written after all of them is.
    fn put_chunk(&mut self, index: u64, number: u32, bytes: &[u8]) -> Result<(), StoreError>;

    /// Writes whatever [`ChunkWriter::put_chunk`] still buffers.
    fn flush(&mut self) -> Result<(), StoreError>;
}

/// Stores the chunks of the snapshot at `index` (one received from the
/// leader), in order, through `writer`, then flushes it.
pub(crate) fn put_chunks<C: AsRef<[u8]>>(
    writer: &mut dyn ChunkWriter,
    index: u64,
    chunks: &[C],
) -> Result<(), StoreError> {
    for (number, chunk) in chunks.iter().enumerate() {
        let bytes = chunk.as_ref();
        let number = u32::try_from(number)
            .map_err(|_| StoreError::Corrupt(format!("snapshot {index} has too many chunks")))?;
        writer.put_chunk(index, number, bytes)?;
    }
    writer.flush()
}

/// Makes writes durable, from any thread: the fsync that the replication
/// thread no longer waits for itself (see [`crate::replica`], persistence
/// off the thread). Everything any writer wrote before the call is durable
/// when it returns, as an fsync of RocksDB's one write-ahead log makes it.
pub trait Syncer: Send {
    fn sync(&self) -> Result<(), StoreError>;
}

/// The durable half of a replica: log entries, hard state, conf state and
/// state-machine snapshots.
pub trait LogStore: raft::Storage {
    /// Appends `entries` (dropping any stored entries at or after the first
    /// one's index, which a new leader overwrote) and, when given, the hard
    /// state, in ONE atomic write. When `sync` is true the write, and every
    /// write made before it, is on stable storage when this returns; the
    /// core relies on that before it acknowledges anything or sends a vote
    /// or append response. When false it is durable after the next
    /// [`Self::sync`] or [`Syncer::sync`]; writes are durable in the order
    /// they were made (a crash keeps a prefix of them).
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError>;

    /// Makes every write made so far durable, including those [`Self::append`]
    /// made with `sync: false`, on the caller's thread.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// A handle that does what [`Self::sync`] does from another thread.
    fn syncer(&self) -> Box<dyn Syncer>;

    /// Records a newer commit index. Not synced: after a crash the commit
    /// index is learned again from the leader, and what was applied is
    /// rebuilt from the snapshot and the log.
    fn set_commit(&mut self, commit: u64) -> Result<(), StoreError>;

    /// Records the membership (ids and addresses) after a membership change
    /// entry was applied, or at the bootstrap of a new cluster.
    fn set_conf_state(
        &mut self,
        conf_state: &ConfState,
        members: &Members,
    ) -> Result<(), StoreError>;

    /// The members' addresses as last stored.
    fn members(&self) -> Members;

    /// Records the cluster's id once the entry that gives it is applied
    /// (synced: members refuse peers of other clusters by it). Stored with
    /// the members, and carried by every snapshot written after.
    fn set_cluster_id(&mut self, id: &ClusterId) -> Result<(), StoreError>;

    /// The cluster's id as last stored; None before the first leader's
    /// entry naming it was applied here.
    fn cluster_id(&self) -> Option<ClusterId>;

    /// The term a rebuild from the peers started this member at, while it
    /// has not caught up (`replica::rebuild`); None otherwise.
    fn rebuilt_term(&self) -> Option<u64>;

    /// Records that the rebuild is over, synced: a crash that brought the
    /// mark back would set a member that had caught up rebuilding again,
    /// withholding its vote, and an operator who saw it caught up may be
    /// rebuilding another member by then: with two withholding, a cluster
    /// of three or four elects no one.
    fn clear_rebuilt(&mut self) -> Result<(), StoreError>;

    /// A writer of snapshot chunks, usable on another thread.
    fn chunk_writer(&self) -> Box<dyn ChunkWriter>;

    /// Stores the record of a snapshot of the state machine taken at
    /// `meta.index`, whose chunks [`LogStore::chunk_writer`] wrote before,
    /// then drops log entries up to `compact_to` (at most `meta.index`), in
    /// one synced write: the log is never shortened before the snapshot that
    /// replaces it is durable.
    fn save_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        compact_to: u64,
    ) -> Result<(), StoreError>;

    /// Replaces the whole log with a snapshot received from the leader:
    /// its record and its `chunks`, borrowed from the message they came in
    /// (so the image is not copied to be stored).
    fn install_snapshot(
        &mut self,
        record: &SnapshotRecord,
        chunks: &[&[u8]],
    ) -> Result<(), StoreError>;

    /// The latest stored snapshot, image and all: what the memory store and
    /// the simulator's disk send a follower that fell behind. The RocksDB
    /// store builds that message from the chunks as it reads them instead,
    /// so the image is not held twice.
    fn load_snapshot(&self) -> Result<Option<SavedSnapshot>, StoreError>;

    /// The latest stored snapshot's record, without its image: the first
    /// step of a restart. The default loads the whole snapshot; a store
    /// that keeps images in chunks reads only the record.
    fn snapshot_record(&self) -> Result<Option<SnapshotRecord>, StoreError> {
        let saved = self.load_snapshot()?;
        Ok(saved.as_ref().map(SnapshotRecord::of))
    }

    /// Hands the chunks of the snapshot `record` names to `each`, in order
    /// and one at a time, so that a restart never holds the whole image
    /// (see [`crate::inventory::snapshot::ImageReader`]). The default loads
    /// the whole snapshot; the RocksDB store reads chunk by chunk.
    fn read_snapshot_chunks(
        &self,
        record: &SnapshotRecord,
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        let saved = self.load_snapshot()?;
        let Some(saved) = saved.filter(|s| s.meta.index == record.meta.index) else {
            return Err(StoreError::Corrupt(format!(
                "the snapshot at index {} is gone",
                record.meta.index
            )));
        };
        for bytes in &saved.image.chunks {
            each(bytes);
        }
        Ok(())
    }

    /// Bytes of log entries held since the last snapshot, to decide when to
    /// take the next one.
    fn log_bytes(&self) -> u64;

    /// Whether the stored snapshot failed to read back as it was being
    /// sent to a follower (a damaged chunk fails RocksDB's checksum). The
    /// replica then stops, as on any storage error: serving on, it could
    /// never catch that follower up, and restarted, the store refuses to
    /// open, so the member is rebuilt from its peers.
    fn snapshot_unreadable(&self) -> bool;
}
