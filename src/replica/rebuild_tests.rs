//! A member rebuilt from its peers withholds its vote until it has caught
//! up (`rebuild.rs`).

use raft::eraftpb::{HardState, Message, MessageType};

use super::tests::{logger, set, Group};
use super::*;
use crate::storage::MemStore;

/// Ticks every replica `ticks` times, delivering what they send.
fn tick_all(group: &mut Group, ticks: usize) {
    for _ in 0..ticks {
        for replica in group.replicas.iter_mut() {
            let mut out = Output::default();
            replica.tick(0, &mut out);
            group.queue.extend(out.messages);
        }
        group.settle();
    }
}

fn vote_request(from: u64, to: u64, term: u64, pre: bool) -> Message {
    let mut m = Message::default();
    m.set_msg_type(if pre {
        MessageType::MsgRequestPreVote
    } else {
        MessageType::MsgRequestVote
    });
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

#[test]
fn a_rebuilt_member_withholds_its_vote_until_it_has_caught_up() {
    let mut group = Group::new();
    group.elect_first();
    let mut out = Output::default();
    group.replicas[0].propose(1_000, vec![(1, set("t1", 5)), (2, set("t2", 7))], &mut out);
    group.queue.extend(out.messages);
    group.settle();
    let term = group.replicas[0].status().term;
    let members = group.replicas[0].members().clone();
    let cluster_id = group.replicas[0].cluster_id();

    // Member 3 lost its data dir and was rebuilt at a term no one reached.
    let hard_state = HardState {
        term: term + 1,
        vote: 3,
        ..Default::default()
    };
    let store = MemStore::rebuilt(&members, cluster_id, hard_state);
    group.replicas[2] = Replica::new(ReplicaConfig::new(3), store.clone(), &logger()).unwrap();
    assert!(group.replicas[2].status().rebuilding);
    for pre in [false, true] {
        let refused = group.replicas[2].step(vote_request(2, 3, term + 9, pre));
        assert!(
            matches!(
                refused,
                Err(StepError::Refused(admission::Refusal::Rebuilding))
            ),
            "{refused:?}"
        );
    }
    // It starts no election of its own, however long it hears nothing.
    group.cut = Some(3);
    for _ in 0..100 {
        let mut out = Output::default();
        group.replicas[2].tick(0, &mut out);
        assert!(out.messages.is_empty(), "{:?}", out.messages);
    }
    group.cut = None;
    // A restart keeps the mark.
    let restarted = Replica::new(ReplicaConfig::new(3), store, &logger()).unwrap();
    assert!(restarted.is_rebuilding());

    // Its higher term unseats the leader; members 1 and 2 alone elect the
    // next one, which catches member 3 up.
    tick_all(&mut group, 60);
    assert!(group.replicas[0].is_leader() || group.replicas[1].is_leader());
    let rebuilt = &group.replicas[2];
    assert!(!rebuilt.is_rebuilding(), "{:?}", rebuilt.status());
    assert_eq!(rebuilt.store().rebuilt_term(), None);
    assert_eq!(
        rebuilt.inventory().applied_index(),
        group.replicas[0].inventory().applied_index()
    );
    assert_eq!(
        rebuilt.inventory().digest(),
        group.replicas[0].inventory().digest()
    );
    // Caught up, it votes again.
    let now = group.replicas[2].status().term;
    let answer = group.replicas[2].step(vote_request(2, 3, now + 1, true));
    assert!(answer.is_ok(), "{answer:?}");
}
