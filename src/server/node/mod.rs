//! The replication thread: the I/O shell around the sans-IO [`Replica`].
//!
//! One OS thread, `replica`, owns the replica. gRPC handlers reach it
//! through a bounded channel; each request carries a oneshot sender for
//! its answer. Messages from peers come through a second channel, so a
//! flood of client requests never delays heartbeats and votes. A second
//! thread, `sync`, fsyncs the log behind it, so the replication thread
//! never waits on the disk. The order of the writes and fsyncs is in
//! ARCHITECTURE.md, "Every write and fsync, in order".
//!
//! - `handle.rs`: [`NodeHandle`], the bounded queues callers use.
//! - `start.rs`: [`Node`], starting the threads and stopping them.
//! - `run.rs`: the loop, a turn at a time: group commit, the gate that
//!   holds proposals while writes await their sync, ticks, shutdown.
//! - `answers.rs`: callers waiting by token, groups gathering their
//!   answers, and the task that relays them to the runtime.
//! - `sync.rs`: the sync thread, and the loop's record of what it asked
//!   for and what landed.
//! - `snapshot.rs`: a frozen snapshot handed to its threads, and back.
//!
//! A fatal error (a failed write or fsync, a damaged entry) is logged and
//! the process aborts: it never continues with state it cannot trust.
//!
//! [`Replica`]: crate::replica::Replica

mod answers;
mod handle;
mod run;
mod snapshot;
mod start;
mod sync;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use raft::eraftpb::{ConfState, Message};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::inventory::{Applied, Command};
use crate::replica::clock::PeerClocks;
use crate::replica::{
    ClusterId, Members, MembershipAnswer, MembershipChange, ProposeError, ReadError, Unanswered,
};

pub use handle::NodeHandle;
pub use start::Node;

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
    NoteRemoved {
        /// Answered once the status says so.
        reply: oneshot::Sender<()>,
    },
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

/// Settings of the replication thread.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub tick_ms: u64,
    /// Wait for replay of the log up to here before reporting ready.
    pub startup_commit_index: u64,
    /// Most requests queued for the thread; beyond it callers are told
    /// RESOURCE_EXHAUSTED. At most
    /// [`QUEUE_REQUESTS_MAX`](crate::limits::QUEUE_REQUESTS_MAX).
    pub queue_max: usize,
    /// Fellow members' clocks as the peer transport measures them, and
    /// the bound a leader's must keep to (see `replica::clock`); None
    /// checks nothing (a node with no peers, tests).
    pub clocks: Option<(Arc<std::sync::Mutex<PeerClocks>>, u64)>,
}

pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Stops the process: the replica's durable state may be inconsistent with
/// what it has in memory, so serving on would risk lost or doubled writes.
fn stop_fatal(reason: &str) -> ! {
    tracing::error!("fatal: {reason}; stopping the node");
    eprintln!("stockraft: fatal: {reason}; stopping the node");
    std::process::abort();
}
