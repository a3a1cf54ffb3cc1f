"""Reads by key that arrive while others are out, sent together as one statement.

Polls come from many clients at once; on PostgreSQL each read is a round trip whose CPU
(the socket's send and receive, the event loop's wake-up, the driver's protocol code) is
most of a poll's. A `Coalescer` sends a read at once when fewer than `limit` of its
statements are out, and otherwise keeps it for the next statement, which reads every key
kept meanwhile (up to `most`): no read waits longer than the statements before it, and
under load one round trip answers many. As DataLoader does for GraphQL resolvers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """`one(key)`: the value `fetch` found for the key, None when it found none, or what
    `fetch` answered instead of a mapping (a str: `ON_THREAD`) for every key of its batch.
    To be used from one event loop."""

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[Mapping[K, V] | str]],
        limit: int = 2,
        most: int = 100,
    ) -> None:
        self.fetch, self.limit, self.most = fetch, limit, most
        self._waiting: list[tuple[K, asyncio.Future[V | None | str]]] = []
        self._out = 0
        self._sending: set[asyncio.Task[None]] = set()

    async def one(self, key: K) -> V | None | str:
        future: asyncio.Future[V | None | str] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, future))
        if self._out < self.limit:
            self._send_next()
        return await future

    def _send_next(self) -> None:
        batch, self._waiting = self._waiting[: self.most], self._waiting[self.most :]
        self._out += 1
        # A task of its own: a caller that goes away (a client hung up) takes no one
        # else's read with it.
        sending = asyncio.ensure_future(self._send(batch))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[K, asyncio.Future[V | None | str]]]) -> None:
        try:
            found = await self.fetch(list(dict.fromkeys(key for key, _ in batch)))
        except BaseException as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise  # the loop is being stopped
            return
        finally:
            self._out -= 1
            if self._waiting and self._out < self.limit:
                self._send_next()
        for key, future in batch:
            if not future.done():
                future.set_result(found if isinstance(found, str) else found.get(key))
