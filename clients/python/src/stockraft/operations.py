"""The catalogue of Inventory operations: one row per call.

Each row ties together the three names an operation has (the unary method,
the `StreamRequest.op` / `StreamResponse.result` oneof field) and the
request field whose value must not have two operations in flight at once
(the client-chosen id), which the multiplexer orders by.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message


@dataclass(frozen=True)
class Operation:
    # The unary method of stockraft.v1.Inventory, e.g. "Reserve".
    method: str
    # The oneof field of StreamRequest.op and StreamResponse.result.
    field: str
    # The request field holding the client-chosen id, or None.
    id_field: str | None

    def order_key(self, request: Message) -> tuple[str, str] | None:
        """The key whose operations must run one at a time, in call order.

        The server runs the operations of one stream concurrently, so a
        commit sent while its reserve is still in flight could be applied
        first. Operations on the same reservation id (or the same
        transaction id, i.e. a retry) are therefore queued behind each other.
        """
        if self.id_field is None:
            return None
        return (self.id_field, getattr(request, self.id_field))


RESERVE = Operation("Reserve", "reserve", "reservation_id")
COMMIT = Operation("Commit", "commit", "reservation_id")
RELEASE = Operation("Release", "release", "reservation_id")
EXTEND = Operation("Extend", "extend", "reservation_id")
GET_RESERVATION = Operation("GetReservation", "get_reservation", "reservation_id")
SELL = Operation("Sell", "sell", "txn_id")
ADJUST = Operation("Adjust", "adjust", "txn_id")
SET_ON_HAND = Operation("SetOnHand", "set_on_hand", "txn_id")
SET_SAFETY_STOCK = Operation("SetSafetyStock", "set_safety_stock", None)
GET_AVAILABILITY = Operation("GetAvailability", "get_availability", None)

ALL = (
    RESERVE, COMMIT, RELEASE, EXTEND, GET_RESERVATION,
    SELL, ADJUST, SET_ON_HAND, SET_SAFETY_STOCK, GET_AVAILABILITY,
)
