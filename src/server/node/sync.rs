//! The sync thread, which makes the replication thread's log writes
//! durable, and the loop's record of what it asked for and what landed.
//!
//! The replication thread writes each Ready unsynced and hands its number
//! here; the sync thread takes every number waiting, fsyncs RocksDB's WAL
//! once for all of them, and publishes the highest. The replication thread
//! goes on draining and proposing meanwhile. Where this sits among the
//! other writes: ARCHITECTURE.md, "Every write and fsync, in order".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::run::{Channels, Loop};
use super::{stop_fatal, Transport};
use crate::replica::{LogStore, Syncer};

/// Sync requests in flight: the loop asks again only for a higher Ready
/// number than it last asked for, so a few suffice. A full queue makes the
/// sender wait (a follower, which proposes nothing and so is not held back
/// by [`UNSYNCED_WRITES_MAX`](crate::limits::UNSYNCED_WRITES_MAX), then
/// stops taking appends until the sync thread drains it): with the sync
/// under way, at most twice this many Readies wait for a sync.
const SYNC_QUEUE_MAX: usize = 64;

/// The replication thread's ends of a running sync thread.
pub(super) struct SyncLink {
    /// Sync the store, then publish this Ready number.
    pub(super) requests: Sender<u64>,
    /// The highest Ready number now durable.
    pub(super) synced: Arc<AtomicU64>,
    /// Woken when `synced` moved.
    pub(super) wake: Receiver<()>,
    pub(super) thread: JoinHandle<()>,
}

/// Starts the sync thread over `syncer`. It ends when `requests` closes.
pub(super) fn spawn(syncer: Box<dyn Syncer>) -> std::io::Result<SyncLink> {
    let (requests, requests_rx) = crossbeam_channel::bounded(SYNC_QUEUE_MAX);
    // Capacity 1: a wake-up, the number itself is in `synced`.
    let (wake_tx, wake) = crossbeam_channel::bounded(1);
    let synced = Arc::new(AtomicU64::new(0));
    let thread = {
        let synced = synced.clone();
        std::thread::Builder::new()
            .name("sync".into())
            .spawn(move || sync_thread(syncer, requests_rx, &synced, wake_tx))?
    };
    Ok(SyncLink {
        requests,
        synced,
        wake,
        thread,
    })
}

/// The sync thread: takes every request waiting, syncs once for all of
/// them, answers with the highest number. A failed sync stops the process:
/// what was written may or may not be on disk, and the node cannot know.
fn sync_thread(
    syncer: Box<dyn Syncer>,
    requests: Receiver<u64>,
    synced: &AtomicU64,
    wake: Sender<()>,
) {
    while let Ok(first) = requests.recv() {
        let mut number = first;
        while let Ok(next) = requests.try_recv() {
            number = number.max(next);
        }
        if let Err(e) = syncer.sync() {
            stop_fatal(&format!("syncing the log failed: {e}"));
        }
        synced.fetch_max(number, Ordering::AcqRel);
        // Full means a wake-up is already waiting: it will read this too.
        let _ = wake.try_send(());
    }
}

impl<S: LogStore, T: Transport> Loop<S, T> {
    /// Asks the sync thread to make the Ready the driver wrote durable
    /// (it asks once per number).
    pub(super) fn request_sync(&mut self, channels: &Channels) {
        let Some(number) = self.driver.effects().sync.take() else {
            return;
        };
        if channels.sync_tx.send(number).is_err() {
            stop_fatal("the sync thread stopped");
        }
    }

    /// Hands the driver what the sync thread made durable since the last
    /// call, if anything.
    pub(super) fn take_synced(&mut self, channels: &Channels) {
        while channels.synced_wake.try_recv().is_ok() {}
        let number = channels.synced.load(Ordering::Acquire);
        if let Err(fatal) = self.driver.synced(number) {
            stop_fatal(&fatal.to_string());
        }
    }

    /// Waits for every sync asked for (at shutdown: what was written is
    /// made durable and answered before the thread ends).
    pub(super) fn finish_syncs(&mut self, channels: &Channels) {
        while self.driver.syncs_outstanding() {
            if channels.synced_wake.recv().is_err() {
                stop_fatal("the sync thread stopped");
            }
            self.take_synced(channels);
            self.act(channels);
        }
    }
}
