//! What each fuzz target checks, shared by the fuzz targets
//! (fuzz/fuzz_targets/) and the regression suite
//! (tests/fuzz_regressions.rs), so a crash input kept in
//! fuzz/regressions/<target>/ is replayed under plain `cargo test` through
//! exactly the checks that found it.
//!
//! Every target takes bytes as they come from a peer, a client or the
//! disk, and runs them through the same decoders and checks the server
//! runs. The rule they enforce is the project's: such bytes never panic,
//! abort, allocate without bound or hang; they are refused with a typed
//! error. A target panics only when a property is broken (a decoded value
//! that does not survive its own encoding, a command the gRPC layer accepts
//! that the log refuses), which libFuzzer reports as a crash.
//!
//! [`seeds`] builds the seed corpus (fuzz/corpus/<target>/) from real
//! encodings, so fuzzing starts from inputs that get past the first check.

use std::collections::VecDeque;

use bytes::Bytes;
use prost::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    HardState, Message, MessageType, Snapshot,
};
use stockraft::inventory::codec;
use stockraft::inventory::command::{Batch, Command, SetOnHand};
use stockraft::inventory::snapshot;
use stockraft::inventory::Inventory;
use stockraft::limits::{TTL_MS_DEFAULT, TTL_MS_MAX};
use stockraft::proto::internal as ipb;
use stockraft::proto::v1 as vpb;
use stockraft::replica::membership::{self, Member, Members};
use stockraft::replica::{wire, Output, Replica, ReplicaConfig};
use stockraft::server::inventory_service::{self as service, ApiConfig};
use stockraft::storage::{MemStore, RocksStore};

/// A target's checks on one input: returns when the input is handled
/// (accepted or refused), panics when a property is broken.
pub type Check = fn(&[u8]);

/// Every target by name: the name is its directory under fuzz/corpus/ and
/// fuzz/regressions/, and its file under fuzz/fuzz_targets/.
pub const TARGETS: &[(&str, Check)] = &[
    ("log_batch", log_batch),
    ("raft_wire", raft_wire),
    ("peer_admission", peer_admission),
    ("peer_batch", peer_batch),
    ("snapshot_part", snapshot_part),
    ("snapshot_image", snapshot_image),
    ("storage_records", storage_records),
    ("public_request", public_request),
];

/// The API settings of a server started with no flags.
const API: ApiConfig = ApiConfig {
    ttl_ms_default: TTL_MS_DEFAULT,
    ttl_ms_max: TTL_MS_MAX,
};

/// Messages routed within a group after a fuzzed input, at most: enough
/// for the exchanges one message starts to run out, and a bound on work.
const SETTLE_STEPS_MAX: usize = 300;

// ---------------------------------------------------------------------------
// log_batch: the data of a log entry (src/inventory/codec.rs).

/// A log entry's data, as every replica decodes and applies it. A batch
/// that decodes survives its own encoding, and applying it keeps the
/// inventory's invariants.
pub fn log_batch(data: &[u8]) {
    let Ok(batch) = codec::decode_batch(data) else {
        return;
    };
    let encoded = codec::encode_batch(&batch);
    match codec::decode_batch(&encoded) {
        Ok(again) => assert_eq!(again, batch, "a decoded batch changed through its encoding"),
        Err(e) => panic!("a decoded batch does not decode once encoded again: {e}"),
    }
    apply_checked(&batch);
}

/// Applies a batch to a fresh inventory and checks its invariants.
fn apply_checked(batch: &Batch) {
    let mut inventory = Inventory::new();
    inventory.apply_batch(1, batch);
    if let Err(e) = inventory.check_invariants() {
        panic!("applying {batch:?} broke an invariant: {e}");
    }
}

// ---------------------------------------------------------------------------
// raft_wire: raft-rs's records and messages (src/replica/wire.rs) and a
// membership change's context (src/replica/membership.rs).

/// The first byte picks the decoder, the rest is its input. What decodes
/// is encoded again by raft-rs (rust-protobuf, as a peer or the store
/// would) and must decode to the same value.
pub fn raft_wire(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(m) = wire::decode_message(Bytes::copy_from_slice(bytes)) {
                let again = wire::decode_message(Bytes::from(encode(&m)));
                assert_eq!(again.ok(), Some(m), "message");
            }
        }
        1 => {
            if let Ok(e) = wire::decode_entry(bytes) {
                assert_eq!(wire::decode_entry(&encode(&e)).ok(), Some(e), "entry");
            }
        }
        2 => {
            if let Ok(hs) = wire::decode_hard_state(bytes) {
                let again = wire::decode_hard_state(&encode(&hs)).ok();
                assert_eq!(again, Some(hs), "hard state");
            }
        }
        3 => {
            if let Ok(cs) = wire::decode_conf_state(bytes) {
                let again = wire::decode_conf_state(&encode(&cs)).ok();
                assert_eq!(again, Some(cs), "conf state");
            }
        }
        4 => {
            if let Ok(meta) = wire::decode_snapshot_metadata(bytes) {
                let again = wire::decode_snapshot_metadata(&encode(&meta)).ok();
                assert_eq!(again, Some(meta), "snapshot metadata");
            }
        }
        5 => {
            if let Ok(cc) = wire::decode_conf_change(bytes) {
                let again = wire::decode_conf_change(&encode(&cc)).ok();
                assert_eq!(again, Some(cc), "conf change");
            }
        }
        6 => {
            if let Ok(cc) = wire::decode_conf_change_v2(bytes) {
                let again = wire::decode_conf_change_v2(&encode(&cc)).ok();
                assert_eq!(again, Some(cc), "conf change v2");
            }
        }
        _ => {
            if let Some((id, member)) = membership::decode_change_context(bytes) {
                let encoded = membership::encode_change_context(id, Some(&member));
                let again = membership::decode_change_context(&encoded);
                assert_eq!(again, Some((id, member)), "change context");
            }
        }
    }
}

/// raft-rs's own encoding of a record.
fn encode(m: &impl protobuf::Message) -> Vec<u8> {
    match m.write_to_bytes() {
        Ok(bytes) => bytes,
        Err(e) => panic!("raft-rs cannot encode a record decoded from the wire: {e}"),
    }
}

// ---------------------------------------------------------------------------
// peer_admission, peer_batch, snapshot_part: what a peer sends, through
// src/replica/admission.rs into raft-rs.

/// Three replicas over memory stores, replica 1 leading, one entry
/// committed everywhere: a live group for a forged message to land in.
struct Group {
    replicas: Vec<Replica<MemStore>>,
    queue: VecDeque<Message>,
}

impl Group {
    fn new() -> Group {
        let replicas = (1..=3)
            .map(|id| {
                let config = ReplicaConfig {
                    fixed_election_ticks: Some(10),
                    ..ReplicaConfig::new(id)
                };
                match Replica::new(config, MemStore::new(&[1, 2, 3]), &logger()) {
                    Ok(replica) => replica,
                    Err(e) => panic!("the harness's group cannot start: {e}"),
                }
            })
            .collect();
        let mut group = Group {
            replicas,
            queue: VecDeque::new(),
        };
        let mut out = Output::default();
        if let Err(e) = group.replicas[0].campaign(&mut out) {
            panic!("the harness's group cannot elect: {e}");
        }
        group.queue.extend(out.messages);
        group.settle();
        let mut out = Output::default();
        group.replicas[0].propose(1_000, vec![(1, set_on_hand("t-1", 5))], &mut out);
        group.queue.extend(out.messages);
        group.settle();
        group
    }

    /// Advances every replica and routes messages until none is left or
    /// [`SETTLE_STEPS_MAX`] were routed. A replica that meets a fatal error
    /// (a forged leader's entry that is not a batch, say) stops, as the
    /// server's node would: it is dropped from the routing.
    fn settle(&mut self) {
        let mut stopped = [false; 3];
        for _ in 0..SETTLE_STEPS_MAX {
            for (i, replica) in self.replicas.iter_mut().enumerate() {
                if stopped[i] {
                    continue;
                }
                let mut out = Output::default();
                stopped[i] = replica.advance(&mut out).is_err();
                self.queue.extend(out.messages);
            }
            let Some(message) = self.queue.pop_front() else {
                return;
            };
            let to = message.to as usize;
            if (1..=3).contains(&to) && !stopped[to - 1] {
                let _ = self.replicas[to - 1].step(message);
            }
        }
    }

    /// A peer's message handed to the replica it is addressed to (to
    /// replica 1 when it names none of them, which refuses it), as the
    /// server's peer service does, then the group's answers routed and a
    /// few ticks run on everyone.
    fn deliver(&mut self, message: Message) {
        let to = match message.to {
            to @ 1..=3 => to as usize,
            _ => 1,
        };
        let _ = self.replicas[to - 1].step(message);
        self.settle();
        for tick in 0..3u64 {
            for replica in self.replicas.iter_mut() {
                let mut out = Output::default();
                replica.tick(2_000 + tick, &mut out);
                self.queue.extend(out.messages);
            }
            self.settle();
        }
    }

    fn term(&self) -> u64 {
        self.replicas[1].status().term
    }

    fn commit_index(&self) -> u64 {
        self.replicas[1].status().commit_index
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn set_on_hand(txn: &str, on_hand: i64) -> Command {
    match SetOnHand::new(txn.into(), "SKU-1".into(), "store-7".into(), on_hand, None) {
        Ok(c) => Command::SetOnHand(c),
        Err(e) => panic!("the harness's command is invalid: {e}"),
    }
}

/// One raft message from a peer (the bytes of one `PeerBatch` message),
/// decoded, admitted or refused, and stepped into a live group.
pub fn peer_admission(data: &[u8]) {
    let Ok(message) = wire::decode_message(Bytes::copy_from_slice(data)) else {
        return;
    };
    Group::new().deliver(message);
}

/// A `PeerBatch` as the peer service's `send` takes it: each message
/// decoded, refused unless it is from the batch's sender, and stepped.
pub fn peer_batch(data: &[u8]) {
    let Ok(batch) = ipb::PeerBatch::decode(data) else {
        return;
    };
    let mut group = Group::new();
    for bytes in batch.messages {
        let Ok(message) = wire::decode_message(Bytes::from(bytes)) else {
            return;
        };
        if message.from != batch.from {
            return;
        }
        group.deliver(message);
    }
}

/// Most snapshot bytes the fuzzed receiver buffers; the server's bound is
/// `SNAPSHOT_BYTES_MAX`, checked before it reserves anything.
const SNAPSHOT_PART_BYTES_MAX: u64 = 1 << 20;

/// A `send_snapshot` stream: length-delimited `SnapshotPart`s, put
/// together as the peer service's `receive_snapshot` does (the first part
/// names the message and the total, every part may carry data, the total
/// must match) and stepped into a live group, whose admission reads the
/// image whole before raft-rs takes it.
pub fn snapshot_part(data: &[u8]) {
    let mut rest = data;
    let Ok(first) = ipb::SnapshotPart::decode_length_delimited(&mut rest) else {
        return;
    };
    if first.total_bytes > SNAPSHOT_PART_BYTES_MAX {
        return;
    }
    let Ok(mut message) = wire::decode_message(Bytes::from(first.message)) else {
        return;
    };
    if message.from != first.from {
        return;
    }
    let mut image = first.data;
    while !rest.is_empty() {
        let Ok(part) = ipb::SnapshotPart::decode_length_delimited(&mut rest) else {
            return;
        };
        if (image.len() + part.data.len()) as u64 > first.total_bytes {
            return;
        }
        image.extend_from_slice(&part.data);
    }
    if image.len() as u64 != first.total_bytes {
        return;
    }
    message.mut_snapshot().data = image.into();
    Group::new().deliver(message);
}

// ---------------------------------------------------------------------------
// snapshot_image: the data of a snapshot (src/replica/membership.rs and
// src/inventory/snapshot.rs).

/// The data of a raft snapshot message (members, image header, chunks),
/// read as a follower reads one from its leader. The header's digest is
/// set to the chunks' own first, as a sender that means harm would set it:
/// otherwise nearly every input would stop at the digest and the rebuild
/// behind it would never be fuzzed. An image that loads is written again
/// and must load to the same state.
pub fn snapshot_image(data: &[u8]) {
    let Ok(membership::SnapshotData {
        mut header, chunks, ..
    }) = membership::split_snapshot_data(data)
    else {
        return;
    };
    header.digest = image_digest(&header, &chunks);
    let Ok(inventory) = read_image(&header, &chunks, 7) else {
        return;
    };
    let image = snapshot::write(&inventory);
    match snapshot::read(&image, 7) {
        Ok(again) => assert_eq!(
            again.digest(),
            inventory.digest(),
            "a loaded snapshot changed through its encoding"
        ),
        Err(e) => panic!("a loaded snapshot does not load once written again: {e}"),
    }
}

/// The digest `ImageReader` checks: the header's clock, then every chunk.
fn image_digest(header: &ipb::SnapshotHeader, chunks: &[&[u8]]) -> u64 {
    let mut digest = xxhash_rust::xxh3::Xxh3::new();
    digest.update(&header.now_ms.to_le_bytes());
    for chunk in chunks {
        digest.update(chunk);
    }
    digest.digest()
}

fn read_image(
    header: &ipb::SnapshotHeader,
    chunks: &[&[u8]],
    index: u64,
) -> Result<Inventory, snapshot::SnapshotError> {
    let mut reader = snapshot::ImageReader::new(header, chunks.len() as u64)?;
    for chunk in chunks {
        reader.chunk(chunk);
    }
    reader.finish(index)
}

// ---------------------------------------------------------------------------
// storage_records: a data dir (src/storage/rocks/).

/// A data dir's records, each `[key length: u8][key][value length: u16
/// LE][value]`, written into a fresh RocksDB and opened as the server
/// opens its data dir: the store reads its records back, then a replica
/// loads the snapshot chunk by chunk and replays the log. A damaged dir is
/// refused with an error, never a panic.
pub fn storage_records(data: &[u8]) {
    let Some(records) = parse_records(data) else {
        return;
    };
    let dir = match tempfile::Builder::new()
        .prefix("stockraft-fuzz-")
        .tempdir_in(scratch_dir())
    {
        Ok(dir) => dir,
        Err(e) => panic!("no scratch dir for the store: {e}"),
    };
    {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = match rocksdb::DB::open(&options, dir.path()) {
            Ok(db) => db,
            Err(e) => panic!("cannot create a RocksDB to fuzz: {e}"),
        };
        for (key, value) in &records {
            if let Err(e) = db.put(key, value) {
                panic!("cannot write a record to fuzz: {e}");
            }
        }
    }
    let Ok(store) = RocksStore::open(dir.path()) else {
        return;
    };
    let config = ReplicaConfig {
        fixed_election_ticks: Some(10),
        ..ReplicaConfig::new(1)
    };
    let Ok(mut replica) = Replica::new(config, store, &logger()) else {
        return;
    };
    let mut out = Output::default();
    let _ = replica.advance(&mut out);
}

/// Splits a storage input into records, or None when it is cut short.
fn parse_records(mut data: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut records = Vec::new();
    while let Some((&key_len, rest)) = data.split_first() {
        let key = rest.get(..usize::from(key_len))?;
        let rest = &rest[usize::from(key_len)..];
        let len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]);
        let value = rest.get(2..2 + usize::from(len))?;
        records.push((key.to_vec(), value.to_vec()));
        data = &rest[2 + usize::from(len)..];
    }
    Some(records)
}

/// Memory-backed when the machine has it: a RocksDB per input is the
/// target's cost.
fn scratch_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// One record of a storage input.
fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![key.len() as u8];
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out
}

// ---------------------------------------------------------------------------
// public_request: a client's request through the gRPC layer
// (src/server/inventory_service/).

/// The first byte picks the request type, the rest is its protobuf body
/// as tonic hands it over. A write the gRPC layer accepts must be one the
/// log accepts (a leader that wrote a command its followers cannot decode
/// would stop them all) and must apply without breaking an invariant.
pub fn public_request(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let built = match which % 11 {
        0 => decoded(body, |r| service::reserve_command(API, r)),
        1 => decoded(body, service::commit_command),
        2 => decoded(body, service::release_command),
        3 => decoded(body, |r| service::extend_command(API, r)),
        4 => decoded(body, service::sell_command),
        5 => decoded(body, service::adjust_command),
        6 => decoded(body, service::set_on_hand_command),
        7 => decoded(body, service::set_safety_stock_command),
        8 => {
            if let Ok(mut r) = vpb::GetAvailabilityRequest::decode(body) {
                let _ = service::checked_availability_request(&mut r);
            }
            None
        }
        9 => {
            if let Ok(r) = vpb::GetReservationRequest::decode(body) {
                let _ =
                    stockraft::inventory::command::check_id("reservation_id", &r.reservation_id);
            }
            None
        }
        _ => stream_request(body),
    };
    let Some(command) = built else {
        return;
    };
    let batch = Batch {
        stamp_ms: 1_000,
        id_retention_ms: stockraft::limits::ID_RETENTION_MS_DEFAULT,
        id_retained_max: stockraft::limits::ID_RETAINED_MAX_DEFAULT,
        commands: vec![command],
    };
    match codec::decode_batch(&codec::encode_batch(&batch)) {
        Ok(logged) => assert_eq!(logged, batch, "a command changed through the log"),
        Err(e) => panic!("the gRPC layer accepted a command the log refuses: {e}"),
    }
    apply_checked(&batch);
}

/// Decodes a request and builds its command; None when either refuses.
fn decoded<R: prost::Message + Default, E>(
    body: &[u8],
    build: impl FnOnce(R) -> Result<Command, E>,
) -> Option<Command> {
    build(R::decode(body).ok()?).ok()
}

/// A `Stream` call's request: its write built as the unary call's is.
fn stream_request(body: &[u8]) -> Option<Command> {
    use vpb::stream_request::Op;
    let request = vpb::StreamRequest::decode(body).ok()?;
    let built = match request.op? {
        Op::Reserve(r) => service::reserve_command(API, r),
        Op::Commit(r) => service::commit_command(r),
        Op::Release(r) => service::release_command(r),
        Op::Extend(r) => service::extend_command(API, r),
        Op::Sell(r) => service::sell_command(r),
        Op::Adjust(r) => service::adjust_command(r),
        Op::SetOnHand(r) => service::set_on_hand_command(r),
        Op::SetSafetyStock(r) => service::set_safety_stock_command(r),
        Op::GetAvailability(mut r) => {
            let _ = service::checked_availability_request(&mut r);
            return None;
        }
        Op::GetReservation(_) => return None,
    };
    built.ok()
}

// ---------------------------------------------------------------------------
// The seed corpus.

/// Valid inputs for every target, by target and file name: what
/// `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`
/// writes to fuzz/corpus/<target>/.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let batches = sample_batches();
    for (i, batch) in batches.iter().enumerate() {
        out.push((
            "log_batch",
            format!("batch-{i}"),
            codec::encode_batch(batch),
        ));
    }

    // raft_wire: one record of each kind, and the group's own messages.
    let group_messages = group_traffic();
    let mut raft = Vec::new();
    for (i, m) in group_messages.iter().enumerate().take(12) {
        raft.push((format!("message-{i}"), prefixed(0, &encode(m))));
    }
    let entry = Entry {
        term: 2,
        index: 3,
        data: Bytes::from(codec::encode_batch(&batches[0])),
        ..Default::default()
    };
    raft.push(("entry".into(), prefixed(1, &encode(&entry))));
    let hs = HardState {
        term: 2,
        vote: 1,
        commit: 3,
        ..Default::default()
    };
    raft.push(("hard-state".into(), prefixed(2, &encode(&hs))));
    let cs = joint_conf_state();
    raft.push(("conf-state".into(), prefixed(3, &encode(&cs))));
    let mut meta = raft::eraftpb::SnapshotMetadata {
        index: 9,
        term: 2,
        ..Default::default()
    };
    meta.set_conf_state(cs);
    raft.push(("snapshot-metadata".into(), prefixed(4, &encode(&meta))));
    let mut cc = ConfChange {
        id: 1,
        node_id: 4,
        context: Bytes::from(membership::encode_change_context(
            4,
            Some(&Member::of("h4:1", "h4:2")),
        )),
        ..Default::default()
    };
    cc.set_change_type(ConfChangeType::AddLearnerNode);
    raft.push(("conf-change".into(), prefixed(5, &encode(&cc))));
    let mut v2 = ConfChangeV2::default();
    let mut single = ConfChangeSingle {
        node_id: 3,
        ..Default::default()
    };
    single.set_change_type(ConfChangeType::RemoveNode);
    v2.set_changes(vec![single].into());
    v2.context = Bytes::from(membership::encode_change_context(3, None));
    raft.push(("conf-change-v2".into(), prefixed(6, &encode(&v2))));
    let context = membership::encode_change_context(2, Some(&Member::at("h2:50051")));
    raft.push(("change-context".into(), prefixed(7, &context)));
    for (name, bytes) in raft {
        out.push(("raft_wire", name, bytes));
    }

    // peer_admission and peer_batch: what the group's members sent each
    // other, one message and one batch at a time.
    for (i, m) in group_messages.iter().enumerate() {
        out.push(("peer_admission", format!("message-{i}"), encode(m)));
        let batch = ipb::PeerBatch {
            from: m.from,
            messages: vec![encode(m)],
            ..Default::default()
        };
        out.push(("peer_batch", format!("batch-{i}"), batch.encode_to_vec()));
    }
    let mut by_sender: Vec<ipb::PeerBatch> = Vec::new();
    for m in &group_messages {
        match by_sender.iter_mut().find(|b| b.from == m.from) {
            Some(b) => b.messages.push(encode(m)),
            None => by_sender.push(ipb::PeerBatch {
                from: m.from,
                messages: vec![encode(m)],
                ..Default::default()
            }),
        }
    }
    for batch in by_sender {
        let name = format!("from-{}", batch.from);
        out.push(("peer_batch", name, batch.encode_to_vec()));
    }

    // snapshot_part and snapshot_image: a snapshot of a small inventory,
    // as the leader sends it in parts and as its data reads.
    let (message, snapshot_data) = snapshot_message();
    for (name, parts) in [("whole", 1), ("three-parts", 3)] {
        out.push((
            "snapshot_part",
            name.into(),
            snapshot_parts(&message, &snapshot_data, parts),
        ));
    }
    out.push(("snapshot_image", "small".into(), snapshot_data));
    let empty = membership::encode_snapshot_data(
        &members(),
        Some(&[7; 16]),
        &snapshot::write(&Inventory::new()),
    );
    out.push(("snapshot_image", "empty".into(), empty));

    // storage_records: the data dir of a member that bootstrapped a group,
    // appended an entry and stored a snapshot.
    out.push(("storage_records", "data-dir".into(), data_dir_records()));

    // public_request: one request of each kind, unary and in a stream.
    for (i, request) in public_requests().into_iter().enumerate() {
        out.push(("public_request", format!("request-{i}"), request));
    }
    out
}

fn prefixed(which: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![which];
    out.extend_from_slice(bytes);
    out
}

fn members() -> Members {
    (1..=3)
        .map(|id| (id, Member::at(&format!("node-{id}"))))
        .collect()
}

fn joint_conf_state() -> ConfState {
    ConfState {
        voters: vec![1, 2, 3],
        learners: vec![5],
        voters_outgoing: vec![1, 2, 4],
        learners_next: vec![4],
        auto_leave: true,
        ..Default::default()
    }
}

/// Batches of every kind of command, as leaders write them.
fn sample_batches() -> Vec<Batch> {
    let requests = public_requests();
    let mut commands = Vec::new();
    for request in requests {
        let Some((&which, body)) = request.split_first() else {
            continue;
        };
        let command = match which {
            0 => decoded(body, |r| service::reserve_command(API, r)),
            1 => decoded(body, service::commit_command),
            2 => decoded(body, service::release_command),
            3 => decoded(body, |r| service::extend_command(API, r)),
            4 => decoded(body, service::sell_command),
            5 => decoded(body, service::adjust_command),
            6 => decoded(body, service::set_on_hand_command),
            7 => decoded(body, service::set_safety_stock_command),
            _ => None,
        };
        commands.extend(command);
    }
    let batch = |commands: Vec<Command>| Batch {
        stamp_ms: 1_700_000_000_000,
        id_retention_ms: 86_400_000,
        id_retained_max: 1_000,
        commands,
    };
    let mut batches = vec![batch(commands.clone())];
    for command in commands {
        batches.push(batch(vec![command]));
    }
    batches
}

/// One valid request of each kind, with the target's selector byte.
fn public_requests() -> Vec<Vec<u8>> {
    let line = |sku: &str, node: &str, qty| vpb::Line {
        sku: sku.into(),
        node: node.into(),
        qty,
    };
    let reserve = vpb::ReserveRequest {
        reservation_id: "ORDER-1".into(),
        lines: vec![line("SKU-1", "store-7", 2), line("SKU-1", "dc-1", 1)],
        ttl_ms: 60_000,
    };
    let commit = vpb::CommitRequest {
        reservation_id: "ORDER-1".into(),
    };
    let release = vpb::ReleaseRequest {
        reservation_id: "ORDER-2".into(),
    };
    let extend = vpb::ExtendRequest {
        reservation_id: "ORDER-1".into(),
        ttl_ms: 120_000,
    };
    let sell = vpb::SellRequest {
        txn_id: "POS-1".into(),
        sku: "SKU-1".into(),
        node: "store-7".into(),
        qty: 1,
    };
    let adjust = vpb::AdjustRequest {
        txn_id: "WMS-1".into(),
        sku: "SKU-1".into(),
        node: "dc-1".into(),
        delta: 25,
        reason: 1,
    };
    let set = vpb::SetOnHandRequest {
        txn_id: "ERP-1".into(),
        sku: "SKU-1".into(),
        node: "store-7".into(),
        on_hand: 10,
        expected_on_hand: Some(0),
    };
    let safety = vpb::SetSafetyStockRequest {
        sku: "SKU-1".into(),
        node: "store-7".into(),
        safety_stock: 2,
    };
    let availability = vpb::GetAvailabilityRequest {
        skus: vec!["SKU-1".into(), "SKU-2".into()],
        nodes: vec!["store-7".into()],
        ..Default::default()
    };
    let get = vpb::GetReservationRequest {
        reservation_id: "ORDER-1".into(),
        ..Default::default()
    };
    let stream = vpb::StreamRequest {
        op: Some(vpb::stream_request::Op::Reserve(reserve.clone())),
        ..Default::default()
    };
    vec![
        prefixed(0, &reserve.encode_to_vec()),
        prefixed(1, &commit.encode_to_vec()),
        prefixed(2, &release.encode_to_vec()),
        prefixed(3, &extend.encode_to_vec()),
        prefixed(4, &sell.encode_to_vec()),
        prefixed(5, &adjust.encode_to_vec()),
        prefixed(6, &set.encode_to_vec()),
        prefixed(7, &safety.encode_to_vec()),
        prefixed(8, &availability.encode_to_vec()),
        prefixed(9, &get.encode_to_vec()),
        prefixed(10, &stream.encode_to_vec()),
    ]
}

/// Every message a group of three sends while it elects replica 1,
/// commits a write and exchanges heartbeats, in order.
fn group_traffic() -> Vec<Message> {
    let mut group = Group::new();
    let mut seen = Vec::new();
    let mut out = Output::default();
    group.replicas[0].propose(3_000, vec![(2, set_on_hand("t-2", 7))], &mut out);
    group.queue.extend(out.messages);
    for tick in 0..4u64 {
        for replica in group.replicas.iter_mut() {
            let mut out = Output::default();
            replica.tick(4_000 + tick, &mut out);
            group.queue.extend(out.messages);
        }
    }
    for _ in 0..SETTLE_STEPS_MAX {
        for replica in group.replicas.iter_mut() {
            let mut out = Output::default();
            let _ = replica.advance(&mut out);
            group.queue.extend(out.messages);
        }
        let Some(message) = group.queue.pop_front() else {
            break;
        };
        seen.push(message.clone());
        let to = message.to as usize;
        if (1..=3).contains(&to) {
            let _ = group.replicas[to - 1].step(message);
        }
    }
    // A vote request as a candidate in the next term sends it.
    let mut vote = Message::default();
    vote.set_msg_type(MessageType::MsgRequestVote);
    vote.from = 3;
    vote.to = 2;
    vote.term = group.term() + 1;
    vote.index = group.commit_index();
    vote.log_term = group.term();
    seen.push(vote);
    seen
}

/// A leader's snapshot message for replica 2 (without its data) and that
/// data: the state after every sample command, at an index past the
/// group's log.
fn snapshot_message() -> (Message, Vec<u8>) {
    let group = Group::new();
    let mut inventory = Inventory::new();
    for (i, batch) in sample_batches().iter().enumerate() {
        inventory.apply_batch(i as u64 + 1, batch);
    }
    let data =
        membership::encode_snapshot_data(&members(), Some(&[7; 16]), &snapshot::write(&inventory));
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    message.from = 1;
    message.to = 2;
    message.term = group.term();
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = group.commit_index() + 50;
    snap.mut_metadata().term = group.term();
    snap.mut_metadata().set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    });
    message.set_snapshot(snap);
    (message, data)
}

/// A snapshot stream of `parts` parts, each length-delimited.
fn snapshot_parts(message: &Message, data: &[u8], parts: usize) -> Vec<u8> {
    let size = data.len().div_ceil(parts).max(1);
    let mut out = Vec::new();
    for (i, piece) in data.chunks(size).enumerate() {
        let part = ipb::SnapshotPart {
            from: message.from,
            message: if i == 0 { encode(message) } else { Vec::new() },
            data: piece.to_vec(),
            total_bytes: if i == 0 { data.len() as u64 } else { 0 },
            ..Default::default()
        };
        // Writing to a Vec cannot fail.
        let _ = part.encode_length_delimited(&mut out);
    }
    out
}

/// The records of a data dir: hard state, conf state, members, a
/// truncation record, a snapshot record with its chunks, and a log after
/// it. Key layout as src/storage/rocks/ writes it.
fn data_dir_records() -> Vec<u8> {
    let mut inventory = Inventory::new();
    for (i, batch) in sample_batches().iter().enumerate() {
        inventory.apply_batch(i as u64 + 1, batch);
    }
    let image = snapshot::write(&inventory);
    let snapshot_index = 10u64;
    let mut out = Vec::new();
    let hs = HardState {
        term: 2,
        vote: 1,
        commit: 12,
        ..Default::default()
    };
    out.extend(record(b"h", &encode(&hs)));
    let cs = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    out.extend(record(b"c", &encode(&cs)));
    let envelope = membership::envelope(&members(), Some(&[7; 16]));
    out.extend(record(b"a", &envelope.encode_to_vec()));
    let mut truncated = snapshot_index.to_be_bytes().to_vec();
    truncated.extend_from_slice(&2u64.to_be_bytes());
    out.extend(record(b"t", &truncated));
    let mut meta = raft::eraftpb::SnapshotMetadata {
        index: snapshot_index,
        term: 2,
        ..Default::default()
    };
    meta.set_conf_state(cs);
    let stored = ipb::StoredSnapshot {
        raft_metadata: encode(&meta),
        header: Some(image.header),
        chunk_count: image.chunks.len() as u32,
        members: membership::to_records(&members()),
        chunk_bytes: image.byte_count(),
        cluster_id: vec![7; 16],
    };
    out.extend(record(b"s", &stored.encode_to_vec()));
    for (i, chunk) in image.chunks.iter().enumerate() {
        let mut key = vec![b'S'];
        key.extend_from_slice(&snapshot_index.to_be_bytes());
        key.extend_from_slice(&(i as u32).to_be_bytes());
        out.extend(record(&key, chunk));
    }
    let batches = sample_batches();
    for (i, index) in [11u64, 12].into_iter().enumerate() {
        let mut entry = Entry {
            term: 2,
            index,
            data: Bytes::from(codec::encode_batch(&batches[i + 1])),
            ..Default::default()
        };
        entry.set_entry_type(EntryType::EntryNormal);
        let mut key = vec![b'l'];
        key.extend_from_slice(&index.to_be_bytes());
        out.extend(record(&key, &encode(&entry)));
    }
    out
}
