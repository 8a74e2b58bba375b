//! [`NodeHandle`]: how gRPC handlers and the transport reach the
//! replication thread.
//!
//! Client requests go through a bounded queue whose bound counts commands
//! (a group carries many): a full queue is answered at once, so memory
//! never grows without bound. Peer messages go through a queue of their
//! own, so client load never delays heartbeats or votes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam_channel::{Sender, TrySendError};
use raft::eraftpb::Message;
use tokio::sync::{oneshot, watch};

use super::{ClientInput, GroupAnswer, GroupReply, MembersView, PeerInput, Refused, SubmitError};
use crate::inventory::{Applied, Command, Shared};
use crate::replica::{MembershipAnswer, MembershipChange, ReplicaStatus};

/// A cheap, cloneable handle to the replication thread.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) tx: Sender<ClientInput>,
    pub(super) peer_tx: Sender<PeerInput>,
    pub(super) shared: Arc<ArcSwap<Shared>>,
    pub(super) members: Arc<ArcSwap<MembersView>>,
    pub(super) status: watch::Receiver<ReplicaStatus>,
    pub(super) startup_commit_index: u64,
    /// Commands handed to the thread and not yet taken into a batch: the
    /// queue's bound counts commands, as a group carries many.
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) queued_max: usize,
    /// One state digest at a time (see [`NodeHandle::digest`]).
    pub(super) digests: Arc<tokio::sync::Semaphore>,
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
    /// ([`crate::replica::Replica::note_removed`]). Returns once the
    /// node's status says so: a call that comes after is refused as to a
    /// removed node, never served.
    pub async fn note_removed(&self) -> Result<(), SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(ClientInput::NoteRemoved { reply })?;
        answer.await.map_err(|_| SubmitError::Stopped)
    }

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
