//! Proposals: client commands batched into one log entry, membership
//! changes, the cluster's id, and the empty entries that expire holds when
//! no traffic comes; and the callers each proposal leaves waiting.

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use super::error::{ProposeError, Unanswered};
use super::membership::{self, MembershipChange};
use super::output::Output;
use super::{LogStore, Replica, Token};
use crate::inventory::codec;
use crate::inventory::{Batch, Command};

/// What the callers waiting on an entry asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitKind {
    Commands,
    Membership,
}

#[derive(Debug)]
pub(super) struct Waiting {
    pub(super) term: u64,
    pub(super) kind: WaitKind,
    pub(super) tokens: Vec<Token>,
    /// The batch this leader proposed at this index, applied from here
    /// when the entry comes back committed with the same term (so it is
    /// this very entry) instead of being decoded again: the leader need
    /// not re-allocate every id and name it has just encoded.
    pub(super) batch: Option<Batch>,
}

impl<S: LogStore> Replica<S> {
    /// Proposes `commands` as one log entry. Each token is answered later in
    /// [`Output::answers`], or at once if this node cannot propose.
    pub fn propose(&mut self, now_ms: u64, commands: Vec<(Token, Command)>, out: &mut Output) {
        if !self.is_leader() {
            let error = self.not_leading();
            for (token, command) in commands {
                out.answers
                    .push((token, Err(Unanswered::with(error.clone(), command))));
            }
            return;
        }
        if !self.may_stamp(now_ms) {
            for (token, command) in commands {
                out.answers.push((
                    token,
                    Err(Unanswered::with(ProposeError::ClockUnconfirmed, command)),
                ));
            }
            return;
        }
        let stamp_ms = now_ms.max(self.last_stamp_ms).max(self.inventory.now_ms());
        let mut tokens = Vec::with_capacity(commands.len());
        let mut batch = Batch {
            stamp_ms,
            id_retention_ms: self.config.id_retention_ms,
            id_retained_max: self.config.id_retained_max,
            commands: Vec::with_capacity(commands.len()),
        };
        for (token, command) in commands {
            tokens.push(token);
            batch.commands.push(command);
        }
        let data = codec::encode_batch(&batch);
        if let Err(e) = self.raw.propose(Vec::new(), data) {
            let error = ProposeError::Dropped(e.to_string());
            for (token, command) in tokens.into_iter().zip(batch.commands) {
                out.answers
                    .push((token, Err(Unanswered::with(error.clone(), command))));
            }
            return;
        }
        self.last_stamp_ms = stamp_ms;
        let index = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        metrics::histogram!("stockraft_batch_commands").record(tokens.len() as f64);
        if !tokens.is_empty() {
            self.waiting.insert(
                index,
                Waiting {
                    term,
                    kind: WaitKind::Commands,
                    tokens,
                    batch: Some(batch),
                },
            );
        }
    }

    /// Proposes a membership change. Answered in [`Output::membership`] once
    /// it is applied. raft-rs allows one change in flight at a time.
    pub(crate) fn propose_membership(
        &mut self,
        token: Token,
        change: MembershipChange,
        out: &mut Output,
    ) {
        if !self.is_leader() {
            out.membership.push((token, Err(self.not_leading())));
            return;
        }
        if change
            == (MembershipChange::Remove {
                node_id: self.config.id,
            })
        {
            out.membership
                .push((token, Err(ProposeError::RemovesLeader)));
            return;
        }
        let (single, context) = match &change {
            MembershipChange::Add { node_id, member } => (
                ConfChangeSingle {
                    change_type: ConfChangeType::AddNode,
                    node_id: *node_id,
                    ..Default::default()
                },
                membership::encode_change_context(*node_id, Some(member)),
            ),
            MembershipChange::Remove { node_id } => (
                ConfChangeSingle {
                    change_type: ConfChangeType::RemoveNode,
                    node_id: *node_id,
                    ..Default::default()
                },
                membership::encode_change_context(*node_id, None),
            ),
        };
        let mut v2 = ConfChangeV2::default();
        v2.set_changes(vec![single].into());
        if let Err(e) = self.raw.propose_conf_change(context, v2) {
            let reason = match e {
                raft::Error::ProposalDropped => {
                    "another membership change or a leadership transfer is in progress".to_string()
                }
                other => other.to_string(),
            };
            out.membership
                .push((token, Err(ProposeError::Dropped(reason))));
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        self.waiting.insert(
            index,
            Waiting {
                term,
                kind: WaitKind::Membership,
                tokens: vec![token],
                batch: None,
            },
        );
    }

    /// Why this replica cannot propose: it does not lead, and knows who
    /// does, or not.
    fn not_leading(&self) -> ProposeError {
        match self.raw.raft.leader_id {
            0 => ProposeError::NoLeader,
            leader => ProposeError::NotLeader { leader },
        }
    }

    /// A leader of a cluster with no id yet (new, or made by a version
    /// that had none) proposes one, once per term: an empty entry whose
    /// context is the id, which every member stores once applied.
    ///
    /// A proposal raft-rs drops (it takes none while a leadership transfer
    /// is under way) is tried again at the next tick: a term that began
    /// with an aborted transfer would otherwise end, perhaps never, with
    /// the cluster still unnamed.
    pub(super) fn propose_cluster_id(&mut self) {
        let term = self.raw.raft.term;
        if self.cluster_id_proposed_term == term || self.raw.store().cluster_id().is_some() {
            return;
        }
        let context = membership::encode_cluster_identity(&self.config.cluster_id_candidate);
        match self.raw.propose(context, Vec::new()) {
            Ok(()) => self.cluster_id_proposed_term = term,
            Err(e) => tracing::debug!("proposing the cluster's id: {e}"),
        }
    }

    /// On the leader, when an open hold's deadline has passed: proposes an
    /// empty batch stamped with `now_ms`, unless one stamped after the
    /// deadline is already on its way (retried after `expiry_retry_ms`).
    pub(super) fn propose_expiry_if_due(&mut self, now_ms: u64, out: &mut Output) {
        let Some(due_ms) = self.inventory.next_expiry_ms() else {
            return;
        };
        if due_ms > now_ms {
            return;
        }
        // A batch stamped at or after the deadline expires the hold when
        // applied; propose one unless one is already on its way.
        let in_flight = self.last_stamp_ms >= due_ms;
        let retry = now_ms >= self.last_expiry_proposal_ms + self.config.expiry_retry_ms;
        if in_flight && !retry {
            return;
        }
        self.last_expiry_proposal_ms = now_ms;
        self.propose(now_ms, Vec::new(), out);
    }
}
