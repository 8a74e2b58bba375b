//! The replication core: one replica of the Raft group, driving raft-rs.
//!
//! Sans-IO in the manner of raft-rs itself: the core never reads a clock
//! for a decision (it times its snapshots, for metrics only), never opens a
//! socket and never spawns a thread. The caller hands it time
//! (`now_ms`), client commands, reads and peer messages; the core hands back
//! an [`Output`] of peer messages to send and answers to deliver. Durable
//! state goes through the [`LogStore`] trait, so the server runs it over
//! RocksDB and tests (and a simulator) over memory, with the same code.
//!
//! One turn of the caller's loop, step by step:
//!
//! 1. [`Replica::step`] each peer message that arrived.
//! 2. [`Replica::tick`] when a tick interval passed: raft-rs's election and
//!    heartbeat clock, and on the leader, a proposal that expires holds that
//!    came due while no traffic arrived.
//! 3. [`Replica::propose`] every client command waiting, as ONE log entry
//!    (group commit): the leader stamps it with its clock, never earlier
//!    than any stamp before.
//! 4. [`Replica::read`] every linearizable read waiting, as ONE ReadIndex.
//! 5. [`Replica::advance`] handles raft-rs's Ready, in the order raft-rs
//!    requires: send messages; install a received snapshot; apply committed
//!    entries; append new entries and hard state in one write; only then
//!    release messages that promise persistence (votes, append responses);
//!    advance; apply what the advance committed; answer each waiting
//!    command from its entry's results and each read whose index is
//!    applied; take a snapshot and compact the log when it has grown
//!    (frozen here; encoded and stored by the caller when it asked to, see
//!    [`snapshot_task`]). The write and fsync order: ARCHITECTURE.md,
//!    "Every write and fsync, in order".
//!
//! Persistence off the thread ([`ReplicaConfig::persist_async`], the
//! server's mode): step 5 writes the Ready unsynced and asks the caller for
//! a sync ([`Output::sync`]); the Ready's votes and append responses are
//! held. The caller syncs the store elsewhere (the server's sync thread)
//! while it goes on stepping, proposing and advancing, then hands the
//! Ready's number to [`Replica::persisted`]: the held messages go out and
//! raft-rs counts the entries as durable, which on a leader may commit
//! them. raft-rs hands out no entry to apply beyond what this replica made
//! durable.
//!
//! A command is answered only after its entry is committed and applied, and
//! on a single node, committed means synced to disk: nothing acknowledged can
//! be lost. A command whose entry is overwritten (leadership changed) is
//! answered [`ProposeError::Unknown`]; clients retry with the same id, which
//! is safe because the state machine applies each id at most once. A
//! command that gets no answer comes back with its error ([`Unanswered`]),
//! so a caller retries it without keeping a copy of everything it proposes.
//!
//! The loop itself, as a state machine the server and the simulator both
//! drive, is [`Driver`] (`driver.rs`).
//!
//! Files:
//! - `mod.rs`: the [`Replica`], opening it, its status, and the entry
//!   points of steps 1 and 2.
//! - `driver.rs`: [`Driver`], the loop around the replica;
//!   `callers.rs`: the callers it answers, by token.
//! - `config.rs`: [`ReplicaConfig`]; `output.rs`: [`Output`];
//!   `error.rs`: why a call was refused or failed.
//! - `propose.rs`: proposals (step 3) and the callers they leave waiting.
//! - `reads.rs`: linearizable reads (step 4).
//! - `ready.rs`: the Ready (step 5): the write, the held messages, the sync.
//! - `apply.rs`: committed entries applied, answers matched to callers.
//! - `snapshots.rs`: snapshots loaded, taken, checked and installed;
//!   `snapshot_task.rs`: the part of taking one the caller may run
//!   elsewhere.
//! - `leadership.rs`: leadership handed over; a leader stepped down for
//!   its own removal or its clock.
//! - `admission.rs`: which peer messages may reach raft-rs;
//!   `membership.rs`: members' ids and addresses; `clock.rs`: members'
//!   clock offsets; `wire.rs`: raft-rs's formats decoded with prost;
//!   `log_store.rs`: the [`LogStore`] trait; `logger.rs`: raft-rs's log
//!   into `tracing`.

pub mod admission;
mod apply;
mod callers;
pub mod clock;
mod config;
pub mod driver;
mod error;
mod leadership;
pub mod log_store;
mod logger;
pub mod membership;
mod output;
mod propose;
mod reads;
mod ready;
mod rebuild;
pub mod snapshot_task;
mod snapshots;
pub mod wire;

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod driver_tests;
#[cfg(test)]
mod read_tests;
#[cfg(test)]
mod rebuild_tests;
#[cfg(test)]
mod removal_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use raft::eraftpb::Message;
use raft::{RawNode, SnapshotStatus, StateRole};

pub use callers::{Answer, Finished};
pub use config::ReplicaConfig;
pub use driver::{ClockCheck, Driver, Effects, Now, Request};
pub use error::{Fatal, ProposeError, ReadError, StepError, Unanswered};
pub(crate) use log_store::put_chunks;
pub use log_store::{ChunkWriter, LogStore, SavedSnapshot, SnapshotRecord, StoreError, Syncer};
pub use logger::tracing_logger;
pub use membership::{ClusterId, Members, MembershipChange};
pub use output::{MembershipAnswer, Output};
pub use snapshot_task::{SnapshotTask, WrittenSnapshot};

use crate::inventory::{Inventory, Shared};
use propose::Waiting;
use reads::PendingRead;
use snapshots::ReadSnapshot;

/// Identifies a waiting caller; chosen by the caller, returned in answers.
pub type Token = u64;

/// A replica's view of itself, for health checks, metrics and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaStatus {
    pub id: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub term: u64,
    pub is_leader: bool,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    /// The last log index this replica made durable and told raft-rs so:
    /// what its append responses, and so the commit of entries, stand on.
    pub persisted_index: u64,
    /// The term of the entry at `persisted_index` (0 once compacted away).
    pub persisted_term: u64,
    pub snapshot_index: u64,
    pub open_reservations: u64,
    pub role: Role,
    /// This replica applied its own removal from the group (and no later
    /// re-addition): it gets no more entries, so it serves nothing.
    pub removed: bool,
    /// Rebuilt from the peers and not caught up yet: it withholds its vote
    /// (see [`Replica::is_rebuilding`]).
    pub rebuilding: bool,
    /// See [`Replica::cluster_id`].
    pub cluster_id: Option<ClusterId>,
}

/// A replica's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    Candidate,
    PreCandidate,
    Leader,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Follower => "FOLLOWER",
            Role::Candidate => "CANDIDATE",
            Role::PreCandidate => "PRE_CANDIDATE",
            Role::Leader => "LEADER",
        }
    }
}

/// One replica: raft-rs's RawNode, the inventory, and the callers waiting
/// on them.
pub struct Replica<S: LogStore> {
    raw: RawNode<S>,
    inventory: Inventory,
    /// What readers see; swapped whole when a snapshot replaces the state.
    shared: Arc<arc_swap::ArcSwap<Shared>>,
    config: ReplicaConfig,
    /// Proposed entries by log index, with the term they were proposed in.
    waiting: BTreeMap<u64, Waiting>,
    reads_unconfirmed: VecDeque<PendingRead>,
    reads_confirmed: BTreeMap<u64, Vec<Token>>,
    next_read_ctx: u64,
    last_stamp_ms: u64,
    last_expiry_proposal_ms: u64,
    snapshot_index: u64,
    /// Bytes of the last snapshot image (taken, installed or loaded).
    snapshot_image_bytes: u64,
    /// The index of a snapshot handed to the caller and not yet handed
    /// back: no other is started meanwhile.
    snapshot_pending: Option<u64>,
    /// A member was added since the last snapshot taken here: the next is
    /// taken at once (see `Replica::maybe_snapshot`).
    snapshot_for_member: bool,
    /// Whether this replica led when the last Ready was handled, to notice
    /// it stepped down and fail the callers waiting on it.
    was_leader: bool,
    /// Members' addresses as of the applied index.
    members: Members,
    /// With `persist_async`: Readies written but not yet known durable, in
    /// order, each with the messages that must wait for its sync.
    unsynced: VecDeque<(u64, Vec<Message>)>,
    /// The number of the last Ready written (`persist_async`).
    written_number: u64,
    /// See [`Replica::removed_step_downs`].
    removed_step_downs: u64,
    /// See [`ReplicaStatus::removed`].
    removed: bool,
    /// The term in which this replica last proposed the cluster's id.
    cluster_id_proposed_term: u64,
    /// See [`Replica::check_clock`].
    clock: clock::ClockVerdict,
    /// Ticks this replica has led without a confirmed clock.
    clock_unconfirmed_ticks: u64,
    /// See [`Replica::clock_step_downs`].
    clock_step_downs: u64,
    /// The clock reading the verdict was given at (None: never checked,
    /// as in tests that drive no clocks).
    clock_checked_at_ms: Option<u64>,
    /// A snapshot from the leader read whole when it was stepped, for its
    /// install (see [`Replica::check_snapshot`]).
    snapshot_checked: Option<ReadSnapshot>,
    /// The term a rebuild from the peers started this member at, until it
    /// has caught up (see `rebuild.rs`).
    rebuilding_term: Option<u64>,
}

impl<S: LogStore> Replica<S> {
    /// Opens a replica over `store`: loads the latest snapshot, then lets
    /// raft-rs replay the committed log tail through [`Replica::advance`].
    pub fn new(
        config: ReplicaConfig,
        store: S,
        logger: &slog::Logger,
    ) -> Result<Replica<S>, Fatal> {
        let (inventory, applied, image_bytes) = snapshots::load_snapshot(&store)?;
        let members = store.members();
        let rebuilding_term = store.rebuilt_term();
        let next_read_ctx = config.read_ctx_first;
        let raft_config = config.raft_config(applied);
        raft_config.validate()?;
        let raw = RawNode::new(&raft_config, store, logger)?;
        let shared = Arc::new(arc_swap::ArcSwap::new(inventory.shared()));
        Ok(Replica {
            raw,
            inventory,
            shared,
            config,
            waiting: BTreeMap::new(),
            reads_unconfirmed: VecDeque::new(),
            reads_confirmed: BTreeMap::new(),
            next_read_ctx,
            last_stamp_ms: 0,
            last_expiry_proposal_ms: 0,
            snapshot_index: applied,
            snapshot_image_bytes: image_bytes,
            snapshot_pending: None,
            snapshot_for_member: false,
            was_leader: false,
            members,
            unsynced: VecDeque::new(),
            written_number: 0,
            removed_step_downs: 0,
            removed: false,
            cluster_id_proposed_term: 0,
            clock: clock::ClockVerdict::Confirmed,
            clock_unconfirmed_ticks: 0,
            clock_step_downs: 0,
            clock_checked_at_ms: None,
            snapshot_checked: None,
            rebuilding_term,
        })
    }

    /// The state readers use. Load it per read: a snapshot install replaces it.
    pub fn shared(&self) -> Arc<arc_swap::ArcSwap<Shared>> {
        self.shared.clone()
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn store(&self) -> &S {
        self.raw.store()
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            id: self.config.id,
            leader_id: self.raw.raft.leader_id,
            term: self.raw.raft.term,
            is_leader: self.is_leader(),
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.inventory.applied_index(),
            last_index: self.raw.raft.raft_log.last_index(),
            persisted_index: self.raw.raft.raft_log.persisted,
            persisted_term: self
                .raw
                .raft
                .raft_log
                .term(self.raw.raft.raft_log.persisted)
                .unwrap_or(0),
            snapshot_index: self.snapshot_index,
            open_reservations: self.inventory.open_count() as u64,
            role: match self.raw.raft.state {
                StateRole::Leader => Role::Leader,
                StateRole::Candidate => Role::Candidate,
                StateRole::PreCandidate => Role::PreCandidate,
                StateRole::Follower => Role::Follower,
            },
            removed: self.removed,
            rebuilding: self.rebuilding_term.is_some(),
            cluster_id: self.cluster_id(),
        }
    }

    /// Members' addresses as of the applied index.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The cluster's id, once applied here (see [`membership::ClusterId`]).
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.raw.store().cluster_id()
    }

    /// Voters and learners as raft-rs sees them now.
    pub fn conf_state(&self) -> raft::eraftpb::ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// The (match index) progress of each peer, on the leader.
    pub fn progress(&self) -> Vec<(u64, u64)> {
        self.raw
            .raft
            .prs()
            .iter()
            .map(|(id, pr)| (*id, pr.matched))
            .collect()
    }

    /// The transport could not reach `peer`: raft-rs probes it again later.
    pub(crate) fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// The transport finished (or failed) sending a snapshot to `peer`.
    pub(crate) fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer, status);
    }

    /// Starts an election now instead of waiting for the election timeout
    /// (a single-voter group elects itself at once). Membership entries
    /// that are committed must be applied first ([`Replica::advance`]):
    /// raft-rs refuses to campaign over pending membership changes.
    pub fn campaign(&mut self, out: &mut Output) -> Result<(), Fatal> {
        self.advance(out)?;
        self.raw.campaign()?;
        self.advance(out)?;
        Ok(())
    }

    /// Hands a message from a peer to raft-rs, unless [`admission`]
    /// refuses it (it would stop raft-rs, or let its sender change the
    /// group): then it is dropped and counted. A message raft-rs itself
    /// refuses (a response from an unknown peer, say) is dropped too; the
    /// error says why.
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        self.step_down_if_removed();
        let mut refused = admission::refusal(&self.raw.raft, &self.members, &message);
        if refused.is_none() && self.withheld_while_rebuilding(&message) {
            refused = Some(admission::Refusal::Rebuilding);
        }
        if refused.is_none() && message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
            refused = self.check_snapshot(message.get_snapshot()).err();
        }
        if let Some(refusal) = refused {
            metrics::counter!("stockraft_peer_messages_refused_total", "reason" => refusal.label())
                .increment(1);
            return Err(StepError::Refused(refusal));
        }
        self.raw.step(message).map_err(StepError::Raft)
    }

    /// Advances raft-rs's logical clock by one tick and, on the leader,
    /// proposes an expiry when a hold came due.
    pub fn tick(&mut self, now_ms: u64, out: &mut Output) {
        self.step_down_if_removed();
        // A rebuilding member starts no election (see `rebuild.rs`).
        if !self.removed && self.rebuilding_term.is_none() {
            self.raw.tick();
        }
        self.time_out_reads(out);
        if !self.is_leader() {
            return;
        }
        self.propose_cluster_id();
        if self.clock_forbids_leading() {
            self.step_down_clock();
            return;
        }
        self.propose_expiry_if_due(now_ms, out);
    }
}
