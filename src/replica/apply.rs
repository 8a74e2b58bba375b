//! Applying committed entries to the inventory and the membership, and
//! matching their results to the callers waiting on them (by index, and
//! term: an entry of another term replaced theirs).

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType};

use super::error::{Fatal, ProposeError, ReadError, Unanswered};
use super::membership::{self, ClusterId};
use super::output::{MembershipAnswer, Output};
use super::propose::{WaitKind, Waiting};
use super::{wire, LogStore, Replica};
use crate::inventory::codec;
use crate::inventory::{Applied, Batch};

/// What applying one entry produced for its callers.
pub(super) enum EntryResult {
    Commands(Vec<Applied>),
    Membership(MembershipAnswer),
    Nothing,
}

impl<S: LogStore> Replica<S> {
    /// Applies committed entries in order: a batch of commands, an empty
    /// entry (perhaps naming the cluster), or a membership change; and
    /// answers the callers waiting on each.
    pub(super) fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        out: &mut Output,
    ) -> Result<(), Fatal> {
        for entry in entries {
            let index = entry.index;
            if index <= self.inventory.applied_index() {
                // Already in the snapshot the state was loaded from.
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    if let Some(id) = membership::decode_cluster_identity(&entry.context) {
                        self.adopt_cluster_id(index, &id)?;
                    }
                    self.inventory.apply_empty(index);
                    self.answer(index, entry.term, EntryResult::Nothing, out);
                }
                EntryType::EntryNormal => self.apply_batch_entry(&entry, out)?,
                EntryType::EntryConfChange => {
                    let change = wire::decode_conf_change(&entry.data)?;
                    let single = ConfChangeSingle {
                        change_type: change.get_change_type(),
                        node_id: change.node_id,
                        ..Default::default()
                    };
                    let mut v2 = ConfChangeV2::default();
                    v2.set_changes(vec![single].into());
                    let answer = self.apply_membership(index, &v2, &entry.context, out)?;
                    self.answer(index, entry.term, EntryResult::Membership(answer), out);
                }
                EntryType::EntryConfChangeV2 => {
                    let change = wire::decode_conf_change_v2(&entry.data)?;
                    let answer = self.apply_membership(index, &change, &entry.context, out)?;
                    self.answer(index, entry.term, EntryResult::Membership(answer), out);
                }
            }
            self.end_rebuild_at(entry.term)?;
        }
        Ok(())
    }

    /// Applies an entry carrying a batch of commands and answers its
    /// callers.
    fn apply_batch_entry(&mut self, entry: &Entry, out: &mut Output) -> Result<(), Fatal> {
        let index = entry.index;
        // A batch comes back from `proposed_batch` only to the leader that
        // proposed this very entry (same index and term), whose callers wait
        // for it: the only place where answers are gathered. Everywhere else
        // (a follower; a caller whose entry was replaced, which `answer`
        // fails either way) nobody would read them.
        let (batch, delivered) = match self.proposed_batch(index, entry.term) {
            Some(batch) => {
                // Tests and the simulator (debug builds) check that the copy
                // applied here is what the log holds, as every other replica
                // decodes it.
                debug_assert_eq!(
                    codec::decode_batch(&entry.data).ok().as_ref(),
                    Some(&batch),
                    "the proposed batch differs from entry {index}"
                );
                (batch, true)
            }
            None => {
                let decoded = codec::decode_batch(&entry.data)
                    .map_err(|error| Fatal::Decode { index, error })?;
                (decoded, false)
            }
        };
        let result = if delivered {
            EntryResult::Commands(self.inventory.apply_batch(index, &batch))
        } else {
            self.inventory.apply_batch_unanswered(index, &batch);
            EntryResult::Nothing
        };
        // Crash point: applied in memory, answers not yet sent,
        // applied index recorded nowhere durable.
        fail::fail_point!("apply::after_batch");
        self.answer(index, entry.term, result, out);
        Ok(())
    }

    /// Applies the entry that names the cluster: the first one applied
    /// gives the id for good; a later one (a second leader's proposal,
    /// made before it saw the first applied) changes nothing.
    fn adopt_cluster_id(&mut self, index: u64, id: &ClusterId) -> Result<(), Fatal> {
        if self.raw.store().cluster_id().is_some() {
            return Ok(());
        }
        self.raw.mut_store().set_cluster_id(id)?;
        tracing::info!(
            index,
            cluster_id = %membership::cluster_id_hex(id),
            "the cluster has its id"
        );
        Ok(())
    }

    /// The batch this replica proposed as entry `index` in `term`, if it
    /// did: the same index and term is the same entry (Raft's log matching).
    fn proposed_batch(&mut self, index: u64, term: u64) -> Option<Batch> {
        let waiting = self.waiting.get_mut(&index)?;
        if waiting.term != term {
            return None;
        }
        waiting.batch.take()
    }

    /// Applies a committed membership change: raft-rs's conf state, the
    /// members' addresses, both stored together.
    fn apply_membership(
        &mut self,
        index: u64,
        change: &ConfChangeV2,
        context: &[u8],
        out: &mut Output,
    ) -> Result<MembershipAnswer, Fatal> {
        let conf_state = self.raw.apply_conf_change(change)?;
        if self.leads_while_removed() {
            self.step_down_removed(out);
        }
        let named = membership::decode_change_context(context);
        for single in change.get_changes() {
            match single.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if let Some((_, member)) = named.as_ref().filter(|n| n.0 == single.node_id) {
                        self.members.insert(single.node_id, member.clone());
                    }
                    if single.node_id == self.config.id {
                        self.removed = false;
                    } else {
                        self.snapshot_for_member = true;
                    }
                }
                ConfChangeType::RemoveNode => {
                    self.members.remove(&single.node_id);
                    out.members_removed.push(single.node_id);
                    if single.node_id == self.config.id {
                        self.removed = true;
                    }
                }
            }
        }
        self.raw
            .mut_store()
            .set_conf_state(&conf_state, &self.members)?;
        self.inventory.apply_empty(index);
        out.members_changed = true;
        tracing::info!(index, voters = ?conf_state.voters, learners = ?conf_state.learners, "membership changed");
        Ok(MembershipAnswer {
            members: self.members.clone(),
            voters: conf_state.voters.clone(),
            learners: conf_state.learners.clone(),
            index,
        })
    }

    /// Delivers the results of entry `index` to the callers who proposed it,
    /// if it is still their entry (same term); otherwise their proposal was
    /// overwritten and their outcome is unknown to this node.
    fn answer(&mut self, index: u64, term: u64, result: EntryResult, out: &mut Output) {
        // Proposals at lower indexes that never got an answer were lost.
        let stale: Vec<u64> = self.waiting.range(..index).map(|(i, _)| *i).collect();
        for i in stale {
            if let Some(waiting) = self.waiting.remove(&i) {
                fail_waiting(waiting, out);
            }
        }
        let Some(waiting) = self.waiting.remove(&index) else {
            return;
        };
        if waiting.term != term {
            fail_waiting(waiting, out);
            return;
        }
        match (waiting.kind, result) {
            (WaitKind::Commands, EntryResult::Commands(answers))
                if answers.len() == waiting.tokens.len() =>
            {
                let answered = waiting.tokens.into_iter().zip(answers);
                for (position, (token, applied)) in answered.enumerate() {
                    out.answered_at.push((token, index, position));
                    out.answers.push((token, Ok(applied)));
                }
            }
            (WaitKind::Membership, EntryResult::Membership(answer)) => {
                for token in waiting.tokens {
                    out.membership.push((token, Ok(answer.clone())));
                }
            }
            _ => fail_waiting(waiting, out),
        }
    }

    /// Fails every caller waiting on this replica, which stopped leading:
    /// their proposals' outcomes and their reads' leadership are unknown here.
    pub(super) fn fail_all_waiting(&mut self, out: &mut Output) {
        for (_, waiting) in std::mem::take(&mut self.waiting) {
            fail_waiting(waiting, out);
        }
        let leader = self.raw.raft.leader_id;
        let error = if leader == 0 {
            ReadError::NoLeader
        } else {
            ReadError::NotLeader { leader }
        };
        for read in std::mem::take(&mut self.reads_unconfirmed) {
            for token in read.tokens {
                out.reads.push((token, Err(error.clone())));
            }
        }
    }
}

/// Tells every caller waiting on an entry that its outcome is unknown here,
/// handing back the commands of a batch that was not applied.
pub(super) fn fail_waiting(waiting: Waiting, out: &mut Output) {
    if waiting.kind == WaitKind::Membership {
        for token in waiting.tokens {
            out.membership.push((token, Err(ProposeError::Unknown)));
        }
        return;
    }
    let mut commands = waiting.batch.map(|batch| batch.commands.into_iter());
    for token in waiting.tokens {
        let command = commands.as_mut().and_then(|c| c.next());
        let unanswered = Unanswered {
            error: ProposeError::Unknown,
            command,
        };
        out.answers.push((token, Err(unanswered)));
    }
}
