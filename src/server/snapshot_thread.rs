//! The threads that encode and write a snapshot while the node serves.
//!
//! Encoding a snapshot takes CPU in proportion to the whole state (about
//! 0.3 s for 20 MB of image on a 2-core machine, about 2 s for ten
//! million counters). Run at the same priority as the threads serving
//! calls, it takes a core from them for that long: every call waiting for
//! that core waits, and the tail latency of calls rises several-fold. So
//! the work is split over two threads:
//!
//! - `snapshot` encodes the image under `SCHED_IDLE`: the kernel runs it
//!   only on CPU the serving threads leave, and preempts it as soon as one
//!   of them wakes. (Nice 19 is not enough: the kernel's EEVDF scheduler
//!   lets a nice-19 thread finish its slice before a woken thread runs.)
//! - `snapshot-write` writes the encoded chunks to the store at normal
//!   priority. A thread at idle priority must not write to the store
//!   itself: preempted inside RocksDB's write path, it would hold up the
//!   replication thread's appends queued behind it (priority inversion).
//!
//! A saturated CPU leaves an idle-priority thread almost nothing, and the
//! log tail the snapshot would compact is held in memory meanwhile. So the
//! encoder yields for at most [`ENCODE_IDLE_MS_MAX`]; a snapshot still
//! encoding then goes back to normal priority and takes its share. Going
//! back needs `CAP_SYS_NICE` (or `RLIMIT_NICE` of 20): a process without it
//! could never go back, so there the snapshot is encoded at normal priority
//! from the start (checked once, [`can_yield`]).
//!
//! Between the two threads, a bounded channel of [`CHUNKS_QUEUED_MAX`]
//! chunks: the encoder never runs further ahead than that, so the image is
//! never held in memory.

use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::replica::{ChunkWriter, SnapshotTask, StoreError, WrittenSnapshot};

/// Encoded chunks waiting for the writer thread, at most.
pub const CHUNKS_QUEUED_MAX: usize = 4;

/// Longest a snapshot encodes at idle priority before it goes back to
/// normal priority (see the module's comment): ten million counters take
/// about 2 s of CPU to encode, so 10 s leaves room for a loaded machine
/// while bounding how long the log tail grows in memory meanwhile.
pub const ENCODE_IDLE_MS_MAX: u64 = 10_000;

/// One encoded chunk on its way to the writer thread.
struct Chunk {
    index: u64,
    number: u32,
    bytes: Vec<u8>,
}

/// Starts encoding `task` on a thread of its own, its chunks written by a
/// second thread through `writer`. The handle's result is the written
/// snapshot, to hand back to the replica.
pub fn spawn(
    task: SnapshotTask,
    writer: Box<dyn ChunkWriter>,
) -> std::io::Result<JoinHandle<Result<WrittenSnapshot, StoreError>>> {
    let (tx, rx) = crossbeam_channel::bounded::<Chunk>(CHUNKS_QUEUED_MAX);
    let write_thread = std::thread::Builder::new()
        .name("snapshot-write".into())
        .spawn(move || write_chunks(writer, rx))?;
    let yielding = can_yield();
    std::thread::Builder::new()
        .name("snapshot".into())
        .spawn(move || {
            let mut queue = ChunkQueue {
                tx: Some(tx),
                write_thread: Some(write_thread),
                idle_until: None,
            };
            if yielding && set_idle(true).is_ok() {
                queue.idle_until = Some(Instant::now() + Duration::from_millis(ENCODE_IDLE_MS_MAX));
            }
            task.run(&mut queue)
        })
}

/// The writer thread: writes every chunk in order, then flushes. Stops at
/// the first error, which the encoding side gets when it next hands over a
/// chunk or flushes.
fn write_chunks(mut writer: Box<dyn ChunkWriter>, rx: Receiver<Chunk>) -> Result<(), StoreError> {
    while let Ok(chunk) = rx.recv() {
        writer.put_chunk(chunk.index, chunk.number, &chunk.bytes)?;
    }
    // The sender is gone: every chunk was handed over.
    writer.flush()
}

/// Puts the calling thread under `SCHED_IDLE` (true) or back under the
/// normal policy (false). Only the calling thread: `sched_setscheduler`
/// with pid 0 is per thread on Linux.
fn set_idle(idle: bool) -> std::io::Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call, which
    // changes only the calling thread's scheduling.
    let done = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if done != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a thread of this process may go to idle priority and back
/// (see the module's comment). Tried once, on a thread of its own that
/// is then discarded, so no thread is left stuck at idle priority.
fn can_yield() -> bool {
    static CAN_YIELD: OnceLock<bool> = OnceLock::new();
    *CAN_YIELD.get_or_init(|| {
        let probe = std::thread::Builder::new()
            .name("snapshot-probe".into())
            .spawn(|| set_idle(true).is_ok() && set_idle(false).is_ok());
        // A probe that cannot start counts as "no": normal priority.
        let able = match probe {
            Ok(handle) => handle.join().unwrap_or(false),
            Err(_) => false,
        };
        if !able {
            tracing::info!(
                "snapshots encode at normal priority: going back from idle priority needs CAP_SYS_NICE"
            );
        }
        able
    })
}

/// The encoding thread's side: hands chunks to the writer thread.
struct ChunkQueue {
    /// None once flushed.
    tx: Option<Sender<Chunk>>,
    /// None once joined.
    write_thread: Option<JoinHandle<Result<(), StoreError>>>,
    /// While the encoding thread runs at idle priority: until when.
    idle_until: Option<Instant>,
}

impl ChunkQueue {
    /// Waits for the writer thread to end and returns what it returned.
    fn join_writer(&mut self) -> Result<(), StoreError> {
        self.tx = None;
        let Some(handle) = self.write_thread.take() else {
            return Err(StoreError::Io(
                "the snapshot writer thread was already stopped".into(),
            ));
        };
        match handle.join() {
            Ok(result) => result,
            Err(_) => Err(StoreError::Io("the snapshot writer thread panicked".into())),
        }
    }
}

impl ChunkWriter for ChunkQueue {
    fn put_chunk(&mut self, index: u64, number: u32, bytes: &[u8]) -> Result<(), StoreError> {
        if self.idle_until.is_some_and(|until| Instant::now() >= until) {
            self.idle_until = None;
            if let Err(e) = set_idle(false) {
                // can_yield() found this possible; should it fail now, the
                // snapshot goes on at idle priority rather than stop.
                tracing::warn!("a snapshot could not go back to normal priority: {e}");
            }
        }
        let chunk = Chunk {
            index,
            number,
            bytes: bytes.to_vec(),
        };
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer thread stopped: its error says why.
        self.join_writer()?;
        Err(StoreError::Io(
            "the snapshot writer thread stopped without an error".into(),
        ))
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.join_writer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Chunks as a writer saw them: index, number, bytes.
    type Seen = Arc<Mutex<Vec<(u64, u32, Vec<u8>)>>>;

    /// Records what it is handed; fails at chunk `fail_at` if set.
    struct Recorder {
        seen: Seen,
        flushed: Arc<Mutex<bool>>,
        fail_at: Option<u32>,
    }

    impl ChunkWriter for Recorder {
        fn put_chunk(&mut self, index: u64, number: u32, bytes: &[u8]) -> Result<(), StoreError> {
            if self.fail_at == Some(number) {
                return Err(StoreError::Io("disk full".into()));
            }
            self.seen
                .lock()
                .unwrap()
                .push((index, number, bytes.to_vec()));
            Ok(())
        }

        fn flush(&mut self) -> Result<(), StoreError> {
            *self.flushed.lock().unwrap() = true;
            Ok(())
        }
    }

    /// A queue whose writer thread writes into a [`Recorder`]; returns what
    /// that recorder saw and whether it was flushed.
    fn queue(fail_at: Option<u32>) -> (ChunkQueue, Seen, Arc<Mutex<bool>>) {
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let flushed = Arc::new(Mutex::new(false));
        let recorder = Recorder {
            seen: seen.clone(),
            flushed: flushed.clone(),
            fail_at,
        };
        let (tx, rx) = crossbeam_channel::bounded::<Chunk>(CHUNKS_QUEUED_MAX);
        let write_thread = std::thread::spawn(move || write_chunks(Box::new(recorder), rx));
        let queue = ChunkQueue {
            tx: Some(tx),
            write_thread: Some(write_thread),
            idle_until: None,
        };
        (queue, seen, flushed)
    }

    #[test]
    fn every_chunk_is_written_in_order_before_flush_returns() {
        let (mut queue, seen, flushed) = queue(None);
        for number in 0..20u32 {
            queue.put_chunk(7, number, &[number as u8; 3]).unwrap();
        }
        queue.flush().unwrap();
        let written = seen.lock().unwrap();
        assert_eq!(written.len(), 20);
        for (position, (index, number, bytes)) in written.iter().enumerate() {
            assert_eq!(*index, 7);
            assert_eq!(*number as usize, position);
            assert_eq!(bytes, &vec![position as u8; 3]);
        }
        assert!(*flushed.lock().unwrap());
    }

    #[test]
    fn a_write_error_reaches_the_encoding_side() {
        let (mut queue, seen, flushed) = queue(Some(2));
        let mut failed = None;
        for number in 0..50u32 {
            if let Err(e) = queue.put_chunk(1, number, b"x") {
                failed = Some(e);
                break;
            }
        }
        let error = match failed {
            Some(e) => e,
            None => queue.flush().unwrap_err(),
        };
        assert!(
            matches!(&error, StoreError::Io(message) if message == "disk full"),
            "{error}"
        );
        // Nothing after the failed chunk was written, and nothing flushed.
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(!*flushed.lock().unwrap());
    }

    fn policy() -> i32 {
        // SAFETY: reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn idle_priority_is_set_per_thread_and_undone_when_allowed() {
        let before = policy();
        let able = can_yield();
        let (inside, back) = std::thread::spawn(move || {
            let lowered = set_idle(true).map(|()| policy());
            (lowered, set_idle(false).map(|()| policy()))
        })
        .join()
        .unwrap();
        // Going to idle priority needs no privilege.
        assert_eq!(inside.unwrap(), libc::SCHED_IDLE);
        // Back, exactly when the probe said so.
        assert_eq!(back.is_ok(), able);
        if able {
            assert_eq!(back.unwrap(), libc::SCHED_OTHER);
        }
        // Nothing of it touched this thread.
        assert_eq!(policy(), before);
    }

    #[test]
    fn a_snapshot_past_its_idle_time_goes_back_to_normal_priority() {
        if !can_yield() {
            // Without CAP_SYS_NICE no encoder is ever lowered: shown by
            // the test above (the way back fails exactly then).
            return;
        }
        let policies = std::thread::spawn(|| {
            let (mut queue, seen, _) = queue(None);
            set_idle(true).unwrap();
            queue.idle_until = Some(Instant::now() + Duration::from_millis(50));
            queue.put_chunk(1, 0, b"a").unwrap();
            let early = policy();
            std::thread::sleep(Duration::from_millis(60));
            queue.put_chunk(1, 1, b"b").unwrap();
            let late = policy();
            queue.flush().unwrap();
            assert_eq!(seen.lock().unwrap().len(), 2);
            (early, late)
        })
        .join()
        .unwrap();
        assert_eq!(policies, (libc::SCHED_IDLE, libc::SCHED_OTHER));
    }
}
