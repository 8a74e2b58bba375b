//! The simulated operator's membership changes: growing the group by one
//! voter (up to 5) and shrinking it by one (down to 3), the leader
//! included, the way the Cluster service does it.
//!
//! A leader never proposes its own removal (raft-rs would leave it leading
//! a group it is no longer in): removing the leader first hands leadership
//! to the most caught-up other voter, and the new leader proposes the
//! removal, as `RemoveMember` does in the server. To reach the replica's
//! defence as well, the operator sometimes moves leadership *to* a node
//! whose removal is on its way: the removal then commits under the very
//! node it removes, which must step down on applying it.

use rand::rngs::StdRng;
use rand::Rng;

use super::disk::SimDisk;
use super::node::SimNode;
use super::report::ViolationKind;
use super::requests::Caller;
use super::world::Sim;
use super::Bug;
use crate::replica::membership::Member;
use crate::replica::{Answer, MembershipChange, ProposeError, Request};
use crate::storage::MemStore;

/// A change under way.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingChange {
    node: u64,
    adding: bool,
    since_ms: u64,
    /// A removal of the leader waits for it to hand leadership over
    /// before the new leader proposes it.
    proposed: bool,
    /// When the leader to remove was last asked to hand over.
    handover_asked_ms: u64,
}

/// A change not done after this long is given up (the node may still
/// be added or removed later; the run's end copes with either).
const CHANGE_GIVE_UP_MS: u64 = 10_000;
/// How often a leader to remove is asked again to hand over: raft-rs
/// abandons a transfer after an election timeout (10 to 20 ticks here).
const HANDOVER_RETRY_MS: u64 = 2_000;

impl Sim {
    /// Starts a change when everyone is up and none is under way, or moves
    /// the one under way along.
    pub(super) fn change_membership(&mut self, rng: &mut StdRng) {
        let Some(l) = self.leader() else {
            return;
        };
        if let Some(pending) = self.membership_pending {
            self.follow_change(l, pending);
            return;
        }
        if self.up().len() != self.nodes.len()
            || rng.random_range(0..1_000) >= self.faults.membership_per_mille
        {
            return;
        }
        let voters = self.voters_seen_by(l);
        if voters.len() < 5 && rng.random_bool(0.5) {
            self.add_voter(l, rng);
        } else if voters.len() > 3 {
            self.remove_voter(l, &voters, rng);
        } else {
            return;
        }
        self.report.membership_changes += 1;
    }

    fn voters_seen_by(&self, l: usize) -> Vec<u64> {
        self.nodes[l]
            .replica()
            .map(|r| r.conf_state().voters)
            .unwrap_or_default()
    }

    fn add_voter(&mut self, l: usize, rng: &mut StdRng) {
        let id = self.next_node_id;
        self.next_node_id += 1;
        let Some(leader) = self.nodes[l].driver.as_mut() else {
            return;
        };
        let mut members = leader.replica().members().clone();
        let member = Member::at(&format!("node-{id}"));
        members.insert(id, member.clone());
        let change = MembershipChange::Add {
            node_id: id,
            member,
        };
        leader.submit(Request::Membership(change), Caller::Operator);
        let disk = SimDisk::new(
            MemStore::joining(&members),
            self.config.bug == Some(Bug::FsyncLies),
        );
        let node = SimNode::start(id, disk, &self.faults, self.config.bug, self.now_ms, rng);
        self.nodes.push(node);
        self.membership_pending = Some(PendingChange {
            node: id,
            adding: true,
            since_ms: self.now_ms,
            proposed: true,
            handover_asked_ms: 0,
        });
        self.act(l);
    }

    /// Removes a voter other than the leader, or (when the seed draws
    /// deliberate leader removals) the leader itself half the time.
    fn remove_voter(&mut self, l: usize, voters: &[u64], rng: &mut StdRng) {
        let leader_id = self.nodes[l].id;
        let others: Vec<u64> = voters.iter().copied().filter(|v| *v != leader_id).collect();
        let remove_leader = self.config.leader_removals && rng.random_bool(0.5);
        let id = if remove_leader {
            leader_id
        } else {
            others[rng.random_range(0..others.len())]
        };
        let mut pending = PendingChange {
            node: id,
            adding: false,
            since_ms: self.now_ms,
            proposed: false,
            handover_asked_ms: 0,
        };
        if remove_leader {
            self.report.leader_removals += 1;
        } else {
            pending.proposed = self.propose_removal(l, id);
            // An operator moving leadership to the node being removed
            // while its removal is on its way.
            if self.config.leader_removals && rng.random_bool(0.5) {
                if let Some(leader) = self.nodes[l].driver.as_mut() {
                    leader.transfer_leader(id);
                    self.report.transfers += 1;
                }
            }
        }
        self.membership_pending = Some(pending);
        self.follow_change(l, pending);
    }

    /// Proposes removing `id` from the leader at `l`; false when the
    /// leader refused at once (it is the node to remove, or another change
    /// or a transfer is in progress): it is tried again later.
    fn propose_removal(&mut self, l: usize, id: u64) -> bool {
        let Some(leader) = self.nodes[l].driver.as_mut() else {
            return false;
        };
        let change = MembershipChange::Remove { node_id: id };
        let token = leader.submit(Request::Membership(change), Caller::Operator);
        // A refusal comes at once, among the driver's finished callers.
        let answer = leader
            .effects()
            .finished
            .iter()
            .find_map(|f| match &f.answer {
                Answer::Membership(Err(error)) if f.token == token => Some(error.clone()),
                _ => None,
            });
        let refused = answer.is_some();
        if answer == Some(ProposeError::RemovesLeader) && self.nodes[l].id != id {
            self.checker.note_failure(
                ViolationKind::Misbehaved,
                format!(
                    "node {} refused to remove node {id} as if it were removing itself",
                    self.nodes[l].id
                ),
            );
        }
        self.act(l);
        !refused
    }

    /// Moves a change along: the leader to remove hands over; the new
    /// leader proposes the removal; a removed node is stopped once every
    /// other member up has applied its removal, as a careful operator
    /// checks on each member's status. (Stopped as soon as the leader
    /// applied it, its vote could still be needed: members that hold the
    /// removal but have not learned it committed still count it, and
    /// should the leader then lose its data dir, the rebuilt member
    /// withholds its vote until a new leader is elected, which, without
    /// the stopped node, none can be.)
    fn follow_change(&mut self, l: usize, mut pending: PendingChange) {
        let voters = self.voters_seen_by(l);
        let applied_by_leader = voters.contains(&pending.node) == pending.adding;
        let done = applied_by_leader && (pending.adding || self.removal_applied(pending.node));
        if done || self.now_ms > pending.since_ms + CHANGE_GIVE_UP_MS {
            if done && !pending.adding {
                self.stop_node(pending.node);
            }
            self.membership_pending = None;
            return;
        }
        if pending.proposed || applied_by_leader {
            return;
        }
        if self.nodes[l].id != pending.node {
            pending.proposed = self.propose_removal(l, pending.node);
        } else if pending.handover_asked_ms == 0
            || self.now_ms >= pending.handover_asked_ms + HANDOVER_RETRY_MS
        {
            pending.handover_asked_ms = self.now_ms;
            if let Some(leader) = self.nodes[l].driver.as_mut() {
                leader.hand_over_leadership();
            }
        }
        self.membership_pending = Some(pending);
    }

    /// Whether every member up, other than `id`, has applied the removal
    /// of `id`.
    fn removal_applied(&self, id: u64) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.id != id)
            .filter_map(|n| n.replica())
            .all(|r| !r.conf_state().voters.contains(&id))
    }

    /// The operator stops a removed node; what it counted goes to the
    /// report first.
    pub(super) fn stop_node(&mut self, id: u64) {
        for node in self.nodes.iter().filter(|n| n.id == id) {
            self.report.removed_step_downs += node.removed_step_downs();
        }
        self.nodes.retain(|n| n.id != id);
    }
}
