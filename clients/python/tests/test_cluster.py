"""Three real members: the client finds the leader, and rides out its death.

The leader is killed (SIGKILL) while 16 callers reserve and commit. Every
call must end answered or failed with a status, and retrying unknown
outcomes with the same ids must leave the server with each reservation
applied once: the counters equal the sum of the reservations' lines.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

import stockraft
from stockraft import pb
from stockraft.aio import AsyncClient
from stockraft.routing import LEADER_SERVICE

from conftest import Server, free_port, health

CALLERS = 16
KILL_AFTER = 1.0
# Callers go on this long after the kill: an election takes 1 to 3 s.
RUN_AFTER_KILL = 5.0
STOCK = 100_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster")
    ports = [free_port() for _ in range(3)]
    peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in enumerate(ports, 1))
    members = [Server(workdir, port, ["--peers", peers, "--member-id", str(i)]) for i, port in enumerate(ports, 1)]
    try:
        for m in members:
            m.start()
        for m in members:
            m.wait_serving()
        yield members
    finally:
        for m in members:
            m.stop()


def leader_of(members) -> Server:
    """The leader by Cluster.Status, which every member answers."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for m in members:
            if m.process.poll() is not None:
                continue
            try:
                with stockraft.Client(m.address) as c:
                    status = c.cluster_status(timeout=1)
            except stockraft.StockraftError:
                continue
            by_id = {member.member_id: member.address for member in status.members}
            address = by_id.get(status.leader_id)
            for candidate in members:
                if candidate.address == address and candidate.process.poll() is None:
                    return candidate
        time.sleep(0.1)
    raise AssertionError("no live leader within 15 s")


async def test_the_client_targets_the_leader(cluster):
    leader = leader_of(cluster)
    # Only the leader reports stockraft.v1.Leader SERVING.
    serving = [m.address for m in cluster if health(m.address, LEADER_SERVICE) == 1]
    assert serving == [leader.address]
    # Given the members with the leader last, the client still picks it.
    addresses = [m.address for m in cluster if m is not leader] + [leader.address]
    async with AsyncClient(addresses) as client:
        assert await client.target() == leader.address


async def test_killing_the_leader_under_load_loses_and_doubles_nothing(cluster, unique):
    sku = unique("SKU")
    addresses = [m.address for m in cluster]
    async with AsyncClient(addresses) as client:
        await client.adjust(unique("RCV"), sku, "n", STOCK, "RECEIVE")
        told: dict[str, object] = {}  # order id -> last outcome or error
        asked: dict[str, int] = {}  # order id -> units it reserves
        killed_at: list[float] = []
        answered_at: list[float] = []

        async def caller(c: int):
            k = 0
            while not killed_at or time.monotonic() < killed_at[0] + RUN_AFTER_KILL:
                order, k = f"{unique('ORDER')}-{c}-{k}", k + 1
                asked[order] = 1 + k % 3
                try:
                    held = await client.reserve(order, [(sku, "n", asked[order])], timeout=3)
                    told[order] = held.outcome
                    if k % 2:
                        told[order] = (await client.commit(order, timeout=3)).outcome
                    answered_at.append(time.monotonic())
                except stockraft.StockraftError as error:
                    told[order] = error  # a status, as promised

        async def kill_leader():
            await asyncio.sleep(KILL_AFTER)
            await asyncio.to_thread(lambda: leader_of(cluster).kill())
            killed_at.append(time.monotonic())

        await asyncio.gather(kill_leader(), *(caller(c) for c in range(CALLERS)))

        errors = {o: e for o, e in told.items() if isinstance(e, Exception)}
        answered = len(told) - len(errors)
        assert answered > 10 * CALLERS, f"only {answered} calls answered"
        assert all(isinstance(e, stockraft.StockraftError) for e in errors.values())
        # The callers carried on once a new leader was found.
        assert killed_at and sum(t > killed_at[0] for t in answered_at) > CALLERS
        print(f"{answered} answered, {len(errors)} failed with a status "
              f"({sorted({e.code.name for e in errors.values()})}), {client.stats}")

        # Learn every unknown outcome by retrying with the same id: a reserve
        # is answered with the reservation's state, and never applied twice.
        for order in errors:
            await client.reserve(order, [(sku, "n", asked[order])], timeout=10)

        states = await asyncio.gather(*(client.get_reservation(o) for o in told))
        held = sum(l.qty for s in states if s.state == pb.RESERVATION_STATE_OPEN for l in s.lines)
        consumed = sum(l.qty for s in states if s.state == pb.RESERVATION_STATE_COMMITTED for l in s.lines)
        for order, state in zip(told, states):
            outcome = told[order]
            if outcome == pb.OUTCOME_COMMITTED:
                assert state.state == pb.RESERVATION_STATE_COMMITTED, order
            elif outcome == pb.OUTCOME_RESERVED:
                assert state.state in (pb.RESERVATION_STATE_OPEN,), order
        row = (await client.get_availability([sku], ["n"])).skus[0].nodes[0]
        assert (row.reserved, STOCK - row.on_hand) == (held, consumed)
