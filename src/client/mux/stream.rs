//! One long-lived `Stream` call and the operations in flight on it.
//!
//! A task owns the call: it gives each operation the next id, sends it,
//! and hands each answer (they come in completion order) to the caller
//! whose id it carries. An operation holds a slot of the stream's bound
//! and its reservation's turn until it is answered, so neither is given
//! back by a caller that stopped waiting. When the call ends, every
//! operation still in flight fails UNAVAILABLE: it may or may not have
//! been applied, and is retried safely with the same id.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::ordering::Turn;
use crate::client::{operation, Authed};
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_client::InventoryClient;
use pb::stream_request::Op;
use pb::stream_response::Result as R;

/// What the caller of one operation receives.
pub type Reply = Result<R, Status>;

/// One operation handed to the stream's task.
struct Submission {
    op: Op,
    reply: oneshot::Sender<Reply>,
    /// Held until the answer: the stream's bound and the reservation's turn.
    slot: OwnedSemaphorePermit,
    turn: Option<Turn>,
}

/// An operation sent and not yet answered.
struct InFlight {
    reply: oneshot::Sender<Reply>,
    _slot: OwnedSemaphorePermit,
    _turn: Option<Turn>,
}

/// A handle on one open stream (cheap to clone: its task holds the call).
#[derive(Clone)]
pub struct OpenStream {
    submissions: mpsc::Sender<Submission>,
    slots: Arc<Semaphore>,
}

impl OpenStream {
    /// Opens a stream on `client`; fails as the call does (UNIMPLEMENTED
    /// from a server without it, UNAVAILABLE when it cannot be reached).
    pub async fn open(
        mut client: InventoryClient<Authed>,
        in_flight_max: usize,
    ) -> Result<OpenStream, Status> {
        let (requests_tx, requests_rx) = mpsc::channel(in_flight_max);
        let responses = client
            .stream(ReceiverStream::new(requests_rx))
            .await?
            .into_inner();
        let (submissions, submitted) = mpsc::channel(in_flight_max);
        tokio::spawn(run(submitted, requests_tx, responses));
        Ok(OpenStream {
            submissions,
            slots: Arc::new(Semaphore::new(in_flight_max)),
        })
    }

    /// Whether the call has ended (a new stream is needed).
    pub fn is_closed(&self) -> bool {
        self.submissions.is_closed()
    }

    /// Sends `op` once a slot is free; the receiver gets its answer.
    pub async fn submit(
        &self,
        op: Op,
        turn: Option<Turn>,
    ) -> Result<oneshot::Receiver<Reply>, Status> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| broken("the stream closed"))?;
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            op,
            reply,
            slot,
            turn,
        };
        self.submissions
            .send(submission)
            .await
            .map_err(|_| broken("the stream closed"))?;
        Ok(answer)
    }
}

/// The stream's task: sends what is submitted, answers what comes back,
/// and fails what is left when the call ends.
async fn run(
    mut submitted: mpsc::Receiver<Submission>,
    requests: mpsc::Sender<pb::StreamRequest>,
    mut responses: tonic::Streaming<pb::StreamResponse>,
) {
    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    let mut next_id: u64 = 0;
    let ended = loop {
        tokio::select! {
            submission = submitted.recv() => {
                let Some(s) = submission else { break broken("the client closed the stream") };
                next_id += 1;
                let request = pb::StreamRequest { id: next_id, op: Some(s.op) };
                in_flight.insert(next_id, InFlight { reply: s.reply, _slot: s.slot, _turn: s.turn });
                if requests.send(request).await.is_err() {
                    break broken("the stream stopped taking requests");
                }
            }
            response = responses.message() => match response {
                Ok(Some(answer)) => deliver(&mut in_flight, answer),
                Ok(None) => break broken("the server ended the stream"),
                Err(status) => break broken(&format!("{}: {}", status.code(), status.message())),
            }
        }
    };
    submitted.close();
    for (_, op) in in_flight.drain() {
        let _ = op.reply.send(Err(ended.clone()));
    }
    while let Some(s) = submitted.recv().await {
        let _ = s.reply.send(Err(ended.clone()));
    }
}

/// Hands an answer to its caller; a caller that gave up has dropped its
/// receiver, and the answer is dropped with it.
fn deliver(in_flight: &mut HashMap<u64, InFlight>, response: pb::StreamResponse) {
    let Some(op) = in_flight.remove(&response.id) else {
        return;
    };
    let _ = op.reply.send(operation::answer(response));
}

/// An operation whose stream ended before its answer: applied or not, it
/// is retried safely with the same id.
fn broken(why: &str) -> Status {
    let message = format!(
        "the stream ended before the answer ({why}); the operation may or may not have been applied: retry it with the same id"
    );
    let details = tonic_types::ErrorDetails::with_error_info(
        "STREAM_BROKEN",
        crate::server::status::DOMAIN,
        std::collections::HashMap::new(),
    );
    <Status as tonic_types::StatusExt>::with_error_details(Code::Unavailable, message, details)
}
