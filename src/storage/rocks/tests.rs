//! The RocksDB store's snapshots: installed from a leader's message,
//! written and read back chunk by chunk.

use raft::eraftpb::{Entry, SnapshotMetadata};

use super::*;
use crate::inventory::snapshot;
use crate::inventory::tests::inventory_of;
use crate::replica::membership::{encode_snapshot_data, split_snapshot_data};
use crate::replica::{put_chunks, LogStore, SnapshotRecord};

fn record_of(index: u64, image: &snapshot::Image) -> SnapshotRecord {
    SnapshotRecord {
        meta: SnapshotMetadata {
            index,
            term: 1,
            ..Default::default()
        },
        members: Members::new(),
        cluster_id: None,
        header: image.header,
        chunk_count: image.chunks.len() as u64,
        chunk_bytes: image.byte_count(),
    }
}

/// A snapshot installed from a leader's message is stored from the
/// message's own buffer and survives a restart: the record, every chunk,
/// and the message a leader would build from it again.
#[test]
fn a_snapshot_installed_from_the_leader_is_stored_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RocksStore::open(dir.path()).unwrap();
    let inventory = inventory_of(3 * snapshot::CHUNK_RECORDS_MAX);
    let image = snapshot::write(&inventory);
    let members: Members = [(1, crate::replica::membership::Member::at("127.0.0.1:1"))].into();
    let id = [3u8; 16];
    let data = encode_snapshot_data(&members, Some(&id), &image);
    let split = split_snapshot_data(&data).unwrap();
    let (header, chunks) = (split.header, split.chunks);
    let record = SnapshotRecord {
        members: split.members,
        cluster_id: split.cluster_id,
        ..record_of(7, &image)
    };
    assert_eq!(header, image.header);
    // A record naming more chunks than were sent is refused.
    let short = store.install_snapshot(&record, &chunks[1..]).unwrap_err();
    assert!(
        short.to_string().contains("chunks for a record of"),
        "{short}"
    );
    store.install_snapshot(&record, &chunks).unwrap();
    drop(store);

    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(store.snapshot_record().unwrap().unwrap(), record);
    assert_eq!(store.cluster_id(), Some(id));
    assert_eq!(store.load_snapshot().unwrap().unwrap().image, image);
    let sent = raft::Storage::snapshot(&store, 7, 2).unwrap();
    assert_eq!(&sent.data[..], &data[..]);
}

/// A snapshot written chunk by chunk (as the snapshot thread writes it)
/// is read back chunk by chunk into the same state, and a chunk gone
/// from the disk is reported, never read past.
#[test]
fn a_snapshot_written_in_chunks_is_read_back_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RocksStore::open(dir.path()).unwrap();
    let inventory = inventory_of(3 * snapshot::CHUNK_RECORDS_MAX + 7);
    let image = snapshot::write(&inventory);
    assert!(image.chunks.len() >= 4, "want several chunks");
    // The entry the snapshot was taken at, compacted away by it.
    let entry = Entry {
        index: 1,
        term: 1,
        ..Default::default()
    };
    store.append(&[entry], None, true).unwrap();
    put_chunks(&mut *store.chunk_writer(), 1, &image.chunks).unwrap();
    store.save_snapshot(&record_of(1, &image), 1).unwrap();
    drop(store);

    let store = RocksStore::open(dir.path()).unwrap();
    let record = store.snapshot_record().unwrap().unwrap();
    assert_eq!(record, record_of(1, &image));
    let mut reader = snapshot::ImageReader::new(&record.header, record.chunk_count).unwrap();
    let mut seen = Vec::new();
    store
        .read_snapshot_chunks(&record, &mut |bytes| {
            seen.push(bytes.to_vec());
            reader.chunk(bytes);
        })
        .unwrap();
    assert_eq!(seen, image.chunks);
    let loaded = reader.finish(1).unwrap();
    assert_eq!(loaded.digest(), inventory.digest());
    // The whole snapshot, as a leader sends it, is the same image.
    assert_eq!(store.load_snapshot().unwrap().unwrap().image, image);
    let sent = raft::Storage::snapshot(&store, 1, 2).unwrap();
    assert_eq!(sent.get_metadata().index, 1);
    assert_eq!(
        &sent.data[..],
        &encode_snapshot_data(&Members::new(), None, &image)[..]
    );

    // Chunk 2 lost: the scan stops there with a clear error.
    store.db.delete(chunk_key(1, 2)).unwrap();
    let mut handed = 0;
    let lost = store
        .read_snapshot_chunks(&record, &mut |_| handed += 1)
        .unwrap_err();
    assert_eq!(handed, 2);
    assert!(
        lost.to_string().contains("chunk 2 of 1 is missing"),
        "{lost}"
    );
}
