//! One connection of the load harness: unary calls, or one bidirectional
//! `Stream` call carrying many operations matched by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::mux::Multiplexed;
use crate::client::operation::{self, answer};
use crate::client::Authed;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::proto::v1 as pb;
use crate::proto::v1::inventory_client::InventoryClient;
use pb::stream_request::Op;
use pb::stream_response::Result as R;

/// Calls in flight on one stream, by id: where to send the answer, and
/// the sweep that was last when the call was sent (a sweep every
/// [`SWEEP_INTERVAL`] fails the calls that outlive the timeout: no timer
/// and no clock read per call).
#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, (oneshot::Sender<Result<R, Status>>, u64)>,
    /// Sweeps so far.
    sweeps: u64,
    /// The stream ended: new calls fail at once.
    closed: bool,
}

type Shared = Arc<Mutex<Pending>>;

/// How often the stream's calls are checked against their timeout.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Operations in flight on one stream, sent in order, answered by id.
pub struct StreamConn {
    tx: mpsc::Sender<pb::StreamRequest>,
    pending: Shared,
    next_id: AtomicU64,
    /// The connection the stream runs on, for more streams on it (the run's
    /// stream driver opens its own: `drive.rs`).
    channel: Authed,
}

impl StreamConn {
    pub async fn open(channel: Authed, timeout: Duration) -> Result<StreamConn, Status> {
        let (tx, rx) = mpsc::channel::<pb::StreamRequest>(1_024);
        let mut client = InventoryClient::new(channel.clone());
        let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        let pending: Shared = Arc::new(Mutex::new(Pending::default()));
        let demux = pending.clone();
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    next = inbound.message() => {
                        let Ok(Some(response)) = next else {
                            break;
                        };
                        let waiter = demux.lock().ok().and_then(|mut p| p.waiters.remove(&response.id));
                        if let Some((waiter, _)) = waiter {
                            let _ = waiter.send(answer(response));
                        }
                    }
                    _ = sweep.tick() => expire(&demux, timeout),
                }
            }
            // The stream ended: every waiter left gets an error.
            if let Ok(mut p) = demux.lock() {
                p.closed = true;
                for (_, (waiter, _)) in p.waiters.drain() {
                    let _ = waiter.send(Err(closed()));
                }
            }
        });
        Ok(StreamConn {
            tx,
            pending,
            next_id: AtomicU64::new(1),
            channel,
        })
    }

    async fn call(&self, op: Op) -> Result<R, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let Ok(mut pending) = self.pending.lock() else {
                return Err(closed());
            };
            if pending.closed {
                return Err(closed());
            }
            let sweeps = pending.sweeps;
            pending.waiters.insert(id, (reply, sweeps));
        }
        let request = pb::StreamRequest { id, op: Some(op) };
        if self.tx.send(request).await.is_err() {
            return Err(closed());
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(closed()),
        }
    }
}

fn closed() -> Status {
    Status::unavailable("the stream to the server closed")
}

/// Sweeps a call must outlive to be sure it is `timeout` old: one more
/// than the timeout's length in sweeps, as a call can be sent just before
/// a sweep. Sweeps run late under load, never early, so a call fails at
/// `timeout` or a little after.
pub fn sweeps_to_expire(timeout: Duration) -> u64 {
    let interval_us = SWEEP_INTERVAL.as_micros().max(1);
    let sweeps = timeout.as_micros().div_ceil(interval_us);
    u64::try_from(sweeps).unwrap_or(u64::MAX).saturating_add(1)
}

/// One sweep: fails the calls sent more than `timeout` ago.
fn expire(pending: &Shared, timeout: Duration) {
    let Ok(mut p) = pending.lock() else {
        return;
    };
    p.sweeps += 1;
    let now = p.sweeps;
    let age_max = sweeps_to_expire(timeout);
    let late: Vec<u64> = p
        .waiters
        .iter()
        .filter(|(_, (_, sent))| now.saturating_sub(*sent) >= age_max)
        .map(|(id, _)| *id)
        .collect();
    for id in late {
        if let Some((waiter, _)) = p.waiters.remove(&id) {
            let _ = waiter.send(Err(Status::deadline_exceeded(
                "no answer on the stream in time",
            )));
        }
    }
}

/// A connection to one server.
pub enum Conn {
    Unary(InventoryClient<Authed>),
    Stream(StreamConn),
    /// Shared by every client (`--mux`), with the call timeout.
    Mux(Arc<Multiplexed>, Duration),
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
                Conn::Mux(mux, timeout) => mux.$name(request, *timeout).await,
            }
        }
    };
}

impl Conn {
    /// Sends `op` and waits for its answer, whichever way this connection
    /// carries calls; a unary response comes back as the stream's answer
    /// of its kind.
    pub async fn call(&self, op: Op) -> Result<R, Status> {
        match self {
            Conn::Stream(stream) => stream.call(op).await,
            Conn::Mux(mux, timeout) => mux.call(op, *timeout).await,
            Conn::Unary(client) => operation::unary(&mut client.clone(), op, None).await,
        }
    }

    /// The connection a stream runs on; None for unary calls.
    pub fn stream_channel(&self) -> Option<Authed> {
        match self {
            Conn::Stream(stream) => Some(stream.channel.clone()),
            Conn::Unary(_) | Conn::Mux(..) => None,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_fails_only_once_it_is_surely_past_its_timeout() {
        // 250 ms is 2.5 sweeps; a call sent just before a sweep is a
        // sweep younger than the count says, so it takes 3 + 1.
        assert_eq!(sweeps_to_expire(Duration::from_millis(250)), 4);
        assert_eq!(sweeps_to_expire(Duration::from_millis(300)), 4);
        assert_eq!(sweeps_to_expire(Duration::ZERO), 1);
        assert_eq!(sweeps_to_expire(Duration::MAX), u64::MAX);

        let pending: Shared = Arc::new(Mutex::new(Pending::default()));
        let (reply, mut answer) = oneshot::channel();
        pending
            .lock()
            .expect("fresh lock")
            .waiters
            .insert(7, (reply, 0));
        let timeout = Duration::from_millis(250);
        for _ in 0..3 {
            expire(&pending, timeout);
            assert!(answer.try_recv().is_err(), "failed before its timeout");
        }
        expire(&pending, timeout);
        let failed = answer.try_recv().expect("failed at its timeout");
        let status = failed.expect_err("a timeout is an error");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(pending.lock().expect("lock").waiters.is_empty());
    }
}
