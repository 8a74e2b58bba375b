//! raft-rs's `Storage` (served from the in-memory log) and [`LogStore`]
//! (the writes) over RocksDB.

use std::sync::Arc;

use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{WriteBatch, DB};

use super::chunks::RocksChunks;
use super::{
    corrupt, encode_pb, log_key, sync_wal, RocksStore, KEY_CONF_STATE, KEY_HARD_STATE, KEY_MEMBERS,
    KEY_REBUILT, KEY_TRUNCATED,
};
use crate::inventory::snapshot;
use crate::replica::membership::{
    cluster_id_of, envelope, from_records, start_snapshot_data, ClusterId, Members,
};
use crate::replica::{
    put_chunks, ChunkWriter, LogStore, SavedSnapshot, SnapshotRecord, StoreError, Syncer,
};

/// Syncs the write-ahead log from the sync thread (see [`LogStore::sync`]).
struct RocksSyncer {
    db: Arc<DB>,
}

impl Syncer for RocksSyncer {
    fn sync(&self) -> Result<(), StoreError> {
        sync_wal(&self.db)
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
            tracing::error!("reading the snapshot to send: {e}");
            self.snapshot_unreadable
                .store(true, std::sync::atomic::Ordering::Relaxed);
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
        // `failpoints` feature): before and after the write.
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

    fn rebuilt_term(&self) -> Option<u64> {
        self.rebuilt_term
    }

    fn clear_rebuilt(&mut self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete(KEY_REBUILT);
        // Synced: a crash that brought the mark back would set a member
        // that had caught up rebuilding again, withholding its vote while
        // the operator, seeing it healthy, rebuilds another.
        self.write(batch, true)?;
        self.rebuilt_term = None;
        Ok(())
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

    fn snapshot_unreadable(&self) -> bool {
        self.snapshot_unreadable
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
