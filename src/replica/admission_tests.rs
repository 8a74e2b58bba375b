//! Forged peer messages (issue 28, item 5): each one that would stop
//! raft-rs, or let its sender change the group, is refused before it gets
//! there, and the group keeps working; random messages never stop a
//! replica.

use proptest::prelude::*;
use protobuf::ProtobufEnum as _;
use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot};

use super::admission::Refusal;
use super::tests::{set, Group};
use super::*;

/// A group of three with replica 1 leading and one entry committed
/// everywhere.
fn group() -> Group {
    let mut group = Group::new();
    group.elect_first();
    let mut out = Output::default();
    group.replicas[0].propose(1_000, vec![(1, set("t", 1))], &mut out);
    group.queue.extend(out.messages);
    group.settle();
    group.answers.clear();
    group
}

fn message(kind: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

/// Whether raft-rs itself panics on `m`, stepped straight into replica
/// `to` of a fresh group (past the admission rules).
fn raft_rs_panics(to: u64, m: &Message) -> bool {
    let mut fresh = group();
    let replica = &mut fresh.replicas[to as usize - 1];
    let m = m.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _ = replica.raw.step(m);
        let mut out = Output::default();
        let _ = replica.advance(&mut out);
    }))
    .is_err()
}

/// The group still commits and answers a write after whatever it was sent.
fn still_serves(group: &mut Group) {
    let leader = (0..3).find(|i| group.replicas[*i].is_leader());
    let Some(leader) = leader else {
        panic!("no leader after the forged messages");
    };
    let mut out = Output::default();
    group.replicas[leader].propose(9_000, vec![(77, set("after", 2))], &mut out);
    group.queue.extend(out.messages);
    group.settle();
    assert!(
        group.answers.iter().any(|(t, a)| *t == 77 && a.is_ok()),
        "{:?}",
        group.answers
    );
}

fn refused(group: &mut Group, to: u64, m: Message) -> Refusal {
    match group.replicas[to as usize - 1].step(m) {
        Err(StepError::Refused(refusal)) => refusal,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_heartbeat_committing_past_the_log_is_refused() {
    let mut group = group();
    let term = group.replicas[1].status().term;
    let mut m = message(MessageType::MsgHeartbeat, 1, 2, term);
    m.commit = 1_000_000;
    assert!(raft_rs_panics(2, &m), "raft-rs no longer panics on it");
    assert_eq!(refused(&mut group, 2, m), Refusal::Malformed);
    still_serves(&mut group);
}

#[test]
fn appends_out_of_order_or_rewriting_committed_entries_are_refused() {
    let mut group = group();
    let status = group.replicas[1].status();
    let committed = status.commit_index;
    // Entries after a gap (raft-rs slices out of bounds).
    let mut gap = message(MessageType::MsgAppend, 1, 2, status.term);
    gap.index = committed;
    gap.log_term = status.term;
    let entry = Entry {
        index: committed + 5,
        term: status.term,
        ..Default::default()
    };
    gap.entries = vec![entry].into();
    // After the committed entry, an entry for that same index with another
    // term (raft-rs aborts: a conflict with a committed entry).
    let mut conflict = message(MessageType::MsgAppend, 1, 2, status.term);
    conflict.index = committed;
    conflict.log_term = status.term;
    let entry = Entry {
        index: committed,
        term: status.term + 1,
        ..Default::default()
    };
    conflict.entries = vec![entry].into();
    conflict.term = status.term + 1;
    for m in [gap, conflict] {
        assert!(raft_rs_panics(2, &m), "raft-rs no longer panics on {m:?}");
        assert_eq!(refused(&mut group, 2, m), Refusal::Malformed);
    }
    still_serves(&mut group);
}

#[test]
fn a_snapshot_whose_membership_raft_rs_cannot_restore_is_refused() {
    let mut group = group();
    let term = group.replicas[1].status().term;
    let mut m = message(MessageType::MsgSnapshot, 1, 2, term);
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 1_000;
    snapshot.mut_metadata().term = term;
    snapshot.mut_metadata().set_conf_state(ConfState {
        voters: vec![1, 2],
        learners: vec![2],
        ..Default::default()
    });
    m.set_snapshot(snapshot);
    assert!(raft_rs_panics(2, &m), "raft-rs no longer panics on it");
    assert_eq!(refused(&mut group, 2, m), Refusal::Malformed);
    still_serves(&mut group);
}

/// A proposal from the network would append whatever it carries on the
/// leader (a membership change among them); stockraft never forwards
/// proposals, so none is taken from a peer.
#[test]
fn a_proposal_from_the_network_is_refused() {
    let mut group = group();
    let last = group.replicas[0].status().last_index;
    let mut m = message(MessageType::MsgPropose, 2, 1, 0);
    let entry = Entry {
        data: b"anything".to_vec().into(),
        ..Default::default()
    };
    m.entries = vec![entry].into();
    assert_eq!(refused(&mut group, 1, m), Refusal::NotFromPeers);
    assert_eq!(group.replicas[0].status().last_index, last);
    still_serves(&mut group);
}

#[test]
fn terms_near_the_end_of_u64_and_strangers_are_refused() {
    let mut group = group();
    let mut m = message(MessageType::MsgHeartbeat, 1, 2, u64::MAX - 1);
    m.commit = 1;
    assert_eq!(refused(&mut group, 2, m), Refusal::Malformed);
    // A vote message must carry a term (raft-rs aborts sending one without).
    let vote = message(MessageType::MsgRequestVote, 3, 2, 0);
    assert_eq!(refused(&mut group, 2, vote), Refusal::Malformed);
    // Nobody this member knows of, or not addressed to it.
    let stranger = message(MessageType::MsgAppendResponse, 9, 1, 2);
    assert_eq!(refused(&mut group, 1, stranger), Refusal::NotAMember);
    let misaddressed = message(MessageType::MsgHeartbeat, 1, 3, 2);
    assert_eq!(refused(&mut group, 2, misaddressed), Refusal::NotAMember);
    still_serves(&mut group);
}

/// A response claiming more of the leader's log than it has would move
/// the follower's progress past it, and the leader's next append would
/// then crash the follower.
#[test]
fn an_append_response_past_the_leaders_log_is_refused() {
    let mut group = group();
    let status = group.replicas[0].status();
    let mut m = message(MessageType::MsgAppendResponse, 2, 1, status.term);
    m.index = status.last_index + 100;
    assert_eq!(refused(&mut group, 1, m), Refusal::Malformed);
    still_serves(&mut group);
}

fn arb_message() -> impl Strategy<Value = Message> {
    let kinds: Vec<MessageType> = MessageType::values().to_vec();
    let small = prop_oneof![
        0u64..8,
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1u64 << 62)
    ];
    let entry = (small.clone(), small.clone(), 0usize..3).prop_map(|(index, term, kind)| {
        let mut e = Entry {
            index,
            term,
            data: vec![kind as u8; kind].into(),
            ..Default::default()
        };
        e.set_entry_type(match kind {
            0 => raft::eraftpb::EntryType::EntryNormal,
            1 => raft::eraftpb::EntryType::EntryConfChange,
            _ => raft::eraftpb::EntryType::EntryConfChangeV2,
        });
        e
    });
    let ids = prop::collection::vec(0u64..5, 0..4);
    (
        (prop::sample::select(kinds), 0u64..5, 1u64..4, small.clone()),
        (small.clone(), small.clone(), small.clone(), any::<bool>()),
        (small.clone(), prop::collection::vec(entry, 0..4)),
        prop::option::of((small.clone(), small, ids.clone(), ids)),
    )
        .prop_map(
            |((kind, from, to, term), (log_term, index, commit, reject), (hint, entries), snap)| {
                let mut m = message(kind, from, to, term);
                m.log_term = log_term;
                m.index = index;
                m.commit = commit;
                m.reject = reject;
                m.reject_hint = hint;
                m.entries = entries.into();
                if let Some((index, term, voters, learners)) = snap {
                    let mut snapshot = Snapshot::default();
                    snapshot.mut_metadata().index = index;
                    snapshot.mut_metadata().term = term;
                    snapshot.mut_metadata().set_conf_state(ConfState {
                        voters,
                        learners,
                        ..Default::default()
                    });
                    m.set_snapshot(snapshot);
                }
                m
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any message with any fields, to the leader or a follower: the
    /// replica never stops, and the group still serves.
    #[test]
    fn no_peer_message_stops_a_replica(messages in prop::collection::vec(arb_message(), 1..6)) {
        let mut group = group();
        for m in messages {
            let to = m.to as usize - 1;
            let replica = &mut group.replicas[to];
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = replica.step(m.clone());
                let mut out = Output::default();
                replica.advance(&mut out).map(|()| out.messages)
            }));
            let Ok(advanced) = stepped else {
                return Err(TestCaseError::fail(format!("replica {} stopped on {m:?}", to + 1)));
            };
            prop_assert!(advanced.is_ok(), "fatal error on {:?}", m);
        }
    }
}
