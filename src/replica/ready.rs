//! Handling raft-rs's Ready: messages out, a snapshot installed, entries
//! applied, the log and hard state written, and the messages that promise
//! persistence held until that write is durable (at once, or after the
//! caller's sync with `persist_async`). The write and fsync order:
//! ARCHITECTURE.md, "Every write and fsync, in order".

use super::error::Fatal;
use super::output::Output;
use super::{LogStore, Replica, StoreError};

impl<S: LogStore> Replica<S> {
    /// Handles everything raft-rs has ready. Any error is fatal.
    pub fn advance(&mut self, out: &mut Output) -> Result<(), Fatal> {
        while self.raw.has_ready() {
            self.handle_ready(out)?;
        }
        if self.raw.store().snapshot_unreadable() {
            return Err(Fatal::Store(StoreError::Corrupt(
                "the stored snapshot cannot be read back to send it".into(),
            )));
        }
        Ok(())
    }

    /// One Ready, in the order raft-rs requires (the steps of the module's
    /// loop, step 5).
    fn handle_ready(&mut self, out: &mut Output) -> Result<(), Fatal> {
        let leading = self.is_leader();
        if self.was_leader && !leading {
            self.fail_all_waiting(out);
        }
        self.was_leader = leading;
        let mut ready = self.raw.ready();
        // 1. Messages that need no local persistence (a leader's appends).
        out.messages.extend(ready.take_messages());
        // 2. A snapshot from the leader replaces the state machine.
        let has_snapshot = !ready.snapshot().is_empty();
        if has_snapshot {
            let snapshot = ready.snapshot().clone();
            self.install_snapshot(snapshot, out)?;
        }
        // 3. Entries committed by a quorum.
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, out)?;
        // 4. New entries and hard state: one atomic write, synced (or,
        //    with `persist_async`, synced later by the caller).
        //    A Ready that installed a snapshot is always synced here: raft-rs
        //    may not count the snapshot as applied before it is persisted.
        let must_sync = ready.must_sync();
        let deferred = self.config.persist_async && !has_snapshot;
        self.raw
            .mut_store()
            .append(ready.entries(), ready.hs(), must_sync && !deferred)?;
        // 5. Reads whose leadership check completed.
        for state in ready.take_read_states() {
            self.confirm_read(state);
        }
        if deferred {
            self.hold_until_synced(ready, must_sync, out);
            self.finish_turn(out)?;
            return Ok(());
        }
        self.written_number = ready.number();
        // 6. Votes and append responses, now that what they promise is
        //    durable (a synced write makes every write before it durable
        //    too, so what earlier Readies held goes first).
        for (_, messages) in self.unsynced.drain(..) {
            out.messages.extend(messages);
        }
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        self.apply_entries(light.take_committed_entries(), out)?;
        self.raw.advance_apply();
        self.finish_turn(out)
    }

    /// Step 6 with `persist_async`: the Ready's votes and append responses
    /// wait for the sync of its write (and of every write before it), which
    /// the caller is asked for in [`Output::sync`]. A Ready that wrote
    /// nothing needing a sync and has nothing before it waiting is done.
    fn hold_until_synced(&mut self, mut ready: raft::Ready, must_sync: bool, out: &mut Output) {
        let number = ready.number();
        let messages = ready.take_persisted_messages();
        self.written_number = number;
        self.raw.advance_append_async(ready);
        if must_sync || !self.unsynced.is_empty() {
            self.unsynced.push_back((number, messages));
            out.sync = Some(number);
        } else {
            out.messages.extend(messages);
            // Nothing of it, and nothing before it, waits for a sync.
            self.raw.on_persist_ready(number);
        }
        // The committed entries of this Ready were applied in step 3.
        self.raw.advance_apply();
    }

    /// Makes every write so far durable on the caller's thread and returns
    /// the number of the last Ready written, for [`Replica::persisted`]
    /// (the simulator and tests; the server syncs on a thread of its own).
    pub(crate) fn sync_store(&mut self) -> Result<u64, Fatal> {
        self.raw.mut_store().sync()?;
        Ok(self.written_number)
    }

    /// The number of the last Ready written (the simulator's injected bug
    /// of a failed sync taken for done needs it).
    pub(crate) fn written_number(&self) -> u64 {
        self.written_number
    }

    /// The caller synced the store after the Ready numbered `number` was
    /// written (see [`Output::sync`]): its held messages go out, raft-rs
    /// learns the entries are durable (on a leader that may commit them),
    /// and what that made ready is handled at once.
    pub(crate) fn persisted(&mut self, number: u64, out: &mut Output) -> Result<(), Fatal> {
        assert!(
            number <= self.written_number,
            "persisted({number}) beyond the last Ready written ({})",
            self.written_number
        );
        self.step_down_if_removed();
        while let Some((held, _)) = self.unsynced.front() {
            if *held > number {
                break;
            }
            if let Some((_, messages)) = self.unsynced.pop_front() {
                out.messages.extend(messages);
            }
        }
        self.raw.on_persist_ready(number);
        self.advance(out)
    }

    /// Readies written and waiting for a sync (with `persist_async`): the
    /// server proposes no new batch while two wait, so batches stay large
    /// while one sync runs and the next write waits for it.
    pub(crate) fn unsynced_count(&self) -> usize {
        self.unsynced.len()
    }

    /// The end of every Ready: reads now answerable, a snapshot if due,
    /// gauges.
    fn finish_turn(&mut self, out: &mut Output) -> Result<(), Fatal> {
        self.finish_reads(out);
        self.maybe_snapshot(out)?;
        metrics::gauge!("stockraft_raft_term").set(self.raw.raft.term as f64);
        metrics::gauge!("stockraft_raft_commit_index").set(self.raw.raft.raft_log.committed as f64);
        metrics::gauge!("stockraft_raft_applied_index").set(self.inventory.applied_index() as f64);
        metrics::gauge!("stockraft_open_reservations").set(self.inventory.open_count() as f64);
        Ok(())
    }
}
