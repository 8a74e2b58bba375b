//! One connection of the load harness: unary calls, or one bidirectional
//! `Stream` call carrying many operations matched by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::proto::v1 as pb;
use crate::proto::v1::inventory_client::InventoryClient;
use pb::stream_request::Op;
use pb::stream_response::Result as R;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<pb::StreamResponse>>>>;

/// Operations in flight on one stream, sent in order, answered by id.
pub struct StreamConn {
    tx: mpsc::Sender<pb::StreamRequest>,
    pending: Pending,
    next_id: AtomicU64,
    timeout: Duration,
}

impl StreamConn {
    pub async fn open(channel: Channel, timeout: Duration) -> Result<StreamConn, Status> {
        let (tx, rx) = mpsc::channel::<pb::StreamRequest>(1_024);
        let mut client = InventoryClient::new(channel);
        let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let demux = pending.clone();
        tokio::spawn(async move {
            while let Ok(Some(response)) = inbound.message().await {
                let waiter = demux.lock().ok().and_then(|mut p| p.remove(&response.id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(response);
                }
            }
            // The stream ended: every waiter left gets an error (dropped sender).
            if let Ok(mut p) = demux.lock() {
                p.clear();
            }
        });
        Ok(StreamConn {
            tx,
            pending,
            next_id: AtomicU64::new(1),
            timeout,
        })
    }

    async fn call(&self, op: Op) -> Result<R, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, reply);
        }
        let request = pb::StreamRequest { id, op: Some(op) };
        if self.tx.send(request).await.is_err() {
            return Err(Status::unavailable("the stream to the server closed"));
        }
        let response = match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => return Err(Status::unavailable("the stream to the server closed")),
            Err(_) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.remove(&id);
                }
                return Err(Status::deadline_exceeded("no answer on the stream in time"));
            }
        };
        match response.result {
            Some(R::Error(e)) => Err(Status::new(Code::from_i32(e.code), e.message)),
            Some(result) => Ok(result),
            None => Err(Status::internal("empty stream response")),
        }
    }
}

/// A connection to one server.
pub enum Conn {
    Unary(InventoryClient<Channel>),
    Stream(StreamConn),
}

fn mismatch() -> Status {
    Status::internal("the stream answered a different operation")
}

macro_rules! call {
    ($name:ident, $req:ty, $resp:ty, $op:ident) => {
        pub async fn $name(&self, request: $req) -> Result<$resp, Status> {
            match self {
                Conn::Unary(client) => {
                    let mut client = client.clone();
                    client.$name(request).await.map(|r| r.into_inner())
                }
                Conn::Stream(stream) => match stream.call(Op::$op(request)).await? {
                    R::$op(response) => Ok(response),
                    _ => Err(mismatch()),
                },
            }
        }
    };
}

impl Conn {
    call!(reserve, pb::ReserveRequest, pb::ReserveResponse, Reserve);
    call!(commit, pb::CommitRequest, pb::CommitResponse, Commit);
    call!(release, pb::ReleaseRequest, pb::ReleaseResponse, Release);
    call!(sell, pb::SellRequest, pb::SellResponse, Sell);
    call!(adjust, pb::AdjustRequest, pb::AdjustResponse, Adjust);
    call!(
        set_on_hand,
        pb::SetOnHandRequest,
        pb::SetOnHandResponse,
        SetOnHand
    );
    call!(
        get_availability,
        pb::GetAvailabilityRequest,
        pb::GetAvailabilityResponse,
        GetAvailability
    );
}
