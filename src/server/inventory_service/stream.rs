//! The `Stream` session: many operations on one HTTP/2 stream, read in
//! turns, their writes handed to the replication thread a group at a time.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tonic::Status;

use super::convert::op_of;
use super::stream_op::{run_stream_op, stream_error, stream_step, Shape, Step};
use super::InventoryService;
use crate::chunked::{ready_now, ChunkSender};
use crate::inventory::Command;
use crate::limits::STREAM_IN_FLIGHT_MAX;
use crate::proto::v1 as pb;
use crate::replica::Unanswered;
use crate::server::node::{GroupAnswer, GroupReply, SubmitError};
use crate::server::status;

/// A write of a group in flight: what its answer needs, without the
/// operation itself (its command went to the replication thread).
struct GroupOp {
    id: u64,
    shape: Shape,
}

/// Where a session's answers go: a group's answers at a time (see
/// [`crate::chunked`]), at most [`STREAM_IN_FLIGHT_MAX`] waiting unsent.
type Outbound = ChunkSender<Result<pb::StreamResponse, Status>>;

/// What the turns of one session share.
struct Session {
    service: InventoryService,
    /// Operations in flight: each holds a permit until it is answered.
    permits: Arc<Semaphore>,
    tx: Outbound,
    /// Where the replication thread sends each group's answers.
    answers_tx: mpsc::UnboundedSender<GroupAnswer>,
    /// Groups in flight: their operations, in the order of their commands.
    groups: HashMap<u64, Vec<GroupOp>>,
    next_group: u64,
}

/// The messages one turn took from the client.
struct Received {
    requests: Vec<pb::StreamRequest>,
    /// False once the client closed its side.
    reading: bool,
}

/// One `Stream` call, until the client closes its side and every
/// operation is answered. A turn:
///
/// 1. Wait for a message (while fewer than [`STREAM_IN_FLIGHT_MAX`]
///    operations are in flight; beyond that the stream is not read, which
///    pushes back on the client) or for a group's answers.
/// 2. Take every further message already received, up to the bound.
/// 3. Answer what can be answered at once; hand the writes to the
///    replication thread as one group; start the rest alone.
/// 4. When a group's answers come back, send each response; a write whose
///    proposal failed (leadership changed) is retried alone, as a unary call
///    retries, with its id making that safe.
pub(super) async fn session(
    service: InventoryService,
    mut inbound: tonic::Streaming<pb::StreamRequest>,
    tx: Outbound,
) {
    let (answers_tx, mut answers_rx) = mpsc::unbounded_channel::<GroupAnswer>();
    let mut session = Session {
        service,
        permits: Arc::new(Semaphore::new(STREAM_IN_FLIGHT_MAX)),
        tx,
        answers_tx,
        groups: HashMap::new(),
        next_group: 0,
    };
    // Waited on while the session holds no room, apart from the session
    // that the turns borrow.
    let permits = Arc::clone(&session.permits);
    let mut reading = true;
    while reading || !session.groups.is_empty() {
        let room = permits.available_permits();
        tokio::select! {
            biased;
            Some(answer) = answers_rx.recv() => {
                if !session.finish_group(answer).await {
                    return;
                }
            }
            first = inbound.message(), if reading && room > 0 => {
                let received = match receive(&mut inbound, first, room) {
                    Ok(received) => received,
                    Err(status) => {
                        let _ = session.tx.send_one(Err(status)).await;
                        return;
                    }
                };
                reading = received.reading;
                if received.requests.is_empty() {
                    continue;
                }
                if !session.start_group(received.requests).await {
                    return;
                }
            }
            // An operation running alone finished: there is room again.
            _ = permits.acquire(), if reading && room == 0 => {}
        }
    }
}

/// Turns 1 and 2 of [`session`]: the message waited for, then every
/// further one already received, up to `room`. The client's error, if it
/// sent one instead.
fn receive(
    inbound: &mut tonic::Streaming<pb::StreamRequest>,
    first: Result<Option<pb::StreamRequest>, Status>,
    room: usize,
) -> Result<Received, Status> {
    let mut received = Received {
        requests: Vec::new(),
        reading: true,
    };
    match first? {
        Some(request) => received.requests.push(request),
        None => received.reading = false,
    }
    while received.reading && received.requests.len() < room {
        match ready_now(inbound.message()) {
            Some(Ok(Some(request))) => received.requests.push(request),
            Some(Ok(None)) => received.reading = false,
            Some(Err(status)) => return Err(status),
            None => break,
        }
    }
    Ok(received)
}

impl Session {
    /// Turn 3 of [`session`]: sorts the received operations, then hands
    /// their writes to the replication thread as one group. False once the
    /// client is gone.
    async fn start_group(&mut self, received: Vec<pb::StreamRequest>) -> bool {
        let group = self.next_group;
        self.next_group += 1;
        let Some((ops, commands)) = self.sort(received).await else {
            return false;
        };
        if ops.is_empty() {
            return true;
        }
        let Ok(taken) = self.permits.try_acquire_many(ops.len() as u32) else {
            return false;
        };
        taken.forget();
        let reply = GroupReply {
            id: group,
            tx: self.answers_tx.clone(),
        };
        match self.service.node.submit_group(commands, reply) {
            Ok(()) => {
                self.groups.insert(group, ops);
                true
            }
            Err(e) => {
                self.permits.add_permits(ops.len());
                let refused = status::submit(e);
                let responses = ops
                    .into_iter()
                    .map(|op| {
                        Ok(pb::StreamResponse {
                            id: op.id,
                            result: Some(stream_error(refused.clone())),
                        })
                    })
                    .collect();
                self.tx.send(responses).await.is_ok()
            }
        }
    }

    /// Answers, starts alone, or collects into the group each received
    /// operation. Returns the group's operations and commands, or None once
    /// the client is gone.
    async fn sort(&self, received: Vec<pb::StreamRequest>) -> Option<(Vec<GroupOp>, Vec<Command>)> {
        let node = self.service.node.status();
        let mut ops = Vec::with_capacity(received.len());
        let mut commands = Vec::with_capacity(received.len());
        let mut answered = Vec::new();
        for request in received {
            let id = request.id;
            let step = if node.removed {
                // Not even a LOCAL read: the state stopped at the removal.
                Step::Answered(stream_error(status::removed()))
            } else {
                stream_step(&self.service, node.is_leader, request.op)
            };
            match step {
                Step::Answered(result) => answered.push(Ok(pb::StreamResponse {
                    id,
                    result: Some(result),
                })),
                Step::Write(command, shape) => {
                    ops.push(GroupOp { id, shape });
                    commands.push(command);
                }
                Step::Alone(op) => self.alone(pb::StreamRequest { id, op })?,
            }
        }
        self.tx.send(answered).await.ok()?;
        Some((ops, commands))
    }

    /// Runs one operation of a stream alone, holding one of its permits.
    fn alone(&self, request: pb::StreamRequest) -> Option<()> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let service = self.service.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let response = run_stream_op(service, request).await;
            let _ = tx.send_one(Ok(response)).await;
            drop(permit);
        });
        Some(())
    }

    /// Turn 4 of [`session`]: frees a group's permits and sends its
    /// responses. False once the client is gone.
    async fn finish_group(&mut self, answer: GroupAnswer) -> bool {
        let Some(ops) = self.groups.remove(&answer.id) else {
            return true;
        };
        self.permits.add_permits(ops.len());
        if answer.answers.len() != ops.len() {
            tracing::error!(
                ops = ops.len(),
                answers = answer.answers.len(),
                "a group's answers do not match its operations"
            );
        }
        let mut answers = answer.answers.into_iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let result = match answers.next() {
                Some(Ok(applied)) => (op.shape)(&self.service.meters, applied),
                // Leadership changed under the proposal, or this node stopped
                // leading: retry alone, as the unary call would, with the
                // operation rebuilt from the command handed back (the same
                // command again: see `request_of`).
                Some(Err(Unanswered {
                    command: Some(command),
                    ..
                })) => {
                    let request = pb::StreamRequest {
                        id: op.id,
                        op: Some(op_of(&command)),
                    };
                    if self.alone(request).is_none() {
                        return false;
                    }
                    continue;
                }
                // Only at shutdown (`ProposeError::ShuttingDown`): the command
                // stayed behind with the node.
                Some(Err(Unanswered {
                    error,
                    command: None,
                })) => stream_error(status::submit(SubmitError::Propose(error))),
                None => stream_error(status::internal("an operation of the stream got no answer")),
            };
            responses.push(Ok(pb::StreamResponse {
                id: op.id,
                result: Some(result),
            }));
        }
        self.tx.send(responses).await.is_ok()
    }
}
