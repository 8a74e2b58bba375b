//! The replication thread: the I/O shell around the sans-IO [`Replica`].
//!
//! One OS thread owns the replica. gRPC handlers reach it through a bounded
//! channel; each request carries a oneshot sender for its answer. Messages
//! from peers come through a second channel, so a flood of client requests
//! never delays heartbeats and votes. The loop:
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
//!    and ask the sync thread to make the write durable: it syncs RocksDB's
//!    WAL once for every request waiting and answers through a channel of
//!    its own, so the replication thread never waits on the disk.
//! 5. Deliver answers, hand peer messages to the transport, publish the
//!    status and the members.
//! 6. When the replica froze a snapshot, encode and write it on a thread of
//!    its own; when that thread is done, hand the written snapshot back so
//!    the replica writes its record (see `replica::snapshot_task`). Client
//!    calls go on being served meanwhile.
//!
//! A fatal error (a failed write or fsync, a damaged entry) is logged and
//! the process aborts: it never continues with state it cannot trust.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Select, Sender, TrySendError};
use raft::eraftpb::{ConfState, Message};
use thiserror::Error;
use tokio::sync::{oneshot, watch};

use crate::inventory::{codec, Applied, Command, Shared};
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_COMMANDS_MAX, PEER_QUEUE_MAX, QUEUE_REQUESTS_MAX, UNSYNCED_WRITES_MAX,
};
use crate::replica::clock::PeerClocks;
use crate::replica::{
    ClusterId, LogStore, Members, MembershipAnswer, MembershipChange, Output, ProposeError,
    ReadError, Replica, ReplicaStatus, StoreError, Syncer, Token, Unanswered, WrittenSnapshot,
};

/// Why a request to the replication thread got no answer from the state
/// machine.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubmitError {
    #[error("the server is overloaded (its request queue is full); back off and retry")]
    Overloaded,
    #[error("the node is shutting down; retry on another node or after restart")]
    Stopped,
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Why [`NodeHandle::submit`] got no answer, and the command itself when
/// it came back (see [`Unanswered`]): retrying it needs no copy kept.
#[derive(Debug)]
pub struct Refused {
    pub error: SubmitError,
    pub command: Option<Command>,
}

impl Refused {
    fn without(error: SubmitError) -> Refused {
        Refused {
            error,
            command: None,
        }
    }
}

/// Sends raft messages to peers. Called on the replication thread; must not
/// block.
pub trait Transport: Send + 'static {
    fn send(&mut self, messages: Vec<Message>);
    /// The members (and their addresses) changed. Called before the
    /// turn's messages are sent, which must still reach a member this
    /// change removed: among them may be the commit of its own removal.
    fn set_members(&mut self, members: &Members);
    /// The cluster's id as applied, and the members removed this turn
    /// (see `server::identity`). Called when either changed.
    fn set_cluster(&mut self, _cluster_id: Option<ClusterId>, _removed: &[u64]) {}
}

/// A transport for a single-voter group: there is never anyone to send to.
#[derive(Debug, Default)]
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, messages: Vec<Message>) {
        if !messages.is_empty() {
            tracing::warn!(
                count = messages.len(),
                "dropping raft messages: no peers configured"
            );
        }
    }

    fn set_members(&mut self, _members: &Members) {}
}

/// A membership snapshot for status pages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MembersView {
    pub members: Members,
    pub conf_state: ConfState,
}

/// Where the answers to a group of commands go (see
/// [`NodeHandle::submit_group`]): one message for the whole group.
#[derive(Debug, Clone)]
pub struct GroupReply {
    /// Chosen by the caller; returned in the [`GroupAnswer`].
    pub id: u64,
    pub tx: tokio::sync::mpsc::UnboundedSender<GroupAnswer>,
}

/// The answers to a group of commands, in the order they were given.
#[derive(Debug)]
pub struct GroupAnswer {
    pub id: u64,
    pub answers: Vec<Result<Applied, Unanswered>>,
}

enum ClientInput {
    Propose {
        command: Command,
        reply: oneshot::Sender<Result<Applied, Unanswered>>,
    },
    ProposeGroup {
        commands: Vec<Command>,
        reply: GroupReply,
    },
    Read {
        reply: oneshot::Sender<Result<u64, ReadError>>,
    },
    Membership {
        change: MembershipChange,
        reply: oneshot::Sender<Result<MembershipAnswer, ProposeError>>,
    },
    TransferLeader {
        target: u64,
    },
    HandOver {
        reply: oneshot::Sender<Option<u64>>,
    },
    NoteRemoved,
    Digest {
        reply: oneshot::Sender<(crate::inventory::snapshot::Frozen, u64)>,
    },
    Shutdown,
}

enum PeerInput {
    Step(Box<Message>),
    Unreachable(u64),
    SnapshotSent { peer: u64, delivered: bool },
}

enum Waiter {
    Command(oneshot::Sender<Result<Applied, Unanswered>>),
    /// A group's commands all carry one token; raft answers a token's
    /// commands in the order they were proposed (entry by entry, each in
    /// order), so the answers gather here in the group's order.
    Group {
        reply: GroupReply,
        answers: Vec<Result<Applied, Unanswered>>,
        expected: usize,
    },
    Read(oneshot::Sender<Result<u64, ReadError>>),
    Membership(oneshot::Sender<Result<MembershipAnswer, ProposeError>>),
}

/// Settings of the replication thread.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub tick_ms: u64,
    /// Wait for replay of the log up to here before reporting ready.
    pub startup_commit_index: u64,
    /// Most requests queued for the thread; beyond it callers are told
    /// RESOURCE_EXHAUSTED. At most [`QUEUE_REQUESTS_MAX`].
    pub queue_max: usize,
    /// Fellow members' clocks as the peer transport measures them, and
    /// the bound a leader's must keep to (see `replica::clock`); None
    /// checks nothing (a node with no peers, tests).
    pub clocks: Option<(Arc<std::sync::Mutex<PeerClocks>>, u64)>,
}

/// A cheap, cloneable handle to the replication thread.
#[derive(Clone)]
pub struct NodeHandle {
    tx: Sender<ClientInput>,
    peer_tx: Sender<PeerInput>,
    shared: Arc<ArcSwap<Shared>>,
    members: Arc<ArcSwap<MembersView>>,
    status: watch::Receiver<ReplicaStatus>,
    startup_commit_index: u64,
    /// Commands handed to the thread and not yet taken into a batch: the
    /// queue's bound counts commands, as a group carries many.
    queued: Arc<AtomicUsize>,
    queued_max: usize,
    /// One state digest at a time (see [`NodeHandle::digest`]).
    digests: Arc<tokio::sync::Semaphore>,
}

impl NodeHandle {
    /// Proposes one command and waits until it is committed and applied.
    /// A refusal hands the command back when it still can, for a retry.
    pub async fn submit(&self, command: Command) -> Result<Applied, Refused> {
        let (reply, answer) = oneshot::channel();
        if let Err(error) = self.reserve_room(1) {
            return Err(Refused {
                error,
                command: Some(command),
            });
        }
        if let Err(error) = self.send_queued(ClientInput::Propose { command, reply }, 1) {
            return Err(Refused::without(error));
        }
        match answer.await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(unanswered)) => Err(Refused {
                error: SubmitError::Propose(unanswered.error),
                command: unanswered.command,
            }),
            Err(_) => Err(Refused::without(SubmitError::Stopped)),
        }
    }

    /// Proposes many commands at once, answered together through `reply`
    /// once every one of them is applied (or failed). For callers with
    /// many operations in flight (the `Stream` call): one hand-over and
    /// one wake-up per group instead of per command. The commands may land
    /// in one log entry or several; they keep their order.
    pub fn submit_group(
        &self,
        commands: Vec<Command>,
        reply: GroupReply,
    ) -> Result<(), SubmitError> {
        let count = commands.len();
        if count == 0 {
            let _ = reply.tx.send(GroupAnswer {
                id: reply.id,
                answers: Vec::new(),
            });
            return Ok(());
        }
        self.reserve_room(count)?;
        self.send_queued(ClientInput::ProposeGroup { commands, reply }, count)
    }

    /// Counts `count` more commands queued, or refuses them when the queue
    /// would pass its bound.
    fn reserve_room(&self, count: usize) -> Result<(), SubmitError> {
        let before = self.queued.fetch_add(count, Ordering::AcqRel);
        if before + count > self.queued_max {
            self.queued.fetch_sub(count, Ordering::AcqRel);
            metrics::counter!("stockraft_overloaded_total").increment(1);
            return Err(SubmitError::Overloaded);
        }
        Ok(())
    }

    /// Sends an input whose `count` commands were counted by
    /// [`Self::reserve_room`]; uncounts them if it cannot be sent.
    fn send_queued(&self, input: ClientInput, count: usize) -> Result<(), SubmitError> {
        let sent = self.send(input);
        if sent.is_err() {
            self.queued.fetch_sub(count, Ordering::AcqRel);
        }
        sent
    }

    /// Waits until this node may serve a linearizable read: the leader
    /// confirmed its leadership and the read index is applied here.
    pub async fn read_barrier(&self) -> Result<u64, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(ClientInput::Read { reply })?;
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SubmitError::Stopped),
        }
    }

    /// Proposes a membership change and waits until it is applied.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<MembershipAnswer, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(ClientInput::Membership { change, reply })?;
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SubmitError::Stopped),
        }
    }

    /// Asks the leader (this node) to hand leadership to `target`.
    pub fn transfer_leader(&self, target: u64) -> Result<(), SubmitError> {
        self.send(ClientInput::TransferLeader { target })
    }

    /// Asks the leader (this node) to hand leadership to its most
    /// caught-up voter ([`crate::replica::Replica::hand_over_leadership`]).
    /// Returns that voter, or None when this node does not lead or no
    /// other voter exists; the caller watches for the leader to change.
    pub async fn hand_over_leadership(&self) -> Result<Option<u64>, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(ClientInput::HandOver { reply })?;
        answer.await.map_err(|_| SubmitError::Stopped)
    }

    /// The leader answered that this node was removed from the cluster
    /// ([`crate::replica::Replica::note_removed`]).
    pub fn note_removed(&self) -> Result<(), SubmitError> {
        self.send(ClientInput::NoteRemoved)
    }

    /// The state digest and the applied index it was taken at.
    /// The state's digest and the applied index it is at. The replication
    /// thread only freezes the state; the digest is read from the frozen
    /// image on a blocking thread, one at a time (each reads the whole
    /// state; the others wait their turn).
    pub async fn digest(&self) -> Result<(u64, u64), SubmitError> {
        let _turn = self
            .digests
            .acquire()
            .await
            .map_err(|_| SubmitError::Stopped)?;
        let (reply, answer) = oneshot::channel();
        self.send(ClientInput::Digest { reply })?;
        let (frozen, index) = answer.await.map_err(|_| SubmitError::Stopped)?;
        let digest = tokio::task::spawn_blocking(move || {
            crate::inventory::snapshot::write_frozen(&frozen).digest
        })
        .await
        .map_err(|_| SubmitError::Stopped)?;
        Ok((digest, index))
    }

    /// Hands a message from a peer to the replica. Dropped when the peer
    /// queue is full: Raft retransmits.
    pub fn step(&self, message: Message) {
        if self
            .peer_tx
            .try_send(PeerInput::Step(Box::new(message)))
            .is_err()
        {
            metrics::counter!("stockraft_peer_messages_dropped_total", "reason" => "queue_full")
                .increment(1);
        }
    }

    /// The transport could not reach `peer`.
    pub fn report_unreachable(&self, peer: u64) {
        let _ = self.peer_tx.try_send(PeerInput::Unreachable(peer));
    }

    /// The transport finished sending a snapshot to `peer`.
    pub fn report_snapshot(&self, peer: u64, delivered: bool) {
        let _ = self
            .peer_tx
            .send(PeerInput::SnapshotSent { peer, delivered });
    }

    fn send(&self, input: ClientInput) -> Result<(), SubmitError> {
        match self.tx.try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                metrics::counter!("stockraft_overloaded_total").increment(1);
                Err(SubmitError::Overloaded)
            }
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// The state to read from (load per read: a snapshot install swaps it).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.load_full()
    }

    pub fn members(&self) -> Arc<MembersView> {
        self.members.load_full()
    }

    pub fn status(&self) -> ReplicaStatus {
        *self.status.borrow()
    }

    pub fn status_watch(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    /// True once a leader is known and the log present at startup has been
    /// applied: the node can answer. A node removed from the cluster never
    /// is again (it gets no more entries).
    pub fn is_ready(&self) -> bool {
        let status = self.status();
        status.leader_id != 0
            && status.applied_index >= self.startup_commit_index
            && !status.removed
    }

    /// Waits until a leader is known, up to `timeout`. Returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<u64> {
        let mut status = self.status.clone();
        let wait = async {
            loop {
                let leader = status.borrow_and_update().leader_id;
                if leader != 0 {
                    return leader;
                }
                if status.changed().await.is_err() {
                    return 0;
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(0) | Err(_) => None,
            Ok(leader) => Some(leader),
        }
    }
}

/// The running replication thread.
pub struct Node {
    handle: NodeHandle,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts the replication thread over `replica`. `transport` is built
    /// with the node's handle, so it can report unreachable peers.
    ///
    /// `answers_on`: the tokio runtime the callers wait on. The thread then
    /// hands each turn's answers to one task there (see [`Relayed`]).
    pub fn start<S, T>(
        replica: Replica<S>,
        transport: impl FnOnce(NodeHandle) -> T,
        config: NodeConfig,
        answers_on: Option<tokio::runtime::Handle>,
    ) -> std::io::Result<Node>
    where
        S: LogStore + Send + 'static,
        T: Transport,
    {
        let queued_max = config.queue_max.clamp(1, QUEUE_REQUESTS_MAX);
        let (tx, rx) = crossbeam_channel::bounded(queued_max);
        let queued = Arc::new(AtomicUsize::new(0));
        let (peer_tx, peer_rx) = crossbeam_channel::bounded(PEER_QUEUE_MAX);
        let (sync_tx, sync_rx) = crossbeam_channel::bounded(SYNC_QUEUE_MAX);
        // Capacity 1: a wake-up, the number itself is in `synced`.
        let (synced_wake_tx, synced_wake) = crossbeam_channel::bounded(1);
        let synced = Arc::new(AtomicU64::new(0));
        let syncer = replica.store().syncer();
        let sync_thread = {
            let synced = synced.clone();
            std::thread::Builder::new()
                .name("sync".into())
                .spawn(move || sync_thread(syncer, sync_rx, &synced, synced_wake_tx))?
        };
        let (status_tx, status_rx) = watch::channel(replica.status());
        let members = Arc::new(ArcSwap::from_pointee(MembersView {
            members: replica.members().clone(),
            conf_state: replica.conf_state(),
        }));
        let handle = NodeHandle {
            tx,
            peer_tx,
            shared: replica.shared(),
            members: members.clone(),
            status: status_rx,
            startup_commit_index: config.startup_commit_index,
            queued: queued.clone(),
            queued_max,
            digests: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        let mut transport = transport(handle.clone());
        transport.set_members(replica.members());
        transport.set_cluster(replica.cluster_id(), &[]);
        let channels = Channels {
            rx,
            peer_rx,
            sync_tx,
            synced,
            synced_wake,
            status_tx,
            members,
            queued,
        };
        // A task on the runtime completes the callers' oneshots (see
        // `Relayed`); without a runtime the thread completes them itself.
        let relay = answers_on.map(|runtime| {
            let (relay_tx, relay_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Relayed>>();
            runtime.spawn(relay_answers(relay_rx));
            relay_tx
        });
        let thread = std::thread::Builder::new()
            .name("replica".into())
            .spawn(move || {
                run(replica, transport, &channels, config, relay);
                // The sync thread holds the store open: it ends when its
                // queue closes and is joined before the store is reopened.
                drop(channels);
                let _ = sync_thread.join();
            })?;
        Ok(Node {
            handle,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops the thread after the batch in progress is durable and answered.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        // A blocking send: shutdown must get through even when the queue is full.
        let _ = self.handle.tx.send(ClientInput::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

struct Channels {
    rx: Receiver<ClientInput>,
    peer_rx: Receiver<PeerInput>,
    /// To the sync thread: sync the store, then answer with this Ready
    /// number. Dropped when the loop ends, which ends that thread.
    sync_tx: Sender<u64>,
    /// Set by the sync thread: the highest Ready number now durable.
    synced: Arc<AtomicU64>,
    /// Woken (one message at most waits) when `synced` moved. The number
    /// travels in the atomic, so the sync thread never waits for the
    /// replication thread, which may itself be waiting to send a request.
    synced_wake: Receiver<()>,
    status_tx: watch::Sender<ReplicaStatus>,
    members: Arc<ArcSwap<MembersView>>,
    queued: Arc<AtomicUsize>,
}

/// Sync requests in flight: the loop asks again only for a higher Ready
/// number than it last asked for, so a few suffice. A full queue makes the
/// sender wait (a
/// follower, which proposes nothing and so is not held back by
/// [`UNSYNCED_WRITES_MAX`], then stops taking appends until the sync thread
/// drains it): with the sync under way, at most twice this many Readies
/// wait for a sync.
const SYNC_QUEUE_MAX: usize = 64;

/// The sync thread: takes every request waiting, syncs once for all of
/// them, answers with the highest number. A failed sync stops the process:
/// what was written may or may not be on disk, and the node cannot know.
fn sync_thread(
    syncer: Box<dyn Syncer>,
    requests: Receiver<u64>,
    synced: &AtomicU64,
    wake: Sender<()>,
) {
    while let Ok(first) = requests.recv() {
        let mut number = first;
        while let Ok(next) = requests.try_recv() {
            number = number.max(next);
        }
        if let Err(e) = syncer.sync() {
            stop_fatal(&format!("syncing the log failed: {e}"));
        }
        synced.fetch_max(number, Ordering::AcqRel);
        // Full means a wake-up is already waiting: it will read this too.
        let _ = wake.try_send(());
    }
}

pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The loop's bookkeeping: callers waiting, by token.
struct Loop<S: LogStore, T: Transport> {
    replica: Replica<S>,
    transport: T,
    /// Hashed fast: one lookup per answered command.
    waiters: HashMap<Token, Waiter, foldhash::fast::RandomState>,
    next_token: Token,
    out: Output,
    /// The thread encoding and writing a snapshot, if one runs.
    snapshot_job: Option<JoinHandle<Result<WrittenSnapshot, StoreError>>>,
    /// The highest Ready number the sync thread was asked to make durable,
    /// and the highest it answered.
    sync_asked: u64,
    sync_done: u64,
    /// To the task that completes the callers' oneshots, if one runs.
    relay: Option<tokio::sync::mpsc::UnboundedSender<Vec<Relayed>>>,
    /// The cluster id the transport was last told.
    cluster_id: Option<ClusterId>,
}

/// An answer relayed by a task on the runtime: one caller's, or a group's.
///
/// Completing a oneshot (or sending a group's answers) from this thread
/// wakes its caller's task from outside the runtime: the task goes on the
/// runtime's shared queue, often with a futex or eventfd wake-up of a
/// parked worker, once per caller (a turn answers about 20 unary calls at
/// 64 clients, or one group of each of up to 64 streams). Handing the
/// turn's answers to one task costs one such wake-up; that task completes
/// them from inside the runtime, where a wake-up is a push on the worker's
/// own queue. Measured in unary runs at 64 clients (BENCHMARKS.md, stop
/// 19): futex calls per call down from 0.36-0.37 to 0.30-0.31, and 27,131
/// against 26,198 calls/s on average over eleven alternated pairs: a small
/// gain, within the spread of single runs. Groups: stop 20.
enum Relayed {
    One(
        oneshot::Sender<Result<Applied, Unanswered>>,
        Result<Applied, Unanswered>,
    ),
    Group(GroupReply, Vec<Result<Applied, Unanswered>>),
}

impl Relayed {
    /// Hands the answer to its caller. The caller may have given up
    /// (deadline, a closed stream); that is fine.
    fn complete(self) {
        match self {
            Relayed::One(reply, answer) => {
                let _ = reply.send(answer);
            }
            Relayed::Group(reply, answers) => {
                let _ = reply.tx.send(GroupAnswer {
                    id: reply.id,
                    answers,
                });
            }
        }
    }
}

/// The relay task: completes every answer it is handed, in order. Ends
/// when the replication thread drops its sender.
async fn relay_answers(mut batches: tokio::sync::mpsc::UnboundedReceiver<Vec<Relayed>>) {
    while let Some(batch) = batches.recv().await {
        for relayed in batch {
            relayed.complete();
        }
    }
}

impl<S: LogStore, T: Transport> Loop<S, T> {
    fn token(&mut self, waiter: Waiter) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        self.waiters.insert(token, waiter);
        token
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

    fn advance(&mut self, channels: &Channels) {
        self.finish_snapshot(false);
        if let Err(fatal) = self.replica.advance(&mut self.out) {
            stop_fatal(&fatal.to_string());
        }
        self.after_advance(channels);
    }

    /// The sync thread made Readies up to `number` durable.
    fn persisted(&mut self, number: u64, channels: &Channels) {
        self.sync_done = self.sync_done.max(number);
        if let Err(fatal) = self.replica.persisted(number, &mut self.out) {
            stop_fatal(&fatal.to_string());
        }
        self.after_advance(channels);
    }

    fn after_advance(&mut self, channels: &Channels) {
        if let Some(number) = self.out.sync.take() {
            if number > self.sync_asked {
                self.sync_asked = number;
                if channels.sync_tx.send(number).is_err() {
                    stop_fatal("the sync thread stopped");
                }
            }
        }
        self.start_snapshot();
        self.deliver(channels);
    }

    /// Hands the replica what the sync thread made durable since the last
    /// call, if anything.
    fn take_synced(&mut self, channels: &Channels) {
        while channels.synced_wake.try_recv().is_ok() {}
        let number = channels.synced.load(Ordering::Acquire);
        if number > self.sync_done {
            self.persisted(number, channels);
        }
    }

    /// Waits for every sync asked for (at shutdown: what was written is
    /// made durable and answered before the thread ends).
    fn finish_syncs(&mut self, channels: &Channels) {
        while self.sync_done < self.sync_asked {
            if channels.synced_wake.recv().is_err() {
                stop_fatal("the sync thread stopped");
            }
            self.take_synced(channels);
        }
    }

    /// Runs a snapshot the replica froze on a thread of its own.
    fn start_snapshot(&mut self) {
        let Some(task) = self.out.snapshot.take() else {
            return;
        };
        assert!(self.snapshot_job.is_none(), "two snapshots at once");
        let writer = self.replica.store().chunk_writer();
        let spawned = super::snapshot_thread::spawn(task, writer);
        match spawned {
            Ok(handle) => self.snapshot_job = Some(handle),
            Err(e) => stop_fatal(&format!("cannot start the snapshot thread: {e}")),
        }
    }

    /// Hands a written snapshot back to the replica: when its thread is
    /// done, or, with `wait`, after waiting for it (at shutdown, so the
    /// store is not written from two places as it closes).
    fn finish_snapshot(&mut self, wait: bool) {
        let done = match &self.snapshot_job {
            Some(handle) => wait || handle.is_finished(),
            None => false,
        };
        if !done {
            return;
        }
        let Some(handle) = self.snapshot_job.take() else {
            return;
        };
        let written = match handle.join() {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => stop_fatal(&format!("writing a snapshot failed: {e}")),
            Err(_) => stop_fatal("the snapshot thread panicked"),
        };
        if let Err(fatal) = self.replica.snapshot_written(written) {
            stop_fatal(&fatal.to_string());
        }
    }

    fn deliver(&mut self, channels: &Channels) {
        self.out.answered_at.clear();
        let mut relayed: Vec<Relayed> = Vec::new();
        for (token, answer) in self.out.answers.drain(..) {
            let complete = match self.waiters.get_mut(&token) {
                Some(Waiter::Group {
                    answers, expected, ..
                }) => {
                    answers.push(answer);
                    if answers.len() < *expected {
                        continue;
                    }
                    None
                }
                Some(Waiter::Command(_)) => Some(answer),
                _ => continue,
            };
            let answered = match (self.waiters.remove(&token), complete) {
                (Some(Waiter::Command(reply)), Some(answer)) => Relayed::One(reply, answer),
                (Some(Waiter::Group { reply, answers, .. }), None) => {
                    Relayed::Group(reply, answers)
                }
                _ => continue,
            };
            if self.relay.is_some() {
                relayed.push(answered);
            } else {
                answered.complete();
            }
        }
        if !relayed.is_empty() {
            if let Some(relay) = &self.relay {
                // The runtime is gone (shutdown): answer from here.
                if let Err(returned) = relay.send(relayed) {
                    for answered in returned.0 {
                        answered.complete();
                    }
                }
            }
        }
        for (token, answer) in self.out.reads.drain(..) {
            if let Some(Waiter::Read(reply)) = self.waiters.remove(&token) {
                let _ = reply.send(answer);
            }
        }
        if self.replica.is_removed() {
            self.fail_reads_removed();
        }
        for (token, answer) in self.out.membership.drain(..) {
            if let Some(Waiter::Membership(reply)) = self.waiters.remove(&token) {
                let _ = reply.send(answer);
            }
        }
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
        if !self.out.messages.is_empty() {
            self.transport.send(std::mem::take(&mut self.out.messages));
        }
        let status = self.replica.status();
        channels.status_tx.send_if_modified(|current| {
            if *current == status {
                return false;
            }
            *current = status;
            true
        });
    }

    /// A removed node gets no more entries: a read waiting for its read
    /// index to be confirmed or applied here would only time out, so it is
    /// failed now and its caller moves to another member.
    fn fail_reads_removed(&mut self) {
        let reads: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| matches!(waiter, Waiter::Read(_)))
            .map(|(token, _)| *token)
            .collect();
        for token in reads {
            if let Some(Waiter::Read(reply)) = self.waiters.remove(&token) {
                let _ = reply.send(Err(ReadError::Removed));
            }
        }
    }

    /// Callers still waiting at shutdown get an error, never a hang.
    fn fail_all(&mut self) {
        for (_, waiter) in self.waiters.drain() {
            match waiter {
                Waiter::Command(reply) => {
                    let _ = reply.send(Err(Unanswered::without(ProposeError::ShuttingDown)));
                }
                Waiter::Group {
                    reply,
                    mut answers,
                    expected,
                } => {
                    answers.resize_with(expected, || {
                        Err(Unanswered::without(ProposeError::ShuttingDown))
                    });
                    let _ = reply.tx.send(GroupAnswer {
                        id: reply.id,
                        answers,
                    });
                }
                Waiter::Read(reply) => {
                    let _ = reply.send(Err(ReadError::NoLeader));
                }
                Waiter::Membership(reply) => {
                    let _ = reply.send(Err(ProposeError::Unknown));
                }
            }
        }
    }
}

fn run<S: LogStore, T: Transport>(
    replica: Replica<S>,
    transport: T,
    channels: &Channels,
    config: NodeConfig,
    relay: Option<tokio::sync::mpsc::UnboundedSender<Vec<Relayed>>>,
) {
    let tick = Duration::from_millis(config.tick_ms.max(1));
    let mut next_tick = Instant::now() + tick;
    let mut state = Loop {
        replica,
        transport,
        waiters: HashMap::default(),
        next_token: 1,
        out: Output::default(),
        snapshot_job: None,
        sync_asked: 0,
        sync_done: 0,
        relay,
        cluster_id: None,
    };
    // Commands taken from the channel and not yet proposed: at most about
    // one batch's worth (plus one group), so the channel's bound, counted
    // in commands, stays the real bound on what waits.
    let mut pending: VecDeque<(Token, Command)> = VecDeque::new();
    // What was written before the thread started (a single voter's
    // election, campaigned before the node started) is made durable here,
    // then the committed log tail replayed, before anything else.
    if state.replica.unsynced_count() > 0 {
        match state.replica.sync_store() {
            Ok(number) => state.persisted(number, channels),
            Err(fatal) => stop_fatal(&fatal.to_string()),
        }
    }
    state.advance(channels);
    loop {
        // A batch waits while two writes wait for their sync; commands
        // keep arriving into `pending` meanwhile, up to one batch's worth.
        let may_propose = state.replica.unsynced_count() < UNSYNCED_WRITES_MAX;
        let work = (may_propose && !pending.is_empty())
            || (pending.len() < BATCH_COMMANDS_MAX && !channels.rx.is_empty())
            || !channels.peer_rx.is_empty()
            || !channels.synced_wake.is_empty();
        if !work {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let mut select = Select::new();
            if pending.len() < BATCH_COMMANDS_MAX {
                select.recv(&channels.rx);
            }
            select.recv(&channels.peer_rx);
            select.recv(&channels.synced_wake);
            // Either an input is ready or the tick is due.
            let _ = select.ready_timeout(timeout);
        }
        // Syncs that landed: what they made durable is answered now.
        state.take_synced(channels);
        // Peer messages first: heartbeats and votes must not wait.
        while let Ok(input) = channels.peer_rx.try_recv() {
            state.peer_input(input);
        }
        let mut reads: Vec<Token> = Vec::new();
        let mut shutdown = false;
        while pending.len() < BATCH_COMMANDS_MAX {
            let Ok(input) = channels.rx.try_recv() else {
                break;
            };
            match input {
                ClientInput::Propose { command, reply } => {
                    channels.queued.fetch_sub(1, Ordering::AcqRel);
                    let token = state.token(Waiter::Command(reply));
                    pending.push_back((token, command));
                }
                ClientInput::ProposeGroup { commands, reply } => {
                    channels.queued.fetch_sub(commands.len(), Ordering::AcqRel);
                    let token = state.token(Waiter::Group {
                        reply,
                        answers: Vec::with_capacity(commands.len()),
                        expected: commands.len(),
                    });
                    for command in commands {
                        pending.push_back((token, command));
                    }
                }
                ClientInput::Read { reply } => {
                    let token = state.token(Waiter::Read(reply));
                    reads.push(token);
                }
                ClientInput::Membership { change, reply } => {
                    let token = state.token(Waiter::Membership(reply));
                    state
                        .replica
                        .propose_membership(token, change, &mut state.out);
                }
                ClientInput::TransferLeader { target } => {
                    state.replica.transfer_leader(target);
                }
                ClientInput::HandOver { reply } => {
                    let _ = reply.send(state.replica.hand_over_leadership());
                }
                ClientInput::NoteRemoved => state.replica.note_removed(),
                ClientInput::Digest { reply } => {
                    // Freezing is the cheap part (a reference per bucket);
                    // the caller reads the whole image elsewhere.
                    let inventory = state.replica.inventory();
                    let frozen = crate::inventory::snapshot::freeze(inventory);
                    let _ = reply.send((frozen, inventory.applied_index()));
                }
                ClientInput::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
        }
        // This turn's batch: what is pending, up to the batch's bounds
        // (always at least one command); the rest waits for the next turn.
        // None while two writes wait for their sync (see above).
        let mut commands: Vec<(Token, Command)> = Vec::new();
        let mut batch_bytes = 0usize;
        let may_propose = state.replica.unsynced_count() < UNSYNCED_WRITES_MAX;
        while let Some((_, command)) = pending.front() {
            if !may_propose {
                break;
            }
            let size = codec::encoded_len(command);
            let full = commands.len() >= BATCH_COMMANDS_MAX
                || (!commands.is_empty() && batch_bytes + size > BATCH_BYTES_MAX);
            if full {
                break;
            }
            batch_bytes += size;
            if let Some(next) = pending.pop_front() {
                commands.push(next);
            }
        }
        let now_ms = wall_clock_ms();
        if Instant::now() >= next_tick {
            if let Some((clocks, max_offset_ms)) = &config.clocks {
                let clocks = clocks.lock().unwrap_or_else(|p| p.into_inner());
                state.replica.check_clock(&clocks, now_ms, *max_offset_ms);
            }
            state.replica.tick(now_ms, &mut state.out);
            next_tick += tick;
            if next_tick < Instant::now() {
                next_tick = Instant::now() + tick;
            }
        }
        if !commands.is_empty() {
            state.replica.propose(now_ms, commands, &mut state.out);
        }
        state.replica.read(reads, &mut state.out);
        state.advance(channels);
        if shutdown {
            state.finish_syncs(channels);
            state.finish_snapshot(true);
            state.fail_all();
            tracing::info!("replication thread stopped");
            return;
        }
    }
}

/// Stops the process: the replica's durable state may be inconsistent with
/// what it has in memory, so serving on would risk lost or doubled writes.
fn stop_fatal(reason: &str) -> ! {
    tracing::error!("fatal: {reason}; stopping the node");
    eprintln!("stockraft: fatal: {reason}; stopping the node");
    std::process::abort();
}
