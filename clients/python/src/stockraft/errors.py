"""Typed errors: a gRPC status and its google.rpc details as one exception.

The server attaches google.rpc details to every status: an ErrorInfo
(domain "stockraft", a stable `reason`, facts in `metadata`), a BadRequest
naming the offending field on INVALID_ARGUMENT, and a RetryInfo when a
retry can succeed. Unary calls carry them in the `grpc-status-details-bin`
trailer; a `Stream` operation in `StreamError.details`. Both become the
same exception here, so callers branch on `code` and `reason` alike
whichever way the call travelled.

Reasons are plain strings: a reason this version does not know still
arrives intact in `reason` (the `Reason` constants are a convenience, not a
closed set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import grpc
from google.protobuf.any_pb2 import Any
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "stockraft"
# The domain of errors the client makes itself (a local deadline, a broken
# stream), so they are never mistaken for the server's.
CLIENT_DOMAIN = "stockraft.client"


class Reason:
    """The ErrorInfo reasons the server sends (README, error table)."""

    # INVALID_ARGUMENT
    FIELD_EMPTY = "FIELD_EMPTY"
    FIELD_TOO_LONG = "FIELD_TOO_LONG"
    VALUE_OUT_OF_RANGE = "VALUE_OUT_OF_RANGE"
    TTL_TOO_LONG = "TTL_TOO_LONG"
    NO_LINES = "NO_LINES"
    TOO_MANY_LINES = "TOO_MANY_LINES"
    LINE_SUM_TOO_LARGE = "LINE_SUM_TOO_LARGE"
    UNKNOWN_ENUM_VALUE = "UNKNOWN_ENUM_VALUE"
    ZERO_DELTA = "ZERO_DELTA"
    DELTA_SIGN_MISMATCH = "DELTA_SIGN_MISMATCH"
    TOO_MANY_ITEMS = "TOO_MANY_ITEMS"
    TOO_MANY_ROWS = "TOO_MANY_ROWS"
    OPERATION_MISSING = "OPERATION_MISSING"
    # ALREADY_EXISTS
    RESERVATION_ID_REUSED = "RESERVATION_ID_REUSED"
    TXN_ID_REUSED = "TXN_ID_REUSED"
    # FAILED_PRECONDITION
    RESERVATION_NOT_ACTIVE = "RESERVATION_NOT_ACTIVE"
    STALE_ON_HAND = "STALE_ON_HAND"
    # OUT_OF_RANGE
    ON_HAND_OUT_OF_RANGE = "ON_HAND_OUT_OF_RANGE"
    # RESOURCE_EXHAUSTED
    OVERLOADED = "OVERLOADED"
    TOO_MANY_OPEN_RESERVATIONS = "TOO_MANY_OPEN_RESERVATIONS"
    COUNTER_LIMIT = "COUNTER_LIMIT"
    NODES_PER_SKU_LIMIT = "NODES_PER_SKU_LIMIT"
    # UNAVAILABLE
    NO_LEADER = "NO_LEADER"
    LEADER_UNREACHABLE = "LEADER_UNREACHABLE"
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    MEMBER_REMOVED = "MEMBER_REMOVED"
    CLOCK_UNCONFIRMED = "CLOCK_UNCONFIRMED"
    # Also sent by the server (src/server/status.rs), while an election or
    # a leadership change is under way.
    NOT_LEADER = "NOT_LEADER"
    LEADERSHIP_UNCONFIRMED = "LEADERSHIP_UNCONFIRMED"
    PROPOSAL_DROPPED = "PROPOSAL_DROPPED"
    REMOVES_LEADER = "REMOVES_LEADER"
    # UNAUTHENTICATED / PERMISSION_DENIED
    TOKEN_MISSING = "TOKEN_MISSING"
    TOKEN_UNKNOWN = "TOKEN_UNKNOWN"
    ROLE_TOO_LOW = "ROLE_TOO_LOW"
    # Made by this client (domain CLIENT_DOMAIN).
    DEADLINE = "DEADLINE"
    STREAM_BROKEN = "STREAM_BROKEN"


@dataclass(frozen=True)
class FieldViolation:
    # A path into the request, e.g. "lines[2].qty".
    field: str
    description: str
    reason: str


class StockraftError(Exception):
    """A call the server (or the client) could not carry out as asked."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        domain: str | None = None,
        metadata: dict[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_delay: float | None = None,
    ):
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        # Seconds the server advises waiting before a retry (RetryInfo);
        # None when it said nothing.
        self.retry_delay = retry_delay

    @property
    def retryable(self) -> bool:
        """Whether repeating the call (with the same id) can succeed.

        UNAVAILABLE always can. RESOURCE_EXHAUSTED only when the server sent
        a RetryInfo: it omits one for limits no retry passes.
        """
        if self.code == grpc.StatusCode.UNAVAILABLE:
            return True
        return self.code == grpc.StatusCode.RESOURCE_EXHAUSTED and self.retry_delay is not None


class InvalidArgument(StockraftError): pass
class DeadlineExceeded(StockraftError): pass
class AlreadyExists(StockraftError): pass
class PermissionDenied(StockraftError): pass
class ResourceExhausted(StockraftError): pass
class FailedPrecondition(StockraftError): pass
class OutOfRange(StockraftError): pass
class Unimplemented(StockraftError): pass
class Internal(StockraftError): pass
class Unavailable(StockraftError): pass
class Unauthenticated(StockraftError): pass


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def make(code: grpc.StatusCode, message: str, details: Iterable[Any] = (), **local) -> StockraftError:
    """The exception for a status code, its message and google.rpc details.

    Details of a type this client does not know are skipped, not fatal.
    """
    fields: dict = dict(local)
    violations: list[FieldViolation] = []
    for any_detail in details:
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        retry_info = error_details_pb2.RetryInfo()
        if any_detail.Unpack(info):
            fields.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif any_detail.Unpack(bad_request):
            violations += [
                FieldViolation(v.field, v.description, v.reason) for v in bad_request.field_violations
            ]
        elif any_detail.Unpack(retry_info):
            fields["retry_delay"] = retry_info.retry_delay.ToTimedelta().total_seconds()
    cls = _BY_CODE.get(code, StockraftError)
    return cls(code, message, field_violations=violations, **fields)


def from_rpc_error(error: grpc.RpcError) -> StockraftError:
    """The exception for a failed unary call (sync or asyncio)."""
    code = error.code()
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        # The details trailer contradicts the status code (a proxy rewrote
        # one of them): trust the code, drop the details.
        status = None
    details = status.details if status is not None else ()
    return make(code, error.details() or "", details)


def from_stream_error(error) -> StockraftError:
    """The exception for a `StreamError`: the unary status it stands for."""
    code = _CODE_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
    return make(code, error.message, error.details)


def from_status(status: status_pb2.Status) -> StockraftError:
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return make(code, status.message, status.details)


def local(code: grpc.StatusCode, message: str, reason: str) -> StockraftError:
    """An error the client raises itself, with the same shape."""
    return make(code, message, reason=reason, domain=CLIENT_DOMAIN)
