//! The replication thread's loop. Each turn:
//!
//! 1. Wait for input from either channel, a sync landing, or the next tick
//!    (`tick_ms`).
//! 2. Hand the syncs that landed to the replica ([`Replica::persisted`]:
//!    held responses go out, entries durable here may commit and be
//!    answered). Step every peer message queued. Drain client requests up
//!    to one batch's worth of commands ([`BATCH_COMMANDS_MAX`],
//!    [`BATCH_BYTES_MAX`]); leftovers wait for the next turn.
//! 3. Tick if due, propose the batch unless two log writes wait for their
//!    sync ([`UNSYNCED_WRITES_MAX`]), ask one ReadIndex for all reads. This
//!    is the group commit: what arrived while a sync ran goes into the next
//!    log entry.
//! 4. Let the replica handle raft-rs's Ready (apply, one unsynced write),
//!    and ask the sync thread to make the write durable (`sync.rs`).
//! 5. Deliver answers, hand peer messages to the transport, publish the
//!    status and the members.
//! 6. Hand a snapshot the replica froze to its threads, or one they wrote
//!    back to the replica (`snapshot.rs`).
//!
//! The order of the writes and fsyncs: ARCHITECTURE.md, "Every write and
//! fsync, in order".

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Select, Sender};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{oneshot, watch};

use super::answers::{Relayed, Waiter, Waiters};
use super::{
    stop_fatal, wall_clock_ms, ClientInput, MembersView, NodeConfig, PeerInput, Transport,
};
use crate::inventory::snapshot::{freeze, Frozen};
use crate::inventory::{codec, Command};
use crate::limits::{BATCH_BYTES_MAX, BATCH_COMMANDS_MAX, UNSYNCED_WRITES_MAX};
use crate::replica::clock::PeerClocks;
use crate::replica::{
    ClusterId, LogStore, Output, Replica, ReplicaStatus, StoreError, Token, WrittenSnapshot,
};

/// The replication thread's ends of its channels, and what it publishes.
pub(super) struct Channels {
    pub(super) rx: Receiver<ClientInput>,
    pub(super) peer_rx: Receiver<PeerInput>,
    /// To the sync thread: sync the store, then answer with this Ready
    /// number. Dropped when the loop ends, which ends that thread.
    pub(super) sync_tx: Sender<u64>,
    /// Set by the sync thread: the highest Ready number now durable.
    pub(super) synced: Arc<AtomicU64>,
    /// Woken (one message at most waits) when `synced` moved. The number
    /// travels in the atomic, so the sync thread never waits for the
    /// replication thread, which may itself be waiting to send a request.
    pub(super) synced_wake: Receiver<()>,
    pub(super) status_tx: watch::Sender<ReplicaStatus>,
    pub(super) members: Arc<ArcSwap<MembersView>>,
    pub(super) queued: Arc<AtomicUsize>,
}

/// The loop's state: the replica, the callers waiting by token, the
/// commands not yet proposed, and what the sync and snapshot threads were
/// asked for.
pub(super) struct Loop<S: LogStore, T: Transport> {
    pub(super) replica: Replica<S>,
    transport: T,
    pub(super) waiters: Waiters,
    pub(super) next_token: Token,
    pub(super) out: Output,
    /// Commands taken from the channel and not yet proposed: at most about
    /// one batch's worth (plus one group), so the channel's bound, counted
    /// in commands, stays the real bound on what waits.
    pending: VecDeque<(Token, Command)>,
    /// How often the replica ticks, and when next.
    tick: Duration,
    next_tick: Instant,
    /// See [`NodeConfig::clocks`].
    clocks: Option<(Arc<Mutex<PeerClocks>>, u64)>,
    /// The thread encoding and writing a snapshot, if one runs.
    pub(super) snapshot_job: Option<JoinHandle<Result<WrittenSnapshot, StoreError>>>,
    /// The highest Ready number the sync thread was asked to make durable,
    /// and the highest it answered.
    pub(super) sync_asked: u64,
    pub(super) sync_done: u64,
    /// To the task that completes the callers' oneshots, if one runs.
    pub(super) relay: Option<UnboundedSender<Vec<Relayed>>>,
    /// The cluster id the transport was last told.
    cluster_id: Option<ClusterId>,
}

/// What a turn took from the client queue besides commands.
#[derive(Default)]
struct Taken {
    /// Reads that share this turn's ReadIndex.
    reads: Vec<Token>,
    /// The node is stopping: this turn is the last.
    shutdown: bool,
}

/// The replication thread: runs turns until told to shut down.
pub(super) fn run<S: LogStore, T: Transport>(
    replica: Replica<S>,
    transport: T,
    channels: &Channels,
    config: NodeConfig,
    relay: Option<UnboundedSender<Vec<Relayed>>>,
) {
    let mut state = Loop::new(replica, transport, config, relay);
    state.sync_written_before_start(channels);
    state.advance(channels);
    loop {
        if !state.has_work(channels) {
            state.wait_for_work(channels);
        }
        // Syncs that landed: what they made durable is answered now.
        state.take_synced(channels);
        state.step_peer_messages(channels);
        let taken = state.take_client_inputs(channels);
        let commands = state.take_batch();
        let now_ms = wall_clock_ms();
        state.tick_if_due(now_ms);
        if !commands.is_empty() {
            state.replica.propose(now_ms, commands, &mut state.out);
        }
        state.replica.read(taken.reads, &mut state.out);
        state.advance(channels);
        if taken.shutdown {
            state.shut_down(channels);
            return;
        }
    }
}

impl<S: LogStore, T: Transport> Loop<S, T> {
    fn new(
        replica: Replica<S>,
        transport: T,
        config: NodeConfig,
        relay: Option<UnboundedSender<Vec<Relayed>>>,
    ) -> Self {
        let tick = Duration::from_millis(config.tick_ms.max(1));
        Loop {
            replica,
            transport,
            waiters: HashMap::default(),
            next_token: 1,
            out: Output::default(),
            pending: VecDeque::new(),
            tick,
            next_tick: Instant::now() + tick,
            clocks: config.clocks,
            snapshot_job: None,
            sync_asked: 0,
            sync_done: 0,
            relay,
            cluster_id: None,
        }
    }

    /// The gate of the group commit: while two log writes wait for their
    /// sync the leader proposes nothing, and what queues meanwhile goes
    /// into the next entry.
    fn may_propose(&self) -> bool {
        self.replica.unsynced_count() < UNSYNCED_WRITES_MAX
    }

    /// Whether a turn has something to do at once. Client requests count
    /// only while fewer than a batch's worth of commands are pending.
    fn has_work(&self, channels: &Channels) -> bool {
        (self.may_propose() && !self.pending.is_empty())
            || (self.pending.len() < BATCH_COMMANDS_MAX && !channels.rx.is_empty())
            || !channels.peer_rx.is_empty()
            || !channels.synced_wake.is_empty()
    }

    /// Sleeps until an input is ready or the tick is due. With a batch's
    /// worth of commands pending, client requests do not wake the thread:
    /// they could not be taken.
    fn wait_for_work(&self, channels: &Channels) {
        let timeout = self.next_tick.saturating_duration_since(Instant::now());
        let mut select = Select::new();
        if self.pending.len() < BATCH_COMMANDS_MAX {
            select.recv(&channels.rx);
        }
        select.recv(&channels.peer_rx);
        select.recv(&channels.synced_wake);
        // Either an input is ready or the tick is due.
        let _ = select.ready_timeout(timeout);
    }

    /// Steps every peer message queued, before any client request:
    /// heartbeats and votes must not wait.
    fn step_peer_messages(&mut self, channels: &Channels) {
        while let Ok(input) = channels.peer_rx.try_recv() {
            self.peer_input(input);
        }
    }

    fn peer_input(&mut self, input: PeerInput) {
        match input {
            PeerInput::Step(message) => {
                if let Err(e) = self.replica.step(*message) {
                    tracing::debug!("dropped a raft message: {e}");
                }
            }
            PeerInput::Unreachable(peer) => self.replica.report_unreachable(peer),
            PeerInput::SnapshotSent { peer, delivered } => {
                self.replica.report_snapshot(peer, delivered)
            }
        }
    }

    /// Takes client requests until a batch's worth of commands is pending;
    /// the rest stay queued for the next turn. Stops at a shutdown.
    fn take_client_inputs(&mut self, channels: &Channels) -> Taken {
        let mut taken = Taken::default();
        while self.pending.len() < BATCH_COMMANDS_MAX {
            let Ok(input) = channels.rx.try_recv() else {
                break;
            };
            self.take_client_input(input, &channels.queued, &mut taken);
            if taken.shutdown {
                break;
            }
        }
        taken
    }

    /// Commands join `pending` (and leave the queue's count), reads wait
    /// for the turn's ReadIndex; everything else reaches the replica at
    /// once, in the order it came.
    fn take_client_input(&mut self, input: ClientInput, queued: &AtomicUsize, taken: &mut Taken) {
        match input {
            ClientInput::Propose { command, reply } => {
                queued.fetch_sub(1, Ordering::AcqRel);
                let token = self.token(Waiter::Command(reply));
                self.pending.push_back((token, command));
            }
            ClientInput::ProposeGroup { commands, reply } => {
                queued.fetch_sub(commands.len(), Ordering::AcqRel);
                let token = self.token(Waiter::group(reply, commands.len()));
                for command in commands {
                    self.pending.push_back((token, command));
                }
            }
            ClientInput::Read { reply } => {
                let token = self.token(Waiter::Read(reply));
                taken.reads.push(token);
            }
            ClientInput::Membership { change, reply } => {
                let token = self.token(Waiter::Membership(reply));
                self.replica
                    .propose_membership(token, change, &mut self.out);
            }
            ClientInput::TransferLeader { target } => {
                self.replica.transfer_leader(target);
            }
            ClientInput::HandOver { reply } => {
                let _ = reply.send(self.replica.hand_over_leadership());
            }
            ClientInput::NoteRemoved => self.replica.note_removed(),
            ClientInput::Digest { reply } => self.freeze_for_digest(reply),
            ClientInput::Shutdown => taken.shutdown = true,
        }
    }

    /// Freezing is the cheap part (a reference per bucket); the caller
    /// reads the whole image elsewhere, off this thread.
    fn freeze_for_digest(&mut self, reply: oneshot::Sender<(Frozen, u64)>) {
        let inventory = self.replica.inventory();
        let frozen = freeze(inventory);
        let _ = reply.send((frozen, inventory.applied_index()));
    }

    /// This turn's batch: what is pending, up to the batch's bounds
    /// (always at least one command); the rest waits for the next turn.
    /// Empty while the gate is closed ([`Self::may_propose`]).
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

    /// Ticks raft-rs (elections, heartbeats) when the tick is due, after
    /// taking the peers' verdict on this node's clock (see
    /// `replica::clock`). Ticks missed while the thread was busy are not
    /// made up: the next is one period away.
    fn tick_if_due(&mut self, now_ms: u64) {
        if Instant::now() < self.next_tick {
            return;
        }
        if let Some((peer_clocks, max_offset_ms)) = &self.clocks {
            let measured = peer_clocks.lock().unwrap_or_else(|p| p.into_inner());
            self.replica.check_clock(&measured, now_ms, *max_offset_ms);
        }
        self.replica.tick(now_ms, &mut self.out);
        self.next_tick += self.tick;
        if self.next_tick < Instant::now() {
            self.next_tick = Instant::now() + self.tick;
        }
    }

    /// Lets the replica handle raft-rs's Ready, once a snapshot's thread
    /// that finished is handed back.
    fn advance(&mut self, channels: &Channels) {
        self.finish_snapshot(false);
        if let Err(fatal) = self.replica.advance(&mut self.out) {
            stop_fatal(&fatal.to_string());
        }
        self.after_advance(channels);
    }

    /// What follows each step of the replica: the write it made goes to
    /// the sync thread, a snapshot it froze to its threads, and the rest
    /// of its output out.
    pub(super) fn after_advance(&mut self, channels: &Channels) {
        self.request_sync(channels);
        self.start_snapshot();
        self.deliver(channels);
    }

    /// Hands out the replica's output: answers to their callers, the
    /// membership to the transport and the status pages, messages to
    /// peers, the status to its watchers.
    fn deliver(&mut self, channels: &Channels) {
        self.out.answered_at.clear();
        self.answer_commands();
        self.answer_reads();
        self.answer_membership();
        self.publish_membership(channels);
        if !self.out.messages.is_empty() {
            self.transport.send(std::mem::take(&mut self.out.messages));
        }
        self.publish_status(channels);
    }

    /// Tells the transport (and the status pages) of changed members and
    /// cluster id. This comes before the turn's messages are sent: they
    /// must still reach a member removed this turn.
    fn publish_membership(&mut self, channels: &Channels) {
        if self.out.members_changed {
            self.out.members_changed = false;
            self.transport.set_members(self.replica.members());
            channels.members.store(Arc::new(MembersView {
                members: self.replica.members().clone(),
                conf_state: self.replica.conf_state(),
            }));
        }
        let cluster_id = self.replica.cluster_id();
        if cluster_id != self.cluster_id || !self.out.members_removed.is_empty() {
            self.cluster_id = cluster_id;
            let removed = std::mem::take(&mut self.out.members_removed);
            self.transport.set_cluster(cluster_id, &removed);
        }
    }

    /// Publishes the replica's status, waking its watchers (health, leader
    /// waits) only when it changed.
    fn publish_status(&self, channels: &Channels) {
        let status = self.replica.status();
        channels.status_tx.send_if_modified(|current| {
            if *current == status {
                return false;
            }
            *current = status;
            true
        });
    }

    /// The last turn's end: what was written is made durable and
    /// answered, a snapshot under way is waited for, and every caller
    /// still waiting gets an error.
    fn shut_down(&mut self, channels: &Channels) {
        self.finish_syncs(channels);
        self.finish_snapshot(true);
        self.fail_all();
        tracing::info!("replication thread stopped");
    }
}
