//! A member rebuilt from its peers withholds its vote until it has caught
//! up.
//!
//! A member whose data dir was lost or damaged comes back with an empty
//! log (`server::rebuild`). Its hard state (the highest term any other
//! member had seen, plus one, voted for itself) keeps it from voting twice
//! in a term it forgot; that is not enough. An entry may have been
//! committed on a bare majority that included this member, so that only
//! the others of that majority still hold it. With an empty log this
//! member would grant its vote to any candidate, one without that entry
//! among them, and the entry would be overwritten: an acknowledged write
//! lost while a majority of the disks were healthy.
//!
//! So while rebuilding it grants no vote and no pre-vote, starts no
//! election and takes no leadership transfer. Every election then needs a
//! majority of the *other* members, which overlaps every majority that
//! committed an entry in a member whose disk is healthy, so the leader it
//! hears from holds every committed entry. It stops rebuilding once it has
//! applied an entry (or installed a snapshot) of the rebuild's term or a
//! later one: written by a leader elected without it (in the rebuild's
//! term its vote went to itself), after which its log holds every entry
//! it could have acknowledged before. The mark is stored, so a crash in
//! between does not end the rebuild early.
//!
//! A new member joining with an empty log needs none of this: having
//! acknowledged nothing, it forgot nothing, and Raft's rule that a
//! majority holds every committed entry stands without it. The price of
//! the rule is liveness, never safety: while a member rebuilds, elections
//! need every other member of a majority.

use raft::eraftpb::{Message, MessageType};

use super::{Fatal, LogStore, Replica};

impl<S: LogStore> Replica<S> {
    /// Whether `message` is one a rebuilding member must not act on: a
    /// request for its vote, or the leader's order to campaign at once.
    pub(super) fn withheld_while_rebuilding(&self, message: &Message) -> bool {
        if self.rebuilding_term.is_none() {
            return false;
        }
        matches!(
            message.get_msg_type(),
            MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote
                | MessageType::MsgTimeoutNow
        )
    }

    /// Whether this member is rebuilding (see the module docs).
    pub fn is_rebuilding(&self) -> bool {
        self.rebuilding_term.is_some()
    }

    /// Ends the rebuild once an entry or snapshot of `term` was applied,
    /// if `term` is the rebuild's or later.
    pub(super) fn end_rebuild_at(&mut self, term: u64) -> Result<(), Fatal> {
        let Some(rebuilt_term) = self.rebuilding_term else {
            return Ok(());
        };
        if term < rebuilt_term {
            return Ok(());
        }
        self.raw.mut_store().clear_rebuilt()?;
        self.rebuilding_term = None;
        tracing::info!(
            id = self.config.id,
            term,
            "caught up after the rebuild: this member votes again"
        );
        Ok(())
    }
}
