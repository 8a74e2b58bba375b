//! The RocksDB store: one database per node, in `--data-dir`.
//!
//! Keys (default column family):
//!
//! | key                      | value                                       |
//! |--------------------------|---------------------------------------------|
//! | `h`                      | Raft hard state (term, vote, commit)        |
//! | `c`                      | Raft conf state (membership)                |
//! | `a`                      | members' addresses                          |
//! | `t`                      | index and term of the last dropped entry    |
//! | `l` + index (8 bytes BE) | one Raft log entry                          |
//! | `s`                      | the latest snapshot's metadata and header   |
//! | `S` + index + chunk no.  | that snapshot's chunks                      |
//!
//! The write and fsync order, the fault model and the RocksDB settings
//! chosen on purpose: ARCHITECTURE.md, "Every write and fsync, in order".
//! Here, [`LogStore::append`](crate::replica::LogStore::append) writes
//! unsynced unless asked to sync, and
//! [`Syncer::sync`](crate::replica::Syncer::sync) (`FlushWAL(true)`) makes
//! every write before it durable, by any thread. A snapshot's chunks are
//! written ahead of its record in unsynced batches of at most
//! [`CHUNK_BATCH_BYTES_MAX`]; the record's synced write makes them durable
//! with it. On open, the log read back must be contiguous and agree with
//! the hard state, or the store refuses to open ([`StoreError::Corrupt`]);
//! a cluster node is then rebuilt from a peer (see `server::rebuild`).
//!
//! Files: `mod.rs` (the keys, opening and checking what is read back, a
//! new node's first writes), `log_store.rs` (raft-rs's `Storage` and
//! `LogStore`), `chunks.rs` (snapshot chunks written ahead of their
//! record and scanned back in order), `tests.rs`, `damage_tests.rs` (a
//! torn last record, a damaged one before it).

mod chunks;
#[cfg(test)]
mod damage_tests;
mod log_store;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use raft::eraftpb::{ConfState, HardState};
use rocksdb::{DBRecoveryMode, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use super::log_cache::LogCache;
use crate::proto::internal as pb;
use crate::replica::membership::{
    cluster_id_of, envelope, from_records, Bootstrap, ClusterId, Members,
};
use crate::replica::wire;
use crate::replica::StoreError;

const KEY_HARD_STATE: &[u8] = b"h";
const KEY_CONF_STATE: &[u8] = b"c";
const KEY_MEMBERS: &[u8] = b"a";
const KEY_TRUNCATED: &[u8] = b"t";
const KEY_SNAPSHOT: &[u8] = b"s";
/// The term a rebuild started this member at, until it caught up (8 bytes,
/// big-endian; absent otherwise).
const KEY_REBUILT: &[u8] = b"r";
const PREFIX_LOG: u8 = b'l';
const PREFIX_CHUNK: u8 = b'S';

/// Snapshot chunk bytes per unsynced write ahead of the snapshot's record:
/// a synced append of client entries queued in RocksDB behind one of these
/// waits for all of it, so batches stay small to keep that wait short.
const CHUNK_BATCH_BYTES_MAX: usize = 256 * 1024;

fn log_key(index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = PREFIX_LOG;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

fn chunk_key(index: u64, chunk: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[0] = PREFIX_CHUNK;
    key[1..9].copy_from_slice(&index.to_be_bytes());
    key[9..].copy_from_slice(&chunk.to_be_bytes());
    key
}

fn io(context: &str, e: rocksdb::Error) -> StoreError {
    StoreError::Io(format!("{context}: {e}"))
}

fn corrupt(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{context}: {e}"))
}

fn encode_pb(message: &impl protobuf::Message) -> Result<Vec<u8>, StoreError> {
    message
        .write_to_bytes()
        .map_err(|e| StoreError::Io(format!("encoding raft state: {e}")))
}

/// Syncs every write-ahead-log file RocksDB wrote so far (`FlushWAL(true)`,
/// which, with the WAL written on every write as here, is `SyncWAL`): every
/// write made before the call, by any thread, is durable when it returns.
fn sync_wal(db: &DB) -> Result<(), StoreError> {
    let started = Instant::now();
    // Crash points for the crash tests: entries written, not yet synced;
    // synced, no one told yet.
    fail::fail_point!("sync::before");
    if skip_sync() {
        return Ok(());
    }
    db.flush_wal(true).map_err(|e| io("syncing the log", e))?;
    fail::fail_point!("sync::after");
    metrics::histogram!("stockraft_fsync_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

/// True when the `sync::skip` crash point is armed: every sync of the log
/// (this one and synced writes) is then skipped, a mutation that the
/// power-loss tests (`tests/power_loss.rs`) must catch. Always false in a
/// build without the `failpoints` feature.
fn skip_sync() -> bool {
    fail::fail_point!("sync::skip", |_| true);
    false
}

/// A replica's durable state in RocksDB, with its log tail cached in memory.
pub struct RocksStore {
    /// Shared with the snapshot chunk writer's thread (RocksDB is safe to
    /// write from several threads; its writes are ordered in one WAL).
    db: Arc<DB>,
    cache: LogCache,
    members: Members,
    /// Stored with the members (see
    /// [`LogStore::cluster_id`](crate::replica::LogStore::cluster_id)).
    cluster_id: Option<ClusterId>,
    /// True when the database held no Raft state when opened.
    fresh: bool,
    /// See [`LogStore::rebuilt_term`](crate::replica::LogStore::rebuilt_term).
    rebuilt_term: Option<u64>,
    /// See [`LogStore::snapshot_unreadable`](crate::replica::LogStore::snapshot_unreadable).
    snapshot_unreadable: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("first_index", &self.cache.first_index())
            .field("last_index", &self.cache.last_index())
            .finish()
    }
}

impl RocksStore {
    /// Opens (or creates) the store in `dir` and reads the log back.
    pub fn open(dir: &Path) -> Result<RocksStore, StoreError> {
        let db = open_db(dir)?;
        let mut cache = LogCache::default();
        let fresh = read_raft_state(&db, &mut cache)?;
        let (members, cluster_id) = read_members(&db)?;
        let rebuilt_term = read_rebuilt(&db)?;
        read_truncation(&db, &mut cache)?;
        read_snapshot_meta(&db, &mut cache)?;
        read_log(&db, &mut cache)?;
        check_read_back(&cache)?;
        Ok(RocksStore {
            db: Arc::new(db),
            cache,
            members,
            cluster_id,
            fresh,
            rebuilt_term,
            snapshot_unreadable: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// True when the store held no Raft state: a node that has never run.
    pub(crate) fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Writes the first state of a founding node of a new cluster, in one
    /// synced write: the membership entries, hard state, conf state and
    /// addresses.
    pub(crate) fn bootstrap(&mut self, bootstrap: &Bootstrap) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for entry in &bootstrap.entries {
            batch.put(log_key(entry.index), encode_pb(entry)?);
        }
        batch.put(KEY_HARD_STATE, encode_pb(&bootstrap.hard_state)?);
        batch.put(KEY_CONF_STATE, encode_pb(&bootstrap.conf_state)?);
        batch.put(
            KEY_MEMBERS,
            envelope(&bootstrap.members, None).encode_to_vec(),
        );
        self.write(batch, true)?;
        self.cache.append(&bootstrap.entries);
        self.cache.hard_state = bootstrap.hard_state.clone();
        self.cache.conf_state = bootstrap.conf_state.clone();
        self.members = bootstrap.members.clone();
        self.fresh = false;
        Ok(())
    }

    /// Writes what a node joining a running cluster knows: where its
    /// members are, the cluster's id (so that it refuses other clusters'
    /// members from its first message), and, for a node rebuilt after its
    /// data was damaged, a hard state that keeps it from voting again in
    /// any term it might have voted in before, with the mark that it is
    /// rebuilding from that term on: it withholds its vote until it has
    /// caught up (`replica::rebuild`). Its log, membership and state arrive
    /// from the leader.
    pub(crate) fn bootstrap_joining(
        &mut self,
        members: &Members,
        cluster_id: Option<&ClusterId>,
        rebuilt: Option<&HardState>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_CONF_STATE, encode_pb(&ConfState::default())?);
        batch.put(KEY_MEMBERS, envelope(members, cluster_id).encode_to_vec());
        if let Some(hard_state) = rebuilt {
            batch.put(KEY_HARD_STATE, encode_pb(hard_state)?);
            batch.put(KEY_REBUILT, hard_state.term.to_be_bytes());
        }
        self.write(batch, true)?;
        self.members = members.clone();
        self.cluster_id = cluster_id.copied();
        if let Some(hard_state) = rebuilt {
            self.cache.hard_state = hard_state.clone();
            self.rebuilt_term = Some(hard_state.term);
        }
        self.fresh = false;
        Ok(())
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let sync = sync && !skip_sync();
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        let started = Instant::now();
        self.db
            .write_opt(batch, &options)
            .map_err(|e| io("writing", e))?;
        if sync {
            metrics::histogram!("stockraft_fsync_seconds").record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

/// Opens (or creates) the database in `dir` with the settings chosen on
/// purpose (ARCHITECTURE.md, "RocksDB settings chosen on purpose"); damage
/// found opening it is [`StoreError::Corrupt`].
fn open_db(dir: &Path) -> Result<DB, StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
    let mut options = Options::default();
    options.create_if_missing(true);
    options.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
    options.set_paranoid_checks(true);
    options.set_max_total_wal_size(256 * 1024 * 1024);
    options.set_keep_log_file_num(4);
    let db = DB::open(&options, dir).map_err(|e| {
        let context = format!("opening {}", dir.display());
        if e.kind() == rocksdb::ErrorKind::Corruption {
            corrupt(&context, e)
        } else {
            io(&context, e)
        }
    })?;
    Ok(db)
}

/// Reads the hard state and conf state into `cache`; true when neither is
/// stored (a node that has never run).
fn read_raft_state(db: &DB, cache: &mut LogCache) -> Result<bool, StoreError> {
    let mut fresh = true;
    if let Some(bytes) = db
        .get(KEY_HARD_STATE)
        .map_err(|e| io("reading hard state", e))?
    {
        cache.hard_state = wire::decode_hard_state(&bytes).map_err(|e| corrupt("hard state", e))?;
        fresh = false;
    }
    if let Some(bytes) = db
        .get(KEY_CONF_STATE)
        .map_err(|e| io("reading conf state", e))?
    {
        cache.conf_state = wire::decode_conf_state(&bytes).map_err(|e| corrupt("conf state", e))?;
        fresh = false;
    }
    Ok(fresh)
}

/// The members' addresses and the cluster's id, if stored.
fn read_members(db: &DB) -> Result<(Members, Option<ClusterId>), StoreError> {
    let mut members = Members::new();
    let mut cluster_id = None;
    if let Some(bytes) = db.get(KEY_MEMBERS).map_err(|e| io("reading members", e))? {
        let envelope =
            pb::SnapshotEnvelope::decode(bytes.as_slice()).map_err(|e| corrupt("members", e))?;
        members = from_records(&envelope.members);
        cluster_id = cluster_id_of(&envelope.cluster_id);
    }
    Ok((members, cluster_id))
}

/// The term a rebuild started this member at, if it has not caught up.
fn read_rebuilt(db: &DB) -> Result<Option<u64>, StoreError> {
    let Some(bytes) = db
        .get(KEY_REBUILT)
        .map_err(|e| io("reading the rebuild mark", e))?
    else {
        return Ok(None);
    };
    let term: [u8; 8] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("rebuild mark", format!("{} bytes, not 8", bytes.len())))?;
    Ok(Some(u64::from_be_bytes(term)))
}

/// Reads the index and term of the last dropped entry into `cache`.
fn read_truncation(db: &DB, cache: &mut LogCache) -> Result<(), StoreError> {
    if let Some(bytes) = db
        .get(KEY_TRUNCATED)
        .map_err(|e| io("reading truncation", e))?
    {
        if bytes.len() != 16 {
            return Err(corrupt(
                "truncation record",
                format!("{} bytes", bytes.len()),
            ));
        }
        let mut index = [0u8; 8];
        let mut term = [0u8; 8];
        index.copy_from_slice(&bytes[..8]);
        term.copy_from_slice(&bytes[8..]);
        cache.truncated_index = u64::from_be_bytes(index);
        cache.truncated_term = u64::from_be_bytes(term);
    }
    Ok(())
}

/// Reads the latest snapshot's Raft metadata into `cache`.
fn read_snapshot_meta(db: &DB, cache: &mut LogCache) -> Result<(), StoreError> {
    if let Some(bytes) = db
        .get(KEY_SNAPSHOT)
        .map_err(|e| io("reading snapshot record", e))?
    {
        let stored = pb::StoredSnapshot::decode(bytes.as_slice())
            .map_err(|e| corrupt("snapshot record", e))?;
        let meta = wire::decode_snapshot_metadata(&stored.raft_metadata)
            .map_err(|e| corrupt("snapshot metadata", e))?;
        cache.snapshot_meta = Some(meta);
    }
    Ok(())
}

/// Reads the log after the truncation point into `cache`, refusing a gap
/// or an entry under another index's key.
fn read_log(db: &DB, cache: &mut LogCache) -> Result<(), StoreError> {
    let mut entries = Vec::new();
    let start = log_key(cache.truncated_index + 1);
    for item in db.iterator(IteratorMode::From(&start, Direction::Forward)) {
        let (key, value) = item.map_err(|e| io("reading log", e))?;
        if key.first() != Some(&PREFIX_LOG) {
            break;
        }
        let entry = wire::decode_entry(&value).map_err(|e| corrupt("log entry", e))?;
        let expected = cache.truncated_index + 1 + entries.len() as u64;
        if entry.index != expected || key.as_ref() != log_key(entry.index) {
            return Err(corrupt(
                "log",
                format!("found entry {} where {expected} belongs", entry.index),
            ));
        }
        entries.push(entry);
    }
    cache.load_entries(entries);
    Ok(())
}

/// Checks that what was read back is a state raft-rs can start from.
fn check_read_back(cache: &LogCache) -> Result<(), StoreError> {
    if cache.hard_state.commit > cache.last_index() {
        return Err(corrupt(
            "log",
            format!(
                "hard state says {} is committed but the log ends at {}",
                cache.hard_state.commit,
                cache.last_index()
            ),
        ));
    }
    // raft-rs aborts the process (not an error) on a commit index
    // before the log it is handed, or a snapshot outside the truncated
    // index ..= commit index; `save_snapshot` writes all three in one
    // batch in that order, so any other order is damage
    // (fuzz/regressions/storage_records/).
    let commit = cache.hard_state.commit;
    let snapshot_index = cache.snapshot_meta.as_ref().map(|m| m.index);
    // And on a membership its `confchange::restore` cannot restore.
    if cache.conf_state != ConfState::default()
        && !crate::replica::admission::conf_state_ok(&cache.conf_state)
    {
        return Err(corrupt(
            "conf state",
            format!("not a membership raft-rs restores: {:?}", cache.conf_state),
        ));
    }
    let stated = cache.hard_state != HardState::default() || snapshot_index.is_some();
    if stated && commit < cache.truncated_index {
        return Err(corrupt(
            "log",
            format!(
                "hard state says {commit} is committed but the log was truncated at {}",
                cache.truncated_index
            ),
        ));
    }
    if let Some(index) = snapshot_index {
        if index < cache.truncated_index || index > commit {
            return Err(corrupt(
                "snapshot record",
                format!(
                    "snapshot at {index} outside the log's truncation {} and commit {commit}",
                    cache.truncated_index
                ),
            ));
        }
    }
    Ok(())
}
