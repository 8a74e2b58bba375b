"""Typed errors from google.rpc details, including ones this client does not
know (no server needed)."""

from __future__ import annotations

import grpc
from google.protobuf.any_pb2 import Any
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from stockraft import errors, pb


def packed(message) -> Any:
    any_detail = Any()
    any_detail.Pack(message)
    return any_detail


def test_an_unknown_reason_and_detail_type_arrive_intact():
    status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="later", details=[
        packed(error_details_pb2.ErrorInfo(reason="A_REASON_FROM_THE_FUTURE", domain="stockraft", metadata={"k": "v"})),
        packed(error_details_pb2.DebugInfo(detail="a detail type the client skips")),
        packed(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=1, nanos=500_000_000))),
    ])
    error = errors.from_status(status)
    assert isinstance(error, errors.ResourceExhausted)
    assert (error.reason, error.metadata, error.retry_delay) == ("A_REASON_FROM_THE_FUTURE", {"k": "v"}, 1.5)
    assert error.retryable  # RESOURCE_EXHAUSTED with a RetryInfo


def test_an_unknown_code_is_still_a_stockraft_error():
    error = errors.from_stream_error(pb.StreamError(code=99, message="new"))
    assert type(error) is errors.StockraftError
    assert error.code == grpc.StatusCode.UNKNOWN and not error.retryable


def test_a_stream_error_reads_like_the_unary_status():
    violation = error_details_pb2.BadRequest.FieldViolation(field="lines[0].qty", description="qty is 0",
                                                            reason="VALUE_OUT_OF_RANGE")
    error = errors.from_stream_error(pb.StreamError(code=3, message="qty is 0", details=[
        packed(error_details_pb2.ErrorInfo(reason="VALUE_OUT_OF_RANGE", domain="stockraft")),
        packed(error_details_pb2.BadRequest(field_violations=[violation])),
    ]))
    assert isinstance(error, errors.InvalidArgument)
    assert error.field_violations == [errors.FieldViolation("lines[0].qty", "qty is 0", "VALUE_OUT_OF_RANGE")]
    # RESOURCE_EXHAUSTED without a RetryInfo is a permanent limit.
    assert not errors.from_stream_error(pb.StreamError(code=8, message="limit")).retryable
