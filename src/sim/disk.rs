//! A simulated disk: what a replica wrote, split into what is durable and
//! what a crash would lose.
//!
//! Every write lands in `current` (the page cache). A synced write, or a
//! sync on its own ([`LogStore::sync`]), makes everything written so far
//! durable, as an fsync of RocksDB's WAL does; an unsynced write (the
//! commit index, and with persistence off the thread every append until its
//! sync lands) stays volatile. A crash throws the volatile part away: the
//! replica restarts from `durable`.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};

use crate::replica::membership::{ClusterId, Members};
use crate::replica::{ChunkWriter, LogStore, SavedSnapshot, SnapshotRecord, StoreError, Syncer};
use crate::storage::MemStore;

#[derive(Debug, Clone)]
pub struct SimDisk {
    current: MemStore,
    durable: MemStore,
    /// Injected bug: a sync returns without making anything durable.
    fsync_lies: bool,
    pub syncs: u64,
    /// Every entry ever appended, by index (a later append at the same
    /// index replaces it). Never compacted: the checker reads committed
    /// entries from here, whatever snapshots did to the log.
    journal: std::collections::BTreeMap<u64, Entry>,
}

impl SimDisk {
    pub fn new(store: MemStore, fsync_lies: bool) -> SimDisk {
        let mut journal = std::collections::BTreeMap::new();
        let first = raft::Storage::first_index(&store).unwrap_or(1);
        let last = raft::Storage::last_index(&store).unwrap_or(0);
        if last >= first {
            if let Ok(entries) = raft::Storage::entries(
                &store,
                first,
                last + 1,
                None,
                GetEntriesContext::empty(false),
            ) {
                for entry in entries {
                    journal.insert(entry.index, entry);
                }
            }
        }
        SimDisk {
            current: store.clone(),
            durable: store,
            fsync_lies,
            syncs: 0,
            journal,
        }
    }

    /// The last entry appended at `index`, if any.
    pub fn journal(&self, index: u64) -> Option<&Entry> {
        self.journal.get(&index)
    }

    fn synced(&mut self) {
        self.syncs += 1;
        if !self.fsync_lies {
            self.durable = self.current.clone();
        }
    }

    /// The machine lost power: only durable writes survive.
    pub fn crash(&mut self) {
        self.current = self.durable.clone();
    }
}

struct NoThreadSync;

impl Syncer for NoThreadSync {
    fn sync(&self) -> Result<(), StoreError> {
        Err(StoreError::Io(
            "the simulated disk cannot be synced from another thread".into(),
        ))
    }
}

impl raft::Storage for SimDisk {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.current.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.current.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.current.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.current.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.current.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.current.snapshot(request_index, to)
    }
}

impl LogStore for SimDisk {
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        self.current.append(entries, hard_state, sync)?;
        if let Some(first) = entries.first() {
            let stale: Vec<u64> = self.journal.range(first.index..).map(|(i, _)| *i).collect();
            for i in stale {
                self.journal.remove(&i);
            }
        }
        for entry in entries {
            self.journal.insert(entry.index, entry.clone());
        }
        if sync {
            self.synced();
        }
        Ok(())
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        self.current.set_commit(commit)
    }

    fn set_conf_state(
        &mut self,
        conf_state: &ConfState,
        members: &Members,
    ) -> Result<(), StoreError> {
        self.current.set_conf_state(conf_state, members)?;
        self.synced();
        Ok(())
    }

    fn members(&self) -> Members {
        self.current.members()
    }

    fn set_cluster_id(&mut self, id: &ClusterId) -> Result<(), StoreError> {
        self.current.set_cluster_id(id)?;
        self.synced();
        Ok(())
    }

    fn cluster_id(&self) -> Option<ClusterId> {
        self.current.cluster_id()
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.synced();
        Ok(())
    }

    /// The simulated disk is one value owned by its replica, not shared
    /// with a thread: the simulator syncs it through
    /// [`crate::replica::Replica::sync_store`] instead. Refuses, loudly.
    fn syncer(&self) -> Box<dyn Syncer> {
        Box::new(NoThreadSync)
    }

    fn chunk_writer(&self) -> Box<dyn ChunkWriter> {
        self.current.chunk_writer()
    }

    fn save_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        compact_to: u64,
    ) -> Result<(), StoreError> {
        self.current.save_snapshot(snapshot, compact_to)?;
        self.synced();
        Ok(())
    }

    fn install_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        chunks: &[&[u8]],
    ) -> Result<(), StoreError> {
        self.current.install_snapshot(snapshot, chunks)?;
        // The snapshot replaces the whole log: older appends are void.
        self.journal.clear();
        self.synced();
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<SavedSnapshot>, StoreError> {
        self.current.load_snapshot()
    }

    fn log_bytes(&self) -> u64 {
        self.current.log_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            index,
            term: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_crash_loses_only_unsynced_writes() {
        let mut disk = SimDisk::new(MemStore::new(&[1]), false);
        disk.append(&[entry(2)], None, true).unwrap();
        disk.set_commit(2).unwrap();
        disk.crash();
        assert_eq!(raft::Storage::last_index(&disk).unwrap(), 2);
        assert_eq!(
            raft::Storage::initial_state(&disk)
                .unwrap()
                .hard_state
                .commit,
            1,
            "unsynced commit survived"
        );
    }

    #[test]
    fn a_lying_fsync_loses_synced_writes() {
        let mut disk = SimDisk::new(MemStore::new(&[1]), true);
        disk.append(&[entry(2)], None, true).unwrap();
        disk.crash();
        assert_eq!(raft::Storage::last_index(&disk).unwrap(), 1);
    }
}
