//! The RocksDB store: one database per node, in `--data-dir`.
//!
//! Keys (default column family):
//!
//! | key                      | value                                       |
//! |--------------------------|---------------------------------------------|
//! | `h`                      | Raft hard state (term, vote, commit)        |
//! | `c`                      | Raft conf state (membership)                |
//! | `a`                      | members' addresses                          |
//! | `t`                      | index and term of the last dropped entry    |
//! | `l` + index (8 bytes BE) | one Raft log entry                          |
//! | `s`                      | the latest snapshot's metadata and header   |
//! | `S` + index + chunk no.  | that snapshot's chunks                      |
//!
//! Write order and syncs (the fault model: the process or machine may stop
//! at any instant; a synced write is all there or all gone after restart):
//!
//! 1. [`LogStore::append`]: new entries, the deletion of any suffix they
//!    replace, and the hard state, in one `WriteBatch`. The server writes
//!    it unsynced and then, on its sync thread, [`Syncer::sync`]
//!    (`FlushWAL(true)`: an fsync of the WAL, durable for every write made
//!    before it, by any thread); only after that sync returns does the node
//!    acknowledge a client or send a vote or append response. (Synced at
//!    once when `sync` is true: tests, the simulator's other mode, and a
//!    Ready that installed a snapshot.)
//! 2. [`LogStore::set_commit`]: the hard state with a newer commit index,
//!    not synced. Losing it is harmless: the leader re-sends the commit
//!    index, and what was applied is rebuilt from snapshot and log.
//! 3. A snapshot: first its chunks ([`ChunkWriter::put_chunks`], on a
//!    thread of their own in the server, interleaved with 1 and 2 of later
//!    entries), in unsynced batches of at most 4 MiB, under keys of the
//!    snapshot's index that no record names yet; then, once they all
//!    returned, [`LogStore::save_snapshot`]: its record, the new truncation
//!    point, the deletion of older chunks and of compacted entries, in one
//!    synced `WriteBatch`. That sync makes the earlier WAL records durable
//!    too (RocksDB syncs every WAL file not yet synced), so the log never
//!    shrinks before the snapshot that replaces it is durable, and a crash
//!    before it leaves only unnamed chunks, deleted by a later snapshot's
//!    record.
//! 4. [`LogStore::install_snapshot`]: like 3 (chunks written on the
//!    replication thread), but it replaces the whole log.
//!
//! RocksDB settings chosen on purpose (see ARCHITECTURE.md): every
//! acknowledged write is synced through the WAL (`WriteOptions::set_sync`,
//! or `FlushWAL(true)` after it),
//! and the WAL recovery mode is `TolerateCorruptedTailRecords`: a record cut
//! short at the very end of the WAL (what a crash in the middle of a write
//! leaves; that write was never acknowledged, as acknowledgement waits for
//! its sync to return) is dropped, and any other damage, a checksum mismatch
//! anywhere, makes the open fail instead of being skipped, because a skipped
//! synced record is a forgotten vote or acknowledged entry.
//! `paranoid_checks` makes RocksDB verify checksums when it opens files. On
//! open, the log read back must be contiguous and agree with the
//! hard state, or the store refuses to open ([`StoreError::Corrupt`]); a
//! cluster node is then rebuilt from a peer (see `server::rebuild`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{DBRecoveryMode, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use super::log_cache::LogCache;
use crate::inventory::snapshot::{self, Image};
use crate::proto::internal as pb;
use crate::replica::membership::{
    cluster_id_of, envelope, from_records, start_snapshot_data, to_records, Bootstrap, ClusterId,
    Members,
};
use crate::replica::wire;
use crate::replica::{
    put_chunks, ChunkWriter, LogStore, SavedSnapshot, SnapshotRecord, StoreError, Syncer,
};

/// Chunk handles reserved up front when a snapshot is read whole: a
/// damaged record's count is believed no further (the vector still grows
/// past it for an image that really has more chunks).
const CHUNKS_RESERVED_MAX: usize = 65_536;

const KEY_HARD_STATE: &[u8] = b"h";
const KEY_CONF_STATE: &[u8] = b"c";
const KEY_MEMBERS: &[u8] = b"a";
const KEY_TRUNCATED: &[u8] = b"t";
const KEY_SNAPSHOT: &[u8] = b"s";
const PREFIX_LOG: u8 = b'l';
const PREFIX_CHUNK: u8 = b'S';

/// Snapshot chunk bytes per unsynced write ahead of the snapshot's record:
/// a synced append of client entries queued in RocksDB behind one of these
/// waits for all of it, and the sync after it carries it to disk. Snapshot
/// log lines here show about 45 ms of writing for 18 MB of chunks: about
/// 10 ms per batch of 4 MiB (the size before stop 19), under 1 ms per
/// 256 KiB.
const CHUNK_BATCH_BYTES_MAX: usize = 256 * 1024;

fn log_key(index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = PREFIX_LOG;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

fn chunk_key(index: u64, chunk: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[0] = PREFIX_CHUNK;
    key[1..9].copy_from_slice(&index.to_be_bytes());
    key[9..].copy_from_slice(&chunk.to_be_bytes());
    key
}

fn io(context: &str, e: rocksdb::Error) -> StoreError {
    StoreError::Io(format!("{context}: {e}"))
}

fn corrupt(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{context}: {e}"))
}

fn encode_pb(message: &impl protobuf::Message) -> Result<Vec<u8>, StoreError> {
    message
        .write_to_bytes()
        .map_err(|e| StoreError::Io(format!("encoding raft state: {e}")))
}

/// Writes snapshot chunks ahead of their record, from any thread.
///
/// Unsynced batches of at most [`CHUNK_BATCH_BYTES_MAX`]: one batch of a
/// whole image of ten million counters would sit in one memtable and double
/// the node's memory, and a synced append of client entries written
/// meanwhile waits behind whole batches in RocksDB's write queue, so small
/// batches keep that wait short.
struct RocksChunks {
    db: Arc<DB>,
    batch: WriteBatch,
    batch_bytes: usize,
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

/// Syncs the write-ahead log from the sync thread (see [`LogStore::sync`]).
struct RocksSyncer {
    db: Arc<DB>,
}

impl Syncer for RocksSyncer {
    fn sync(&self) -> Result<(), StoreError> {
        sync_wal(&self.db)
    }
}

/// Syncs every write-ahead-log file RocksDB wrote so far (`FlushWAL(true)`,
/// which, with the WAL written on every write as here, is `SyncWAL`): every
/// write made before the call, by any thread, is durable when it returns.
fn sync_wal(db: &DB) -> Result<(), StoreError> {
    let started = Instant::now();
    // Crash points for the crash tests: entries written, not yet synced;
    // synced, no one told yet.
    fail::fail_point!("sync::before");
    db.flush_wal(true).map_err(|e| io("syncing the log", e))?;
    fail::fail_point!("sync::after");
    metrics::histogram!("stockraft_fsync_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

/// A replica's durable state in RocksDB, with its log tail cached in memory.
pub struct RocksStore {
    /// Shared with the snapshot chunk writer's thread (RocksDB is safe to
    /// write from several threads; its writes are ordered in one WAL).
    db: Arc<DB>,
    cache: LogCache,
    members: Members,
    /// Stored with the members (see [`LogStore::cluster_id`]).
    cluster_id: Option<ClusterId>,
    /// True when the database held no Raft state when opened.
    fresh: bool,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("first_index", &self.cache.first_index())
            .field("last_index", &self.cache.last_index())
            .finish()
    }
}

impl RocksStore {
    /// Opens (or creates) the store in `dir` and reads the log back.
    pub fn open(dir: &Path) -> Result<RocksStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        options.set_paranoid_checks(true);
        options.set_max_total_wal_size(256 * 1024 * 1024);
        options.set_keep_log_file_num(4);
        let db = DB::open(&options, dir).map_err(|e| {
            let context = format!("opening {}", dir.display());
            if e.kind() == rocksdb::ErrorKind::Corruption {
                corrupt(&context, e)
            } else {
                io(&context, e)
            }
        })?;

        let mut cache = LogCache::default();
        let mut fresh = true;
        if let Some(bytes) = db
            .get(KEY_HARD_STATE)
            .map_err(|e| io("reading hard state", e))?
        {
            cache.hard_state =
                wire::decode_hard_state(&bytes).map_err(|e| corrupt("hard state", e))?;
            fresh = false;
        }
        if let Some(bytes) = db
            .get(KEY_CONF_STATE)
            .map_err(|e| io("reading conf state", e))?
        {
            cache.conf_state =
                wire::decode_conf_state(&bytes).map_err(|e| corrupt("conf state", e))?;
            fresh = false;
        }
        let mut members = Members::new();
        let mut cluster_id = None;
        if let Some(bytes) = db.get(KEY_MEMBERS).map_err(|e| io("reading members", e))? {
            let envelope = pb::SnapshotEnvelope::decode(bytes.as_slice())
                .map_err(|e| corrupt("members", e))?;
            members = from_records(&envelope.members);
            cluster_id = cluster_id_of(&envelope.cluster_id);
        }
        if let Some(bytes) = db
            .get(KEY_TRUNCATED)
            .map_err(|e| io("reading truncation", e))?
        {
            if bytes.len() != 16 {
                return Err(corrupt(
                    "truncation record",
                    format!("{} bytes", bytes.len()),
                ));
            }
            let mut index = [0u8; 8];
            let mut term = [0u8; 8];
            index.copy_from_slice(&bytes[..8]);
            term.copy_from_slice(&bytes[8..]);
            cache.truncated_index = u64::from_be_bytes(index);
            cache.truncated_term = u64::from_be_bytes(term);
        }
        if let Some(bytes) = db
            .get(KEY_SNAPSHOT)
            .map_err(|e| io("reading snapshot record", e))?
        {
            let stored = pb::StoredSnapshot::decode(bytes.as_slice())
                .map_err(|e| corrupt("snapshot record", e))?;
            let meta = wire::decode_snapshot_metadata(&stored.raft_metadata)
                .map_err(|e| corrupt("snapshot metadata", e))?;
            cache.snapshot_meta = Some(meta);
        }

        let mut entries = Vec::new();
        let start = log_key(cache.truncated_index + 1);
        for item in db.iterator(IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item.map_err(|e| io("reading log", e))?;
            if key.first() != Some(&PREFIX_LOG) {
                break;
            }
            let entry = wire::decode_entry(&value).map_err(|e| corrupt("log entry", e))?;
            let expected = cache.truncated_index + 1 + entries.len() as u64;
            if entry.index != expected || key.as_ref() != log_key(entry.index) {
                return Err(corrupt(
                    "log",
                    format!("found entry {} where {expected} belongs", entry.index),
                ));
            }
            entries.push(entry);
        }
        cache.load_entries(entries);
        if cache.hard_state.commit > cache.last_index() {
            return Err(corrupt(
                "log",
                format!(
                    "hard state says {} is committed but the log ends at {}",
                    cache.hard_state.commit,
                    cache.last_index()
                ),
            ));
        }
        // raft-rs aborts the process (not an error) on a commit index
        // before the log it is handed, or a snapshot outside the truncated
        // index ..= commit index; `save_snapshot` writes all three in one
        // batch in that order, so any other order is damage
        // (fuzz/regressions/storage_records/).
        let commit = cache.hard_state.commit;
        let snapshot_index = cache.snapshot_meta.as_ref().map(|m| m.index);
        // And on a membership its `confchange::restore` cannot restore.
        if cache.conf_state != ConfState::default()
            && !crate::replica::admission::conf_state_ok(&cache.conf_state)
        {
            return Err(corrupt(
                "conf state",
                format!("not a membership raft-rs restores: {:?}", cache.conf_state),
            ));
        }
        let stated = cache.hard_state != HardState::default() || snapshot_index.is_some();
        if stated && commit < cache.truncated_index {
            return Err(corrupt(
                "log",
                format!(
                    "hard state says {commit} is committed but the log was truncated at {}",
                    cache.truncated_index
                ),
            ));
        }
        if let Some(index) = snapshot_index {
            if index < cache.truncated_index || index > commit {
                return Err(corrupt(
                    "snapshot record",
                    format!(
                        "snapshot at {index} outside the log's truncation {} and commit {commit}",
                        cache.truncated_index
                    ),
                ));
            }
        }
        Ok(RocksStore {
            db: Arc::new(db),
            cache,
            members,
            cluster_id,
            fresh,
        })
    }

    /// True when the store held no Raft state: a node that has never run.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Writes the first state of a founding node of a new cluster, in one
    /// synced write: the membership entries, hard state, conf state and
    /// addresses.
    pub fn bootstrap(&mut self, bootstrap: &Bootstrap) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for entry in &bootstrap.entries {
            batch.put(log_key(entry.index), encode_pb(entry)?);
        }
        batch.put(KEY_HARD_STATE, encode_pb(&bootstrap.hard_state)?);
        batch.put(KEY_CONF_STATE, encode_pb(&bootstrap.conf_state)?);
        batch.put(
            KEY_MEMBERS,
            envelope(&bootstrap.members, None).encode_to_vec(),
        );
        self.write(batch, true)?;
        self.cache.append(&bootstrap.entries);
        self.cache.hard_state = bootstrap.hard_state.clone();
        self.cache.conf_state = bootstrap.conf_state.clone();
        self.members = bootstrap.members.clone();
        self.fresh = false;
        Ok(())
    }

    /// Writes what a node joining a running cluster knows: where its
    /// members are, the cluster's id (so that it refuses other clusters'
    /// members from its first message), and (for a node rebuilt after its
    /// data was damaged) a hard state that keeps it from voting again in
    /// any term it might have voted in before. Its log, membership and
    /// state arrive from the leader.
    pub fn bootstrap_joining(
        &mut self,
        members: &Members,
        cluster_id: Option<&ClusterId>,
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_CONF_STATE, encode_pb(&ConfState::default())?);
        batch.put(KEY_MEMBERS, envelope(members, cluster_id).encode_to_vec());
        if let Some(hs) = hard_state {
            batch.put(KEY_HARD_STATE, encode_pb(hs)?);
        }
        self.write(batch, true)?;
        self.members = members.clone();
        self.cluster_id = cluster_id.copied();
        if let Some(hs) = hard_state {
            self.cache.hard_state = hs.clone();
        }
        self.fresh = false;
        Ok(())
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        let started = Instant::now();
        self.db
            .write_opt(batch, &options)
            .map_err(|e| io("writing", e))?;
        if sync {
            metrics::histogram!("stockraft_fsync_seconds").record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn read_image(&self, stored: &pb::StoredSnapshot, index: u64) -> Result<Image, StoreError> {
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
    fn scan_chunks(
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
    fn stored_snapshot(
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
    fn put_snapshot(
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

impl raft::Storage for RocksStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.cache.raft_state())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.cache.entries(low, high, max_size.into())
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.cache.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cache.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cache.last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let unavailable = raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        let Some(meta) = self.cache.snapshot_meta.clone() else {
            return Err(unavailable);
        };
        if meta.index < request_index {
            return Err(unavailable);
        }
        let record = match self.snapshot_record() {
            Ok(Some(record)) if record.meta.index == meta.index => record,
            _ => return Err(unavailable),
        };
        // The message's data is built as the chunks are read, each one let
        // go once appended, in a buffer reserved to fit: a leader holds the
        // image once to send it (660 MB for ten million counters), not
        // also the chunks and a grown copy beside it.
        let mut data = start_snapshot_data(
            &record.members,
            record.cluster_id.as_ref(),
            &record.header,
            record.chunk_count,
            record.chunk_bytes,
        );
        let read = self.scan_chunks(meta.index, record.chunk_count, &mut |bytes| {
            snapshot::put_chunk(&bytes, &mut data)
        });
        if let Err(e) = read {
            tracing::warn!("reading the snapshot to send: {e}");
            return Err(unavailable);
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        snapshot.data = data.into();
        Ok(snapshot)
    }
}

impl LogStore for RocksStore {
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        self.cache
            .check_append(entries)
            .map_err(|e| corrupt("append", e))?;
        let mut batch = WriteBatch::default();
        if let Some((first, last)) = self.cache.plan_append(entries) {
            batch.delete_range(log_key(first).as_slice(), log_key(last + 1).as_slice());
        }
        for entry in entries {
            batch.put(log_key(entry.index), encode_pb(entry)?);
        }
        if let Some(hs) = hard_state {
            batch.put(KEY_HARD_STATE, encode_pb(hs)?);
        }
        // Crash points for the crash tests (compiled only with the
        // `failpoints` feature): before and after the one synced write.
        fail::fail_point!("append::before_write");
        self.write(batch, sync)?;
        fail::fail_point!("append::after_write");
        self.cache.append(entries);
        if let Some(hs) = hard_state {
            self.cache.hard_state = hs.clone();
        }
        Ok(())
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        if commit <= self.cache.hard_state.commit {
            return Ok(());
        }
        let mut hs = self.cache.hard_state.clone();
        hs.commit = commit;
        let mut batch = WriteBatch::default();
        batch.put(KEY_HARD_STATE, encode_pb(&hs)?);
        self.write(batch, false)?;
        self.cache.hard_state = hs;
        Ok(())
    }

    fn set_conf_state(
        &mut self,
        conf_state: &ConfState,
        members: &Members,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_CONF_STATE, encode_pb(conf_state)?);
        let record = envelope(members, self.cluster_id.as_ref());
        batch.put(KEY_MEMBERS, record.encode_to_vec());
        self.write(batch, true)?;
        self.cache.conf_state = conf_state.clone();
        self.members = members.clone();
        Ok(())
    }

    fn members(&self) -> Members {
        self.members.clone()
    }

    fn set_cluster_id(&mut self, id: &ClusterId) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(
            KEY_MEMBERS,
            envelope(&self.members, Some(id)).encode_to_vec(),
        );
        self.write(batch, true)?;
        self.cluster_id = Some(*id);
        Ok(())
    }

    fn cluster_id(&self) -> Option<ClusterId> {
        self.cluster_id
    }

    fn chunk_writer(&self) -> Box<dyn ChunkWriter> {
        Box::new(RocksChunks {
            db: self.db.clone(),
            batch: WriteBatch::default(),
            batch_bytes: 0,
        })
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        sync_wal(&self.db)
    }

    fn syncer(&self) -> Box<dyn Syncer> {
        Box::new(RocksSyncer {
            db: self.db.clone(),
        })
    }

    fn save_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        compact_to: u64,
    ) -> Result<(), StoreError> {
        let meta = &snapshot.meta;
        let compact_to = compact_to.min(meta.index);
        let mut batch = WriteBatch::default();
        self.put_snapshot(&mut batch, snapshot)?;
        let mut hs = self.cache.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        batch.put(KEY_HARD_STATE, encode_pb(&hs)?);
        let (truncated_index, truncated_term) = if compact_to > self.cache.truncated_index {
            let term = self
                .cache
                .term(compact_to)
                .map_err(|e| corrupt("compaction", e))?;
            (compact_to, term)
        } else {
            (self.cache.truncated_index, self.cache.truncated_term)
        };
        let mut truncated = Vec::with_capacity(16);
        truncated.extend_from_slice(&truncated_index.to_be_bytes());
        truncated.extend_from_slice(&truncated_term.to_be_bytes());
        batch.put(KEY_TRUNCATED, truncated);
        batch.delete_range(log_key(0).as_slice(), log_key(compact_to + 1).as_slice());
        self.write(batch, true)?;
        self.cache.hard_state = hs;
        self.cache
            .compact(compact_to)
            .map_err(|e| corrupt("compaction", e))?;
        self.cache.snapshot_meta = Some(meta.clone());
        Ok(())
    }

    fn install_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        chunks: &[&[u8]],
    ) -> Result<(), StoreError> {
        let meta = &snapshot.meta;
        snapshot.check_chunks(chunks)?;
        put_chunks(&mut *self.chunk_writer(), meta.index, chunks)?;
        let mut batch = WriteBatch::default();
        self.put_snapshot(&mut batch, snapshot)?;
        batch.delete_range(log_key(0).as_slice(), log_key(u64::MAX).as_slice());
        batch.delete(log_key(u64::MAX));
        let mut hs = self.cache.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        batch.put(KEY_HARD_STATE, encode_pb(&hs)?);
        batch.put(KEY_CONF_STATE, encode_pb(meta.get_conf_state())?);
        // A snapshot without an id (taken before the cluster had one)
        // leaves the one this node knows.
        let cluster_id = snapshot.cluster_id.or(self.cluster_id);
        let record = envelope(&snapshot.members, cluster_id.as_ref());
        batch.put(KEY_MEMBERS, record.encode_to_vec());
        let mut truncated = Vec::with_capacity(16);
        truncated.extend_from_slice(&meta.index.to_be_bytes());
        truncated.extend_from_slice(&meta.term.to_be_bytes());
        batch.put(KEY_TRUNCATED, truncated);
        fail::fail_point!("install_snapshot::before_write");
        self.write(batch, true)?;
        fail::fail_point!("install_snapshot::after_write");
        self.cache.install(meta);
        self.members = snapshot.members.clone();
        self.cluster_id = cluster_id;
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<SavedSnapshot>, StoreError> {
        let Some((stored, meta)) = self.stored_snapshot()? else {
            return Ok(None);
        };
        let image = self.read_image(&stored, meta.index)?;
        Ok(Some(SavedSnapshot {
            meta,
            members: from_records(&stored.members),
            cluster_id: cluster_id_of(&stored.cluster_id),
            image,
        }))
    }

    fn snapshot_record(&self) -> Result<Option<SnapshotRecord>, StoreError> {
        let Some((stored, meta)) = self.stored_snapshot()? else {
            return Ok(None);
        };
        let Some(header) = stored.header else {
            return Err(corrupt("snapshot record", "no header"));
        };
        Ok(Some(SnapshotRecord {
            meta,
            members: from_records(&stored.members),
            cluster_id: cluster_id_of(&stored.cluster_id),
            header,
            chunk_count: u64::from(stored.chunk_count),
            chunk_bytes: stored.chunk_bytes,
        }))
    }

    fn read_snapshot_chunks(
        &self,
        record: &SnapshotRecord,
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        self.scan_chunks(record.meta.index, record.chunk_count, &mut |bytes| {
            each(&bytes)
        })
    }

    fn log_bytes(&self) -> u64 {
        self.cache.entry_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::snapshot;
    use crate::inventory::tests::inventory_of;
    use crate::replica::membership::{encode_snapshot_data, split_snapshot_data};

    fn record_of(index: u64, image: &snapshot::Image) -> SnapshotRecord {
        SnapshotRecord {
            meta: SnapshotMetadata {
                index,
                term: 1,
                ..Default::default()
            },
            members: Members::new(),
            cluster_id: None,
            header: image.header,
            chunk_count: image.chunks.len() as u64,
            chunk_bytes: image.byte_count(),
        }
    }

    /// A snapshot installed from a leader's message is stored from the
    /// message's own buffer and survives a restart: the record, every chunk,
    /// and the message a leader would build from it again.
    #[test]
    fn a_snapshot_installed_from_the_leader_is_stored_as_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let inventory = inventory_of(3 * snapshot::CHUNK_RECORDS_MAX);
        let image = snapshot::write(&inventory);
        let members: Members = [(1, crate::replica::membership::Member::at("127.0.0.1:1"))].into();
        let id = [3u8; 16];
        let data = encode_snapshot_data(&members, Some(&id), &image);
        let split = split_snapshot_data(&data).unwrap();
        let (header, chunks) = (split.header, split.chunks);
        let record = SnapshotRecord {
            members: split.members,
            cluster_id: split.cluster_id,
            ..record_of(7, &image)
        };
        assert_eq!(header, image.header);
        // A record naming more chunks than were sent is refused.
        let short = store.install_snapshot(&record, &chunks[1..]).unwrap_err();
        assert!(
            short.to_string().contains("chunks for a record of"),
            "{short}"
        );
        store.install_snapshot(&record, &chunks).unwrap();
        drop(store);

        let store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.snapshot_record().unwrap().unwrap(), record);
        assert_eq!(store.cluster_id(), Some(id));
        assert_eq!(store.load_snapshot().unwrap().unwrap().image, image);
        let sent = raft::Storage::snapshot(&store, 7, 2).unwrap();
        assert_eq!(&sent.data[..], &data[..]);
    }

    /// A snapshot written chunk by chunk (as the snapshot thread writes it)
    /// is read back chunk by chunk into the same state, and a chunk gone
    /// from the disk is reported, never read past.
    #[test]
    fn a_snapshot_written_in_chunks_is_read_back_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksStore::open(dir.path()).unwrap();
        let inventory = inventory_of(3 * snapshot::CHUNK_RECORDS_MAX + 7);
        let image = snapshot::write(&inventory);
        assert!(image.chunks.len() >= 4, "want several chunks");
        // The entry the snapshot was taken at, compacted away by it.
        let entry = Entry {
            index: 1,
            term: 1,
            ..Default::default()
        };
        store.append(&[entry], None, true).unwrap();
        put_chunks(&mut *store.chunk_writer(), 1, &image.chunks).unwrap();
        store.save_snapshot(&record_of(1, &image), 1).unwrap();
        drop(store);

        let store = RocksStore::open(dir.path()).unwrap();
        let record = store.snapshot_record().unwrap().unwrap();
        assert_eq!(record, record_of(1, &image));
        let mut reader = snapshot::ImageReader::new(&record.header, record.chunk_count).unwrap();
        let mut seen = Vec::new();
        store
            .read_snapshot_chunks(&record, &mut |bytes| {
                seen.push(bytes.to_vec());
                reader.chunk(bytes);
            })
            .unwrap();
        assert_eq!(seen, image.chunks);
        let loaded = reader.finish(1).unwrap();
        assert_eq!(loaded.digest(), inventory.digest());
        // The whole snapshot, as a leader sends it, is the same image.
        assert_eq!(store.load_snapshot().unwrap().unwrap().image, image);
        let sent = raft::Storage::snapshot(&store, 1, 2).unwrap();
        assert_eq!(sent.get_metadata().index, 1);
        assert_eq!(
            &sent.data[..],
            &encode_snapshot_data(&Members::new(), None, &image)[..]
        );

        // Chunk 2 lost: the scan stops there with a clear error.
        store.db.delete(chunk_key(1, 2)).unwrap();
        let mut handed = 0;
        let lost = store
            .read_snapshot_chunks(&record, &mut |_| handed += 1)
            .unwrap_err();
        assert_eq!(handed, 2);
        assert!(
            lost.to_string().contains("chunk 2 of 1 is missing"),
            "{lost}"
        );
    }
}
