//! Damage at rest, as a disk leaves it: the record a power cut tore
//! costs that record alone (it was never synced, so never acknowledged),
//! while a damaged record anywhere before the last stops the store from
//! opening. A member must never start from a log that silently lost
//! entries it had persisted: its votes and acknowledgements stood on them.
//! It is rebuilt from its peers instead (`server::rebuild`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use raft::eraftpb::{Entry, HardState};
use raft::Storage;

use super::*;
use crate::replica::LogStore;

/// Entries written, each in a synced write of its own: one WAL record each.
const ENTRIES: u64 = 20;

fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 1,
        data: vec![index as u8; 64].into(),
        ..Default::default()
    }
}

/// Writes entries 1..=ENTRIES, one synced write each, and closes the store.
fn write_entries(dir: &Path) {
    let mut store = RocksStore::open(dir).unwrap();
    for index in 1..=ENTRIES {
        let hard_state = HardState {
            term: 1,
            vote: 1,
            commit: index,
            ..Default::default()
        };
        store
            .append(&[entry(index)], Some(&hard_state), true)
            .unwrap();
    }
}

/// The write-ahead log the entries went to (RocksDB keeps it on close:
/// nothing is flushed while the log holds the writes).
fn wal(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    logs.sort();
    logs.pop().expect("no write-ahead log with records")
}

#[test]
fn a_torn_last_record_costs_that_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path());
    let wal = wal(dir.path());
    let length = std::fs::metadata(&wal).unwrap().len();
    // The power went while the last record was being written.
    let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.set_len(length - 10).unwrap();
    drop(file);
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(store.last_index().unwrap(), ENTRIES - 1);
    let kept = store
        .entries(1, ENTRIES, None, raft::GetEntriesContext::empty(false))
        .unwrap();
    let expected: Vec<Entry> = (1..ENTRIES).map(entry).collect();
    assert_eq!(kept, expected);
}

#[test]
fn a_damaged_record_before_the_last_stops_the_store_opening() {
    let dir = tempfile::tempdir().unwrap();
    write_entries(dir.path());
    let wal = wal(dir.path());
    let length = std::fs::metadata(&wal).unwrap().len();
    // One bit flipped in the middle of the log: a record that was synced,
    // with synced records after it.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&wal)
        .unwrap();
    let at = length / 2;
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut byte).unwrap();
    byte[0] ^= 0x10;
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&byte).unwrap();
    drop(file);
    match RocksStore::open(dir.path()) {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("opening"), "{message}"),
        Err(other) => panic!("damage reported as another error: {other}"),
        Ok(store) => panic!(
            "opened with damage, last index {}",
            store.last_index().unwrap()
        ),
    }
}
