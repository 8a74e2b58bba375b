//! A simulated disk: what a replica wrote, split into what is durable and
//! what a crash would lose.
//!
//! Every write lands in `current` (the page cache). A synced write, or a
//! sync on its own ([`LogStore::sync`]), makes everything written so far
//! durable, as an fsync of RocksDB's WAL does; an unsynced write (the
//! commit index, and with persistence off the thread every append until its
//! sync lands) stays volatile. A crash throws the volatile part away: the
//! replica restarts from `durable`.
//!
//! The simulator can also make a disk fail (`DiskFailure`), until the
//! machine restarts: every write, or every sync, returns an error, and a
//! failed sync makes nothing durable (as Linux may drop the dirty pages of
//! a failed fsync). The rule the replica keeps: any storage error stops
//! the node; the simulator then crashes it, as the server aborts.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};

use crate::replica::membership::{ClusterId, Members};
use crate::replica::{ChunkWriter, LogStore, SavedSnapshot, SnapshotRecord, StoreError, Syncer};
use crate::storage::MemStore;

/// How a failing disk fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFailure {
    /// fsync returns EIO; writes still land in the page cache.
    SyncEio,
    /// Writes return EIO, and so do syncs.
    WriteEio,
    /// Writes return ENOSPC; syncs of what was written before succeed.
    NoSpace,
}

impl DiskFailure {
    fn code(self) -> u8 {
        match self {
            DiskFailure::SyncEio => 1,
            DiskFailure::WriteEio => 2,
            DiskFailure::NoSpace => 3,
        }
    }

    fn of(code: u8) -> Option<DiskFailure> {
        match code {
            1 => Some(DiskFailure::SyncEio),
            2 => Some(DiskFailure::WriteEio),
            3 => Some(DiskFailure::NoSpace),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimDisk {
    /// The failure switched on, shared by the clones of this disk (the
    /// simulator switches it through the replica that owns the disk).
    failure: std::sync::Arc<std::sync::atomic::AtomicU8>,
    current: MemStore,
    durable: MemStore,
    /// A chunk of the stored snapshot damaged at rest (bit rot), shared by
    /// the clones of this disk: found when the snapshot is read back, to
    /// send it or at a restart, as RocksDB's checksums find it.
    damaged: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The damaged snapshot was read to be sent.
    damage_read: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
            failure: std::sync::Arc::default(),
            damaged: std::sync::Arc::default(),
            damage_read: std::sync::Arc::default(),
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

    /// The machine lost power: only durable writes survive; a failure
    /// switched on ends with the restart (the disk was replaced or freed).
    pub fn crash(&mut self) {
        self.current = self.durable.clone();
        self.fail(None);
    }

    /// Switches a failure on (or off, with None).
    pub fn fail(&self, failure: Option<DiskFailure>) {
        let code = failure.map_or(0, DiskFailure::code);
        self.failure
            .store(code, std::sync::atomic::Ordering::Relaxed);
    }

    /// Damages a chunk of the stored snapshot, if there is one; true if
    /// there was.
    pub fn damage_snapshot(&self) -> bool {
        if self.current.load_snapshot().ok().flatten().is_none() {
            return false;
        }
        self.damaged
            .store(true, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Whether the stored snapshot is damaged.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new snapshot replaced the damaged one (its chunks deleted with
    /// the old record).
    fn snapshot_replaced(&self) {
        self.damaged
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.damage_read
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn damage_error() -> StoreError {
        StoreError::Corrupt("injected: a snapshot chunk fails its checksum".into())
    }

    /// The failure switched on, if any.
    pub fn failure(&self) -> Option<DiskFailure> {
        DiskFailure::of(self.failure.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Err when writes fail now.
    fn check_write(&self) -> Result<(), StoreError> {
        match self.failure() {
            Some(DiskFailure::WriteEio) => Err(StoreError::Io("injected: write: EIO".into())),
            Some(DiskFailure::NoSpace) => Err(StoreError::Io("injected: write: ENOSPC".into())),
            _ => Ok(()),
        }
    }

    /// Makes everything written so far durable, unless syncs fail now.
    fn sync_or_fail(&mut self) -> Result<(), StoreError> {
        match self.failure() {
            Some(DiskFailure::SyncEio | DiskFailure::WriteEio) => {
                Err(StoreError::Io("injected: fsync: EIO".into()))
            }
            _ => {
                self.synced();
                Ok(())
            }
        }
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
        if self.is_damaged() {
            self.damage_read
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
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
        self.check_write()?;
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
            self.sync_or_fail()?;
        }
        Ok(())
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        self.check_write()?;
        self.current.set_commit(commit)
    }

    fn set_conf_state(
        &mut self,
        conf_state: &ConfState,
        members: &Members,
    ) -> Result<(), StoreError> {
        self.check_write()?;
        self.current.set_conf_state(conf_state, members)?;
        self.sync_or_fail()
    }

    fn members(&self) -> Members {
        self.current.members()
    }

    fn set_cluster_id(&mut self, id: &ClusterId) -> Result<(), StoreError> {
        self.check_write()?;
        self.current.set_cluster_id(id)?;
        self.sync_or_fail()
    }

    fn cluster_id(&self) -> Option<ClusterId> {
        self.current.cluster_id()
    }

    fn rebuilt_term(&self) -> Option<u64> {
        self.current.rebuilt_term()
    }

    fn clear_rebuilt(&mut self) -> Result<(), StoreError> {
        self.check_write()?;
        self.current.clear_rebuilt()?;
        self.sync_or_fail()
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.sync_or_fail()
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
        self.check_write()?;
        self.current.save_snapshot(snapshot, compact_to)?;
        self.sync_or_fail()?;
        self.snapshot_replaced();
        Ok(())
    }

    fn install_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        chunks: &[&[u8]],
    ) -> Result<(), StoreError> {
        self.check_write()?;
        self.current.install_snapshot(snapshot, chunks)?;
        self.sync_or_fail()?;
        self.snapshot_replaced();
        // The snapshot replaces the whole log: older appends are void (once
        // it is durable: a failed sync leaves the node on its old log).
        self.journal.clear();
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<SavedSnapshot>, StoreError> {
        if self.is_damaged() {
            return Err(SimDisk::damage_error());
        }
        self.current.load_snapshot()
    }

    fn log_bytes(&self) -> u64 {
        self.current.log_bytes()
    }

    fn snapshot_unreadable(&self) -> bool {
        self.damage_read.load(std::sync::atomic::Ordering::Relaxed)
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
