//! An in-memory store for tests: the same log view as the RocksDB store,
//! with nothing on disk. Each write is "durable" when it returns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::log_cache::LogCache;
use crate::inventory::snapshot::Image;
use crate::replica::membership::{encode_snapshot_data, ClusterId, Member, Members};
use crate::replica::{ChunkWriter, LogStore, SavedSnapshot, SnapshotRecord, StoreError, Syncer};

/// Chunks written ahead of their snapshot's record, by snapshot index.
/// Shared by a store, its clones and its chunk writers, as a disk is: the
/// record ([`LogStore::save_snapshot`]) takes them out into the snapshot it
/// keeps whole.
type PendingChunks = Arc<Mutex<BTreeMap<u64, Vec<Vec<u8>>>>>;

struct MemChunks {
    pending: PendingChunks,
}

impl ChunkWriter for MemChunks {
    fn put_chunk(&mut self, index: u64, number: u32, bytes: &[u8]) -> Result<(), StoreError> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| StoreError::Io("snapshot chunks: lock poisoned".into()))?;
        let chunks = pending.entry(index).or_default();
        // A snapshot written again at the same index (after a crash)
        // starts over.
        if number == 0 {
            chunks.clear();
        }
        if number as usize != chunks.len() {
            return Err(StoreError::Corrupt(format!(
                "snapshot {index}: chunk {number} written after {} chunks",
                chunks.len()
            )));
        }
        chunks.push(bytes.to_vec());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Memory has no slower layer to sync to: this store models no crash (the
/// simulator's disk does, see `sim::disk`).
struct NoSync;

impl Syncer for NoSync {
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
pub struct MemStore {
    cache: LogCache,
    members: Members,
    cluster_id: Option<ClusterId>,
    /// See [`LogStore::rebuilt_term`].
    rebuilt_term: Option<u64>,
    /// Shared, so cloning a store (the simulator does, at every sync) is cheap.
    snapshot: Option<Arc<SavedSnapshot>>,
    pending: PendingChunks,
}

impl MemStore {
    /// A founding node's store for a brand-new cluster with the given
    /// voters (addressed `node-ID`), bootstrapped as the server does it.
    pub fn new(voters: &[u64]) -> MemStore {
        let members: Members = voters
            .iter()
            .map(|id| (*id, Member::at(&format!("node-{id}"))))
            .collect();
        let mut store = MemStore::default();
        // Encoding a conf change into memory cannot fail.
        if let Ok(bootstrap) = crate::replica::membership::bootstrap(&members) {
            store.cache.append(&bootstrap.entries);
            store.cache.hard_state = bootstrap.hard_state;
            store.cache.conf_state = bootstrap.conf_state;
        }
        store.members = members;
        store
    }

    /// A store for a node joining a running cluster: no log, no vote. (A
    /// new member may vote with its empty log: having acknowledged nothing,
    /// it forgot nothing. Only a rebuilt member withholds its vote.)
    pub(crate) fn joining(members: &Members) -> MemStore {
        MemStore {
            members: members.clone(),
            ..MemStore::default()
        }
    }

    /// A store for a member rebuilt from its peers (`server::rebuild`): no
    /// log, `hard_state` (a term no other member reached, its own vote),
    /// and rebuilding until it catches up (`replica::rebuild`).
    pub(crate) fn rebuilt(
        members: &Members,
        cluster_id: Option<ClusterId>,
        hard_state: HardState,
    ) -> MemStore {
        let mut store = MemStore::joining(members);
        store.cluster_id = cluster_id;
        store.rebuilt_term = Some(hard_state.term);
        store.cache.hard_state = hard_state;
        store
    }
}

impl raft::Storage for MemStore {
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
        match &self.snapshot {
            Some(saved) if saved.meta.index >= request_index => {
                let mut snapshot = Snapshot::default();
                snapshot.set_metadata(saved.meta.clone());
                snapshot.data =
                    encode_snapshot_data(&saved.members, saved.cluster_id.as_ref(), &saved.image)
                        .into();
                Ok(snapshot)
            }
            _ => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}

impl LogStore for MemStore {
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        _sync: bool,
    ) -> Result<(), StoreError> {
        self.cache
            .check_append(entries)
            .map_err(StoreError::Corrupt)?;
        self.cache.append(entries);
        if let Some(hs) = hard_state {
            self.cache.hard_state = hs.clone();
        }
        Ok(())
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        self.cache.hard_state.commit = self.cache.hard_state.commit.max(commit);
        Ok(())
    }

    fn set_conf_state(
        &mut self,
        conf_state: &ConfState,
        members: &Members,
    ) -> Result<(), StoreError> {
        self.cache.conf_state = conf_state.clone();
        self.members = members.clone();
        Ok(())
    }

    fn members(&self) -> Members {
        self.members.clone()
    }

    fn set_cluster_id(&mut self, id: &ClusterId) -> Result<(), StoreError> {
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
        self.rebuilt_term = None;
        Ok(())
    }

    fn chunk_writer(&self) -> Box<dyn ChunkWriter> {
        Box::new(MemChunks {
            pending: self.pending.clone(),
        })
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn syncer(&self) -> Box<dyn Syncer> {
        Box::new(NoSync)
    }

    fn save_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        compact_to: u64,
    ) -> Result<(), StoreError> {
        let index = snapshot.meta.index;
        let chunks = {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| StoreError::Io("snapshot chunks: lock poisoned".into()))?;
            let chunks = pending.remove(&index).unwrap_or_default();
            // Older snapshots' chunks go, as the RocksDB record deletes them.
            pending.retain(|&at, _| at > index);
            chunks
        };
        if chunks.len() as u64 != snapshot.chunk_count {
            return Err(StoreError::Corrupt(format!(
                "snapshot {index}: {} chunks written, the record names {}",
                chunks.len(),
                snapshot.chunk_count
            )));
        }
        self.cache.hard_state.commit = self.cache.hard_state.commit.max(index);
        self.cache
            .compact(compact_to.min(index))
            .map_err(StoreError::Corrupt)?;
        self.cache.snapshot_meta = Some(snapshot.meta.clone());
        self.snapshot = Some(Arc::new(SavedSnapshot {
            meta: snapshot.meta.clone(),
            members: snapshot.members.clone(),
            cluster_id: snapshot.cluster_id,
            image: Image {
                header: snapshot.header,
                chunks,
                digest: snapshot.header.digest,
            },
        }));
        Ok(())
    }

    fn install_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        chunks: &[&[u8]],
    ) -> Result<(), StoreError> {
        snapshot.check_chunks(chunks)?;
        self.cache.install(&snapshot.meta);
        self.members = snapshot.members.clone();
        self.cluster_id = snapshot.cluster_id;
        let mut owned = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            owned.push(chunk.to_vec());
        }
        self.snapshot = Some(Arc::new(SavedSnapshot {
            meta: snapshot.meta.clone(),
            members: snapshot.members.clone(),
            cluster_id: snapshot.cluster_id,
            image: Image {
                header: snapshot.header,
                chunks: owned,
                digest: snapshot.header.digest,
            },
        }));
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<SavedSnapshot>, StoreError> {
        Ok(self.snapshot.as_deref().cloned())
    }

    fn log_bytes(&self) -> u64 {
        self.cache.entry_bytes()
    }

    /// Memory is never damaged at rest.
    fn snapshot_unreadable(&self) -> bool {
        false
    }
}
