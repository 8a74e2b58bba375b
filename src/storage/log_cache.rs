//! The in-memory view of a replica's durable Raft state.
//!
//! Both stores keep the uncompacted log tail in memory and serve raft-rs's
//! reads from here, so the Ready loop never waits on a disk read. The tail is
//! bounded: the replica takes a snapshot and compacts the log once it holds
//! too many entries or bytes (see `ReplicaConfig`). This view is updated only
//! after the matching durable write succeeded, so it never shows raft-rs
//! anything the disk does not hold.

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use raft::{Error as RaftError, RaftState, StorageError};

#[derive(Debug, Default, Clone)]
pub struct LogCache {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Index and term of the last entry dropped by compaction or replaced by
    /// a snapshot; (0, 0) for a log that starts at 1.
    pub truncated_index: u64,
    pub truncated_term: u64,
    /// Entries truncated_index+1 ..= last_index, in order, without gaps.
    entries: VecDeque<Entry>,
    entry_bytes: u64,
    /// The latest stored snapshot, if any.
    pub snapshot_meta: Option<SnapshotMetadata>,
}

impl LogCache {
    pub(crate) fn raft_state(&self) -> RaftState {
        RaftState::new(self.hard_state.clone(), self.conf_state.clone())
    }

    pub fn first_index(&self) -> u64 {
        self.truncated_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.truncated_index + self.entries.len() as u64
    }

    /// Bytes of entry data held.
    pub(crate) fn entry_bytes(&self) -> u64 {
        self.entry_bytes
    }

    pub fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(RaftError::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(RaftError::Store(StorageError::Unavailable));
        }
        let start = (low - self.first_index()) as usize;
        let end = (high - self.first_index()) as usize;
        let mut out = Vec::with_capacity(end - start);
        let mut size = 0u64;
        for entry in self.entries.range(start..end) {
            size += u64::from(entry.compute_size());
            // Always at least one entry, as raft-rs requires.
            if !out.is_empty() && max_size.is_some_and(|max| size > max) {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    pub fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if index < self.first_index() {
            return Err(RaftError::Store(StorageError::Compacted));
        }
        if index > self.last_index() {
            return Err(RaftError::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(index - self.first_index()) as usize].term)
    }

    /// Appends entries that are now durable, dropping any conflicting
    /// suffix. Returns the index range of dropped entries (to delete on disk
    /// in the same write) as `first..=last`, or None.
    pub(crate) fn plan_append(&self, entries: &[Entry]) -> Option<(u64, u64)> {
        let first = entries.first()?.index;
        if first <= self.last_index() {
            return Some((first, self.last_index()));
        }
        None
    }

    /// Checks that `entries` can follow this log: contiguous, not behind
    /// the compacted prefix, without gaps.
    pub(crate) fn check_append(&self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.truncated_index {
            return Err(format!(
                "append at {} overwrites compacted entries (truncated at {})",
                first.index, self.truncated_index
            ));
        }
        if first.index > self.last_index() + 1 {
            return Err(format!(
                "append at {} leaves a gap after {}",
                first.index,
                self.last_index()
            ));
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(format!(
                    "entries {} and {} are not contiguous",
                    pair[0].index, pair[1].index
                ));
            }
        }
        Ok(())
    }

    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        while self.last_index() >= first.index {
            if let Some(dropped) = self.entries.pop_back() {
                self.entry_bytes -= dropped.data.len() as u64;
            }
        }
        for entry in entries {
            self.entry_bytes += entry.data.len() as u64;
            self.entries.push_back(entry.clone());
        }
    }

    /// Drops entries up to and including `index` (which must be held).
    pub fn compact(&mut self, index: u64) -> Result<(), String> {
        if index <= self.truncated_index {
            return Ok(());
        }
        let term = self.term(index).map_err(|e| e.to_string())?;
        while self.truncated_index < index {
            if let Some(dropped) = self.entries.pop_front() {
                self.entry_bytes -= dropped.data.len() as u64;
            }
            self.truncated_index += 1;
        }
        self.truncated_term = term;
        Ok(())
    }

    /// Replaces the log with a snapshot's position.
    pub fn install(&mut self, meta: &SnapshotMetadata) {
        self.entries.clear();
        self.entry_bytes = 0;
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot_meta = Some(meta.clone());
    }

    /// Rebuilds the view at startup from entries read back from disk.
    pub(crate) fn load_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            self.entry_bytes += entry.data.len() as u64;
            self.entries.push_back(entry);
        }
    }
}
