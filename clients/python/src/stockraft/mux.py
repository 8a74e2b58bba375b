"""Many callers' operations over a few long-lived `Stream` calls.

A unary call costs the server about eight times the CPU of the same
operation sent over `Stream`. A `StreamPool` keeps a few streams open to
one member; each operation gets a fresh `id`, is written to the least
loaded stream, and its answer (in completion order) is matched back by id.

- In flight per stream is bounded (the server stops reading a stream past
  1,024 operations in flight); callers wait for a slot.
- A `StreamError` answer becomes the typed error the unary call would have
  raised.
- A stream that breaks after answering fails its operations in flight with
  UNAVAILABLE (each is safe to retry with its id) and is reopened on the
  next operation.
- A stream that fails before answering anything (UNIMPLEMENTED, a role not
  allowed to stream, a member that cannot be reached) hands its operations
  back with `StreamRefused`, for the caller to send as unary calls; after
  UNIMPLEMENTED, PERMISSION_DENIED or UNAUTHENTICATED the pool stops trying.
"""

from __future__ import annotations

import asyncio
import itertools

import grpc

from . import errors
from .errors import Reason, StockraftError
from .operations import Operation
from .pb import inventory_grpc, pb

# Below the server's 1,024 so its reader never stalls on us.
DEFAULT_MAX_IN_FLIGHT = 512
DEFAULT_STREAMS = 2
# Failures that say this server will never carry our streams.
_PERMANENT = {
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}


class StreamRefused(Exception):
    """The stream path cannot carry this operation: send it unary."""

    def __init__(self, cause: StockraftError):
        super().__init__(str(cause))
        self.cause = cause


class _Closed(Exception):
    """The stream closed while the operation waited for a slot."""


class Pending:
    """One operation sent on a stream.

    `answer` is what the caller awaits (cancelling it drops a late answer);
    `settled` completes once the operation can no longer be applied, which
    the per-id ordering waits for even after the caller has given up.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.answer = loop.create_future()
        self.settled = loop.create_future()

    def resolve(self, result=None, error: BaseException | None = None) -> None:
        if not self.settled.done():
            self.settled.set_result(None)
        if self.answer.done():
            return  # the caller gave up: the late answer is dropped
        if error is not None:
            self.answer.set_exception(error)
        else:
            self.answer.set_result(result)


class _Stream:
    def __init__(self, stub, metadata, max_in_flight: int, on_refused):
        self._pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._answered = False
        self._on_refused = on_refused
        self.closed = False
        self._call = stub.Stream(self._requests(), metadata=metadata)
        self._reader = asyncio.create_task(self._read())

    @property
    def load(self) -> int:
        return len(self._pending)

    async def submit(self, operation: Operation, request) -> Pending:
        await self._slots.acquire()
        if self.closed:
            self._slots.release()
            raise _Closed
        # From here to the return nothing suspends, so an operation is either
        # queued for sending and tracked, or neither.
        op_id = next(self._ids)
        pending = Pending()
        self._pending[op_id] = pending
        self._outbox.put_nowait(pb.StreamRequest(id=op_id, **{operation.field: request}))
        return pending

    async def _requests(self):
        while (request := await self._outbox.get()) is not None:
            yield request

    async def _read(self) -> None:
        failure = errors.local(grpc.StatusCode.UNAVAILABLE, "the client closed the stream", Reason.STREAM_BROKEN)
        try:
            async for response in self._call:
                self._answered = True
                self._deliver(response)
            failure = errors.local(grpc.StatusCode.UNAVAILABLE, "the server ended the stream", Reason.STREAM_BROKEN)
        except grpc.RpcError as rpc_error:
            failure = errors.from_rpc_error(rpc_error)
        finally:
            self._fail_all(failure)

    def _deliver(self, response) -> None:
        pending = self._pending.pop(response.id, None)
        if pending is None:
            return
        self._slots.release()
        kind = response.WhichOneof("result")
        if kind == "error":
            pending.resolve(error=errors.from_stream_error(response.error))
        elif kind is None:
            pending.resolve(error=errors.local(grpc.StatusCode.INTERNAL, "an answer of a kind this client does not know", "UNKNOWN_RESULT"))
        else:
            pending.resolve(getattr(response, kind))

    def _fail_all(self, failure: StockraftError) -> None:
        self.closed = True
        self._outbox.put_nowait(None)  # ends the request iterator
        if not self._answered:
            error: BaseException = StreamRefused(failure)
            self._on_refused(failure)
        elif failure.code == grpc.StatusCode.UNAVAILABLE:
            error = failure
        else:
            error = errors.local(
                grpc.StatusCode.UNAVAILABLE,
                f"the stream broke ({failure}); the operation may or may not have been applied: "
                "retry it with the same id", Reason.STREAM_BROKEN)
        pending, self._pending = self._pending, {}
        for item in pending.values():
            self._slots.release()
            item.resolve(error=error)

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        self._call.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class StreamPool:
    """The streams to one member."""

    def __init__(self, channel, metadata, streams: int = DEFAULT_STREAMS,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT):
        self._stub = inventory_grpc.InventoryStub(channel)
        self._metadata = metadata
        self._max_in_flight = max_in_flight
        self._streams: list[_Stream | None] = [None] * streams
        # Set once the member has shown it will never carry our streams.
        self.refused: StockraftError | None = None

    @property
    def in_flight(self) -> int:
        return sum(s.load for s in self._streams if s is not None)

    async def submit(self, operation: Operation, request) -> Pending:
        while True:
            if self.refused is not None:
                raise StreamRefused(self.refused)
            try:
                return await self._pick().submit(operation, request)
            except _Closed:
                continue  # its stream broke while it waited: try a fresh one

    def _pick(self) -> _Stream:
        for i, stream in enumerate(self._streams):
            if stream is None or stream.closed:
                self._streams[i] = _Stream(self._stub, self._metadata, self._max_in_flight, self._note_refusal)
        return min(self._streams, key=lambda s: s.load)

    def _note_refusal(self, failure: StockraftError) -> None:
        if failure.code in _PERMANENT:
            self.refused = failure

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self._streams if s is not None))
