//! Who may lead: handing leadership over, and stepping a leader down when
//! it applied its own removal or its clock is not confirmed within the
//! bound of a majority's (see [`clock`]).

use raft::eraftpb::Message;

use super::output::Output;
use super::{clock, LogStore, Replica};

impl<S: LogStore> Replica<S> {
    /// Asks raft-rs to hand leadership to `target` (a caught-up voter).
    pub fn transfer_leader(&mut self, target: u64) {
        self.step_down_if_removed();
        self.raw.transfer_leader(target);
    }

    /// The voter other than this one that should lead after it: on the
    /// leader, the most caught-up one (highest match index), preferring
    /// those heard from within the last election timeout, the lowest id on
    /// a tie (so the choice is deterministic). None elsewhere, or when
    /// this is the only voter.
    pub(crate) fn successor(&self) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        let prs = self.raw.raft.prs();
        let voters = prs.conf().voters();
        // The key orders candidates whatever order the progress map
        // iterates in: active first, then match index, then lowest id.
        let mut best: Option<(bool, u64, std::cmp::Reverse<u64>)> = None;
        for (id, progress) in prs.iter() {
            if *id == self.config.id || !voters.contains(*id) {
                continue;
            }
            let key = (
                progress.recent_active,
                progress.matched,
                std::cmp::Reverse(*id),
            );
            if best.is_none_or(|b| key > b) {
                best = Some(key);
            }
        }
        best.map(|(_, _, std::cmp::Reverse(id))| id)
    }

    /// Hands leadership to [`Self::successor`], as a leader about to be
    /// removed must (etcd's server does the same): a leader never
    /// proposes its own removal. Returns the voter asked to take over, or
    /// None when this node does not lead or no other voter exists. The
    /// caller watches the leader change; raft-rs abandons a transfer that
    /// did not finish within an election timeout.
    pub(crate) fn hand_over_leadership(&mut self) -> Option<u64> {
        let target = self.successor()?;
        self.transfer_leader(target);
        Some(target)
    }

    /// Whether raft-rs has this replica leading a group it is no longer a
    /// voter of. raft-rs's `post_conf_change` leaves a leader that applied
    /// its own removal leading, without a progress entry for itself, and
    /// then unwraps that missing entry when an append response or its own
    /// persisted write would advance the commit index.
    pub(super) fn leads_while_removed(&self) -> bool {
        self.is_leader() && !self.raw.raft.prs().conf().voters().contains(self.config.id)
    }

    /// Applying a removal of the leader steps it down at once
    /// ([`Self::step_down_removed`]), so this never finds anything to do;
    /// it guards every entry into raft-rs (a message, a tick, a persisted
    /// write, a transfer) so that no path reaches raft-rs's unwrap of the
    /// leader's own missing progress, whatever state it was left in.
    pub(super) fn step_down_if_removed(&mut self) {
        if !self.leads_while_removed() {
            return;
        }
        tracing::error!(
            id = self.config.id,
            term = self.raw.raft.term,
            "found leading a group it is not a voter of; stepping down"
        );
        let term = self.raw.raft.term;
        self.raw.raft.become_follower(term, raft::INVALID_ID);
    }

    /// A leader that has just applied its own removal steps down at once
    /// (etcd's raft does the same with `StepDownOnRemoval`; raft-rs does
    /// not), first telling the most caught-up remaining voter to campaign
    /// now (MsgTimeoutNow, the message that ends a leadership transfer), so
    /// the group waits for no election timeout. It steps down within its
    /// term, not into the next as etcd does: this runs between raft-rs's
    /// Ready and its advance, which asserts that the hard state did not
    /// change meanwhile; the successor's campaign moves the term on, and
    /// having voted for itself in this term it can vote for no one else in
    /// it. Nothing it proposed is lost: what is committed is applied and
    /// answered, the rest fails as Unknown and is retried with its id. This
    /// happens only when a removal proposed by an earlier leader commits
    /// under this one.
    pub(super) fn step_down_removed(&mut self, out: &mut Output) {
        let term = self.raw.raft.term;
        let successor = self.successor();
        if let Some(to) = successor {
            let mut timeout_now = Message::default();
            timeout_now.set_msg_type(raft::eraftpb::MessageType::MsgTimeoutNow);
            timeout_now.to = to;
            timeout_now.from = self.config.id;
            timeout_now.term = term;
            out.messages.push(timeout_now);
        }
        self.raw.raft.become_follower(term, raft::INVALID_ID);
        self.removed_step_downs += 1;
        metrics::counter!("stockraft_removed_leader_step_downs_total").increment(1);
        tracing::warn!(
            id = self.config.id,
            term,
            successor = successor.unwrap_or(0),
            "this leader applied its own removal: stepped down"
        );
    }

    /// The leader answered that this replica was removed from the group (a
    /// change it may never apply itself: the leader sends a removed member
    /// nothing more, often not even the commit index of its removal). It
    /// serves nothing from now on ([`ReplicaStatus::removed`](super::ReplicaStatus::removed)) and no
    /// longer ticks raft-rs, so it does not campaign for a group it is not
    /// in (pre-vote keeps such campaigns harmless, but each would cost its
    /// callers a wait for a leader it will never hear from).
    pub(crate) fn note_removed(&mut self) {
        self.removed = true;
    }

    /// See [`ReplicaStatus::removed`](super::ReplicaStatus::removed).
    pub(crate) fn is_removed(&self) -> bool {
        self.removed
    }

    /// How many times this replica, leading, applied its own removal and
    /// stepped down (for the simulator's report and tests).
    pub fn removed_step_downs(&self) -> u64 {
        self.removed_step_downs
    }

    /// Takes the verdict of `clocks` on this replica's clock at `now_ms`
    /// (see [`clock`]), before each [`Self::tick`]: while it is not
    /// confirmed a leader stamps nothing, and one that is far from a
    /// majority, or unconfirmed for an election timeout, steps down.
    pub(crate) fn check_clock(
        &mut self,
        clocks: &clock::PeerClocks,
        now_ms: u64,
        max_offset_ms: u64,
    ) {
        let voters: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        self.clock = clocks.verdict(
            self.config.id,
            &voters,
            now_ms,
            max_offset_ms,
            crate::limits::CLOCK_SAMPLE_FRESH_MS,
        );
        self.clock_checked_at_ms = Some(now_ms);
        if !self.is_leader() || self.clock == clock::ClockVerdict::Confirmed {
            self.clock_unconfirmed_ticks = 0;
            return;
        }
        self.clock_unconfirmed_ticks += 1;
    }

    /// Whether this leader may stamp `now_ms`: its clock was confirmed at
    /// the last check, and has not moved back or leapt since (a clock
    /// that jumps between two checks is caught here, not one check later).
    pub(super) fn may_stamp(&self, now_ms: u64) -> bool {
        #[cfg(test)]
        if self.config.bug_stamp_unchecked {
            return true;
        }
        if self.clock != clock::ClockVerdict::Confirmed {
            return false;
        }
        match self.clock_checked_at_ms {
            None => true,
            Some(at_ms) => {
                now_ms >= at_ms && now_ms - at_ms <= crate::limits::CLOCK_SAMPLE_FRESH_MS
            }
        }
    }

    pub(super) fn clock_forbids_leading(&self) -> bool {
        match self.clock {
            clock::ClockVerdict::Confirmed => false,
            clock::ClockVerdict::Far => true,
            clock::ClockVerdict::Unconfirmed => {
                self.clock_unconfirmed_ticks > self.config.election_tick as u64
            }
        }
    }

    /// Steps a leader whose clock cannot be trusted down: leadership goes
    /// to the most caught-up other voter when there is one (raft-rs's
    /// transfer), at once otherwise.
    pub(super) fn step_down_clock(&mut self) {
        let term = self.raw.raft.term;
        let successor = self.successor();
        tracing::warn!(
            id = self.config.id,
            term,
            verdict = ?self.clock,
            successor = successor.unwrap_or(0),
            "this leader's clock is not within --max-clock-offset of a majority's: stepping down"
        );
        self.clock_step_downs += 1;
        self.clock_unconfirmed_ticks = 0;
        metrics::counter!("stockraft_clock_step_downs_total").increment(1);
        match successor {
            Some(to) if self.raw.raft.lead_transferee.is_none() => self.raw.transfer_leader(to),
            Some(_) => {}
            None => self.raw.raft.become_follower(term, raft::INVALID_ID),
        }
    }

    /// Times a leader stepped down for its clock (the simulator reports it).
    pub fn clock_step_downs(&self) -> u64 {
        self.clock_step_downs
    }
}
