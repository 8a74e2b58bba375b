//! The replica's loop as a state machine: everything the server's
//! replication thread decides, and nothing it waits for.
//!
//! The [`Replica`] answers one call at a time. Serving clients needs a loop
//! around it: commands gathered into batches (group commit), a gate that
//! holds proposals while log writes await their sync, ticks on time, syncs
//! and snapshots asked for once and handed back when done, callers matched
//! to their answers (a group's gathered until its last), reads failed on a
//! removed member, and every caller answered at shutdown. That loop is this
//! [`Driver`]. It owns no thread, socket or clock: the server drives it
//! with threads and channels (`server::node`), the simulator with seeded
//! time (`sim::replicas`), so the code that ships is the code the
//! simulator runs.
//!
//! Inputs, in any order: [`Driver::submit`] (commands, groups, reads,
//! membership changes), [`Driver::step`] (peer messages),
//! [`Driver::synced`] (a sync landed), [`Driver::snapshot_written`] (a
//! snapshot's chunks are written). Then [`Driver::turn`] with the time:
//!
//! 1. Tick when due, after the verdict on this member's clock.
//! 2. Propose the pending commands as one entry, up to a batch's bounds
//!    ([`BATCH_COMMANDS_MAX`], [`BATCH_BYTES_MAX`]), unless two log writes
//!    wait for their sync ([`UNSYNCED_WRITES_MAX`]): what queues meanwhile
//!    goes into the next entry.
//! 3. Ask one ReadIndex for every read taken since the last turn.
//! 4. Handle raft-rs's Ready ([`Replica::advance`]).
//!
//! Effects out ([`Driver::effects`]): messages to send, callers finished,
//! a sync to run (the highest Ready number written), a snapshot to encode
//! and write, members or cluster id changed. The caller runs the sync and
//! the snapshot wherever it likes and hands their ends back as inputs.
//!
//! An error from the replica is [`Fatal`]: the caller stops the node.

use std::collections::VecDeque;

use raft::eraftpb::Message;

use super::callers::{Callers, Finished};
use super::clock::PeerClocks;
use super::error::{Fatal, ReadError, StepError};
use super::membership::{ClusterId, MembershipChange};
use super::output::Output;
use super::snapshot_task::{SnapshotTask, WrittenSnapshot};
use super::{LogStore, Replica, Token};
use crate::inventory::{codec, Command};
use crate::limits::{BATCH_BYTES_MAX, BATCH_COMMANDS_MAX, UNSYNCED_WRITES_MAX};

/// What a caller asks of the replica.
#[derive(Debug)]
pub enum Request {
    Command(Command),
    /// Many commands answered together ([`Answer::Group`]); they may land
    /// in one entry or several, in order.
    Group(Vec<Command>),
    /// A linearizable read: answered with the index it may be served at.
    Read,
    Membership(MembershipChange),
}

/// The time a turn runs at, by the caller's two clocks.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// A clock that never goes back (ticks are due by it), in ms.
    pub monotonic_ms: u64,
    /// The member's wall clock, in ms since the Unix epoch: what a leader
    /// stamps its entries with, once its peers confirm it.
    pub wall_ms: u64,
}

/// Fellow members' clocks as this member measured them, and the bound a
/// leader's must keep to (see `replica::clock`).
#[derive(Clone, Copy)]
pub struct ClockCheck<'a> {
    pub peers: &'a PeerClocks,
    pub max_offset_ms: u64,
}

/// What the caller must do after the inputs and turns so far. Take what
/// you act on; what is left stays for the next call.
#[derive(Debug)]
pub struct Effects<R> {
    /// Messages for peers, in order.
    pub messages: Vec<Message>,
    /// Callers answered, in the order their answers came.
    pub finished: Vec<Finished<R>>,
    /// The log index and position in its entry of each command answered
    /// with success, by token (for checkers; the server drops it).
    pub answered_at: Vec<(Token, u64, usize)>,
    /// Sync the store, then hand this Ready number to [`Driver::synced`].
    /// Asked once per number: a sync under way covers what it was asked.
    pub sync: Option<u64>,
    /// Encode and write this snapshot ([`SnapshotTask::run`]), then hand
    /// it to [`Driver::snapshot_written`]. One at a time.
    pub snapshot: Option<SnapshotTask>,
    /// The members (ids or addresses) changed: the transport must learn
    /// them before this turn's messages are sent (a member removed this
    /// turn must still get the commit of its removal).
    pub members_changed: bool,
    /// The cluster id as applied, and the members removed since the last
    /// time, when either changed (see `server::identity`).
    pub cluster: Option<(Option<ClusterId>, Vec<u64>)>,
}

impl<R> Default for Effects<R> {
    fn default() -> Self {
        Effects {
            messages: Vec::new(),
            finished: Vec::new(),
            answered_at: Vec::new(),
            sync: None,
            snapshot: None,
            members_changed: false,
            cluster: None,
        }
    }
}

/// The replica and its loop's state. `R` is where a caller's answer goes.
pub struct Driver<S: LogStore, R> {
    replica: Replica<S>,
    callers: Callers<R>,
    /// Commands not yet proposed: at most about one batch's worth (plus one
    /// group), so the caller's queue stays the real bound on what waits.
    pending: VecDeque<(Token, Command)>,
    /// Reads taken since the last turn: they share its ReadIndex.
    reads: Vec<Token>,
    out: Output,
    effects: Effects<R>,
    tick_ms: u64,
    /// When the next tick is due, by [`Now::monotonic_ms`]; None before
    /// the first turn (a tick period after it).
    next_tick_ms: Option<u64>,
    /// The highest Ready number the caller was asked to sync, and the
    /// highest it handed back.
    sync_asked: u64,
    sync_done: u64,
    /// A snapshot is out with the caller.
    snapshot_out: bool,
    /// The cluster id the caller was last told.
    cluster_id: Option<ClusterId>,
}

impl<S: LogStore, R> Driver<S, R> {
    /// Takes over `replica` and runs it in the server's mode, whatever it
    /// was opened with: appends synced by the caller
    /// ([`ReplicaConfig::persist_async`](super::ReplicaConfig::persist_async))
    /// and snapshots encoded and written by the caller
    /// (`snapshot_by_caller`). What was written before (a single voter's
    /// election, campaigned before the loop started) is synced first, on
    /// the caller's thread: the first turn replays the committed log tail
    /// behind it.
    pub fn new(mut replica: Replica<S>, tick_ms: u64) -> Result<Driver<S, R>, Fatal> {
        replica.config.persist_async = true;
        replica.config.snapshot_by_caller = true;
        let mut out = Output::default();
        if replica.unsynced_count() > 0 {
            let number = replica.sync_store()?;
            replica.persisted(number, &mut out)?;
        }
        let written = replica.written_number();
        let mut driver = Driver {
            cluster_id: replica.cluster_id(),
            replica,
            callers: Callers::new(),
            pending: VecDeque::new(),
            reads: Vec::new(),
            out,
            effects: Effects::default(),
            tick_ms: tick_ms.max(1),
            next_tick_ms: None,
            sync_asked: written,
            sync_done: written,
            snapshot_out: false,
        };
        driver.replica.advance(&mut driver.out)?;
        driver.collect();
        Ok(driver)
    }

    pub fn replica(&self) -> &Replica<S> {
        &self.replica
    }

    /// Registers a caller and takes its request: commands wait for the
    /// next turn's batch, reads for its ReadIndex; a membership change is
    /// proposed at once. Returns the token its answer will carry.
    pub fn submit(&mut self, request: Request, reply: R) -> Token {
        match request {
            Request::Command(command) => {
                let token = self.callers.add_command(reply);
                self.pending.push_back((token, command));
                token
            }
            Request::Group(commands) => self.submit_group(commands, reply),
            Request::Read => {
                let token = self.callers.add_read(reply);
                self.reads.push(token);
                token
            }
            Request::Membership(change) => {
                let token = self.callers.add_membership(reply);
                self.replica
                    .propose_membership(token, change, &mut self.out);
                self.collect();
                token
            }
        }
    }

    /// An empty group is answered at once.
    fn submit_group(&mut self, commands: Vec<Command>, reply: R) -> Token {
        let token = self.callers.add_group(reply, commands.len());
        if commands.is_empty() {
            if let Some(finished) = self.callers.finish_empty_group(token) {
                self.effects.finished.push(finished);
            }
            return token;
        }
        for command in commands {
            self.pending.push_back((token, command));
        }
        token
    }

    /// Whether to take more commands from the caller's queue: only while
    /// less than a batch's worth is pending; the rest waits there.
    pub fn wants_commands(&self) -> bool {
        self.pending.len() < BATCH_COMMANDS_MAX
    }

    /// Whether a turn now would propose: commands pending, gate open.
    pub fn has_work(&self) -> bool {
        self.may_propose() && !self.pending.is_empty()
    }

    /// When the next tick is due, by [`Now::monotonic_ms`] (None: at the
    /// first turn's time plus a tick).
    pub fn next_tick_ms(&self) -> Option<u64> {
        self.next_tick_ms
    }

    /// Whether a turn at `now` takes the verdict on this member's clock
    /// (its first, and each that ticks): the caller need read its peers'
    /// clocks only then.
    pub fn clock_due(&self, now: Now) -> bool {
        self.next_tick_ms
            .is_none_or(|due_ms| now.monotonic_ms >= due_ms)
    }

    /// Callers waiting for an answer.
    pub fn callers_waiting(&self) -> usize {
        self.callers.len()
    }

    /// Hands a peer's message to the replica (see [`Replica::step`]).
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        self.replica.step(message)
    }

    /// The transport could not reach `peer`.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.replica.report_unreachable(peer);
    }

    /// The transport finished (or failed) sending a snapshot to `peer`.
    pub fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        self.replica.report_snapshot(peer, delivered);
    }

    /// See [`Replica::transfer_leader`].
    pub fn transfer_leader(&mut self, target: u64) {
        self.replica.transfer_leader(target);
    }

    /// See [`Replica::hand_over_leadership`].
    pub fn hand_over_leadership(&mut self) -> Option<u64> {
        self.replica.hand_over_leadership()
    }

    /// See [`Replica::note_removed`].
    pub fn note_removed(&mut self) {
        self.replica.note_removed();
        self.collect();
    }

    /// The sync asked for with Ready number `number` landed: everything
    /// written up to that Ready is durable. Held votes and append responses
    /// go out, and entries durable here may commit and be answered.
    pub fn synced(&mut self, number: u64) -> Result<(), Fatal> {
        if number <= self.sync_done {
            return Ok(());
        }
        self.sync_done = number;
        self.replica.persisted(number, &mut self.out)?;
        self.collect();
        Ok(())
    }

    /// Syncs the store on the caller's thread and returns the number of
    /// the last Ready written, for [`Self::synced`] (the simulator, whose
    /// disk is not shared with a thread).
    pub fn sync_store(&mut self) -> Result<u64, Fatal> {
        self.replica.sync_store()
    }

    /// Whether a sync asked for has not been handed back yet.
    pub fn syncs_outstanding(&self) -> bool {
        self.sync_done < self.sync_asked
    }

    /// The snapshot handed out is written: its record is stored and the
    /// log compacted behind it (or it is dropped, when one from the leader
    /// replaced it meanwhile).
    pub fn snapshot_written(&mut self, written: WrittenSnapshot) -> Result<(), Fatal> {
        self.snapshot_out = false;
        self.replica.snapshot_written(written)?;
        self.collect();
        Ok(())
    }

    /// Whether a snapshot is out with the caller.
    pub fn snapshot_out(&self) -> bool {
        self.snapshot_out
    }

    /// One turn at `now` (the module's steps 1 to 4). `clocks`: None
    /// checks nothing (a member with no peers).
    pub fn turn(&mut self, now: Now, clocks: Option<ClockCheck<'_>>) -> Result<(), Fatal> {
        self.tick_if_due(now, clocks);
        let batch = self.take_batch();
        if !batch.is_empty() {
            self.replica.propose(now.wall_ms, batch, &mut self.out);
        }
        let reads = std::mem::take(&mut self.reads);
        self.replica.read(reads, &mut self.out);
        self.replica.advance(&mut self.out)?;
        self.collect();
        Ok(())
    }

    /// What the caller must do now (see [`Effects`]).
    pub fn effects(&mut self) -> &mut Effects<R> {
        &mut self.effects
    }

    /// The last turn's end, once every sync asked for was handed back and
    /// a snapshot out was written: every caller still waiting is finished
    /// with an error, never left to hang.
    pub fn shut_down(&mut self) {
        self.pending.clear();
        self.reads.clear();
        let failed = self.callers.fail_all();
        self.effects.finished.extend(failed);
    }

    /// The gate of the group commit: while two log writes wait for their
    /// sync the leader proposes nothing.
    fn may_propose(&self) -> bool {
        self.replica.unsynced_count() < UNSYNCED_WRITES_MAX
    }

    /// Ticks raft-rs when the tick is due, after taking the peers' verdict
    /// on this member's clock. Ticks missed while the caller was busy are
    /// not made up: the next is one period away.
    ///
    /// The first turn ticks nothing but takes the verdict all the same: a
    /// member restarted with a wrong clock can be made leader by a
    /// transfer (raft-rs's TimeoutNow) before its first tick, and until
    /// its first verdict nothing stops it stamping.
    fn tick_if_due(&mut self, now: Now, clocks: Option<ClockCheck<'_>>) {
        if !self.clock_due(now) {
            return;
        }
        if let Some(check) = clocks {
            self.replica
                .check_clock(check.peers, now.wall_ms, check.max_offset_ms);
        }
        let Some(due_ms) = self.next_tick_ms else {
            self.next_tick_ms = Some(now.monotonic_ms + self.tick_ms);
            return;
        };
        self.replica.tick(now.wall_ms, &mut self.out);
        let mut next_ms = due_ms + self.tick_ms;
        if next_ms <= now.monotonic_ms {
            next_ms = now.monotonic_ms + self.tick_ms;
        }
        self.next_tick_ms = Some(next_ms);
    }

    /// This turn's batch: what is pending, up to the batch's bounds
    /// (always at least one command); the rest waits for the next turn.
    /// Empty while the gate is closed.
    fn take_batch(&mut self) -> Vec<(Token, Command)> {
        let mut commands: Vec<(Token, Command)> = Vec::new();
        if !self.may_propose() {
            return commands;
        }
        let mut batch_bytes = 0usize;
        while let Some((_, command)) = self.pending.front() {
            let size = codec::encoded_len(command);
            let full = commands.len() >= BATCH_COMMANDS_MAX
                || (!commands.is_empty() && batch_bytes + size > BATCH_BYTES_MAX);
            if full {
                break;
            }
            batch_bytes += size;
            if let Some(next) = self.pending.pop_front() {
                commands.push(next);
            }
        }
        commands
    }

    /// Turns what the replica put out into effects: answers matched to
    /// their callers, a sync asked once, a snapshot handed out, members
    /// and cluster id changes.
    fn collect(&mut self) {
        if self.effects.messages.is_empty() {
            std::mem::swap(&mut self.effects.messages, &mut self.out.messages);
        } else {
            self.effects.messages.append(&mut self.out.messages);
        }
        self.effects.answered_at.append(&mut self.out.answered_at);
        self.finish_callers();
        if let Some(number) = self.out.sync.take() {
            if number > self.sync_asked {
                self.sync_asked = number;
                self.effects.sync = Some(number);
            }
        }
        if let Some(task) = self.out.snapshot.take() {
            self.snapshot_out = true;
            self.effects.snapshot = Some(task);
        }
        self.collect_membership();
    }

    /// Matches the replica's answers to their callers. On a member removed
    /// from the cluster, the reads still waiting are failed: it gets no
    /// more entries, so they would only time out.
    fn finish_callers(&mut self) {
        for (token, answer) in self.out.answers.drain(..) {
            if let Some(finished) = self.callers.command(token, answer) {
                self.effects.finished.push(finished);
            }
        }
        for (token, answer) in self.out.reads.drain(..) {
            if let Some(finished) = self.callers.read(token, answer) {
                self.effects.finished.push(finished);
            }
        }
        for (token, answer) in self.out.membership.drain(..) {
            if let Some(finished) = self.callers.membership(token, answer) {
                self.effects.finished.push(finished);
            }
        }
        if !self.replica.is_removed() {
            return;
        }
        for token in self.callers.read_tokens() {
            if let Some(finished) = self.callers.read(token, Err(ReadError::Removed)) {
                self.effects.finished.push(finished);
            }
        }
    }

    fn collect_membership(&mut self) {
        if self.out.members_changed {
            self.out.members_changed = false;
            self.effects.members_changed = true;
        }
        let cluster_id = self.replica.cluster_id();
        if cluster_id == self.cluster_id && self.out.members_removed.is_empty() {
            return;
        }
        self.cluster_id = cluster_id;
        let removed = std::mem::take(&mut self.out.members_removed);
        match self.effects.cluster.as_mut() {
            Some((id, earlier)) => {
                *id = cluster_id;
                earlier.extend(removed);
            }
            None => self.effects.cluster = Some((cluster_id, removed)),
        }
    }
}
