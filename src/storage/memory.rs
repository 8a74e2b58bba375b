//! An in-memory store for tests: the same log view as the RocksDB store,
//! with nothing on disk. Each write is "durable" when it returns.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::log_cache::LogCache;
use crate::inventory::snapshot::{self, Image};
use crate::replica::{LogStore, StoreError};

#[derive(Debug, Default, Clone)]
pub struct MemStore {
    cache: LogCache,
    snapshot: Option<(SnapshotMetadata, Image)>,
}

impl MemStore {
    /// A store for a brand-new cluster with the given voters.
    pub fn new(voters: &[u64]) -> MemStore {
        let mut store = MemStore::default();
        store.cache.conf_state.voters = voters.to_vec();
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
            Some((meta, image)) if meta.index >= request_index => {
                let mut snapshot = Snapshot::default();
                snapshot.set_metadata(meta.clone());
                snapshot.data = snapshot::to_bytes(image).into();
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

    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), StoreError> {
        self.cache.conf_state = conf_state.clone();
        Ok(())
    }

    fn save_snapshot(
        &mut self,
        meta: &SnapshotMetadata,
        image: &Image,
        compact_to: u64,
    ) -> Result<(), StoreError> {
        self.cache.hard_state.commit = self.cache.hard_state.commit.max(meta.index);
        self.cache
            .compact(compact_to.min(meta.index))
            .map_err(StoreError::Corrupt)?;
        self.cache.snapshot_meta = Some(meta.clone());
        self.snapshot = Some((meta.clone(), image.clone()));
        Ok(())
    }

    fn install_snapshot(
        &mut self,
        meta: &SnapshotMetadata,
        image: &Image,
    ) -> Result<(), StoreError> {
        self.cache.install(meta);
        self.snapshot = Some((meta.clone(), image.clone()));
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<(SnapshotMetadata, Image)>, StoreError> {
        Ok(self.snapshot.clone())
    }

    fn log_bytes(&self) -> u64 {
        self.cache.entry_bytes()
    }
}
