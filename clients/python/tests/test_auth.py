"""Bearer tokens and roles: typed refusals, and the fall-back to unary calls
for a token whose role may not open `Stream`."""

from __future__ import annotations

import hashlib
import secrets

import grpc
import pytest

import stockraft
from stockraft import Reason
from stockraft.aio import AsyncClient

from conftest import Server

READ, WRITE = secrets.token_hex(16), secrets.token_hex(16)


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tokens")
    tokens = workdir / "tokens"
    # The file holds each token's SHA-256, never the token.
    tokens.write_text("".join(f"{role} {hashlib.sha256(t.encode()).hexdigest()} {role}-client\n"
                              for role, t in (("read", READ), ("write", WRITE))))
    server = Server(workdir, extra=["--tokens", str(tokens)]).start()
    try:
        yield server.wait_serving()
    finally:
        server.stop()


def test_no_token_and_an_unknown_token_are_unauthenticated(secured, unique):
    with stockraft.Client(secured.address, token="") as client:
        with pytest.raises(stockraft.errors.Unauthenticated) as caught:
            client.get_availability([unique("SKU")])
        assert caught.value.reason == Reason.TOKEN_MISSING
    with stockraft.Client(secured.address, token=secrets.token_hex(16)) as client:
        with pytest.raises(stockraft.errors.Unauthenticated) as caught:
            client.get_availability([unique("SKU")])
        assert caught.value.reason == Reason.TOKEN_UNKNOWN


async def test_a_read_token_reads_over_unary_calls_and_may_not_write(secured, unique):
    sku = unique("SKU")
    async with AsyncClient(secured.address, token=WRITE) as writer:
        await writer.adjust(unique("RCV"), sku, "store", 4, "RECEIVE")
        assert writer.stats["unary"] == 0  # a write token streams
    async with AsyncClient(secured.address, token=READ) as reader:
        answer = await reader.get_availability([sku])
        assert answer.skus[0].total_available == 4
        # The stream was refused for the role; the read went unary.
        assert reader.stats == {"streamed": 0, "unary": 1}
        with pytest.raises(stockraft.errors.PermissionDenied) as caught:
            await reader.reserve(unique("ORDER"), [(sku, "store", 1)])
        assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.reason == Reason.ROLE_TOO_LOW
        assert (await reader.get_availability([sku])).skus[0].nodes[0].reserved == 0
