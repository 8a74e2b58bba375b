//! Which peer messages may reach raft-rs.
//!
//! raft-rs trusts what it is handed: one message with the wrong field
//! values reaches a `fatal!`, an `unwrap` or an overflow inside it (a
//! heartbeat whose commit index is past the log, an append that is not
//! contiguous or conflicts with committed entries, a snapshot whose
//! membership breaks its invariants, a term near `u64::MAX`, a vote
//! response that would make a candidate leader before its log is
//! durable, ...), or lets anyone change the group (a `MsgPropose` from the
//! network appends whatever entries it carries on the leader, membership
//! changes included). [`refusal`] names every such message before
//! [`super::Replica::step`] hands it over; the message is then dropped and
//! counted, never stepped.
//!
//! Every rule admits everything a correct raft-rs 0.7 peer of stockraft
//! sends (each says why), stale and duplicated messages aside, which
//! raft-rs would ignore anyway. What no rule here can stop is a forger who
//! knows the group's terms and indexes and writes a well-formed message
//! (a higher term deposes the leader; a forged grant or read index
//! misleads): only authenticating peers stops that.

use std::collections::HashSet;

use raft::eraftpb::{ConfState, Message, MessageType};
use raft::{Raft, StateRole, Storage};

use super::Members;

/// Terms and indexes at or past this are refused: a term grows by one per
/// election and an index by one per entry, so no group reaches it, and
/// raft-rs adds one to both without checking.
pub const TERM_INDEX_MAX: u64 = 1 << 62;
/// The longest context or read-index token a peer sends: stockraft's
/// read-index tokens are 8 bytes, raft-rs's transfer marker 16.
pub const CONTEXT_BYTES_MAX: usize = 64;
/// Most members a snapshot's membership may name (each id costs raft-rs a
/// copy of the configuration while it restores it).
pub const SNAPSHOT_MEMBERS_MAX: usize = 1_024;

/// Why a peer message was refused: the label of its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not addressed to this member, or from no member this one knows.
    NotAMember,
    /// A type no peer of stockraft sends over the network (proposals,
    /// transfer requests, local types).
    NotFromPeers,
    /// Fields no correct peer sends that would stop raft-rs or let the
    /// sender rewrite the log.
    Malformed,
    /// From a leader other than the one this member follows in this term.
    NotTheLeader,
    /// A vote request (or an order to campaign) to a member rebuilt from
    /// its peers that has not caught up yet (see `replica::rebuild`).
    Rebuilding,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::NotAMember => "not_a_member",
            Refusal::NotFromPeers => "not_from_peers",
            Refusal::Malformed => "malformed",
            Refusal::NotTheLeader => "not_the_leader",
            Refusal::Rebuilding => "rebuilding",
        }
    }
}

/// Why `m` must not reach raft-rs on this member, if it must not.
pub fn refusal<S: Storage>(raft: &Raft<S>, members: &Members, m: &Message) -> Option<Refusal> {
    use MessageType::*;
    // raft-rs addresses every message and fills in its sender (`send`);
    // only a read index bounced back by a stale leader is from itself.
    let from_self_ok = m.get_msg_type() == MsgReadIndex;
    if m.to != raft.id || m.from == 0 || (m.from == raft.id && !from_self_ok) {
        return Some(Refusal::NotAMember);
    }
    // A member added by an entry this one has not applied yet may already
    // lead or campaign: its appends and vote requests are how this member
    // learns of the entry. Nothing else comes from a stranger.
    let known = raft.prs().get(m.from).is_some() || members.contains_key(&m.from);
    let strangers_may_send = matches!(
        m.get_msg_type(),
        MsgAppend | MsgHeartbeat | MsgSnapshot | MsgRequestVote | MsgRequestPreVote
    );
    if !known && !strangers_may_send {
        return Some(Refusal::NotAMember);
    }
    // `send` stamps the term on every type but these two, and vote
    // messages always carry one.
    let termless = matches!(m.get_msg_type(), MsgPropose | MsgReadIndex);
    if termless != (m.term == 0) || m.term >= TERM_INDEX_MAX {
        return Some(Refusal::Malformed);
    }
    if m.context.len() > CONTEXT_BYTES_MAX {
        return Some(Refusal::Malformed);
    }
    match m.get_msg_type() {
        // stockraft proposes and moves leadership only on the leader, so
        // it never forwards either; the rest are raft-rs's local types.
        MsgPropose | MsgTransferLeader | MsgHup | MsgBeat | MsgUnreachable | MsgSnapStatus
        | MsgCheckQuorum => Some(Refusal::NotFromPeers),
        MsgAppend | MsgHeartbeat | MsgSnapshot => from_leader(raft, m),
        MsgReadIndex => {
            // `read_index` sends exactly one entry, the caller's token.
            let ok = m.entries.len() == 1 && m.entries[0].data.len() <= CONTEXT_BYTES_MAX;
            (!ok).then_some(Refusal::Malformed)
        }
        MsgReadIndexResp => (m.entries.len() != 1).then_some(Refusal::Malformed),
        MsgAppendResponse => append_response(raft, m),
        MsgRequestVoteResponse => {
            // A grant reaches a candidate only after its campaign's write
            // was made durable (votes are persisted messages); one before
            // would trip raft-rs's assertion in `become_leader`.
            let early = !m.reject
                && raft.state == StateRole::Candidate
                && raft.raft_log.persisted < raft.raft_log.last_index();
            early.then_some(Refusal::Malformed)
        }
        // A member still at term 0 (it joined and has heard from no leader)
        // would panic rejecting one (raft-rs answers a rejection with its
        // own term, 0). A grant carries the candidate's term and is let
        // through: a new member's pre-vote can be needed for a quorum, as
        // when a rebuilding member withholds its own.
        MsgRequestPreVote if raft.term == 0 && !pre_vote_granted(raft, m) => {
            Some(Refusal::Malformed)
        }
        MsgTimeoutNow => timeout_now(raft, m),
        _ => None,
    }
}

/// Whether raft-rs grants the pre-vote `m` (its rule in `Raft::step`,
/// read at raft-rs 0.7).
fn pre_vote_granted<S: Storage>(raft: &Raft<S>, m: &Message) -> bool {
    let can_vote = raft.vote == m.from
        || (raft.vote == raft::INVALID_ID && raft.leader_id == raft::INVALID_ID)
        || m.term > raft.term;
    let priority = if m.priority != 0 {
        m.priority
    } else {
        i64::try_from(m.deprecated_priority).unwrap_or(i64::MAX)
    };
    can_vote
        && raft.raft_log.is_up_to_date(m.index, m.log_term)
        && (m.index > raft.raft_log.last_index() || raft.priority <= priority)
}

/// An append, heartbeat or snapshot: from the one leader of its term, and
/// well formed.
fn from_leader<S: Storage>(raft: &Raft<S>, m: &Message) -> Option<Refusal> {
    if m.term < raft.term {
        // raft-rs reads nothing of it but its term: it answers that the
        // sender's term is over, which is how a deposed leader (or one
        // whose follower was rebuilt at a higher term) learns to step down.
        return None;
    }
    if m.term == raft.term && raft.leader_id != 0 && m.from != raft.leader_id {
        // One leader per term: this member already follows another.
        return Some(Refusal::NotTheLeader);
    }
    let ok = match m.get_msg_type() {
        // The leader sends min(match, committed), and what this member
        // acknowledged (its match) never leaves its log.
        MessageType::MsgHeartbeat => m.commit <= raft.raft_log.last_index(),
        MessageType::MsgAppend => append_ok(raft, m),
        _ => snapshot_ok(m),
    };
    (!ok).then_some(Refusal::Malformed)
}

/// An append as a leader builds it: after the entry at `index` (term
/// `log_term`, 0 only for index 0), entries `index + 1`, `index + 2`, ...
/// of non-decreasing terms no later than the leader's, and (leader
/// completeness) never an older term at or after this member's commit
/// index than the committed entry there.
fn append_ok<S: Storage>(raft: &Raft<S>, m: &Message) -> bool {
    if m.log_term == 0 && m.index != 0 {
        return false;
    }
    let count = m.entries.len() as u64;
    if m.index >= TERM_INDEX_MAX || count >= TERM_INDEX_MAX - m.index || m.commit >= TERM_INDEX_MAX
    {
        return false;
    }
    let mut previous_term = m.log_term;
    for (i, entry) in m.entries.iter().enumerate() {
        if entry.index != m.index + 1 + i as u64
            || entry.term < previous_term
            || entry.term > m.term
        {
            return false;
        }
        previous_term = entry.term;
    }
    let log = &raft.raft_log;
    if m.index >= log.committed {
        if let Ok(committed_term) = log.term(log.committed) {
            if m.log_term < committed_term {
                return false;
            }
        }
    }
    true
}

/// A snapshot's metadata: an entry's index and term (never 0, never past
/// the leader's term), and a membership raft-rs can restore (its
/// `Changer` invariants, which any applied configuration keeps).
fn snapshot_ok(m: &Message) -> bool {
    let meta = m.get_snapshot().get_metadata();
    if meta.index == 0 || meta.index >= TERM_INDEX_MAX || meta.term == 0 || meta.term > m.term {
        return false;
    }
    conf_state_ok(meta.get_conf_state())
}

/// The invariants raft-rs's `confchange::restore` checks (and aborts on):
/// some voter, no id 0, voters and learners apart, learners apart from
/// the outgoing voters, the next learners among the outgoing voters and
/// apart from the voters, `auto_leave` only in a joint configuration.
pub(crate) fn conf_state_ok(cs: &ConfState) -> bool {
    let count = cs.voters.len() + cs.learners.len() + cs.voters_outgoing.len();
    if count + cs.learners_next.len() > SNAPSHOT_MEMBERS_MAX {
        return false;
    }
    let set = |ids: &[u64]| ids.iter().copied().collect::<HashSet<u64>>();
    let voters = set(&cs.voters);
    let learners = set(&cs.learners);
    let outgoing = set(&cs.voters_outgoing);
    let next = set(&cs.learners_next);
    let no_zero = [&voters, &learners, &outgoing, &next]
        .iter()
        .all(|ids| !ids.contains(&0));
    !voters.is_empty()
        && no_zero
        && voters.is_disjoint(&learners)
        && learners.is_disjoint(&outgoing)
        && next.is_subset(&outgoing)
        && next.is_disjoint(&voters)
        && (!outgoing.is_empty() || !cs.auto_leave)
}

/// An append response to this leader in its own term names indexes of its
/// own log, which only grows within a term: the follower's last new index,
/// or (a rejection) the probe's index and a hint at or below it.
/// stockraft never asks for a snapshot by message.
fn append_response<S: Storage>(raft: &Raft<S>, m: &Message) -> Option<Refusal> {
    if raft.state != StateRole::Leader || m.term != raft.term {
        return None;
    }
    let last = raft.raft_log.last_index();
    let ok = m.index <= last
        && m.reject_hint <= last
        && m.request_snapshot == 0
        && (!m.reject || m.reject_hint <= m.index);
    (!ok).then_some(Refusal::Malformed)
}

/// A MsgTimeoutNow ends a leadership transfer: from the leader this
/// follower follows in this term (or, once it lost track of it, from a
/// voter), and only when raft-rs can read the entries it has not applied
/// (a campaign reads them, and aborts when they are compacted away).
fn timeout_now<S: Storage>(raft: &Raft<S>, m: &Message) -> Option<Refusal> {
    let log = &raft.raft_log;
    let sender_ok = m.from == raft.leader_id
        || (raft.leader_id == 0 && raft.prs().conf().voters().contains(m.from));
    let readable = log.unstable.snapshot.is_some() || log.applied + 1 >= log.first_index();
    let ok = raft.state == StateRole::Follower && m.term == raft.term && sender_ok && readable;
    (!ok).then_some(Refusal::NotTheLeader)
}
