//! Snapshots: taking one when the log has grown (frozen here, encoded and
//! stored by the caller or at once, see
//! [`snapshot_task`](super::snapshot_task)), and checking
//! and installing one sent by the leader.

use raft::eraftpb::{Snapshot, SnapshotMetadata};

use super::apply::fail_waiting;
use super::error::Fatal;
use super::output::Output;
use super::{admission, membership};
use super::{LogStore, Replica, SnapshotRecord, SnapshotTask, WrittenSnapshot};
use crate::inventory::snapshot::{self, SnapshotError};
use crate::inventory::Inventory;

impl<S: LogStore> Replica<S> {
    /// Reads a snapshot from the leader whole before raft-rs takes it, so
    /// that one that cannot be read is refused instead of stopping this
    /// replica once raft-rs has taken it; the state read is kept for
    /// [`Self::install_snapshot`], so it is read once. A snapshot raft-rs
    /// will not install (at or below the commit index) is not read.
    pub(super) fn check_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), admission::Refusal> {
        let meta = snapshot.get_metadata();
        if meta.index <= self.raw.raft.raft_log.committed {
            return Ok(());
        }
        match read_snapshot_image(snapshot) {
            Ok(read) => {
                self.snapshot_checked = Some(read);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    index = meta.index,
                    "refused a snapshot from a peer: {error}"
                );
                Err(admission::Refusal::Malformed)
            }
        }
    }

    /// Replaces the state with a snapshot from the leader and stores it,
    /// failing the callers of every entry it covers.
    pub(super) fn install_snapshot(
        &mut self,
        snapshot: Snapshot,
        out: &mut Output,
    ) -> Result<(), Fatal> {
        let meta = snapshot.get_metadata().clone();
        // The chunks stay in the message's buffer: rebuilt from it and
        // stored from it, never copied beside it.
        let membership::SnapshotData {
            members,
            cluster_id,
            header,
            chunks,
        } = membership::split_snapshot_data(&snapshot.data)?;
        // Read whole when it was stepped (`check_snapshot`); again only if
        // raft-rs hands out another one than that.
        let checked = self
            .snapshot_checked
            .take()
            .filter(|c| c.index == meta.index && c.term == meta.term);
        let ReadSnapshot {
            inventory,
            image_bytes,
            ..
        } = match checked {
            Some(read) => read,
            None => read_snapshot_image(&snapshot)?,
        };
        let record = SnapshotRecord {
            meta,
            members,
            cluster_id,
            header,
            chunk_count: chunks.len() as u64,
            chunk_bytes: image_bytes,
        };
        self.raw.mut_store().install_snapshot(&record, &chunks)?;
        let meta = record.meta;
        self.members = record.members;
        out.members_changed = true;
        tracing::info!(index = meta.index, "installed a snapshot from the leader");
        self.inventory = inventory;
        self.shared.store(self.inventory.shared());
        self.snapshot_index = meta.index;
        self.snapshot_image_bytes = image_bytes;
        let stale: Vec<u64> = self.waiting.range(..=meta.index).map(|(i, _)| *i).collect();
        for i in stale {
            if let Some(waiting) = self.waiting.remove(&i) {
                fail_waiting(waiting, out);
            }
        }
        self.end_rebuild_at(meta.term)
    }

    /// Takes a snapshot when one is due (see
    /// [`ReplicaConfig::snapshot_entries`](super::ReplicaConfig::snapshot_entries))
    /// and none is under way, or at once when a member was added since the
    /// last one behind a compacted log. A leader catches a new member up
    /// with its last snapshot, and raft-rs refuses to restore one whose
    /// members do not include it: with only the old one on hand, the new
    /// member could not catch up until enough entries had been applied for
    /// the next, and when its vote is needed for a quorum none ever would
    /// be. (A restart replays the change from the log, so it sets this
    /// again.)
    pub(super) fn maybe_snapshot(&mut self, out: &mut Output) -> Result<(), Fatal> {
        let applied = self.inventory.applied_index();
        if applied <= self.snapshot_index || self.snapshot_pending.is_some() {
            return Ok(());
        }
        let log_bytes = self.raw.store().log_bytes();
        let log_due = snapshot_log_due(
            self.snapshot_image_bytes,
            self.config.snapshot_log_floor_bytes,
        );
        let by_entries =
            applied - self.snapshot_index >= self.config.snapshot_entries && log_bytes >= log_due;
        let by_bytes = log_bytes >= self.config.snapshot_log_bytes;
        let for_member = self.snapshot_for_member && self.snapshot_index > 0;
        if !by_entries && !by_bytes && !for_member {
            return Ok(());
        }
        self.snapshot_for_member = false;
        self.take_snapshot(out)
    }

    /// Takes a snapshot at the applied index and compacts the log behind
    /// it: freezes the state here, then either hands the rest to the caller
    /// (`snapshot_by_caller`) or does it now.
    fn take_snapshot(&mut self, out: &mut Output) -> Result<(), Fatal> {
        let applied = self.inventory.applied_index();
        if applied <= self.snapshot_index || self.snapshot_pending.is_some() {
            return Ok(());
        }
        fail::fail_point!("snapshot::before_save");
        // Timed for the log line and metrics only; nothing depends on it.
        let started = std::time::Instant::now();
        let frozen = snapshot::freeze(&self.inventory);
        let mut meta = SnapshotMetadata {
            index: applied,
            term: self.raw.store().term(applied)?,
            ..Default::default()
        };
        meta.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        let task = SnapshotTask {
            frozen,
            meta,
            members: self.members.clone(),
            cluster_id: self.raw.store().cluster_id(),
            compact_to: applied.saturating_sub(self.config.log_keep_entries),
            log_bytes: self.raw.store().log_bytes(),
            freeze_time: started.elapsed(),
        };
        self.snapshot_pending = Some(applied);
        if self.config.snapshot_by_caller {
            out.snapshot = Some(task);
            return Ok(());
        }
        let written = task.run(&mut *self.raw.store().chunk_writer())?;
        self.snapshot_written(written)
    }

    /// Records a snapshot whose chunks the caller wrote ([`SnapshotTask::run`]):
    /// writes its record, synced, and compacts the log behind it. A snapshot
    /// installed from the leader since it was frozen makes it stale: it is
    /// dropped.
    pub(crate) fn snapshot_written(&mut self, written: WrittenSnapshot) -> Result<(), Fatal> {
        let index = written.index();
        assert_eq!(
            self.snapshot_pending,
            Some(index),
            "a snapshot handed back that was not handed out"
        );
        self.snapshot_pending = None;
        if index <= self.snapshot_index {
            tracing::info!(
                index,
                installed = self.snapshot_index,
                "snapshot dropped: one from the leader replaced it"
            );
            return Ok(());
        }
        let started = std::time::Instant::now();
        let chunks = written.record.chunk_count;
        let image_bytes = written.record.chunk_bytes;
        self.raw
            .mut_store()
            .save_snapshot(&written.record, written.compact_to)?;
        self.snapshot_index = index;
        self.snapshot_image_bytes = image_bytes;
        let record_time = started.elapsed();
        let held = written.freeze_time + record_time;
        let total = held + written.encode_time + written.write_time;
        metrics::histogram!("stockraft_snapshot_seconds").record(total.as_secs_f64());
        metrics::histogram!("stockraft_snapshot_held_seconds").record(held.as_secs_f64());
        tracing::info!(
            index,
            chunks,
            image_bytes,
            log_bytes = written.log_bytes,
            freeze_ms = written.freeze_time.as_millis() as u64,
            encode_ms = written.encode_time.as_millis() as u64,
            write_ms = written.write_time.as_millis() as u64,
            record_ms = record_time.as_millis() as u64,
            "snapshot taken; log compacted to {}",
            written.compact_to
        );
        Ok(())
    }
}

/// A snapshot's state, read and checked whole.
#[derive(Debug)]
pub(super) struct ReadSnapshot {
    index: u64,
    term: u64,
    inventory: Inventory,
    image_bytes: u64,
}

/// Reads a snapshot message's image whole, checking its digest.
fn read_snapshot_image(snapshot: &Snapshot) -> Result<ReadSnapshot, SnapshotError> {
    let meta = snapshot.get_metadata();
    let membership::SnapshotData { header, chunks, .. } =
        membership::split_snapshot_data(&snapshot.data)?;
    let mut reader = snapshot::ImageReader::new(&header, chunks.len() as u64)?;
    let mut image_bytes = 0u64;
    for chunk in &chunks {
        reader.chunk(chunk);
        image_bytes += chunk.len() as u64;
    }
    Ok(ReadSnapshot {
        index: meta.index,
        term: meta.term,
        inventory: reader.finish(meta.index)?,
        image_bytes,
    })
}

/// Bytes of log a snapshot waits for after one of `image_bytes` (see
/// [`ReplicaConfig::snapshot_entries`](super::ReplicaConfig::snapshot_entries)):
/// the image's size up to `floor`, and a quarter of it beyond.
pub(super) fn snapshot_log_due(image_bytes: u64, floor: u64) -> u64 {
    (image_bytes / 4).max(image_bytes.min(floor))
}

/// Loads the latest stored snapshot at start-up, chunk by chunk (the whole
/// image is never held): the state, the index it was taken at, and its
/// image's size. An empty state at 0 when there is none.
pub(super) fn load_snapshot<S: LogStore>(store: &S) -> Result<(Inventory, u64, u64), Fatal> {
    // Timed for the log line only.
    let started = std::time::Instant::now();
    let (inventory, applied, image_bytes) = match store.snapshot_record()? {
        Some(record) => {
            let mut reader = snapshot::ImageReader::new(&record.header, record.chunk_count)?;
            let mut image_bytes = 0u64;
            store.read_snapshot_chunks(&record, &mut |bytes| {
                image_bytes += bytes.len() as u64;
                reader.chunk(bytes);
            })?;
            let index = record.meta.index;
            (reader.finish(index)?, index, image_bytes)
        }
        None => (Inventory::new(), 0, 0),
    };
    if applied > 0 {
        tracing::info!(
            index = applied,
            counters = inventory.stock().counter_count(),
            retained_ids = inventory.retained_count(),
            image_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot loaded; replaying the log after it"
        );
    }
    Ok((inventory, applied, image_bytes))
}
