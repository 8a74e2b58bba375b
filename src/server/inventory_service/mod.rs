//! The public `stockraft.v1.Inventory` service: a thin adapter.
//!
//! Each unary call: validate and convert the protobuf request into a
//! command (INVALID_ARGUMENT on bad input), hand it to the replication
//! thread, wait until it is committed and applied, and convert the answer
//! back, mapping typed errors to status codes in [`super::status`]. Reads go
//! straight to the shared state, after a ReadIndex barrier when
//! linearizable.
//!
//! The `Stream` call carries many operations on one HTTP/2 stream. Its
//! session (`stream.rs`) reads every operation that has already
//! arrived, hands all of their writes to the replication thread as one
//! group, and answers them together when the group's answers come back:
//! one hand-over and one wake-up per group instead of per operation, which
//! is what lets a stream carry several times the operations of unary calls
//! on the same cores. LOCAL reads are answered on the spot. Anything the
//! group cannot do (a linearizable read, a write on a follower, a write
//! whose proposal failed and must be retried or forwarded) runs alone
//! exactly as the unary call would.
//!
//! The files, one concept each:
//!
//! - `mod.rs`: the service and the tonic trait impl, each method routed to
//!   the write or read path.
//! - `convert.rs`: requests validated into commands, and commands rebuilt
//!   into the requests a node that stopped leading forwards.
//! - `answer.rs`: applied answers to responses, outcomes counted.
//! - `write.rs`: the write path: propose on the leader, forward from a
//!   follower, retry while leadership is unsettled.
//! - `read.rs`: the read path: checks, the ReadIndex barrier, answers from
//!   the applied state.
//! - `stream.rs`: the `Stream` session, turn by turn.
//! - `stream_op.rs`: what one operation of a stream turns into.
//! - `meters.rs`: the per-call metric handles, registered once.

mod answer;
mod convert;
mod meters;
mod read;
mod stream;
mod stream_op;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::metadata::AsciiMetadataValue;
use tonic::{Code, Request, Response, Status};

use super::forward::Forwarder;
use super::node::NodeHandle;
use super::status;
use crate::chunked::{chunked, Chunked};
use crate::inventory::command::check_id;
use crate::limits::STREAM_IN_FLIGHT_MAX;
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_server::Inventory;
use answer::{
    adjust_answer, commit_answer, extend_answer, release_answer, reserve_answer, sell_answer,
    set_on_hand_answer, set_safety_stock_answer,
};
// The gRPC layer's validation of requests, public for the fuzz targets.
pub use convert::{
    adjust_command, commit_command, extend_command, release_command, reserve_command, sell_command,
    set_on_hand_command, set_safety_stock_command,
};
use meters::{Meters, Method};
pub use read::checked_availability_request;

/// Reservation settings applied where requests enter.
#[derive(Debug, Clone, Copy)]
pub struct ApiConfig {
    pub ttl_ms_default: u64,
    pub ttl_ms_max: u64,
}

/// The `stockraft.v1.Inventory` service. Cheap to clone: a `Stream`
/// session runs on its own copy.
#[derive(Clone)]
pub struct InventoryService {
    node: NodeHandle,
    api: ApiConfig,
    forwarder: Arc<Forwarder>,
    meters: Arc<Meters>,
    /// In a `Stream` session's copy: the caller's token, for the
    /// operations it runs alone (and may forward).
    session_token: Option<AsciiMetadataValue>,
}

impl InventoryService {
    pub fn new(node: NodeHandle, api: ApiConfig, forwarder: Arc<Forwarder>) -> InventoryService {
        InventoryService {
            node,
            api,
            forwarder,
            meters: Arc::new(Meters::new()),
            session_token: None,
        }
    }

    /// Records a call's status code and latency.
    async fn observed<T>(
        &self,
        method: Method,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = call.await;
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        self.meters.call(method, code, started);
        result.map(Response::new)
    }
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    type StreamStream = Chunked<Result<pb::StreamResponse, Status>>;

    async fn stream(
        &self,
        request: Request<tonic::Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut service = self.clone();
        service.session_token = request
            .metadata()
            .get(crate::server::forward::AUTHORIZATION)
            .cloned();
        let inbound = request.into_inner();
        // Room for every operation in flight: answering never waits on the
        // client unless it stops reading.
        let (tx, rx) = chunked(Some(STREAM_IN_FLIGHT_MAX));
        tokio::spawn(stream::session(service, inbound, tx));
        Ok(Response::new(rx))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let api = self.api;
        self.observed(
            Method::Reserve,
            self.write(
                request,
                |r| reserve_command(api, r),
                |applied| reserve_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.reserve(call).await }),
            ),
        )
        .await
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        self.observed(
            Method::Commit,
            self.write(
                request,
                commit_command,
                |applied| commit_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.commit(call).await }),
            ),
        )
        .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.observed(
            Method::Release,
            self.write(
                request,
                release_command,
                |applied| release_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.release(call).await }),
            ),
        )
        .await
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        let api = self.api;
        self.observed(
            Method::Extend,
            self.write(
                request,
                |r| extend_command(api, r),
                |applied| extend_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.extend(call).await }),
            ),
        )
        .await
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        self.observed(Method::GetReservation, async {
            let r = request.into_inner();
            check_id("reservation_id", &r.reservation_id).map_err(status::invalid)?;
            self.barrier(r.consistency).await?;
            Ok(self.read_reservation(r.reservation_id))
        })
        .await
    }

    async fn sell(
        &self,
        request: Request<pb::SellRequest>,
    ) -> Result<Response<pb::SellResponse>, Status> {
        self.observed(
            Method::Sell,
            self.write(
                request,
                sell_command,
                |applied| sell_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.sell(call).await }),
            ),
        )
        .await
    }

    async fn adjust(
        &self,
        request: Request<pb::AdjustRequest>,
    ) -> Result<Response<pb::AdjustResponse>, Status> {
        self.observed(
            Method::Adjust,
            self.write(
                request,
                adjust_command,
                |applied| adjust_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.adjust(call).await }),
            ),
        )
        .await
    }

    async fn set_on_hand(
        &self,
        request: Request<pb::SetOnHandRequest>,
    ) -> Result<Response<pb::SetOnHandResponse>, Status> {
        self.observed(
            Method::SetOnHand,
            self.write(
                request,
                set_on_hand_command,
                |applied| set_on_hand_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.set_on_hand(call).await }),
            ),
        )
        .await
    }

    async fn set_safety_stock(
        &self,
        request: Request<pb::SetSafetyStockRequest>,
    ) -> Result<Response<pb::SetSafetyStockResponse>, Status> {
        self.observed(
            Method::SetSafetyStock,
            self.write(
                request,
                set_safety_stock_command,
                |applied| set_safety_stock_answer(&self.meters, applied),
                |mut leader, call| Box::pin(async move { leader.set_safety_stock(call).await }),
            ),
        )
        .await
    }

    async fn get_availability(
        &self,
        request: Request<pb::GetAvailabilityRequest>,
    ) -> Result<Response<pb::GetAvailabilityResponse>, Status> {
        self.observed(Method::GetAvailability, async {
            let mut r = request.into_inner();
            checked_availability_request(&mut r)?;
            self.barrier(r.consistency).await?;
            self.read_availability(&r)
        })
        .await
    }
}
