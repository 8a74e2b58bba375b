//! The replication thread's loop: the I/O around the [`Driver`], which
//! decides everything (`replica::driver`). Each turn:
//!
//! 1. Wait for input from either channel, a sync landing, or the next tick
//!    (`tick_ms`).
//! 2. Hand the driver the syncs that landed, every peer message queued, and
//!    client requests while it wants commands (at most about a batch's
//!    worth; leftovers wait in the channel), then a snapshot its threads
//!    finished writing.
//! 3. Run the driver's turn: tick if due, propose the batch unless two log
//!    writes wait for their sync, one ReadIndex for all reads, the Ready.
//! 4. Act on its effects: the sync it asks for goes to the sync thread
//!    (`sync.rs`), a snapshot to its threads (`snapshot.rs`), answers to
//!    their callers (`answers.rs`), messages to the transport; the status
//!    and the members are published.
//!
//! The order of the writes and fsyncs: ARCHITECTURE.md, "Every write and
//! fsync, in order".

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Select, Sender};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{oneshot, watch};

use super::answers::{Relayed, Reply};
use super::{
    stop_fatal, wall_clock_ms, ClientInput, MembersView, NodeConfig, PeerInput, Transport,
};
use crate::inventory::snapshot::{freeze, Frozen};
use crate::replica::clock::PeerClocks;
use crate::replica::{
    ClockCheck, Driver, LogStore, Now, Replica, ReplicaStatus, Request, StoreError, WrittenSnapshot,
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

/// The loop's state: the driver, and the threads and channels it is
/// driven through.
pub(super) struct Loop<S: LogStore, T: Transport> {
    pub(super) driver: Driver<S, Reply>,
    transport: T,
    /// The monotonic clock's origin: ticks are due by time since then.
    started: Instant,
    tick: Duration,
    /// See [`NodeConfig::clocks`].
    clocks: Option<(Arc<Mutex<PeerClocks>>, u64)>,
    /// The thread encoding and writing a snapshot, if one runs.
    pub(super) snapshot_job: Option<JoinHandle<Result<WrittenSnapshot, StoreError>>>,
    /// To the task that completes the callers' oneshots, if one runs.
    pub(super) relay: Option<UnboundedSender<Vec<Relayed>>>,
    /// Callers told once the status shows this node removed.
    removal_noted: Vec<oneshot::Sender<()>>,
}

/// The replication thread: runs turns until told to shut down.
pub(super) fn run<S: LogStore, T: Transport>(
    replica: Replica<S>,
    transport: T,
    channels: &Channels,
    config: NodeConfig,
    relay: Option<UnboundedSender<Vec<Relayed>>>,
) {
    let driver = match Driver::new(replica, config.tick_ms) {
        Ok(driver) => driver,
        Err(fatal) => stop_fatal(&fatal.to_string()),
    };
    let mut state = Loop {
        driver,
        transport,
        started: Instant::now(),
        tick: Duration::from_millis(config.tick_ms.max(1)),
        clocks: config.clocks,
        snapshot_job: None,
        relay,
        removal_noted: Vec::new(),
    };
    state.act(channels);
    loop {
        if !state.has_work(channels) {
            state.wait_for_work(channels);
        }
        // Syncs that landed: what they made durable is answered now.
        state.take_synced(channels);
        state.step_peer_messages(channels);
        let shutdown = state.take_client_inputs(channels);
        state.finish_snapshot(false);
        state.turn();
        state.act(channels);
        if shutdown {
            state.shut_down(channels);
            return;
        }
    }
}

impl<S: LogStore, T: Transport> Loop<S, T> {
    /// Whether a turn has something to do at once. Client requests count
    /// only while the driver wants commands.
    fn has_work(&self, channels: &Channels) -> bool {
        self.driver.has_work()
            || (self.driver.wants_commands() && !channels.rx.is_empty())
            || !channels.peer_rx.is_empty()
            || !channels.synced_wake.is_empty()
    }

    fn now(&self) -> Now {
        Now {
            monotonic_ms: self.started.elapsed().as_millis() as u64,
            wall_ms: wall_clock_ms(),
        }
    }

    /// Sleeps until an input is ready or the tick is due. With a batch's
    /// worth of commands pending, client requests do not wake the thread:
    /// they could not be taken.
    fn wait_for_work(&self, channels: &Channels) {
        let timeout = match self.driver.next_tick_ms() {
            Some(due_ms) => Duration::from_millis(due_ms.saturating_sub(self.now().monotonic_ms)),
            None => self.tick,
        };
        let mut select = Select::new();
        if self.driver.wants_commands() {
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
            match input {
                PeerInput::Step(message) => {
                    if let Err(e) = self.driver.step(*message) {
                        tracing::debug!("dropped a raft message: {e}");
                    }
                }
                PeerInput::Unreachable(peer) => self.driver.report_unreachable(peer),
                PeerInput::SnapshotSent { peer, delivered } => {
                    self.driver.report_snapshot(peer, delivered)
                }
            }
        }
    }

    /// Takes client requests while the driver wants commands; the rest
    /// stay queued for the next turn. Returns true at a shutdown, which
    /// ends the taking.
    fn take_client_inputs(&mut self, channels: &Channels) -> bool {
        while self.driver.wants_commands() {
            let Ok(input) = channels.rx.try_recv() else {
                return false;
            };
            if self.take_client_input(input, &channels.queued) {
                return true;
            }
        }
        false
    }

    /// Requests go to the driver (commands leave the queue's count); the
    /// rest reach the replica at once, in the order they came. True at a
    /// shutdown.
    fn take_client_input(&mut self, input: ClientInput, queued: &AtomicUsize) -> bool {
        match input {
            ClientInput::Propose { command, reply } => {
                queued.fetch_sub(1, Ordering::AcqRel);
                self.driver
                    .submit(Request::Command(command), Reply::Command(reply));
            }
            ClientInput::ProposeGroup { commands, reply } => {
                queued.fetch_sub(commands.len(), Ordering::AcqRel);
                self.driver
                    .submit(Request::Group(commands), Reply::Group(reply));
            }
            ClientInput::Read { reply } => {
                self.driver.submit(Request::Read, Reply::Read(reply));
            }
            ClientInput::Membership { change, reply } => {
                self.driver
                    .submit(Request::Membership(change), Reply::Membership(reply));
            }
            ClientInput::TransferLeader { target } => self.driver.transfer_leader(target),
            ClientInput::HandOver { reply } => {
                let _ = reply.send(self.driver.hand_over_leadership());
            }
            ClientInput::NoteRemoved { reply } => {
                self.driver.note_removed();
                self.removal_noted.push(reply);
            }
            ClientInput::Digest { reply } => self.freeze_for_digest(reply),
            ClientInput::Shutdown => return true,
        }
        false
    }

    /// Freezing is the cheap part (a reference per bucket); the caller
    /// reads the whole image elsewhere, off this thread.
    fn freeze_for_digest(&mut self, reply: oneshot::Sender<(Frozen, u64)>) {
        let inventory = self.driver.replica().inventory();
        let frozen = freeze(inventory);
        let _ = reply.send((frozen, inventory.applied_index()));
    }

    /// The driver's turn. The peers' clocks are read only when the driver
    /// takes its verdict on this member's (see [`Driver::clock_due`]).
    fn turn(&mut self) {
        let now = self.now();
        let clock_due = self.driver.clock_due(now);
        let turned = match (&self.clocks, clock_due) {
            (Some((peer_clocks, max_offset_ms)), true) => {
                let measured = peer_clocks.lock().unwrap_or_else(|p| p.into_inner());
                let check = ClockCheck {
                    peers: &measured,
                    max_offset_ms: *max_offset_ms,
                };
                self.driver.turn(now, Some(check))
            }
            _ => self.driver.turn(now, None),
        };
        if let Err(fatal) = turned {
            stop_fatal(&fatal.to_string());
        }
    }

    /// Acts on the driver's effects: the sync it asks for goes to the sync
    /// thread, a snapshot to its threads, answers to their callers, the
    /// membership to the transport and the status pages, messages to
    /// peers, the status to its watchers.
    pub(super) fn act(&mut self, channels: &Channels) {
        self.request_sync(channels);
        self.start_snapshot();
        self.answer();
        self.publish_membership(channels);
        let effects = self.driver.effects();
        effects.answered_at.clear();
        if !effects.messages.is_empty() {
            self.transport.send(std::mem::take(&mut effects.messages));
        }
        self.publish_status(channels);
        for noted in self.removal_noted.drain(..) {
            let _ = noted.send(());
        }
    }

    /// Tells the transport (and the status pages) of changed members and
    /// cluster id. This comes before the turn's messages are sent: they
    /// must still reach a member removed this turn.
    fn publish_membership(&mut self, channels: &Channels) {
        let effects = self.driver.effects();
        let members_changed = std::mem::take(&mut effects.members_changed);
        let cluster = effects.cluster.take();
        if members_changed {
            let replica = self.driver.replica();
            self.transport.set_members(replica.members());
            channels.members.store(Arc::new(MembersView {
                members: replica.members().clone(),
                conf_state: replica.conf_state(),
            }));
        }
        if let Some((cluster_id, removed)) = cluster {
            self.transport.set_cluster(cluster_id, &removed);
        }
    }

    /// Publishes the replica's status, waking its watchers (health, leader
    /// waits) only when it changed.
    fn publish_status(&self, channels: &Channels) {
        let status = self.driver.replica().status();
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
        self.driver.shut_down();
        self.act(channels);
        tracing::info!("replication thread stopped");
    }
}
