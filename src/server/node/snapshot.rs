//! A frozen snapshot the driver hands out, run on threads of its own to
//! encode and write, and handed back once written (see
//! `replica::snapshot_task`). Client calls go on being served meanwhile.

use super::run::Loop;
use super::{stop_fatal, Transport};
use crate::replica::LogStore;
use crate::server::snapshot_thread;

impl<S: LogStore, T: Transport> Loop<S, T> {
    /// Runs a snapshot the driver handed out on a thread of its own.
    pub(super) fn start_snapshot(&mut self) {
        let Some(task) = self.driver.effects().snapshot.take() else {
            return;
        };
        if self.snapshot_job.is_some() {
            stop_fatal("a second snapshot was handed out while one was being written");
        }
        let writer = self.driver.replica().store().chunk_writer();
        let spawned = snapshot_thread::spawn(task, writer);
        match spawned {
            Ok(handle) => self.snapshot_job = Some(handle),
            Err(e) => stop_fatal(&format!("cannot start the snapshot thread: {e}")),
        }
    }

    /// Hands a written snapshot back to the driver: when its thread is
    /// done, or, with `wait`, after waiting for it (at shutdown, so the
    /// store is not written from two places as it closes).
    pub(super) fn finish_snapshot(&mut self, wait: bool) {
        let done = match &self.snapshot_job {
            Some(handle) => wait || handle.is_finished(),
            None => false,
        };
        if !done {
            return;
        }
        let Some(handle) = self.snapshot_job.take() else {
            return;
        };
        let written = match handle.join() {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => stop_fatal(&format!("writing a snapshot failed: {e}")),
            Err(_) => stop_fatal("the snapshot thread panicked"),
        };
        if let Err(fatal) = self.driver.snapshot_written(written) {
            stop_fatal(&fatal.to_string());
        }
    }
}
