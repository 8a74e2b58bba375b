"""First come, first served per key: one operation in flight per id.

The server runs the operations of a stream concurrently, so two operations
on the same reservation sent back to back could be applied in either order
(a commit before its reserve answers NOT_FOUND). Each call takes a turn on
its key; a turn starts when the previous turn on that key is finished, and a
turn is finished only when its operation can no longer be applied (its
answer arrived, its stream broke, or it was never sent), not when its caller
stopped waiting.
"""

from __future__ import annotations

import asyncio
from typing import Hashable


class Turn:
    def __init__(self, order: "KeyedOrder | None", key: Hashable, previous: asyncio.Future | None):
        self._order = order
        self._key = key
        self._previous = previous
        self._finished = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        """Until the previous turn on this key is finished."""
        if self._previous is not None and not self._previous.done():
            # Shielded: a caller giving up must not cancel the turn of the
            # call before it.
            await asyncio.shield(self._previous)

    def finish(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)
        if self._order is not None:
            self._order._forget(self._key, self._finished)

    def finish_after_previous(self) -> None:
        """For a turn given up before its operation was sent: the next turn
        must still wait for the one before this."""
        if self._previous is None or self._previous.done():
            self.finish()
        else:
            self._previous.add_done_callback(lambda _: self.finish())


class KeyedOrder:
    def __init__(self) -> None:
        self._last: dict[Hashable, asyncio.Future] = {}

    def take(self, key: Hashable | None) -> Turn:
        """The caller's turn on `key`, queued behind earlier ones. Taking a
        turn never suspends, so turns follow the order calls are made."""
        if key is None:
            return Turn(None, None, None)
        turn = Turn(self, key, self._last.get(key))
        self._last[key] = turn._finished
        return turn

    def _forget(self, key: Hashable, finished: asyncio.Future) -> None:
        # Keys are client ids: drop them once idle so the map stays small.
        if self._last.get(key) is finished:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)
