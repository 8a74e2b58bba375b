"""The blocking client: one unary call per operation.

gRPC retries each call on its member as the service config says; this
layer adds the move to another member (the new leader) when a member keeps
answering UNAVAILABLE, within the call's deadline.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from . import errors
from .calls import InventoryCalls
from .config import DEFAULT_TIMEOUT, ChannelSettings, addresses as resolve_addresses
from .operations import Operation
from .pb import cluster_grpc, cluster_pb, inventory_grpc
from .routing import Router


class Client(InventoryCalls):
    """A client of a stockraft cluster.

    `addresses`: HOST:PORT of one or more members (a list or a
    comma-separated string); default STOCKRAFT_SERVER, else 127.0.0.1:50051.
    `token`: bearer token (default STOCKRAFT_TOKEN). `ca_cert`: PEM bytes or
    a path to the CA that signed the servers' certificates; TLS is used when
    it is given (default STOCKRAFT_TLS_CA).
    """

    def __init__(self, addresses: list[str] | str | None = None, token: str | None = None,
                 ca_cert: bytes | str | Path | None = None, **tls):
        self._settings = ChannelSettings.from_env(token, ca_cert, **tls)
        self._router = Router(resolve_addresses(addresses), self._settings.open)
        self._stubs = {a: inventory_grpc.InventoryStub(ch) for a, ch in self._router.channels.items()}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._router.close()

    @property
    def target(self) -> str:
        """The member calls go to now (the leader when one is known)."""
        return self._router.current()

    def _call(self, operation: Operation, request, timeout: float | None):
        deadline = time.monotonic() + (timeout if timeout is not None else DEFAULT_TIMEOUT)
        tried: set[str] = set()
        while True:
            address = self._router.current()
            tried.add(address)
            method = getattr(self._stubs[address], operation.method)
            try:
                return method(request, timeout=max(deadline - time.monotonic(), 0.0),
                              metadata=self._settings.metadata)
            except grpc.RpcError as rpc_error:
                error = errors.from_rpc_error(rpc_error)
            if error.code != grpc.StatusCode.UNAVAILABLE:
                raise error
            # gRPC has already retried on this member. Another member may
            # lead now: the same request (same id) is safe to send there.
            moved_to = self._router.rediscover(address)
            if moved_to in tried or time.monotonic() >= deadline:
                raise error

    def cluster_status(self, with_digest: bool = False, *, timeout: float | None = None):
        """Cluster.Status of the member calls go to (needs an admin token
        when the server has tokens)."""
        stub = cluster_grpc.ClusterStub(self._router.channels[self._router.current()])
        try:
            return stub.Status(cluster_pb.ClusterStatusRequest(with_digest=with_digest),
                               timeout=timeout, metadata=self._settings.metadata)
        except grpc.RpcError as rpc_error:
            raise errors.from_rpc_error(rpc_error) from None
