//! The durability checker: what a member promised was on its disk is
//! there when it restarts.
//!
//! A member makes two kinds of promise that a crash must not break: that
//! the entries up to its persisted index are durable (raft-rs answers
//! appends, and so commits entries, on it), and that a vote it granted in
//! a term is durable (a member that forgot its vote could vote twice and
//! let two leaders win one term). Each promise is recorded as it is made
//! (the persisted index at the crash; each vote granted as it is sent) and
//! checked at the restart against what the member recovered, so a disk or
//! a write path that drops a synced write is caught at the first restart,
//! not only when its consequences reach a client.

use std::collections::BTreeMap;

use raft::eraftpb::{Message, MessageType};

use super::disk::SimDisk;
use super::report::{Checked, Failure, ViolationKind};
use crate::replica::Replica;

/// The promises members made, by member id.
#[derive(Debug, Default)]
pub struct Promises {
    /// The (index, term) a member had persisted when it crashed, until it
    /// restarts.
    persisted: BTreeMap<u64, (u64, u64)>,
    /// The latest (term, candidate) a member granted its vote to.
    votes: BTreeMap<u64, (u64, u64)>,
}

impl Promises {
    /// Records a vote `from` grants in `message`, as it leaves the member.
    pub fn note_sent(&mut self, from: u64, message: &Message) {
        if message.get_msg_type() != MessageType::MsgRequestVoteResponse || message.reject {
            return;
        }
        let granted = (message.term, message.to);
        let latest = self.votes.entry(from).or_insert(granted);
        if granted.0 > latest.0 {
            *latest = granted;
        }
    }

    /// The member `id` lost its disk: what it had persisted is gone with
    /// it (the cluster answers for it now). Its votes stay promised: the
    /// rebuild's term keeps it from voting again in a term it voted in.
    pub fn forget_log(&mut self, id: u64) {
        self.persisted.remove(&id);
    }

    /// Records what the member `id` had persisted as it crashes.
    pub fn note_crash(&mut self, id: u64, replica: &Replica<SimDisk>) {
        let status = replica.status();
        if status.persisted_index > 0 {
            let claim = (status.persisted_index, status.persisted_term);
            self.persisted.insert(id, claim);
        }
    }

    /// The member `id` restarted as `replica`: every promise it made holds.
    pub fn check_restart(&mut self, id: u64, replica: &Replica<SimDisk>) -> Checked {
        let state = raft::Storage::initial_state(replica.store())
            .map_err(|e| lost(format!("node {id} cannot read its hard state: {e}")))?;
        if let Some((term, vote)) = self.votes.get(&id).copied() {
            let hard = &state.hard_state;
            if hard.term < term || (hard.term == term && hard.vote != vote) {
                return Err(lost(format!(
                    "node {id} granted its vote to {vote} in term {term} and restarted at term {} with its vote for {}",
                    hard.term, hard.vote
                )));
            }
        }
        let Some((index, term)) = self.persisted.remove(&id) else {
            return Ok(());
        };
        if index <= replica.status().snapshot_index {
            // The snapshot it restarted from covers the entry.
            return Ok(());
        }
        match raft::Storage::term(replica.store(), index) {
            Ok(found) if found == term || term == 0 => Ok(()),
            Ok(found) => Err(lost(format!(
                "node {id} had persisted entry {index} of term {term} and restarted with term {found} there"
            ))),
            Err(e) => Err(lost(format!(
                "node {id} had persisted entry {index} of term {term} and restarted without it ({e})"
            ))),
        }
    }
}

fn lost(message: String) -> Failure {
    Failure::new(ViolationKind::DurableLost, message)
}
