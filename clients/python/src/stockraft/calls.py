"""The Inventory calls as Python methods, shared by both clients.

Each method builds its request and hands it to `self._call(operation,
request, timeout)`. The blocking client's `_call` returns the response; the
asyncio client's is a coroutine, so the same methods are awaited there.
Responses are the generated messages: business outcomes are
`response.outcome` (e.g. `pb.OUTCOME_INSUFFICIENT_STOCK`), never errors.
"""

from __future__ import annotations

from typing import Iterable, Union

from . import operations as ops
from .pb import pb

# A reservation line: a message, or a (sku, node, qty) tuple.
LineLike = Union[pb.Line, tuple[str, str, int]]


def _line(line: LineLike) -> pb.Line:
    if isinstance(line, pb.Line):
        return line
    sku, node, qty = line
    return pb.Line(sku=sku, node=node, qty=qty)


def _adjust_reason(reason: int | str) -> int:
    # "RECEIVE", "ADJUST_REASON_RECEIVE" or the enum's number.
    if isinstance(reason, str):
        name = reason.upper()
        return pb.AdjustReason.Value(name if name.startswith("ADJUST_REASON_") else f"ADJUST_REASON_{name}")
    return reason


class InventoryCalls:
    """Mixed into a client that defines `_call(operation, request, timeout)`.

    `timeout` (seconds) defaults to the service config's 5 s.
    """

    def _call(self, operation: ops.Operation, request, timeout: float | None):
        raise NotImplementedError

    def reserve(self, reservation_id: str, lines: Iterable[LineLike], ttl_ms: int = 0, *, timeout=None):
        """Hold stock for all lines or none. Safe to retry with the same id."""
        request = pb.ReserveRequest(reservation_id=reservation_id, lines=[_line(l) for l in lines], ttl_ms=ttl_ms)
        return self._call(ops.RESERVE, request, timeout)

    def commit(self, reservation_id: str, *, timeout=None):
        return self._call(ops.COMMIT, pb.CommitRequest(reservation_id=reservation_id), timeout)

    def release(self, reservation_id: str, *, timeout=None):
        return self._call(ops.RELEASE, pb.ReleaseRequest(reservation_id=reservation_id), timeout)

    def extend(self, reservation_id: str, ttl_ms: int = 0, *, timeout=None):
        return self._call(ops.EXTEND, pb.ExtendRequest(reservation_id=reservation_id, ttl_ms=ttl_ms), timeout)

    def get_reservation(self, reservation_id: str, consistency: int = pb.CONSISTENCY_UNSPECIFIED, *, timeout=None):
        request = pb.GetReservationRequest(reservation_id=reservation_id, consistency=consistency)
        return self._call(ops.GET_RESERVATION, request, timeout)

    def sell(self, txn_id: str, sku: str, node: str, qty: int, *, timeout=None):
        return self._call(ops.SELL, pb.SellRequest(txn_id=txn_id, sku=sku, node=node, qty=qty), timeout)

    def adjust(self, txn_id: str, sku: str, node: str, delta: int, reason: int | str, *, timeout=None):
        request = pb.AdjustRequest(txn_id=txn_id, sku=sku, node=node, delta=delta, reason=_adjust_reason(reason))
        return self._call(ops.ADJUST, request, timeout)

    def set_on_hand(self, txn_id: str, sku: str, node: str, on_hand: int,
                    expected_on_hand: int | None = None, *, timeout=None):
        """Set on_hand; with `expected_on_hand`, only if it still has that
        value (else FailedPrecondition, reason STALE_ON_HAND, with the
        current value in `metadata["on_hand"]`)."""
        request = pb.SetOnHandRequest(txn_id=txn_id, sku=sku, node=node, on_hand=on_hand)
        if expected_on_hand is not None:
            request.expected_on_hand = expected_on_hand
        return self._call(ops.SET_ON_HAND, request, timeout)

    def set_safety_stock(self, sku: str, node: str, safety_stock: int, *, timeout=None):
        request = pb.SetSafetyStockRequest(sku=sku, node=node, safety_stock=safety_stock)
        return self._call(ops.SET_SAFETY_STOCK, request, timeout)

    def get_availability(self, skus: Iterable[str], nodes: Iterable[str] = (),
                         consistency: int = pb.CONSISTENCY_UNSPECIFIED, *, timeout=None):
        request = pb.GetAvailabilityRequest(skus=list(skus), nodes=list(nodes), consistency=consistency)
        return self._call(ops.GET_AVAILABILITY, request, timeout)
