//! What one call into the replica hands back for the caller to deliver.

use raft::eraftpb::Message;

use super::error::{ProposeError, ReadError, Unanswered};
use super::membership::Members;
use super::snapshot_task::SnapshotTask;
use super::Token;
use crate::inventory::Applied;

/// What one call produced for the caller to deliver.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages for peers, to send in order.
    pub messages: Vec<Message>,
    /// Answers to commands, by token; a failed one hands its command back.
    pub answers: Vec<(Token, Result<Applied, Unanswered>)>,
    /// The log index each successful answer came from and its position in
    /// that entry, by token (for checkers that compare answers with the
    /// log; the server ignores it).
    pub answered_at: Vec<(Token, u64, usize)>,
    /// Linearizable reads now safe to serve from the shared state (the
    /// applied index they may read at), by token.
    pub reads: Vec<(Token, Result<u64, ReadError>)>,
    /// Answers to membership changes, by token.
    pub membership: Vec<(Token, Result<MembershipAnswer, ProposeError>)>,
    /// True when the members (ids or addresses) changed: the transport must
    /// learn the new addresses.
    pub members_changed: bool,
    /// Members removed by the changes applied, in order: whoever comes
    /// back with their ids is a new member (the transport forgets what it
    /// knew of them, see `server::identity`).
    pub members_removed: Vec<u64>,
    /// A snapshot to encode and store, then hand back to
    /// [`Replica::snapshot_written`](super::Replica::snapshot_written) (only with `snapshot_by_caller`).
    pub snapshot: Option<SnapshotTask>,
    /// With `persist_async`: the number of the last Ready written unsynced.
    /// The caller syncs the store ([`Syncer::sync`](super::Syncer::sync) or
    /// [`Replica::sync_store`](super::Replica::sync_store)) and then hands that number to
    /// [`Replica::persisted`](super::Replica::persisted); until then the Ready's votes and append
    /// responses are held and its entries count for nothing.
    pub sync: Option<u64>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.answers.is_empty()
            && self.reads.is_empty()
            && self.membership.is_empty()
            && !self.members_changed
            && self.members_removed.is_empty()
            && self.snapshot.is_none()
            && self.sync.is_none()
    }
}

/// The membership once a change was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipAnswer {
    pub members: Members,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The log index of the change.
    pub index: u64,
}
