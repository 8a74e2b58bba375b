//! One operation of a `Stream` call: what it turns into (an answer at
//! once, a write for the turn's group, or a call run alone) and how a
//! grouped write's answer becomes the response of its kind.

use tonic::{Request, Response, Status};

use super::answer::{
    adjust_answer, commit_answer, extend_answer, release_answer, reserve_answer, sell_answer,
    set_on_hand_answer, set_safety_stock_answer,
};
use super::convert::{
    adjust_command, commit_command, extend_command, release_command, reserve_command, sell_command,
    set_on_hand_command, set_safety_stock_command,
};
use super::meters::Meters;
use super::read::checked_availability_request;
use super::InventoryService;
use crate::inventory::command::check_id;
use crate::inventory::{Applied, Command};
use crate::proto::v1 as pb;
use crate::proto::v1::inventory_server::Inventory;
use crate::server::status;
use pb::stream_request::Op;
use pb::stream_response::Result as R;

/// The status of one operation of a stream, with the same google.rpc
/// details a unary call carries in its `grpc-status-details-bin` trailer.
pub(super) fn stream_error(status: Status) -> R {
    R::Error(pb::StreamError {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: status::details_of(&status),
    })
}

fn stream_result<T>(result: Result<T, Status>, wrap: impl FnOnce(T) -> R) -> R {
    match result {
        Ok(value) => wrap(value),
        Err(status) => stream_error(status),
    }
}

/// Runs one operation of a stream alone, exactly as the matching unary
/// call would (forwarding, retries, barriers included).
pub(super) async fn run_stream_op(
    service: InventoryService,
    request: pb::StreamRequest,
) -> pb::StreamResponse {
    fn done<T>(result: Result<Response<T>, Status>, wrap: impl FnOnce(T) -> R) -> R {
        stream_result(result.map(Response::into_inner), wrap)
    }
    let result = match request.op {
        None => stream_error(status::operation_missing()),
        Some(Op::Reserve(r)) => done(service.reserve(Request::new(r)).await, R::Reserve),
        Some(Op::Commit(r)) => done(service.commit(Request::new(r)).await, R::Commit),
        Some(Op::Release(r)) => done(service.release(Request::new(r)).await, R::Release),
        Some(Op::Extend(r)) => done(service.extend(Request::new(r)).await, R::Extend),
        Some(Op::Sell(r)) => done(service.sell(Request::new(r)).await, R::Sell),
        Some(Op::Adjust(r)) => done(service.adjust(Request::new(r)).await, R::Adjust),
        Some(Op::SetOnHand(r)) => done(service.set_on_hand(Request::new(r)).await, R::SetOnHand),
        Some(Op::SetSafetyStock(r)) => done(
            service.set_safety_stock(Request::new(r)).await,
            R::SetSafetyStock,
        ),
        Some(Op::GetAvailability(r)) => done(
            service.get_availability(Request::new(r)).await,
            R::GetAvailability,
        ),
        Some(Op::GetReservation(r)) => done(
            service.get_reservation(Request::new(r)).await,
            R::GetReservation,
        ),
    };
    pb::StreamResponse {
        id: request.id,
        result: Some(result),
    }
}

/// Turns a grouped write's answer into the response of its kind.
pub(super) type Shape = fn(&Meters, Applied) -> R;

/// What one message of a stream turned into.
pub(super) enum Step {
    /// Answered at once (bad input, a LOCAL read).
    Answered(R),
    /// A write that can go into this turn's group, built from the message
    /// (which is not kept: a failed proposal hands the command back).
    Write(Command, Shape),
    /// Must run alone (see [`run_stream_op`]); the operation, given back.
    Alone(Option<Op>),
}

/// Sorts one operation of a stream: the writes go into a group when this
/// node leads, LOCAL reads are answered here, the rest runs alone.
pub(super) fn stream_step(service: &InventoryService, leading: bool, op: Option<Op>) -> Step {
    let api = service.api;
    let built: Result<(Command, Shape), Status> = match op {
        None => return Step::Answered(stream_error(status::operation_missing())),
        Some(Op::GetAvailability(mut r)) => {
            if r.consistency != pb::Consistency::Local as i32 {
                return Step::Alone(Some(Op::GetAvailability(r)));
            }
            let answer =
                checked_availability_request(&mut r).and_then(|()| service.read_availability(&r));
            return Step::Answered(stream_result(answer, R::GetAvailability));
        }
        Some(Op::GetReservation(r)) => {
            if r.consistency != pb::Consistency::Local as i32 {
                return Step::Alone(Some(Op::GetReservation(r)));
            }
            let answer = check_id("reservation_id", &r.reservation_id)
                .map_err(status::invalid)
                .map(|()| service.read_reservation(r.reservation_id));
            return Step::Answered(stream_result(answer, R::GetReservation));
        }
        Some(write) if !leading => return Step::Alone(Some(write)),
        Some(Op::Reserve(r)) => reserve_command(api, r).map(|c| (c, shape_reserve as Shape)),
        Some(Op::Commit(r)) => commit_command(r).map(|c| (c, shape_commit as Shape)),
        Some(Op::Release(r)) => release_command(r).map(|c| (c, shape_release as Shape)),
        Some(Op::Extend(r)) => extend_command(api, r).map(|c| (c, shape_extend as Shape)),
        Some(Op::Sell(r)) => sell_command(r).map(|c| (c, shape_sell as Shape)),
        Some(Op::Adjust(r)) => adjust_command(r).map(|c| (c, shape_adjust as Shape)),
        Some(Op::SetOnHand(r)) => set_on_hand_command(r).map(|c| (c, shape_set_on_hand as Shape)),
        Some(Op::SetSafetyStock(r)) => {
            set_safety_stock_command(r).map(|c| (c, shape_set_safety_stock as Shape))
        }
    };
    match built {
        Ok((command, shape)) => Step::Write(command, shape),
        Err(status) => Step::Answered(stream_error(status)),
    }
}

/// Defines the [`Shape`] of one kind of grouped write: its answer, as the
/// response of its kind.
macro_rules! shape {
    ($name:ident, $answer:ident, $kind:ident) => {
        fn $name(m: &Meters, applied: Applied) -> R {
            stream_result($answer(m, applied), R::$kind)
        }
    };
}

shape!(shape_reserve, reserve_answer, Reserve);
shape!(shape_commit, commit_answer, Commit);
shape!(shape_release, release_answer, Release);
shape!(shape_extend, extend_answer, Extend);
shape!(shape_sell, sell_answer, Sell);
shape!(shape_adjust, adjust_answer, Adjust);
shape!(shape_set_on_hand, set_on_hand_answer, SetOnHand);
shape!(
    shape_set_safety_stock,
    set_safety_stock_answer,
    SetSafetyStock
);
