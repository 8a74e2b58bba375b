"""A retry-safe checkout against a stockraft server.

    STOCKRAFT_SERVER=127.0.0.1:50051 python examples/checkout.py

1. Receives 5 units of a SKU at a store (so it runs on an empty server).
2. Reserves 3 for an order, with the order id as the reservation id.
3. Commits with a deadline too short to be met: the commit is sent, the
   server applies it, but the caller stops waiting first, so for the caller
   the outcome is unknown (as when a network drops an answer).
4. Retries the commit with the same id: it answers COMMITTED, and on_hand
   drops by 3 exactly once however many tries it took.
5. A second order asks for more than is left: INSUFFICIENT_STOCK is an
   outcome, with the shortages, not an error.
Exits non-zero if what the server holds is not what one checkout leaves.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from stockraft import errors, pb
from stockraft.aio import AsyncClient


async def with_retries(call, *args, attempts: int = 5, **kwargs):
    """Repeat a call whose outcome is unknown. Safe because the request
    carries the same id each time: the server applies it at most once and
    answers a repeat as it answered the first. (The client already retries
    UNAVAILABLE itself; a deadline is the caller's to retry.)"""
    for attempt in range(1, attempts + 1):
        try:
            return await call(*args, **kwargs)
        except (errors.DeadlineExceeded, errors.Unavailable) as error:
            if attempt == attempts:
                raise
            print(f"  attempt {attempt}: {error.code.name}, outcome unknown; retrying with the same id")
            kwargs.pop("timeout", None)  # the retries get the default 5 s


async def on_hand(client, sku, node) -> int:
    nodes = (await client.get_availability([sku], [node])).skus[0].nodes
    return nodes[0].on_hand if nodes else 0


def outcome(answer) -> str:
    return pb.Outcome.Name(answer.outcome).removeprefix("OUTCOME_")


async def main() -> int:
    run = uuid.uuid4().hex[:8]
    sku, node = f"SKU-{run}", "store-7"
    order, other_order = f"ORDER-{run}", f"ORDER-{run}-B"
    # Addresses from STOCKRAFT_SERVER (comma-separated), else 127.0.0.1:50051.
    async with AsyncClient() as client:
        await client.adjust(f"RECEIPT-{run}", sku, node, 5, "RECEIVE")
        before = await on_hand(client, sku, node)
        print(f"{sku}@{node}: on_hand {before}")

        held = await with_retries(client.reserve, order, [(sku, node, 3)], ttl_ms=15 * 60_000)
        print(f"reserve {order}: {outcome(held)}")
        if held.outcome == pb.OUTCOME_INSUFFICIENT_STOCK:
            for s in held.shortages:
                print(f"  short: {s.sku}@{s.node} asked {s.requested}, available {s.available}")
            return 1

        # Payment went through: commit. The first try waits 0.1 ms only.
        committed = await with_retries(client.commit, order, timeout=0.0001)
        print(f"commit {order}: {outcome(committed)}")
        again = await client.commit(order)
        print(f"commit {order} again: {outcome(again)} (answered as the first)")
        repeat = await client.reserve(order, [(sku, node, 3)])
        print(f"reserve {order} again: {outcome(repeat)} (its current state; nothing held twice)")

        after = await on_hand(client, sku, node)
        print(f"{sku}@{node}: on_hand {before} -> {after}")

        short = await client.reserve(other_order, [(sku, node, after + 1)])
        print(f"reserve {other_order}: {outcome(short)}")
        for s in short.shortages:
            print(f"  short: {s.sku}@{s.node} asked {s.requested}, available {s.available}")

        ok = (committed.outcome == again.outcome == pb.OUTCOME_COMMITTED and after == before - 3
              and short.outcome == pb.OUTCOME_INSUFFICIENT_STOCK)
        print("checkout applied exactly once" if ok else "UNEXPECTED: see above")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
