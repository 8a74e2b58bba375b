//! What the replica answers when it cannot do what it was asked: a
//! proposal or read refused or left unconfirmed, a peer message dropped,
//! or an error that stops the node.

use thiserror::Error;

use super::admission;
use super::log_store::StoreError;
use super::wire;
use crate::inventory::codec::DecodeError;
use crate::inventory::snapshot::SnapshotError;
use crate::inventory::Command;

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
    /// majority's (see [`clock`](super::clock)): it stamps nothing meanwhile.
    #[error("the leader's clock is not confirmed within --max-clock-offset of a majority of members; retry shortly")]
    ClockUnconfirmed,
    /// A leader asked to remove itself: leadership must move to another
    /// voter first ([`Replica::hand_over_leadership`](super::Replica::hand_over_leadership)), and the removal be
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
/// every command they propose. Only a command whose batch was already
/// applied is not handed back (the state machine always answers those),
/// nor one still waiting when the server's node stops
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
