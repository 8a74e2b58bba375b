//! The replication thread: the I/O shell around the sans-IO [`Replica`].
//!
//! One OS thread owns the replica. gRPC handlers reach it through a bounded
//! channel; each request carries a oneshot sender for its answer. The loop:
//!
//! 1. Wait for input or the next tick (every `tick_ms`).
//! 2. Drain what is queued, up to one batch's worth of commands
//!    ([`BATCH_COMMANDS_MAX`], [`BATCH_BYTES_MAX`]); leftovers wait for the
//!    next turn. This is the group commit: everything that arrived while the
//!    previous batch was being synced goes into the next log entry.
//! 3. Tick if due, propose the batch, ask one ReadIndex for all reads.
//! 4. Let the replica handle raft-rs's Ready (apply, one synced write).
//! 5. Deliver answers, send peer messages, publish the status.
//!
//! A fatal error (a failed write or fsync, a damaged entry) is logged and
//! the process aborts: it never continues with state it cannot trust.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use raft::eraftpb::Message;
use thiserror::Error;
use tokio::sync::{oneshot, watch};

use crate::inventory::{codec, Applied, Command, Shared};
use crate::limits::{BATCH_BYTES_MAX, BATCH_COMMANDS_MAX, QUEUE_REQUESTS_MAX};
use crate::replica::{LogStore, Output, ProposeError, ReadError, Replica, ReplicaStatus, Token};

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

/// Sends raft messages to peers. The one-node server has none; the
/// replicated cluster plugs its gRPC transport in here.
pub trait Transport: Send + 'static {
    fn send(&mut self, messages: Vec<Message>);
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
}

enum Input {
    Propose {
        command: Command,
        reply: oneshot::Sender<Result<Applied, ProposeError>>,
    },
    Read {
        reply: oneshot::Sender<Result<u64, ReadError>>,
    },
    Step(Box<Message>),
    Shutdown,
}

enum Waiter {
    Command(oneshot::Sender<Result<Applied, ProposeError>>),
    Read(oneshot::Sender<Result<u64, ReadError>>),
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
}

/// A cheap, cloneable handle to the replication thread.
#[derive(Clone)]
pub struct NodeHandle {
    tx: Sender<Input>,
    shared: Arc<ArcSwap<Shared>>,
    status: watch::Receiver<ReplicaStatus>,
    startup_commit_index: u64,
}

impl NodeHandle {
    /// Proposes one command and waits until it is committed and applied.
    pub async fn submit(&self, command: Command) -> Result<Applied, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Propose { command, reply })?;
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SubmitError::Stopped),
        }
    }

    /// Waits until this node may serve a linearizable read: the leader
    /// confirmed its leadership and the read index is applied here.
    pub async fn read_barrier(&self) -> Result<u64, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Read { reply })?;
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SubmitError::Stopped),
        }
    }

    /// Hands a message from a peer to the replica.
    pub fn step(&self, message: Message) -> Result<(), SubmitError> {
        self.send(Input::Step(Box::new(message)))
    }

    fn send(&self, input: Input) -> Result<(), SubmitError> {
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

    pub fn status(&self) -> ReplicaStatus {
        *self.status.borrow()
    }

    pub fn status_watch(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    /// True once a leader is known and the log present at startup has been
    /// applied: the node can answer.
    pub fn is_ready(&self) -> bool {
        let status = self.status();
        status.leader_id != 0 && status.applied_index >= self.startup_commit_index
    }
}

/// The running replication thread.
pub struct Node {
    handle: NodeHandle,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts the replication thread over `replica`.
    pub fn start<S, T>(
        replica: Replica<S>,
        transport: T,
        config: NodeConfig,
    ) -> std::io::Result<Node>
    where
        S: LogStore + Send + 'static,
        T: Transport,
    {
        let (tx, rx) = crossbeam_channel::bounded(config.queue_max.clamp(1, QUEUE_REQUESTS_MAX));
        let (status_tx, status_rx) = watch::channel(replica.status());
        let handle = NodeHandle {
            tx,
            shared: replica.shared(),
            status: status_rx,
            startup_commit_index: config.startup_commit_index,
        };
        let thread = std::thread::Builder::new()
            .name("replica".into())
            .spawn(move || run(replica, transport, rx, status_tx, config))?;
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
        let _ = self.handle.tx.send(Input::Shutdown);
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

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn run<S: LogStore, T: Transport>(
    mut replica: Replica<S>,
    mut transport: T,
    rx: Receiver<Input>,
    status_tx: watch::Sender<ReplicaStatus>,
    config: NodeConfig,
) {
    let tick = Duration::from_millis(config.tick_ms.max(1));
    let mut next_tick = Instant::now() + tick;
    let mut waiters: HashMap<Token, Waiter> = HashMap::new();
    let mut next_token: Token = 1;
    // An input drained past a full batch waits here for the next turn.
    let mut carried: Option<Input> = None;
    let mut out = Output::default();
    if let Err(fatal) = replica.advance(&mut out) {
        stop_fatal(&fatal.to_string());
    }
    deliver(&mut out, &mut waiters, &mut transport);
    publish(&replica, &status_tx);
    loop {
        let first = match carried.take() {
            Some(input) => Some(input),
            None => {
                let timeout = next_tick.saturating_duration_since(Instant::now());
                match rx.recv_timeout(timeout) {
                    Ok(input) => Some(input),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        let mut commands: Vec<(Token, Command)> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut reads: Vec<Token> = Vec::new();
        let mut shutdown = false;
        let mut next = first;
        while let Some(input) = next.take() {
            match input {
                Input::Propose { command, reply } => {
                    let size = codec::encoded_len(&command);
                    let full = commands.len() >= BATCH_COMMANDS_MAX
                        || (!commands.is_empty() && batch_bytes + size > BATCH_BYTES_MAX);
                    if full {
                        carried = Some(Input::Propose { command, reply });
                        break;
                    }
                    batch_bytes += size;
                    let token = next_token;
                    next_token += 1;
                    waiters.insert(token, Waiter::Command(reply));
                    commands.push((token, command));
                }
                Input::Read { reply } => {
                    let token = next_token;
                    next_token += 1;
                    waiters.insert(token, Waiter::Read(reply));
                    reads.push(token);
                }
                Input::Step(message) => {
                    if let Err(e) = replica.step(*message) {
                        tracing::debug!("dropped a raft message: {e}");
                    }
                }
                Input::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            next = rx.try_recv().ok();
        }
        let now_ms = wall_clock_ms();
        if Instant::now() >= next_tick {
            replica.tick(now_ms, &mut out);
            next_tick += tick;
            if next_tick < Instant::now() {
                next_tick = Instant::now() + tick;
            }
        }
        if !commands.is_empty() {
            replica.propose(now_ms, commands, &mut out);
        }
        replica.read(reads, &mut out);
        if let Err(fatal) = replica.advance(&mut out) {
            stop_fatal(&fatal.to_string());
        }
        deliver(&mut out, &mut waiters, &mut transport);
        publish(&replica, &status_tx);
        if shutdown {
            // Callers still waiting get an error, never a hang.
            for (_, waiter) in waiters.drain() {
                match waiter {
                    Waiter::Command(reply) => {
                        let _ = reply.send(Err(ProposeError::Unknown));
                    }
                    Waiter::Read(reply) => {
                        let _ = reply.send(Err(ReadError::NoLeader));
                    }
                }
            }
            tracing::info!("replication thread stopped");
            return;
        }
    }
}

fn deliver<T: Transport>(
    out: &mut Output,
    waiters: &mut HashMap<Token, Waiter>,
    transport: &mut T,
) {
    for (token, answer) in out.answers.drain(..) {
        if let Some(Waiter::Command(reply)) = waiters.remove(&token) {
            // The caller may have given up (deadline); that is fine.
            let _ = reply.send(answer);
        }
    }
    for (token, answer) in out.reads.drain(..) {
        if let Some(Waiter::Read(reply)) = waiters.remove(&token) {
            let _ = reply.send(answer);
        }
    }
    if !out.messages.is_empty() {
        transport.send(std::mem::take(&mut out.messages));
    }
}

fn publish<S: LogStore>(replica: &Replica<S>, status_tx: &watch::Sender<ReplicaStatus>) {
    let status = replica.status();
    status_tx.send_if_modified(|current| {
        if *current == status {
            return false;
        }
        *current = status;
        true
    });
}

/// Stops the process: the replica's durable state may be inconsistent with
/// what it has in memory, so serving on would risk lost or doubled writes.
fn stop_fatal(reason: &str) -> ! {
    tracing::error!("fatal: {reason}; stopping the node");
    eprintln!("stockraft: fatal: {reason}; stopping the node");
    std::process::abort();
}
