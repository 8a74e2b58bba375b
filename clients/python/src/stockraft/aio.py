"""The asyncio client: `await client.reserve(...)`, carried over `Stream`.

Each call is one operation, but concurrent calls from many callers share a
few long-lived `Stream` calls (see mux.py), which costs the server far less
than a unary call each. What a unary call gets from the service config is
given to streamed operations here, so a caller sees the same behaviour
either way:

- a deadline per call (default 5 s): past it the call fails with
  DEADLINE_EXCEEDED at once and its late answer is dropped;
- retries of UNAVAILABLE and RESOURCE_EXHAUSTED with the same request (and
  so the same id): at most 5 attempts, backoff from 50 ms doubling to 2 s,
  or the delay the server advises in RetryInfo;
- after UNAVAILABLE, the call moves to the leader the health service names.

Operations on the same reservation id (or transaction id) run one at a time
in call order (ordering.py). When the member does not carry `Stream`,
operations go as unary calls, transparently.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc

from . import errors
from .calls import InventoryCalls
from .config import DEFAULT_TIMEOUT, ChannelSettings, addresses as resolve_addresses
from .errors import Reason
from .mux import DEFAULT_MAX_IN_FLIGHT, DEFAULT_STREAMS, StreamPool, StreamRefused
from .operations import Operation
from .ordering import KeyedOrder
from .pb import cluster_grpc, cluster_pb, inventory_grpc
from .routing import AsyncRouter

# The service config's retry policy (clients/service_config.json).
MAX_ATTEMPTS = 5
INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 2.0
BACKOFF_MULTIPLIER = 2


class _Attempt:
    """How one attempt travelled, and whether it may still be applied."""

    def __init__(self) -> None:
        self.streamed = False
        self.settled: asyncio.Future | None = None


class AsyncClient(InventoryCalls):
    """Arguments as `stockraft.Client`, plus:

    `multiplex`: carry calls over `Stream` (default True); False sends each
    as a unary call. `streams`: streams per member. `max_in_flight`:
    operations in flight per stream (at most 1,024, the server's bound).
    """

    def __init__(self, addresses: list[str] | str | None = None, token: str | None = None,
                 ca_cert: bytes | str | Path | None = None, *, multiplex: bool = True,
                 streams: int = DEFAULT_STREAMS, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, **tls):
        if not 1 <= max_in_flight <= 1024:
            raise ValueError("max_in_flight must be 1 to 1024")
        self._settings = ChannelSettings.from_env(token, ca_cert, **tls)
        self._router = AsyncRouter(resolve_addresses(addresses), lambda a: self._settings.open(a, aio=True))
        channels = self._router.channels
        self._stubs = {a: inventory_grpc.InventoryStub(ch) for a, ch in channels.items()}
        self._pools = {a: StreamPool(ch, self._settings.metadata, streams, max_in_flight) for a, ch in channels.items()}
        self._multiplex = multiplex
        self._order = KeyedOrder()
        # How many attempts each path carried (tests and metrics read it).
        self.stats = {"streamed": 0, "unary": 0}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self._pools.values()))
        await self._router.close()

    @property
    def in_flight(self) -> int:
        """Operations sent on streams and not yet answered (including those
        whose callers gave up)."""
        return sum(p.in_flight for p in self._pools.values())

    @property
    def queued_ids(self) -> int:
        """Ids with a call in flight or queued behind one."""
        return len(self._order)

    async def target(self) -> str:
        return await self._router.current()

    async def _call(self, operation: Operation, request, timeout: float | None):
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Taken before anything suspends: turns follow the order of calls.
        turn = self._order.take(operation.order_key(request))
        attempt = _Attempt()
        try:
            async with asyncio.timeout_at(deadline):
                await turn.wait()
                return await self._attempts(operation, request, deadline, attempt)
        except TimeoutError:
            raise errors.local(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"no answer within {timeout:g} s; retry with the same id to learn the outcome",
                               Reason.DEADLINE) from None
        finally:
            if attempt.settled is not None and not attempt.settled.done():
                # Still in flight on the server: the next call on this id
                # waits for its answer, even though this caller is gone.
                attempt.settled.add_done_callback(lambda _: turn.finish())
            else:
                turn.finish_after_previous()

    async def _attempts(self, operation: Operation, request, deadline: float, attempt: _Attempt):
        backoff = INITIAL_BACKOFF
        tried: set[str] = set()
        for number in range(1, MAX_ATTEMPTS + 1):
            address = await self._router.current()
            tried.add(address)
            try:
                return await self._once(address, operation, request, deadline, attempt)
            except errors.StockraftError as error:
                failure = error
            moved = False
            if failure.code == grpc.StatusCode.UNAVAILABLE:
                moved = await self._router.rediscover(address) not in tried
            # A unary attempt was already retried by gRPC on its member; it
            # is sent again only where another member may answer.
            again = moved or (attempt.streamed and failure.retryable)
            if not again or number == MAX_ATTEMPTS:
                raise failure
            delay = failure.retry_delay if failure.retry_delay is not None else random.uniform(0, backoff)
            await asyncio.sleep(delay)
            backoff = min(backoff * BACKOFF_MULTIPLIER, MAX_BACKOFF)

    async def _once(self, address: str, operation: Operation, request, deadline: float, attempt: _Attempt):
        attempt.streamed, attempt.settled = False, None
        if asyncio.get_running_loop().time() >= deadline:
            raise TimeoutError  # past its deadline: never sent
        if self._multiplex:
            try:
                pending = await self._pools[address].submit(operation, request)
            except StreamRefused:
                pending = None
            if pending is not None:
                attempt.streamed, attempt.settled = True, pending.settled
                try:
                    # Cancelling this wait (the deadline) cancels `answer`,
                    # which is how the stream knows to drop a late answer.
                    response = await pending.answer
                    self.stats["streamed"] += 1
                    return response
                except StreamRefused:
                    attempt.streamed = False  # never applied on a stream: go unary
        self.stats["unary"] += 1
        method = getattr(self._stubs[address], operation.method)
        remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
        try:
            return await method(request, timeout=remaining, metadata=self._settings.metadata)
        except grpc.RpcError as rpc_error:
            raise errors.from_rpc_error(rpc_error) from None

    async def cluster_status(self, with_digest: bool = False, *, timeout: float | None = None):
        stub = cluster_grpc.ClusterStub(self._router.channels[await self._router.current()])
        try:
            return await stub.Status(cluster_pb.ClusterStatusRequest(with_digest=with_digest),
                                     timeout=timeout, metadata=self._settings.metadata)
        except grpc.RpcError as rpc_error:
            raise errors.from_rpc_error(rpc_error) from None
