//! Who is in the group and where to reach them.
//!
//! raft-rs tracks membership as node ids (the conf state); stockraft also
//! needs each member's addresses: where clients reach it, and where other
//! members send it Raft traffic (the same port unless it listens for peers
//! on a port of its own, `--peer-listen`). Addresses travel with the ids: in
//! the context of each membership-change entry, in every snapshot, and in
//! the store next to the conf state, so a restarted node needs nothing but
//! its data dir.

use std::collections::BTreeMap;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState,
};

use crate::inventory::snapshot::{self, Image, SnapshotError};
use crate::limits::SNAPSHOT_BYTES_MAX;
use crate::proto::internal as pb;

/// Where a member is reached, each as HOST:PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Clients, and members forwarding a client's call.
    pub address: String,
    /// Other members' Raft traffic.
    pub peer_address: String,
}

impl Member {
    /// A member serving clients and peers on one port.
    pub fn at(address: &str) -> Member {
        Member {
            address: address.to_string(),
            peer_address: address.to_string(),
        }
    }

    /// From a record or a request: an empty peer address (written before
    /// members had one of their own, or not given) is the client address.
    pub fn of(address: &str, peer_address: &str) -> Member {
        let peer = if peer_address.is_empty() {
            address
        } else {
            peer_address
        };
        Member {
            address: address.to_string(),
            peer_address: peer.to_string(),
        }
    }
}

/// Node id to its addresses.
pub type Members = BTreeMap<u64, Member>;

/// A cluster's identity: 16 random bytes its first leader commits to the
/// log (see [`encode_cluster_identity`]). Members of different clusters,
/// which may share ids and even addresses, refuse each other by it.
pub type ClusterId = [u8; 16];

/// The context of the entry that gives a cluster its id.
pub(crate) fn encode_cluster_identity(id: &ClusterId) -> Vec<u8> {
    pb::ClusterIdentity {
        cluster_id: id.to_vec(),
    }
    .encode_to_vec()
}

/// The id an entry's context gives the cluster, if it is such an entry:
/// any other context (none, a member change) is not 16 bytes of id.
pub(crate) fn decode_cluster_identity(context: &[u8]) -> Option<ClusterId> {
    if context.is_empty() {
        return None;
    }
    let identity = pb::ClusterIdentity::decode(context).ok()?;
    cluster_id_of(&identity.cluster_id)
}

/// An id as it travels (bytes): exactly 16, or none.
pub(crate) fn cluster_id_of(bytes: &[u8]) -> Option<ClusterId> {
    ClusterId::try_from(bytes).ok()
}

/// How an id is shown to people: 32 lowercase hex digits.
pub(crate) fn cluster_id_hex(id: &ClusterId) -> String {
    let mut out = String::with_capacity(32);
    for byte in id {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// An id as [`cluster_id_hex`] shows it; None for anything else (empty:
/// the cluster has none yet).
pub(crate) fn cluster_id_from_hex(hex: &str) -> Option<ClusterId> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// The record of the members and the cluster's id, as stored and as sent
/// in snapshots.
pub fn envelope(members: &Members, cluster_id: Option<&ClusterId>) -> pb::SnapshotEnvelope {
    pb::SnapshotEnvelope {
        members: to_records(members),
        cluster_id: cluster_id.map(|id| id.to_vec()).unwrap_or_default(),
    }
}

/// A change of membership asked by an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    Add { node_id: u64, member: Member },
    Remove { node_id: u64 },
}

/// The first Raft state of a brand-new cluster.
///
/// The initial members are written as ordinary, already committed
/// membership-change entries (index 1..=n, term 1), identical on every
/// founding node, as etcd does. So a node that joins later and replays the
/// log from index 1 rebuilds the same membership as everyone else, instead
/// of starting from an empty one.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
    pub conf_state: ConfState,
    pub members: Members,
}

pub(crate) fn bootstrap(members: &Members) -> Result<Bootstrap, protobuf::ProtobufError> {
    let mut entries = Vec::with_capacity(members.len());
    for (i, (id, member)) in members.iter().enumerate() {
        let mut change = ConfChangeV2::default();
        change.set_changes(
            vec![ConfChangeSingle {
                change_type: ConfChangeType::AddNode,
                node_id: *id,
                ..Default::default()
            }]
            .into(),
        );
        let mut entry = Entry {
            term: 1,
            index: i as u64 + 1,
            ..Default::default()
        };
        entry.set_entry_type(EntryType::EntryConfChangeV2);
        entry.data = change.write_to_bytes()?.into();
        entry.context = encode_change_context(*id, Some(member)).into();
        entries.push(entry);
    }
    let hard_state = HardState {
        term: 1,
        vote: 0,
        commit: entries.len() as u64,
        ..Default::default()
    };
    let conf_state = ConfState {
        voters: members.keys().copied().collect(),
        ..Default::default()
    };
    Ok(Bootstrap {
        entries,
        hard_state,
        conf_state,
        members: members.clone(),
    })
}

pub fn to_records(members: &Members) -> Vec<pb::MemberRecord> {
    members
        .iter()
        .map(|(id, member)| pb::MemberRecord {
            node_id: *id,
            address: member.address.clone(),
            peer_address: member.peer_address.clone(),
        })
        .collect()
}

pub(crate) fn from_records(records: &[pb::MemberRecord]) -> Members {
    records
        .iter()
        .map(|r| (r.node_id, Member::of(&r.address, &r.peer_address)))
        .collect()
}

/// The data of a Raft snapshot message: members and cluster id, then the
/// image.
pub fn encode_snapshot_data(
    members: &Members,
    cluster_id: Option<&ClusterId>,
    image: &Image,
) -> Vec<u8> {
    let mut out = start_snapshot_data(
        members,
        cluster_id,
        &image.header,
        image.chunks.len() as u64,
        image.byte_count(),
    );
    for chunk in &image.chunks {
        snapshot::put_chunk(chunk, &mut out);
    }
    out
}

/// The start of a Raft snapshot message's data (members, the image's
/// header) in a buffer with room for `chunk_count` chunks of `chunk_bytes`
/// in all. The caller appends each chunk with [`snapshot::put_chunk`] as it
/// reads it, so a leader sending a snapshot holds the message's data once,
/// not also the image it was built from. With `chunk_bytes` exact, the
/// buffer never grows (a grown buffer briefly needs its old and new room
/// at once).
pub(crate) fn start_snapshot_data(
    members: &Members,
    cluster_id: Option<&ClusterId>,
    header: &pb::SnapshotHeader,
    chunk_count: u64,
    chunk_bytes: u64,
) -> Vec<u8> {
    let envelope = envelope(members, cluster_id);
    let envelope_bytes = envelope.encoded_len();
    let delimited = envelope_bytes + prost::length_delimiter_len(envelope_bytes);
    let room = (delimited as u64)
        .saturating_add(snapshot::framing_bytes_max(header, chunk_count))
        .saturating_add(chunk_bytes);
    // The counts come from a record on disk: a damaged one must not make
    // the leader reserve more than any peer would accept (it then grows
    // the buffer as it reads, and the peer refuses what is too large).
    let reserved = if room > SNAPSHOT_BYTES_MAX { 0 } else { room };
    let mut out = Vec::with_capacity(usize::try_from(reserved).unwrap_or(0));
    // Writing to a Vec cannot fail.
    let _ = envelope.encode_length_delimited(&mut out);
    snapshot::put_header(header, &mut out);
    out
}

/// A Raft snapshot message's data, split (see [`split_snapshot_data`]).
#[derive(Debug)]
pub struct SnapshotData<'a> {
    pub members: Members,
    pub cluster_id: Option<ClusterId>,
    pub header: pb::SnapshotHeader,
    /// Borrowed from the message's data.
    pub chunks: Vec<&'a [u8]>,
}

/// Splits the data of a Raft snapshot message into members, cluster id,
/// the image's header and its chunks, borrowed from `data` (see
/// [`snapshot::split_bytes`]).
pub fn split_snapshot_data(data: &[u8]) -> Result<SnapshotData<'_>, SnapshotError> {
    let mut rest = data;
    let envelope = pb::SnapshotEnvelope::decode_length_delimited(&mut rest)?;
    let (header, chunks) = snapshot::split_bytes(rest)?;
    Ok(SnapshotData {
        members: from_records(&envelope.members),
        cluster_id: cluster_id_of(&envelope.cluster_id),
        header,
        chunks,
    })
}

/// The context of a membership-change entry: the member added (None for
/// a removal).
pub fn encode_change_context(node_id: u64, member: Option<&Member>) -> Vec<u8> {
    let (address, peer_address) = match member {
        Some(m) => (m.address.clone(), m.peer_address.clone()),
        None => (String::new(), String::new()),
    };
    pb::MemberChange {
        node_id,
        address,
        peer_address,
    }
    .encode_to_vec()
}

/// The member an entry's context names, if it names one.
pub fn decode_change_context(context: &[u8]) -> Option<(u64, Member)> {
    let change = pb::MemberChange::decode(context).ok()?;
    let member = Member::of(&change.address, &change.peer_address);
    Some((change.node_id, member))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::tests::inventory_of;
    use crate::inventory::Inventory;

    #[test]
    fn snapshot_data_round_trips() {
        let members: Members = [(1, Member::at("a:1")), (2, Member::of("b:2", "b:3"))].into();
        for image in [
            snapshot::write(&Inventory::new()),
            snapshot::write(&inventory_of(3 * snapshot::CHUNK_RECORDS_MAX)),
        ] {
            for id in [None, Some([7u8; 16])] {
                let data = encode_snapshot_data(&members, id.as_ref(), &image);
                let split = split_snapshot_data(&data).unwrap();
                assert_eq!(split.members, members);
                assert_eq!(split.cluster_id, id);
                assert_eq!(split.header, image.header);
                assert_eq!(split.chunks, image.chunks);
            }
        }
    }

    #[test]
    fn snapshot_data_built_chunk_by_chunk_fits_the_room_reserved() {
        let members: Members = [(1, Member::at("a:1"))].into();
        let image = snapshot::write(&inventory_of(3 * snapshot::CHUNK_RECORDS_MAX));
        assert!(image.chunks.len() >= 3, "want several chunks");
        let count = image.chunks.len() as u64;
        let mut data =
            start_snapshot_data(&members, None, &image.header, count, image.byte_count());
        let room = data.capacity();
        for chunk in &image.chunks {
            snapshot::put_chunk(chunk, &mut data);
        }
        // The buffer never grew, so it was never held twice.
        assert_eq!(data.capacity(), room);
        assert_eq!(data, encode_snapshot_data(&members, None, &image));
        // Nor is it much larger than what it holds.
        assert!(room - data.len() <= 16 * (image.chunks.len() + 3));
    }

    #[test]
    fn a_damaged_record_reserves_no_more_than_a_peer_accepts() {
        let image = snapshot::write(&inventory_of(10));
        let members = Members::new();
        for (count, bytes) in [(u64::MAX, 0), (1, u64::MAX), (1, SNAPSHOT_BYTES_MAX)] {
            let data = start_snapshot_data(&members, None, &image.header, count, bytes);
            assert!(
                data.capacity() < 1024,
                "{count} chunks of {bytes}: {}",
                data.capacity()
            );
        }
    }

    #[test]
    fn only_a_whole_identity_names_a_cluster() {
        let id = [0xabu8; 16];
        assert_eq!(
            decode_cluster_identity(&encode_cluster_identity(&id)),
            Some(id)
        );
        assert_eq!(cluster_id_hex(&id), "ab".repeat(16));
        assert_eq!(cluster_id_from_hex(&cluster_id_hex(&id)), Some(id));
        assert_eq!(cluster_id_from_hex(""), None);
        assert_eq!(cluster_id_from_hex(&"g".repeat(32)), None);
        // A leader's empty entry, a member change, a short id: none.
        assert_eq!(decode_cluster_identity(&[]), None);
        let change = encode_change_context(2, Some(&Member::at("b:2")));
        assert_eq!(decode_cluster_identity(&change), None);
        let short = pb::ClusterIdentity {
            cluster_id: vec![1; 15],
        };
        assert_eq!(decode_cluster_identity(&short.encode_to_vec()), None);
    }

    #[test]
    fn snapshot_data_cut_short_is_refused() {
        let members: Members = [(1, Member::at("a:1"))].into();
        let image = snapshot::write(&inventory_of(10));
        let data = encode_snapshot_data(&members, None, &image);
        let err = split_snapshot_data(&data[..data.len() - 1]).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
