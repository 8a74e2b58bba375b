"""Which member to call: the leader, found through the gRPC health service.

Every member reports `stockraft.v1.Inventory` SERVING once it is ready, and
only the current leader reports `stockraft.v1.Leader` SERVING. Calls go to
the leader when one is known (a follower forwards writes too, one hop
slower, so any ready member is the next best), and the choice is made again
after a call fails with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LEADER_SERVICE = "stockraft.v1.Leader"
READY_SERVICE = "stockraft.v1.Inventory"
# A probe of a member that does not answer this fast is not worth waiting on.
PROBE_TIMEOUT = 1.0
_SERVING = health_pb2.HealthCheckResponse.SERVING


def choose(addresses: list[str], leader: dict[str, bool], ready: dict[str, bool], avoid: str | None) -> str:
    """The leader; else a ready member; else the address after `avoid`
    (a call there waits for a leader on the server side)."""
    for address in addresses:
        if leader.get(address):
            return address
    candidates = [a for a in addresses if ready.get(a) and a != avoid]
    if candidates:
        return candidates[0]
    if avoid in addresses:
        return addresses[(addresses.index(avoid) + 1) % len(addresses)]
    return addresses[0]


class Router:
    """Leader discovery for the blocking client."""

    def __init__(self, addresses: list[str], open_channel):
        self.addresses = addresses
        self.channels = {a: open_channel(a) for a in addresses}
        self._current: str | None = addresses[0] if len(addresses) == 1 else None
        self._lock = threading.Lock()

    def current(self) -> str:
        if self._current is None:
            self.rediscover(None)
        return self._current

    def rediscover(self, failed: str | None) -> str:
        """Choose again after `failed` let a call down; one probe round at a
        time, and none when another caller has already moved on."""
        with self._lock:
            if len(self.addresses) > 1 and (self._current is None or self._current == failed):
                self._current = choose(self.addresses, self._probe(LEADER_SERVICE),
                                       self._probe(READY_SERVICE), failed)
            return self._current

    def _probe(self, service: str) -> dict[str, bool]:
        request = health_pb2.HealthCheckRequest(service=service)
        futures = {
            a: health_pb2_grpc.HealthStub(ch).Check.future(request, timeout=PROBE_TIMEOUT)
            for a, ch in self.channels.items()
        }
        answers = {}
        for address, future in futures.items():
            try:
                answers[address] = future.result().status == _SERVING
            except grpc.RpcError:
                # Down, or a server that does not know the service name.
                answers[address] = False
        return answers

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


class AsyncRouter:
    """Leader discovery for the asyncio client."""

    def __init__(self, addresses: list[str], open_channel):
        self.addresses = addresses
        self.channels = {a: open_channel(a) for a in addresses}
        self._current: str | None = addresses[0] if len(addresses) == 1 else None
        self._lock = asyncio.Lock()

    async def current(self) -> str:
        if self._current is None:
            await self.rediscover(None)
        return self._current

    async def rediscover(self, failed: str | None) -> str:
        async with self._lock:
            if len(self.addresses) > 1 and (self._current is None or self._current == failed):
                leader, ready = await asyncio.gather(self._probe(LEADER_SERVICE), self._probe(READY_SERVICE))
                self._current = choose(self.addresses, leader, ready, failed)
            return self._current

    async def _probe(self, service: str) -> dict[str, bool]:
        request = health_pb2.HealthCheckRequest(service=service)

        async def one(channel) -> bool:
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=PROBE_TIMEOUT)
                return answer.status == _SERVING
            except grpc.RpcError:
                return False

        results = await asyncio.gather(*(one(ch) for ch in self.channels.values()))
        return dict(zip(self.channels, results))

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels.values()))
