//! One call per operation for the application, a few `Stream` calls on
//! the wire.
//!
//! A unary call costs the server about eight times the CPU of the same
//! operation sent inside a `Stream` (each call is an HTTP/2 stream of its
//! own, with headers, trailers and a task). Most applications are written
//! one call at a time, from many tasks. [`Multiplexed`] gives them the
//! same methods as the generated client (`reserve`, `commit`, ...), one
//! awaited call per operation with its own deadline, and carries the
//! operations of every caller over a few long-lived streams to the leader:
//!
//! - each operation gets an id on its stream, and its answer (answers come
//!   in completion order) goes back to its caller; a `StreamError` becomes
//!   the Status the unary call would have returned, details included;
//! - operations on one reservation are sent one at a time, in the order
//!   called (see `ordering.rs`), as a unary caller's would be;
//! - a caller whose deadline passes gets DEADLINE_EXCEEDED at once; its
//!   answer, when it comes, is dropped;
//! - at most `in_flight_per_stream` operations are in flight on a stream
//!   (the server stops reading one past 1,024);
//! - a stream that ends fails its operations in flight with UNAVAILABLE
//!   (retry with the same id: applied at most once), and the next
//!   operation finds the leader again, through the health service;
//! - a server that does not serve `Stream` (UNIMPLEMENTED) is called with
//!   unary calls instead, transparently.

mod ordering;
mod stream;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tonic::{Code, Status};

use crate::client::{operation, Authed};
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_client::InventoryClient;
use ordering::Gates;
use pb::stream_request::Op;
use pb::stream_response::Result as R;
use stream::{OpenStream, Reply};

/// How many streams, and how much on each.
#[derive(Debug, Clone, Copy)]
pub struct MuxConfig {
    /// Streams to the leader; two keep both server cores reading.
    pub streams: usize,
    /// Operations in flight on one stream, at most (below the server's
    /// 1,024, so it never stops reading).
    pub in_flight_per_stream: usize,
}

impl Default for MuxConfig {
    fn default() -> MuxConfig {
        MuxConfig {
            streams: 2,
            in_flight_per_stream: 512,
        }
    }
}

/// The health entry only the leader reports SERVING.
const LEADER_HEALTH: &str = "stockraft.v1.Leader";

/// Operations of many callers over a few streams to the cluster's leader.
pub struct Multiplexed {
    /// One channel per member, in the order given.
    members: Vec<Authed>,
    /// The member called now: the leader, as last found.
    target: AtomicUsize,
    streams: Vec<Mutex<Option<OpenStream>>>,
    next_stream: AtomicUsize,
    gates: Arc<Gates>,
    /// Set once the server answered UNIMPLEMENTED to `Stream`.
    unary_only: AtomicBool,
    config: MuxConfig,
}

impl Multiplexed {
    /// A multiplexer over `members` (channels to the cluster's members;
    /// one is enough, a follower forwards to the leader). Nothing is
    /// opened before the first operation.
    pub fn new(members: Vec<Authed>, config: MuxConfig) -> Multiplexed {
        let streams = (0..config.streams.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        Multiplexed {
            members,
            target: AtomicUsize::new(0),
            streams,
            next_stream: AtomicUsize::new(0),
            gates: Arc::new(Gates::default()),
            unary_only: AtomicBool::new(false),
            config,
        }
    }

    /// Whether operations go as unary calls (the server lacks `Stream`).
    pub fn is_unary(&self) -> bool {
        self.unary_only.load(Ordering::Relaxed)
    }

    /// Runs one operation within `deadline`: its turn on its reservation,
    /// a slot on a stream, and its answer, all count.
    pub async fn call(&self, op: Op, deadline: Duration) -> Reply {
        match tokio::time::timeout(deadline, self.call_within(op, deadline)).await {
            Ok(reply) => reply,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {deadline:?}; the operation may or may not have been applied: retry it with the same id"
            ))),
        }
    }

    async fn call_within(&self, op: Op, deadline: Duration) -> Reply {
        let turn = match reservation_of(&op) {
            Some(id) => Some(self.gates.turn(id).await),
            None => None,
        };
        if self.is_unary() {
            return self.unary(op, deadline).await;
        }
        let open = match self.stream().await {
            Ok(open) => open,
            Err(status) if status.code() == Code::Unimplemented => {
                self.unary_only.store(true, Ordering::Relaxed);
                return self.unary(op, deadline).await;
            }
            Err(status) => return Err(status),
        };
        match open.submit(op, turn).await?.await {
            Ok(reply) => reply,
            Err(_) => Err(Status::unavailable(
                "the stream ended before the answer; retry with the same id",
            )),
        }
    }

    /// The next stream in turn, opened (again) when it is not open.
    async fn stream(&self) -> Result<OpenStream, Status> {
        let index = self.next_stream.fetch_add(1, Ordering::Relaxed) % self.streams.len();
        let mut slot = self.streams[index].lock().await;
        if let Some(open) = slot.as_ref().filter(|open| !open.is_closed()) {
            return Ok(open.clone());
        }
        let open = self.open().await?;
        *slot = Some(open.clone());
        Ok(open)
    }

    /// Opens a stream to the leader: found through the health service when
    /// there are several members (it may have moved since the last stream
    /// ended), else the member called last, else the next one.
    async fn open(&self) -> Result<OpenStream, Status> {
        if self.members.len() > 1 {
            if let Some(leader) = self.find_leader().await {
                self.target.store(leader, Ordering::Relaxed);
            }
        }
        let first = self.target.load(Ordering::Relaxed);
        let opened = self.open_on(first).await;
        if opened.is_ok() || self.members.len() <= 1 {
            return opened;
        }
        let next = (first + 1) % self.members.len();
        self.target.store(next, Ordering::Relaxed);
        self.open_on(next).await
    }

    async fn open_on(&self, member: usize) -> Result<OpenStream, Status> {
        let Some(channel) = self.members.get(member) else {
            return Err(no_members());
        };
        let client = InventoryClient::new(channel.clone());
        OpenStream::open(client, self.config.in_flight_per_stream).await
    }

    /// The member whose health says it leads, if one does.
    async fn find_leader(&self) -> Option<usize> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        for (index, member) in self.members.iter().enumerate() {
            let asked = HealthClient::new(member.clone())
                .check(tonic_health::pb::HealthCheckRequest {
                    service: LEADER_HEALTH.into(),
                })
                .await;
            if let Ok(answer) = asked {
                if answer.into_inner().status == ServingStatus::Serving as i32 {
                    return Some(index);
                }
            }
        }
        None
    }

    /// The operation as its unary call (no `Stream` on the server); after
    /// UNAVAILABLE the leader is found again for the next one.
    async fn unary(&self, op: Op, deadline: Duration) -> Reply {
        let Some(member) = self.members.get(self.target.load(Ordering::Relaxed)) else {
            return Err(no_members());
        };
        let mut client = InventoryClient::new(member.clone());
        let result = operation::unary(&mut client, op, Some(deadline)).await;
        let unavailable = result
            .as_ref()
            .is_err_and(|s| s.code() == Code::Unavailable);
        if unavailable && self.members.len() > 1 {
            if let Some(leader) = self.find_leader().await {
                self.target.store(leader, Ordering::Relaxed);
            }
        }
        result
    }
}

/// A multiplexer given no member to call.
fn no_members() -> Status {
    Status::failed_precondition("the multiplexer was given no member to call")
}

/// The reservation an operation acts on, whose operations keep their order.
fn reservation_of(op: &Op) -> Option<&str> {
    match op {
        Op::Reserve(r) => Some(&r.reservation_id),
        Op::Commit(r) => Some(&r.reservation_id),
        Op::Release(r) => Some(&r.reservation_id),
        Op::Extend(r) => Some(&r.reservation_id),
        Op::GetReservation(r) => Some(&r.reservation_id),
        _ => None,
    }
}

/// An answer of the wrong kind: a server bug, never input.
fn mismatch(result: R) -> Status {
    Status::internal(format!("an answer of another call: {result:?}"))
}

/// A typed method: one awaited call per operation, as the generated
/// client has it.
macro_rules! typed {
    ($name:ident, $request:ty, $response:ty, $kind:ident) => {
        pub async fn $name(
            &self,
            request: $request,
            deadline: Duration,
        ) -> Result<$response, Status> {
            match self.call(Op::$kind(request), deadline).await? {
                R::$kind(answer) => Ok(answer),
                other => Err(mismatch(other)),
            }
        }
    };
}

impl Multiplexed {
    typed!(reserve, pb::ReserveRequest, pb::ReserveResponse, Reserve);
    typed!(commit, pb::CommitRequest, pb::CommitResponse, Commit);
    typed!(release, pb::ReleaseRequest, pb::ReleaseResponse, Release);
    typed!(extend, pb::ExtendRequest, pb::ExtendResponse, Extend);
    typed!(
        get_reservation,
        pb::GetReservationRequest,
        pb::GetReservationResponse,
        GetReservation
    );
    typed!(sell, pb::SellRequest, pb::SellResponse, Sell);
    typed!(adjust, pb::AdjustRequest, pb::AdjustResponse, Adjust);
    typed!(
        set_on_hand,
        pb::SetOnHandRequest,
        pb::SetOnHandResponse,
        SetOnHand
    );
    typed!(
        set_safety_stock,
        pb::SetSafetyStockRequest,
        pb::SetSafetyStockResponse,
        SetSafetyStock
    );
    typed!(
        get_availability,
        pb::GetAvailabilityRequest,
        pb::GetAvailabilityResponse,
        GetAvailability
    );
}
