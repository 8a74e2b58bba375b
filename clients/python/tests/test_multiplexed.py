"""The asyncio client, multiplexed over `Stream`, against a real server."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

import stockraft
from stockraft import Reason, pb
from stockraft.aio import AsyncClient

from unary_proxy import UnaryOnlyProxy


@pytest.fixture
async def client(server):
    async with AsyncClient(server.address) as c:
        yield c


async def counter(client, sku, node):
    answer = await client.get_availability([sku], [node])
    n = answer.skus[0].nodes[0]
    return n.on_hand, n.reserved


async def test_64_callers_share_the_streams_and_stock_is_conserved(client, unique):
    # The paid orders ask 77 units in all, more than there is: some must be short.
    sku, start = unique("SKU"), 60
    await client.adjust(unique("RCV"), sku, "store", start, "RECEIVE")
    rng = random.Random(31)
    wants = [rng.randint(1, 3) for _ in range(64)]

    async def checkout(i: int):
        order = unique(f"ORDER-{i}")
        held = await client.reserve(order, [(sku, "store", wants[i])])
        if held.outcome != pb.OUTCOME_RESERVED:
            return order, held.outcome, 0
        # Two in three orders are paid, the rest cancelled.
        if i % 3:
            assert (await client.commit(order)).outcome == pb.OUTCOME_COMMITTED
            return order, pb.OUTCOME_COMMITTED, wants[i]
        assert (await client.release(order)).outcome == pb.OUTCOME_RELEASED
        return order, pb.OUTCOME_RELEASED, 0

    results = await asyncio.gather(*(checkout(i) for i in range(64)))
    outcomes = [o for _, o, _ in results]
    assert set(outcomes) <= {pb.OUTCOME_COMMITTED, pb.OUTCOME_RELEASED, pb.OUTCOME_INSUFFICIENT_STOCK}
    assert pb.OUTCOME_INSUFFICIENT_STOCK in outcomes
    committed = sum(units for _, _, units in results)
    on_hand, reserved = await counter(client, sku, "store")
    assert reserved == 0
    assert start - on_hand == committed
    # What each caller was told is what the server holds.
    states = await asyncio.gather(*(client.get_reservation(order) for order, _, _ in results))
    expected = {pb.OUTCOME_COMMITTED: pb.OUTCOME_COMMITTED, pb.OUTCOME_RELEASED: pb.OUTCOME_RELEASED,
                pb.OUTCOME_INSUFFICIENT_STOCK: pb.OUTCOME_NOT_FOUND}
    assert [s.outcome for s in states] == [expected[o] for o in outcomes]
    # Every call travelled on a stream.
    assert client.stats["unary"] == 0
    assert client.stats["streamed"] >= 64 * 2 + 2


async def test_calls_on_one_id_run_in_call_order(client, unique):
    sku = unique("SKU")
    await client.adjust(unique("RCV"), sku, "store", 40, "RECEIVE")
    orders = [unique(f"ORDER-{i}") for i in range(20)]
    # Issued back to back, nothing awaited between: without per-id ordering
    # the server may apply a commit before its reserve (NOT_FOUND).
    calls = []
    for order in orders:
        calls += [client.reserve(order, [(sku, "store", 2)]), client.extend(order, 60_000),
                  client.commit(order), client.get_reservation(order)]
    answers = await asyncio.gather(*calls)
    for i in range(0, len(answers), 4):
        reserve, extend, commit, read = answers[i:i + 4]
        assert (reserve.outcome, extend.outcome, commit.outcome) == (
            pb.OUTCOME_RESERVED, pb.OUTCOME_RESERVED, pb.OUTCOME_COMMITTED)
        assert read.state == pb.RESERVATION_STATE_COMMITTED
    assert await counter(client, sku, "store") == (0, 0)
    assert client.queued_ids == 0  # the order book forgets idle ids


async def test_a_deadline_fails_locally_and_the_late_answer_is_dropped(client, unique):
    sku, order = unique("SKU"), unique("ORDER")
    await client.adjust(unique("RCV"), sku, "store", 5, "RECEIVE")
    with pytest.raises(stockraft.errors.DeadlineExceeded) as caught:
        await client.reserve(order, [(sku, "store", 2)], timeout=0.0001)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.reason == Reason.DEADLINE
    # The operation was sent; its answer still arrives, to no one.
    for _ in range(100):
        if client.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert client.in_flight == 0
    # Retried with the same id: answered as a reserve, applied once.
    again = await client.reserve(order, [(sku, "store", 2)])
    assert again.outcome == pb.OUTCOME_RESERVED
    assert await counter(client, sku, "store") == (5, 2)


async def test_a_call_whose_deadline_passes_while_queued_is_never_sent(client, unique):
    sku, order = unique("SKU"), unique("ORDER")
    await client.adjust(unique("RCV"), sku, "store", 5, "RECEIVE")
    first = asyncio.ensure_future(client.reserve(order, [(sku, "store", 1)]))
    # Queued behind the reserve; a deadline of 0 passes before its turn.
    with pytest.raises(stockraft.errors.DeadlineExceeded):
        await client.commit(order, timeout=0)
    assert (await first).outcome == pb.OUTCOME_RESERVED
    # The commit was never sent: the hold is still open.
    assert (await client.get_reservation(order)).state == pb.RESERVATION_STATE_OPEN


async def test_stream_errors_are_the_typed_unary_errors(client, unique):
    sku, cart = unique("SKU"), unique("CART")
    with pytest.raises(stockraft.errors.InvalidArgument) as caught:
        await client.reserve(unique("ORDER"), [(sku, "store", 0)])
    assert caught.value.reason == Reason.VALUE_OUT_OF_RANGE
    assert [v.field for v in caught.value.field_violations] == ["lines[0].qty"]
    await client.adjust(unique("RCV"), sku, "store", 1, "RECEIVE")
    await client.reserve(cart, [(sku, "store", 1)])
    await client.release(cart)
    with pytest.raises(stockraft.errors.FailedPrecondition) as caught:
        await client.commit(cart)
    assert caught.value.reason == Reason.RESERVATION_NOT_ACTIVE
    assert caught.value.metadata.get("state") == "RELEASED"
    with pytest.raises(stockraft.errors.FailedPrecondition) as caught:
        await client.set_on_hand(unique("COUNT"), sku, "store", 9, expected_on_hand=7)
    assert caught.value.reason == Reason.STALE_ON_HAND
    assert caught.value.metadata.get("on_hand") == "1"
    assert client.stats["unary"] == 0


async def test_in_flight_per_stream_stays_bounded(server, unique):
    sku = unique("SKU")
    async with AsyncClient(server.address, streams=1, max_in_flight=4) as client:
        await client.adjust(unique("RCV"), sku, "store", 1000, "RECEIVE")
        peak = 0
        done = asyncio.Event()

        async def watch():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, client.in_flight)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        answers = await asyncio.gather(*(client.sell(unique(f"POS-{i}"), sku, "store", 1) for i in range(60)))
        done.set()
        await watcher
        assert all(a.outcome == pb.OUTCOME_APPLIED for a in answers)
        assert 1 <= peak <= 4
        assert (await counter(client, sku, "store"))[0] == 940


async def test_falls_back_to_unary_where_stream_is_unimplemented(server, unique):
    proxy = UnaryOnlyProxy(server.address)
    address = await proxy.start()
    try:
        async with AsyncClient(address) as client:
            sku, order = unique("SKU"), unique("ORDER")
            await client.adjust(unique("RCV"), sku, "store", 3, "RECEIVE")
            answers = await asyncio.gather(client.reserve(order, [(sku, "store", 2)]), client.commit(order))
            assert [a.outcome for a in answers] == [pb.OUTCOME_RESERVED, pb.OUTCOME_COMMITTED]
            with pytest.raises(stockraft.errors.InvalidArgument) as caught:
                await client.sell(unique("POS"), sku, "store", -1)
            assert caught.value.reason == Reason.VALUE_OUT_OF_RANGE
            assert client.stats["streamed"] == 0
            assert client.stats["unary"] >= 4
            assert proxy.forwarded == client.stats["unary"]  # each went through the proxy
            assert await counter(client, sku, "store") == (1, 0)
    finally:
        await proxy.stop()
