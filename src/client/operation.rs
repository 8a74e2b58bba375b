//! One operation of the public API, sent either way the server takes it:
//! as its unary call, or inside a `Stream`, where its answer comes back as
//! a `StreamResponse`. Whichever way, the caller gets the same result: the
//! response of its kind, or the Status the unary call would have returned,
//! google.rpc details included.

use std::time::Duration;

use tonic::{Code, Request, Status};

use super::Authed;
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_client::InventoryClient;
use pb::stream_request::Op;
use pb::stream_response::Result as R;

/// A stream's answer as the result of its operation.
pub fn answer(response: pb::StreamResponse) -> Result<R, Status> {
    match response.result {
        Some(R::Error(e)) => Err(status_of(e)),
        Some(result) => Ok(result),
        None => Err(Status::internal("a stream answer with no result")),
    }
}

/// A stream error as the Status the unary call would have returned, its
/// google.rpc details included.
pub fn status_of(e: pb::StreamError) -> Status {
    let details = tonic_types::pb::Status {
        code: e.code,
        message: e.message.clone(),
        details: e.details,
    };
    Status::with_details(
        Code::from_i32(e.code),
        e.message,
        prost::Message::encode_to_vec(&details).into(),
    )
}

/// Sends `op` as its unary call, within `timeout` when one is given (else
/// the channel's own); the response comes back as the stream's answer of
/// its kind.
pub async fn unary(
    client: &mut InventoryClient<Authed>,
    op: Op,
    timeout: Option<Duration>,
) -> Result<R, Status> {
    fn timed<T>(message: T, timeout: Option<Duration>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    }
    macro_rules! call {
        ($method:ident, $request:expr, $kind:ident) => {
            client
                .$method(timed($request, timeout))
                .await
                .map(|r| R::$kind(r.into_inner()))
        };
    }
    match op {
        Op::Reserve(r) => call!(reserve, r, Reserve),
        Op::Commit(r) => call!(commit, r, Commit),
        Op::Release(r) => call!(release, r, Release),
        Op::Extend(r) => call!(extend, r, Extend),
        Op::Sell(r) => call!(sell, r, Sell),
        Op::Adjust(r) => call!(adjust, r, Adjust),
        Op::SetOnHand(r) => call!(set_on_hand, r, SetOnHand),
        Op::SetSafetyStock(r) => call!(set_safety_stock, r, SetSafetyStock),
        Op::GetAvailability(r) => call!(get_availability, r, GetAvailability),
        Op::GetReservation(r) => call!(get_reservation, r, GetReservation),
    }
}
