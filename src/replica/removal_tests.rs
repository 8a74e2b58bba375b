//! Removing the leader (issue 27): a leader never proposes its own
//! removal and hands leadership over instead; a leader under which its own
//! removal commits steps down at once, with append responses still in
//! flight; no input reaches raft-rs's unwrap of a removed leader's
//! missing progress.

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Message, MessageType};

use super::tests::{set, Group};
use super::*;
use crate::inventory::Applied;

impl Group {
    /// Like `settle`, but messages `hold` picks are kept back in `held`
    /// instead of delivered: in flight, for the test to deliver later.
    fn settle_holding(&mut self, hold: impl Fn(&Message) -> bool, held: &mut Vec<Message>) {
        for _ in 0..1_000 {
            for replica in self.replicas.iter_mut() {
                let mut out = Output::default();
                replica.advance(&mut out).unwrap();
                self.queue.extend(out.messages);
                self.answers.extend(out.answers);
            }
            let Some(message) = self.queue.pop_front() else {
                return;
            };
            if self.cut == Some(message.to) || self.cut == Some(message.from) {
                continue;
            }
            if hold(&message) {
                held.push(message);
                continue;
            }
            let to = message.to as usize - 1;
            let _ = self.replicas[to].step(message);
        }
        panic!("group did not settle");
    }

    /// Ticks `ids` (1-based) until one of them leads in the newest term
    /// among them, holding back what `hold` picks; returns its index.
    fn tick_until_leader(
        &mut self,
        ids: &[u64],
        hold: impl Fn(&Message) -> bool + Copy,
        held: &mut Vec<Message>,
    ) -> usize {
        for _ in 0..200 {
            for id in ids {
                let mut out = Output::default();
                self.replicas[*id as usize - 1].tick(0, &mut out);
                self.queue.extend(out.messages);
            }
            self.settle_holding(hold, held);
            // A deposed leader that has not heard of the newer term yet
            // does not count.
            let indexes = ids.iter().map(|id| *id as usize - 1);
            let newest = indexes
                .clone()
                .map(|i| self.replicas[i].status().term)
                .max();
            if let Some(i) = indexes.clone().find(|i| {
                let status = self.replicas[*i].status();
                status.is_leader && Some(status.term) == newest
            }) {
                return i;
            }
        }
        panic!("none of {ids:?} was elected");
    }
}

fn voters(replica: &Replica<crate::storage::MemStore>) -> Vec<u64> {
    let mut voters = replica.conf_state().voters;
    voters.sort();
    voters
}

fn remove(node_id: u64) -> MembershipChange {
    MembershipChange::Remove { node_id }
}

fn fixed_election(id: u64, ticks: usize) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(id);
    config.fixed_election_ticks = Some(ticks);
    config
}

/// Asked to remove itself, a leader refuses; it hands leadership to the
/// most caught-up voter instead, and that voter removes it.
#[test]
fn a_leader_hands_over_instead_of_removing_itself() {
    let mut group = Group::new();
    group.elect_first();
    let mut out = Output::default();
    group.replicas[0].propose_membership(7, remove(1), &mut out);
    assert_eq!(out.membership, vec![(7, Err(ProposeError::RemovesLeader))]);
    // Replica 3 misses the last entry: replica 2 is the most caught up.
    group.cut = Some(3);
    let mut out = Output::default();
    group.replicas[0].propose(1_000, vec![(1, set("t", 1))], &mut out);
    group.queue.extend(out.messages);
    group.settle();
    group.cut = None;
    assert_eq!(group.replicas[0].successor(), Some(2));
    assert_eq!(group.replicas[1].successor(), None, "a follower has none");
    assert_eq!(group.replicas[0].hand_over_leadership(), Some(2));
    group.settle();
    assert!(group.replicas[1].is_leader());
    let mut out = Output::default();
    group.replicas[1].propose_membership(8, remove(1), &mut out);
    group.queue.extend(out.messages);
    group.settle();
    for _ in 0..5 {
        let mut out = Output::default();
        group.replicas[1].tick(0, &mut out);
        group.queue.extend(out.messages);
        group.settle();
    }
    for i in 1..3 {
        assert_eq!(voters(&group.replicas[i]), vec![2, 3]);
    }
    assert_eq!(group.replicas[0].removed_step_downs(), 0);
}

fn is_append_response_to(message: &Message, to: u64) -> bool {
    message.get_msg_type() == MessageType::MsgAppendResponse && message.to == to
}

/// Leader 1 proposes removing replica 2 and dies; replica 2 is elected
/// with that entry in its log, proposes commands, and commits its own
/// removal while replica 3's append responses are still in flight. It
/// steps down at once (raft-rs would leave it leading without its own
/// progress and abort on the next response), tells replica 3 to campaign,
/// and every caller it had is answered: committed commands with their
/// results, the rest Unknown with their commands handed back.
#[test]
fn a_leader_that_commits_its_own_removal_steps_down_with_responses_in_flight() {
    let mut group = Group::with_configs(vec![
        fixed_election(1, 10),
        fixed_election(2, 10),
        fixed_election(3, 19),
    ]);
    group.elect_first();
    let mut out = Output::default();
    group.replicas[0].propose_membership(0, remove(2), &mut out);
    group.queue.extend(out.messages);
    // The entry reaches 2 and 3; their answers never reach 1, which dies.
    let mut held = Vec::new();
    group.settle_holding(|m| is_append_response_to(m, 1), &mut held);
    group.cut = Some(1);
    held.clear();
    let hold_to_2 = |m: &Message| is_append_response_to(m, 2);
    let leader = group.tick_until_leader(&[2, 3], hold_to_2, &mut held);
    assert_eq!(leader, 1, "replica 2 times out first");
    // Replica 3's probe response is in flight (raft-rs sends no more to a
    // probed follower until it answers); the commands wait behind it.
    let mut out = Output::default();
    group.replicas[1].propose(2_000, vec![(1, set("a", 1)), (2, set("b", 2))], &mut out);
    group.queue.extend(out.messages);
    group.settle_holding(hold_to_2, &mut held);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(group.answers.is_empty());
    // The response commits the removal and the new term's entry; replica
    // 2 sends the commands on, applies its removal and steps down at once.
    group.replicas[1].step(held.remove(0)).unwrap();
    let mut out = Output::default();
    group.replicas[1].advance(&mut out).unwrap();
    assert!(!group.replicas[1].is_leader());
    assert_eq!(group.replicas[1].removed_step_downs(), 1);
    assert!(group.replicas[1].status().removed);
    assert_eq!(voters(&group.replicas[1]), vec![1, 3]);
    assert!(
        out.messages
            .iter()
            .any(|m| m.get_msg_type() == MessageType::MsgTimeoutNow && m.to == 3),
        "no MsgTimeoutNow to the remaining voter: {:?}",
        out.messages
    );
    group.queue.extend(out.messages);
    group.answers.extend(out.answers);
    // Replica 3's responses to what replica 2 sent before stepping down
    // arrive after it (raft-rs, left leading, would unwrap its missing
    // progress on the first).
    let mut late = Vec::new();
    group.settle_holding(hold_to_2, &mut late);
    assert!(!late.is_empty(), "no response arrived late");
    for response in late {
        let _ = group.replicas[1].step(response);
        let mut out = Output::default();
        group.replicas[1].advance(&mut out).unwrap();
        assert!(!group.replicas[1].is_leader());
        group.answers.extend(out.answers);
    }
    // Replica 1 comes back; 3 leads the remaining voters, 1 and 3.
    group.cut = None;
    let mut none = Vec::new();
    let leader = group.tick_until_leader(&[1, 3], |_| false, &mut none);
    assert_eq!(leader, 2, "replica 3 holds the longest log");
    assert_eq!(voters(&group.replicas[leader]), vec![1, 3]);
    let mut answered: Vec<Token> = group.answers.iter().map(|(t, _)| *t).collect();
    answered.sort();
    assert_eq!(answered, vec![1, 2], "every caller answered once");
    for (token, answer) in &group.answers {
        match answer {
            Ok(Applied::StockChange(Ok(_))) => {}
            Err(Unanswered {
                error: ProposeError::Unknown,
                command: Some(_),
            }) => {}
            other => panic!("token {token}: {other:?}"),
        }
    }
    // Never two leaders, and replica 2 never leads again.
    for _ in 0..50 {
        let mut out = Output::default();
        group.replicas[1].tick(0, &mut out);
        group.queue.extend(out.messages);
    }
    group.settle();
    assert!(!group.replicas[1].is_leader());
    assert_eq!(group.replicas.iter().filter(|r| r.is_leader()).count(), 1);
}

/// The guard on every input: a leader left leading a group it is not in
/// (here put there by calling raft-rs directly, past the replica's own
/// apply) steps down on the next input instead of reaching raft-rs's
/// unwrap of its missing progress.
#[test]
fn a_removed_leader_left_leading_steps_down_on_its_next_input() {
    let mut group = Group::new();
    group.elect_first();
    let mut out = Output::default();
    group.replicas[0].propose(1_000, vec![(1, set("t", 1))], &mut out);
    group.queue.extend(out.messages);
    let mut held = Vec::new();
    group.settle_holding(|m| is_append_response_to(m, 1), &mut held);
    assert!(!held.is_empty());
    let mut change = ConfChangeV2::default();
    change.set_changes(
        vec![ConfChangeSingle {
            change_type: ConfChangeType::RemoveNode,
            node_id: 1,
            ..Default::default()
        }]
        .into(),
    );
    group.replicas[0].raw.apply_conf_change(&change).unwrap();
    assert!(group.replicas[0].is_leader(), "raft-rs leaves it leading");
    for response in held {
        let _ = group.replicas[0].step(response);
    }
    assert!(!group.replicas[0].is_leader());
    let mut out = Output::default();
    group.replicas[0].tick(0, &mut out);
    group.replicas[0].advance(&mut out).unwrap();
}

/// A member told by the leader that it was removed (it may never apply
/// the change itself: the leader sends it nothing more) serves nothing
/// and never campaigns, however long it hears from no one.
#[test]
fn a_member_told_it_was_removed_never_campaigns() {
    let mut group = Group::new();
    group.elect_first();
    group.replicas[2].note_removed();
    assert!(group.replicas[2].status().removed);
    let mut out = Output::default();
    for _ in 0..100 {
        group.replicas[2].tick(0, &mut out);
        group.replicas[2].advance(&mut out).unwrap();
    }
    assert!(
        out.messages.is_empty(),
        "a removed member sent {:?}",
        out.messages
    );
    // Unlike one that merely hears from no one.
    let mut out = Output::default();
    for _ in 0..100 {
        group.replicas[1].tick(0, &mut out);
        group.replicas[1].advance(&mut out).unwrap();
    }
    assert!(out
        .messages
        .iter()
        .any(|m| m.get_msg_type() == MessageType::MsgRequestPreVote));
}
