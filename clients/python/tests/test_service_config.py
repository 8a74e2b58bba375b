"""The service config is in force: gRPC retries UNAVAILABLE with the same
request, and a pushback of -1 stops it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

import stockraft
from stockraft import pb

from unary_proxy import UnaryOnlyProxy

CONFIG = Path(__file__).resolve().parents[2] / "service_config.json"


def test_every_inventory_call_but_stream_and_status_has_the_retry_policy():
    config = json.loads(CONFIG.read_text())
    retried = {(n["service"], n["method"]) for c in config["methodConfig"] if "retryPolicy" in c for n in c["name"]}
    proto = (Path(__file__).resolve().parents[3] / "proto/stockraft/v1/inventory.proto").read_text()
    methods = {line.split()[1].split("(")[0] for line in proto.splitlines() if line.strip().startswith("rpc ")}
    assert retried == {("stockraft.v1.Inventory", m) for m in methods - {"Stream"}} | {("stockraft.v1.Cluster", "Status")}
    policy = next(c for c in config["methodConfig"] if "retryPolicy" in c)
    assert policy["timeout"] == "5s" and policy["waitForReady"] is False
    assert policy["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]


@pytest.fixture
async def proxy(server):
    proxy = UnaryOnlyProxy(server.address)
    proxy.address = await proxy.start()
    yield proxy
    await proxy.stop()


async def test_unavailable_is_retried_with_the_same_request(proxy, unique):
    sku, order = unique("SKU"), unique("ORDER")
    # The blocking client runs in a thread: the proxy serves on this loop.
    with stockraft.Client(proxy.address) as client:
        await asyncio.to_thread(client.adjust, unique("RCV"), sku, "store", 5, "RECEIVE")
        proxy.seen.clear()
        proxy.faults = [(grpc.StatusCode.UNAVAILABLE, "10"), (grpc.StatusCode.UNAVAILABLE, None)]
        answer = await asyncio.to_thread(client.reserve, order, [(sku, "store", 2)])
        assert answer.outcome == pb.OUTCOME_RESERVED
        assert len(proxy.seen) == 3 and len(set(proxy.seen)) == 1  # one request, three attempts


async def test_a_negative_pushback_stops_the_retries(proxy, unique):
    import asyncio
    with stockraft.Client(proxy.address) as client:
        proxy.faults = [(grpc.StatusCode.RESOURCE_EXHAUSTED, "-1")] * 3
        with pytest.raises(stockraft.errors.ResourceExhausted):
            await asyncio.to_thread(client.get_availability, [unique("SKU")])
        assert len(proxy.seen) == 1
