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
//!    entries; append new entries and hard state in one synced write; only
//!    then release messages that promise persistence (votes, append
//!    responses); advance; apply what the advance committed; answer each
//!    waiting command from its entry's results and each read whose index is
//!    applied; take a snapshot and compact the log when it has grown
//!    (frozen here; encoded and stored by the caller when it asked to,
//!    see [`snapshot_task`]).
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

pub mod admission;
pub mod clock;
pub mod log_store;
mod logger;
pub mod membership;
pub mod snapshot_task;
pub mod wire;

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod removal_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, EntryType, Message, Snapshot, SnapshotMetadata,
};
use raft::{RawNode, ReadState, SnapshotStatus, StateRole};
use thiserror::Error;

pub use log_store::{
    put_chunks, ChunkWriter, LogStore, SavedSnapshot, SnapshotRecord, StoreError, Syncer,
};
pub use logger::tracing_logger;
pub use membership::{ClusterId, Members, MembershipChange};
pub use snapshot_task::{SnapshotTask, WrittenSnapshot};

use crate::inventory::codec::{self, DecodeError};
use crate::inventory::snapshot::{self, SnapshotError};
use crate::inventory::{Applied, Batch, Command, Inventory, Shared};

/// Identifies a waiting caller; chosen by the caller, returned in answers.
pub type Token = u64;

/// Settings of a replica. Every replica of a group must use the same
/// `election_tick` and `heartbeat_tick`; the leader's `id_retention_ms` and
/// `id_retained_max` travel in each entry, so followers need not agree.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: u64,
    /// Ticks without a leader's message before a follower campaigns
    /// (randomised by raft-rs between this and twice this).
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Applied entries between snapshots, at least. A snapshot also waits
    /// until the log held in memory is as large as the last image, or
    /// [`Self::snapshot_log_floor_bytes`] when the image is larger, and at
    /// least a quarter of the image whatever its size. Writing a snapshot
    /// costs time in proportion to the whole state, so it is taken when
    /// the log has grown in proportion to the state (each logged byte then
    /// costs at most one to four bytes of snapshot), while the log a
    /// restart replays after the snapshot stays within the floor or a
    /// quarter of the image.
    pub snapshot_entries: u64,
    /// See [`Self::snapshot_entries`]. 0 snapshots after a quarter of the
    /// image's size of log (tests, the simulator: snapshots often).
    pub snapshot_log_floor_bytes: u64,
    /// Bytes of log held in memory that force a snapshot whatever the
    /// above: the bound on the log's memory and on replay time at restart.
    pub snapshot_log_bytes: u64,
    /// Entries kept behind a snapshot, so a briefly lagging follower catches
    /// up from the log instead of a snapshot.
    pub log_keep_entries: u64,
    pub id_retention_ms: u64,
    pub id_retained_max: u64,
    /// Ticks a linearizable read may wait for its ReadIndex to be confirmed.
    pub read_timeout_ticks: u64,
    /// Milliseconds between expiry proposals for the same due hold when the
    /// previous one did not land.
    pub expiry_retry_ms: u64,
    /// A fixed randomized election timeout, in ticks. raft-rs draws the
    /// timeout from a thread-local random generator the simulator cannot
    /// seed; the simulator gives each replica its own fixed value instead so
    /// that a seed replays exactly. None (the server) keeps raft-rs's
    /// randomization between `election_tick` and twice that.
    pub fixed_election_ticks: Option<usize>,
    /// The caller encodes and stores snapshots ([`Output::snapshot`], then
    /// [`Replica::snapshot_written`]), off the thread that applies entries
    /// (the server). When false the replica does all of it inside
    /// [`Replica::advance`] (tests and the simulator, which must stay
    /// deterministic).
    pub snapshot_by_caller: bool,
    /// Appends are written unsynced and made durable later by the caller
    /// ([`Output::sync`], then [`Replica::persisted`]), so the replication
    /// thread proposes, applies and answers while a sync is in flight
    /// (raft-rs's asynchronous Ready). When false each Ready's write is
    /// synced before [`Replica::advance`] returns.
    pub persist_async: bool,
    /// The id this replica gives the cluster if it leads it first (see
    /// [`membership::ClusterId`]): random in the server, drawn from the
    /// seed in the simulator.
    pub cluster_id_candidate: ClusterId,
}

impl ReplicaConfig {
    pub fn new(id: u64) -> ReplicaConfig {
        ReplicaConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            snapshot_entries: 20_000,
            snapshot_log_floor_bytes: 64 * 1024 * 1024,
            snapshot_log_bytes: 256 * 1024 * 1024,
            log_keep_entries: 1_000,
            id_retention_ms: crate::limits::ID_RETENTION_MS_DEFAULT,
            id_retained_max: crate::limits::ID_RETAINED_MAX_DEFAULT,
            read_timeout_ticks: 30,
            expiry_retry_ms: 1_000,
            fixed_election_ticks: None,
            snapshot_by_caller: false,
            persist_async: false,
            cluster_id_candidate: candidate_of(id),
        }
    }
}

/// A fixed candidate id for tests: the server and the simulator set their
/// own.
fn candidate_of(id: u64) -> ClusterId {
    let mut candidate = [0u8; 16];
    candidate[..8].copy_from_slice(&id.to_be_bytes());
    candidate
}

/// Why a command got no answer from the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProposeError {
    #[error("no leader is known yet (an election is under way); retry shortly")]
    NoLeader,
    #[error("this node is not the leader; node {leader} is")]
    NotLeader { leader: u64 },
    #[error("leadership changed before the operation was confirmed; it may or may not have been applied, so retry with the same id (each id is applied at most once)")]
    Unknown,
    #[error("the leader refused the proposal ({0}); retry shortly")]
    Dropped(String),
    /// The leader's clock is not known to be within the bound of a
    /// majority's (see [`clock`]): it stamps nothing meanwhile.
    #[error("the leader's clock is not confirmed within --max-clock-offset of a majority of members; retry shortly")]
    ClockUnconfirmed,
    /// A leader asked to remove itself: leadership must move to another
    /// voter first ([`Replica::hand_over_leadership`]), and the removal be
    /// proposed by the new leader (the Cluster service does both).
    #[error("this node leads and cannot remove itself: leadership must move to another voter first, then the new leader removes it")]
    RemovesLeader,
    /// Given by the server's node (never by the replica) to the callers
    /// still waiting when it stops: their commands stay behind with it.
    #[error("the node shut down before the operation was confirmed; it may or may not have been applied, so retry with the same id on another node or after restart")]
    ShuttingDown,
}

/// A command that got no answer from the state machine: why, and the
/// command itself when this replica still held it. Callers retry a failed
/// command (its id makes that safe); handing it back spares them a copy of
/// every command they propose, which cost the `Stream` call about 1.5% of
/// the server's samples (stop 23's measurements in BENCHMARKS.md's history). Only a command whose
/// batch was already applied is not handed back (the state machine always
/// answers those), nor one still waiting when the server's node stops
/// ([`ProposeError::ShuttingDown`]).
///
/// Not `Clone`: it carries a command on its way back to the one caller
/// who retries it, and a copy is what it exists to avoid.
#[derive(Debug, PartialEq, Eq)]
pub struct Unanswered {
    pub error: ProposeError,
    pub command: Option<Command>,
}

impl Unanswered {
    /// Fails `command`, handing it back.
    pub fn with(error: ProposeError, command: Command) -> Unanswered {
        Unanswered {
            error,
            command: Some(command),
        }
    }

    /// Fails a command this replica no longer holds.
    pub fn without(error: ProposeError) -> Unanswered {
        Unanswered {
            error,
            command: None,
        }
    }
}

/// Why a linearizable read could not be confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadError {
    #[error("no leader is known yet (an election is under way); retry shortly")]
    NoLeader,
    #[error("this node is not the leader; node {leader} is")]
    NotLeader { leader: u64 },
    #[error("the leader could not confirm its leadership in time; retry shortly")]
    TimedOut,
    /// This replica was removed from the group: it gets no more entries,
    /// so no read index it is given would ever be applied here. Given by
    /// the server's node (the replica lets such reads time out).
    #[error("this node was removed from the cluster and serves nothing more; call another member")]
    Removed,
}

/// Why a peer message was dropped instead of stepped.
#[derive(Debug, Error)]
pub enum StepError {
    #[error("refused before raft-rs: {}", .0.label())]
    Refused(admission::Refusal),
    #[error("raft-rs refused it: {0}")]
    Raft(raft::Error),
}

/// An error the replica cannot recover from: the caller must stop the node.
#[derive(Debug, Error)]
pub enum Fatal {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("committed entry {index} cannot be decoded: {error}")]
    Decode { index: u64, error: DecodeError },
    #[error("snapshot cannot be loaded: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("raft state cannot be decoded: {0}")]
    Protobuf(#[from] protobuf::ProtobufError),
    #[error("a committed membership change cannot be decoded: {0}")]
    Wire(#[from] wire::WireError),
}

/// What one call produced for the caller to deliver.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages for peers, to send in order.
    pub messages: Vec<Message>,
    /// Answers to commands, by token; a failed one hands its command back.
    pub answers: Vec<(Token, Result<Applied, Unanswered>)>,
    /// The log index each successful answer came from, by token (for
    /// checkers that compare answers with the log; the server ignores it).
    pub answered_at: Vec<(Token, u64)>,
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
    /// [`Replica::snapshot_written`] (only with `snapshot_by_caller`).
    pub snapshot: Option<SnapshotTask>,
    /// With `persist_async`: the number of the last Ready written unsynced.
    /// The caller syncs the store ([`Syncer::sync`] or
    /// [`Replica::sync_store`]) and then hands that number to
    /// [`Replica::persisted`]; until then the Ready's votes and append
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
    pub snapshot_index: u64,
    pub open_reservations: u64,
    pub role: Role,
    /// This replica applied its own removal from the group (and no later
    /// re-addition): it gets no more entries, so it serves nothing.
    pub removed: bool,
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

/// What the callers waiting on an entry asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitKind {
    Commands,
    Membership,
}

#[derive(Debug)]
struct Waiting {
    term: u64,
    kind: WaitKind,
    tokens: Vec<Token>,
    /// The batch this leader proposed at this index, applied from here
    /// when the entry comes back committed with the same term (so it is
    /// this very entry) instead of being decoded again: the leader need
    /// not re-allocate every id and name it has just encoded.
    batch: Option<Batch>,
}

/// What applying one entry produced for its callers.
enum EntryResult {
    Commands(Vec<Applied>),
    Membership(MembershipAnswer),
    Nothing,
}

#[derive(Debug)]
struct PendingRead {
    ctx: u64,
    tokens: Vec<Token>,
    ticks: u64,
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
}

impl<S: LogStore> Replica<S> {
    /// Opens a replica over `store`: loads the latest snapshot, then lets
    /// raft-rs replay the committed log tail through [`Replica::advance`].
    pub fn new(
        config: ReplicaConfig,
        store: S,
        logger: &slog::Logger,
    ) -> Result<Replica<S>, Fatal> {
        // Timed for the log line only.
        let started = std::time::Instant::now();
        let (inventory, applied, image_bytes) = match store.snapshot_record()? {
            Some(record) => {
                // Chunk by chunk: the whole image is never held.
                let mut reader = snapshot::ImageReader::new(&record.header, record.chunk_count)?;
                let mut image_bytes = 0u64;
                store.read_snapshot_chunks(&record, &mut |bytes| {
                    image_bytes += bytes.len() as u64;
                    reader.chunk(bytes);
                })?;
                let index = record.meta.index;
                (reader.finish(index)?, index, image_bytes)
            }
            None => (Inventory::new(), 0, 0),
        };
        if applied > 0 {
            tracing::info!(
                index = applied,
                counters = inventory.stock().counter_count(),
                retained_ids = inventory.retained_count(),
                image_bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "snapshot loaded; replaying the log after it"
            );
        }
        let members = store.members();
        let (min_election_tick, max_election_tick) = match config.fixed_election_ticks {
            // raft-rs draws from [min, max): a range of one is one value.
            Some(ticks) => (ticks, ticks + 1),
            None => (0, 0),
        };
        let raft_config = raft::Config {
            id: config.id,
            min_election_tick,
            max_election_tick,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            max_committed_size_per_ready: 16 * 1024 * 1024,
            ..Default::default()
        };
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
            next_read_ctx: 1,
            last_stamp_ms: 0,
            last_expiry_proposal_ms: 0,
            snapshot_index: applied,
            snapshot_image_bytes: image_bytes,
            snapshot_pending: None,
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

    pub fn is_leader(&self) -> bool {
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
            snapshot_index: self.snapshot_index,
            open_reservations: self.inventory.open_count() as u64,
            role: match self.raw.raft.state {
                StateRole::Leader => Role::Leader,
                StateRole::Candidate => Role::Candidate,
                StateRole::PreCandidate => Role::PreCandidate,
                StateRole::Follower => Role::Follower,
            },
            removed: self.removed,
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
    pub fn successor(&self) -> Option<u64> {
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
    pub fn hand_over_leadership(&mut self) -> Option<u64> {
        let target = self.successor()?;
        self.transfer_leader(target);
        Some(target)
    }

    /// The transport could not reach `peer`: raft-rs probes it again later.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// The transport finished (or failed) sending a snapshot to `peer`.
    pub fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer, status);
    }

    /// Proposes a membership change. Answered in [`Output::membership`] once
    /// it is applied. raft-rs allows one change in flight at a time.
    pub fn propose_membership(&mut self, token: Token, change: MembershipChange, out: &mut Output) {
        if !self.is_leader() {
            let error = match self.raw.raft.leader_id {
                0 => ProposeError::NoLeader,
                leader => ProposeError::NotLeader { leader },
            };
            out.membership.push((token, Err(error)));
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

    /// Reads a snapshot from the leader whole before raft-rs takes it, so
    /// that one that cannot be read is refused instead of stopping this
    /// replica once raft-rs has taken it; the state read is kept for
    /// [`Self::install_snapshot`], so it is read once. A snapshot raft-rs
    /// will not install (at or below the commit index) is not read.
    fn check_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), admission::Refusal> {
        let meta = snapshot.get_metadata();
        if meta.index <= self.raw.raft.raft_log.committed {
            return Ok(());
        }
        match read_snapshot_image(snapshot) {
            Ok(read) => {
                self.snapshot_checked = Some(read);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    index = meta.index,
                    "refused a snapshot from a peer: {error}"
                );
                Err(admission::Refusal::Malformed)
            }
        }
    }

    /// Whether raft-rs has this replica leading a group it is no longer a
    /// voter of. raft-rs's `post_conf_change` leaves a leader that applied
    /// its own removal leading, without a progress entry for itself, and
    /// then unwraps that missing entry when an append response or its own
    /// persisted write would advance the commit index.
    fn leads_while_removed(&self) -> bool {
        self.is_leader() && !self.raw.raft.prs().conf().voters().contains(self.config.id)
    }

    /// Applying a removal of the leader steps it down at once
    /// ([`Self::step_down_removed`]), so this never finds anything to do;
    /// it guards every entry into raft-rs (a message, a tick, a persisted
    /// write, a transfer) so that no path reaches raft-rs's unwrap of the
    /// leader's own missing progress, whatever state it was left in.
    fn step_down_if_removed(&mut self) {
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
    fn step_down_removed(&mut self, out: &mut Output) {
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
    /// serves nothing from now on ([`ReplicaStatus::removed`]) and no
    /// longer ticks raft-rs, so it does not campaign for a group it is not
    /// in (pre-vote keeps such campaigns harmless, but each would cost its
    /// callers a wait for a leader it will never hear from).
    pub fn note_removed(&mut self) {
        self.removed = true;
    }

    /// See [`ReplicaStatus::removed`].
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// How many times this replica, leading, applied its own removal and
    /// stepped down (for the simulator's report and tests).
    pub fn removed_step_downs(&self) -> u64 {
        self.removed_step_downs
    }

    /// Advances raft-rs's logical clock by one tick and, on the leader,
    /// proposes an expiry when a hold came due.
    pub fn tick(&mut self, now_ms: u64, out: &mut Output) {
        self.step_down_if_removed();
        if !self.removed {
            self.raw.tick();
        }
        let mut timed_out = Vec::new();
        for read in self.reads_unconfirmed.iter_mut() {
            read.ticks += 1;
        }
        while let Some(front) = self.reads_unconfirmed.front() {
            if front.ticks <= self.config.read_timeout_ticks {
                break;
            }
            if let Some(read) = self.reads_unconfirmed.pop_front() {
                timed_out.extend(read.tokens);
            }
        }
        for token in timed_out {
            out.reads.push((token, Err(ReadError::TimedOut)));
        }
        if !self.is_leader() {
            return;
        }
        self.propose_cluster_id();
        if self.clock_forbids_leading() {
            self.step_down_clock();
            return;
        }
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

    /// Proposes `commands` as one log entry. Each token is answered later in
    /// [`Output::answers`], or at once if this node cannot propose.
    pub fn propose(&mut self, now_ms: u64, commands: Vec<(Token, Command)>, out: &mut Output) {
        if !self.is_leader() {
            let error = match self.raw.raft.leader_id {
                0 => ProposeError::NoLeader,
                leader => ProposeError::NotLeader { leader },
            };
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

    /// Asks the leader to confirm it still leads (ReadIndex) for all these
    /// reads at once. Each token is answered in [`Output::reads`] once the
    /// state it may read is applied.
    pub fn read(&mut self, tokens: Vec<Token>, out: &mut Output) {
        if tokens.is_empty() {
            return;
        }
        // A follower asks the leader for the read index (raft-rs forwards
        // it), then serves the read from its own applied state.
        if self.raw.raft.leader_id == 0 {
            for token in tokens {
                out.reads.push((token, Err(ReadError::NoLeader)));
            }
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        self.raw.read_index(ctx.to_be_bytes().to_vec());
        self.reads_unconfirmed.push_back(PendingRead {
            ctx,
            tokens,
            ticks: 0,
        });
    }

    /// Handles everything raft-rs has ready. Any error is fatal.
    pub fn advance(&mut self, out: &mut Output) -> Result<(), Fatal> {
        while self.raw.has_ready() {
            self.handle_ready(out)?;
        }
        Ok(())
    }

    fn handle_ready(&mut self, out: &mut Output) -> Result<(), Fatal> {
        let leading = self.is_leader();
        if self.was_leader && !leading {
            self.fail_all_waiting(out);
        }
        self.was_leader = leading;
        let mut ready = self.raw.ready();
        // 1. Messages that need no local persistence (a leader's appends).
        out.messages.extend(ready.take_messages());
        // 2. A snapshot from the leader replaces the state machine.
        let has_snapshot = !ready.snapshot().is_empty();
        if has_snapshot {
            let snapshot = ready.snapshot().clone();
            self.install_snapshot(snapshot, out)?;
        }
        // 3. Entries committed by a quorum.
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, out)?;
        // 4. New entries and hard state: one atomic write, synced (or,
        //    with `persist_async`, synced later by the caller).
        //    A Ready that installed a snapshot is always synced here: raft-rs
        //    may not count the snapshot as applied before it is persisted.
        let must_sync = ready.must_sync();
        let deferred = self.config.persist_async && !has_snapshot;
        self.raw
            .mut_store()
            .append(ready.entries(), ready.hs(), must_sync && !deferred)?;
        // 5. Reads whose leadership check completed.
        for state in ready.take_read_states() {
            self.confirm_read(state);
        }
        if deferred {
            self.hold_until_synced(ready, must_sync, out);
            self.finish_turn(out)?;
            return Ok(());
        }
        self.written_number = ready.number();
        // 6. Votes and append responses, now that what they promise is
        //    durable (a synced write makes every write before it durable
        //    too, so what earlier Readies held goes first).
        for (_, messages) in self.unsynced.drain(..) {
            out.messages.extend(messages);
        }
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        self.apply_entries(light.take_committed_entries(), out)?;
        self.raw.advance_apply();
        self.finish_turn(out)
    }

    /// Step 6 with `persist_async`: the Ready's votes and append responses
    /// wait for the sync of its write (and of every write before it), which
    /// the caller is asked for in [`Output::sync`]. A Ready that wrote
    /// nothing needing a sync and has nothing before it waiting is done.
    fn hold_until_synced(&mut self, mut ready: raft::Ready, must_sync: bool, out: &mut Output) {
        let number = ready.number();
        let messages = ready.take_persisted_messages();
        self.written_number = number;
        self.raw.advance_append_async(ready);
        if must_sync || !self.unsynced.is_empty() {
            self.unsynced.push_back((number, messages));
            out.sync = Some(number);
        } else {
            out.messages.extend(messages);
            // Nothing of it, and nothing before it, waits for a sync.
            self.raw.on_persist_ready(number);
        }
        // The committed entries of this Ready were applied in step 3.
        self.raw.advance_apply();
    }

    /// Makes every write so far durable on the caller's thread and returns
    /// the number of the last Ready written, for [`Replica::persisted`]
    /// (the simulator and tests; the server syncs on a thread of its own).
    pub fn sync_store(&mut self) -> Result<u64, Fatal> {
        self.raw.mut_store().sync()?;
        Ok(self.written_number)
    }

    /// The caller synced the store after the Ready numbered `number` was
    /// written (see [`Output::sync`]): its held messages go out, raft-rs
    /// learns the entries are durable (on a leader that may commit them),
    /// and what that made ready is handled at once.
    pub fn persisted(&mut self, number: u64, out: &mut Output) -> Result<(), Fatal> {
        assert!(
            number <= self.written_number,
            "persisted({number}) beyond the last Ready written ({})",
            self.written_number
        );
        self.step_down_if_removed();
        while let Some((held, _)) = self.unsynced.front() {
            if *held > number {
                break;
            }
            if let Some((_, messages)) = self.unsynced.pop_front() {
                out.messages.extend(messages);
            }
        }
        self.raw.on_persist_ready(number);
        self.advance(out)
    }

    /// Readies written and waiting for a sync (with `persist_async`): the
    /// server proposes no new batch while two wait, so batches stay large
    /// while one sync runs and the next write waits for it.
    pub fn unsynced_count(&self) -> usize {
        self.unsynced.len()
    }

    /// The end of every Ready: reads now answerable, a snapshot if due,
    /// gauges.
    fn finish_turn(&mut self, out: &mut Output) -> Result<(), Fatal> {
        self.finish_reads(out);
        self.maybe_snapshot(out)?;
        metrics::gauge!("stockraft_raft_term").set(self.raw.raft.term as f64);
        metrics::gauge!("stockraft_raft_commit_index").set(self.raw.raft.raft_log.committed as f64);
        metrics::gauge!("stockraft_raft_applied_index").set(self.inventory.applied_index() as f64);
        metrics::gauge!("stockraft_open_reservations").set(self.inventory.open_count() as f64);
        Ok(())
    }

    fn apply_entries(
        &mut self,
        entries: Vec<raft::eraftpb::Entry>,
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
                EntryType::EntryNormal => {
                    // A batch comes back from `proposed_batch` only to the
                    // leader that proposed this very entry (same index and
                    // term), whose callers wait for it: the only place
                    // where answers are gathered. Everywhere else (a
                    // follower; a caller whose entry was replaced, which
                    // `answer` fails either way) nobody would read them.
                    let (batch, delivered) = match self.proposed_batch(index, entry.term) {
                        Some(batch) => {
                            // Tests and the simulator (debug builds) check
                            // that the copy applied here is what the log
                            // holds, as every other replica decodes it.
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
                }
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
        }
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

    /// Takes the verdict of `clocks` on this replica's clock at `now_ms`
    /// (see [`clock`]), before each [`Self::tick`]: while it is not
    /// confirmed a leader stamps nothing, and one that is far from a
    /// majority, or unconfirmed for an election timeout, steps down.
    pub fn check_clock(&mut self, clocks: &clock::PeerClocks, now_ms: u64, max_offset_ms: u64) {
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
    fn may_stamp(&self, now_ms: u64) -> bool {
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

    fn clock_forbids_leading(&self) -> bool {
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
    fn step_down_clock(&mut self) {
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

    /// A leader of a cluster with no id yet (new, or made by a version
    /// that had none) proposes one, once per term: an empty entry whose
    /// context is the id, which every member stores once applied.
    fn propose_cluster_id(&mut self) {
        let term = self.raw.raft.term;
        if self.cluster_id_proposed_term == term || self.raw.store().cluster_id().is_some() {
            return;
        }
        self.cluster_id_proposed_term = term;
        let context = membership::encode_cluster_identity(&self.config.cluster_id_candidate);
        if let Err(e) = self.raw.propose(context, Vec::new()) {
            tracing::debug!("proposing the cluster's id: {e}");
        }
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
                for (token, applied) in waiting.tokens.into_iter().zip(answers) {
                    out.answered_at.push((token, index));
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

    fn fail_all_waiting(&mut self, out: &mut Output) {
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

    fn confirm_read(&mut self, state: ReadState) {
        let Ok(bytes) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
            return;
        };
        let ctx = u64::from_be_bytes(bytes);
        let Some(position) = self.reads_unconfirmed.iter().position(|r| r.ctx == ctx) else {
            return;
        };
        if let Some(read) = self.reads_unconfirmed.remove(position) {
            self.reads_confirmed
                .entry(state.index)
                .or_default()
                .extend(read.tokens);
        }
    }

    fn finish_reads(&mut self, out: &mut Output) {
        let applied = self.inventory.applied_index();
        while let Some(entry) = self.reads_confirmed.first_entry() {
            if *entry.key() > applied {
                return;
            }
            let (index, tokens) = entry.remove_entry();
            for token in tokens {
                out.reads.push((token, Ok(index)));
            }
        }
    }

    fn install_snapshot(&mut self, snapshot: Snapshot, out: &mut Output) -> Result<(), Fatal> {
        let meta = snapshot.get_metadata().clone();
        // The chunks stay in the message's buffer: rebuilt from it and
        // stored from it, never copied beside it.
        let membership::SnapshotData {
            members,
            cluster_id,
            header,
            chunks,
        } = membership::split_snapshot_data(&snapshot.data)?;
        // Read whole when it was stepped (`check_snapshot`); again only if
        // raft-rs hands out another one than that.
        let checked = self
            .snapshot_checked
            .take()
            .filter(|c| c.index == meta.index && c.term == meta.term);
        let ReadSnapshot {
            inventory,
            image_bytes,
            ..
        } = match checked {
            Some(read) => read,
            None => read_snapshot_image(&snapshot)?,
        };
        let record = SnapshotRecord {
            meta,
            members,
            cluster_id,
            header,
            chunk_count: chunks.len() as u64,
            chunk_bytes: image_bytes,
        };
        self.raw.mut_store().install_snapshot(&record, &chunks)?;
        let meta = record.meta;
        self.members = record.members;
        out.members_changed = true;
        tracing::info!(index = meta.index, "installed a snapshot from the leader");
        self.inventory = inventory;
        self.shared.store(self.inventory.shared());
        self.snapshot_index = meta.index;
        self.snapshot_image_bytes = image_bytes;
        let stale: Vec<u64> = self.waiting.range(..=meta.index).map(|(i, _)| *i).collect();
        for i in stale {
            if let Some(waiting) = self.waiting.remove(&i) {
                fail_waiting(waiting, out);
            }
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self, out: &mut Output) -> Result<(), Fatal> {
        let applied = self.inventory.applied_index();
        if applied <= self.snapshot_index || self.snapshot_pending.is_some() {
            return Ok(());
        }
        let log_bytes = self.raw.store().log_bytes();
        let log_due = snapshot_log_due(
            self.snapshot_image_bytes,
            self.config.snapshot_log_floor_bytes,
        );
        let by_entries =
            applied - self.snapshot_index >= self.config.snapshot_entries && log_bytes >= log_due;
        let by_bytes = log_bytes >= self.config.snapshot_log_bytes;
        if !by_entries && !by_bytes {
            return Ok(());
        }
        self.take_snapshot(out)
    }

    /// Takes a snapshot at the applied index and compacts the log behind
    /// it: freezes the state here, then either hands the rest to the caller
    /// (`snapshot_by_caller`) or does it now.
    pub fn take_snapshot(&mut self, out: &mut Output) -> Result<(), Fatal> {
        let applied = self.inventory.applied_index();
        if applied <= self.snapshot_index || self.snapshot_pending.is_some() {
            return Ok(());
        }
        fail::fail_point!("snapshot::before_save");
        // Measured for the log line and metrics only; nothing depends on it.
        let started = std::time::Instant::now();
        let frozen = snapshot::freeze(&self.inventory);
        let mut meta = SnapshotMetadata {
            index: applied,
            term: self.raw.store().term(applied)?,
            ..Default::default()
        };
        meta.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        let task = SnapshotTask {
            frozen,
            meta,
            members: self.members.clone(),
            cluster_id: self.raw.store().cluster_id(),
            compact_to: applied.saturating_sub(self.config.log_keep_entries),
            log_bytes: self.raw.store().log_bytes(),
            freeze_time: started.elapsed(),
        };
        self.snapshot_pending = Some(applied);
        if self.config.snapshot_by_caller {
            out.snapshot = Some(task);
            return Ok(());
        }
        let written = task.run(&mut *self.raw.store().chunk_writer())?;
        self.snapshot_written(written)
    }

    /// Records a snapshot whose chunks the caller wrote ([`SnapshotTask::run`]):
    /// writes its record, synced, and compacts the log behind it. A snapshot
    /// installed from the leader since it was frozen makes it stale: it is
    /// dropped.
    pub fn snapshot_written(&mut self, written: WrittenSnapshot) -> Result<(), Fatal> {
        let index = written.index();
        assert_eq!(
            self.snapshot_pending,
            Some(index),
            "a snapshot handed back that was not handed out"
        );
        self.snapshot_pending = None;
        if index <= self.snapshot_index {
            tracing::info!(
                index,
                installed = self.snapshot_index,
                "snapshot dropped: one from the leader replaced it"
            );
            return Ok(());
        }
        let started = std::time::Instant::now();
        let chunks = written.record.chunk_count;
        let image_bytes = written.record.chunk_bytes;
        self.raw
            .mut_store()
            .save_snapshot(&written.record, written.compact_to)?;
        self.snapshot_index = index;
        self.snapshot_image_bytes = image_bytes;
        let record_time = started.elapsed();
        let held = written.freeze_time + record_time;
        let total = held + written.encode_time + written.write_time;
        metrics::histogram!("stockraft_snapshot_seconds").record(total.as_secs_f64());
        metrics::histogram!("stockraft_snapshot_held_seconds").record(held.as_secs_f64());
        tracing::info!(
            index,
            chunks,
            image_bytes,
            log_bytes = written.log_bytes,
            freeze_ms = written.freeze_time.as_millis() as u64,
            encode_ms = written.encode_time.as_millis() as u64,
            write_ms = written.write_time.as_millis() as u64,
            record_ms = record_time.as_millis() as u64,
            "snapshot taken; log compacted to {}",
            written.compact_to
        );
        Ok(())
    }
}

/// Bytes of log a snapshot waits for after one of `image_bytes` (see
/// [`ReplicaConfig::snapshot_entries`]): the image's size up to `floor`,
/// and a quarter of it beyond.
/// A snapshot's state, read and checked whole.
#[derive(Debug)]
struct ReadSnapshot {
    index: u64,
    term: u64,
    inventory: Inventory,
    image_bytes: u64,
}

fn read_snapshot_image(snapshot: &Snapshot) -> Result<ReadSnapshot, SnapshotError> {
    let meta = snapshot.get_metadata();
    let membership::SnapshotData { header, chunks, .. } =
        membership::split_snapshot_data(&snapshot.data)?;
    let mut reader = snapshot::ImageReader::new(&header, chunks.len() as u64)?;
    let mut image_bytes = 0u64;
    for chunk in &chunks {
        reader.chunk(chunk);
        image_bytes += chunk.len() as u64;
    }
    Ok(ReadSnapshot {
        index: meta.index,
        term: meta.term,
        inventory: reader.finish(meta.index)?,
        image_bytes,
    })
}

fn snapshot_log_due(image_bytes: u64, floor: u64) -> u64 {
    (image_bytes / 4).max(image_bytes.min(floor))
}

/// Tells every caller waiting on an entry that its outcome is unknown here,
/// handing back the commands of a batch that was not applied.
fn fail_waiting(waiting: Waiting, out: &mut Output) {
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
