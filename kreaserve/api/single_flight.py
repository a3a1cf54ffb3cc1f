"""At most one blocking call per key in flight: the requests that need the same answer at
the same moment wait for one call instead of each making its own.

The API reads a key again when its cached entry runs out, and leases more of an account's
per-minute request limit when its lease is spent; both used to happen to every request of
that key or account in flight, each in a thread of its own. Under wrk at 64 connections the
poll's p99 was 46-124 ms instead of 17-25, and a process leased 2.3-2.8 units of the
account's minute per request it admitted, holding the rest away from the account's other
processes (BENCHMARKS.md, issue 12, seventh pass).

Written here (a few lines on asyncio) rather than taken from a caching library: what is
shared is the call in flight, not its result, which each caller keeps where it belongs
(KeyCache, QuotaLeases) and drops on its own rules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

log = logging.getLogger("kreaserve.api")

#: runs a blocking call off the event loop (the API's `in_thread`)
Runner = Callable[[Callable[[], Any]], Coroutine[Any, Any, Any]]


class SingleFlight:
    """`wait(key, call)`: the result of the call for `key` in flight on this loop, or of
    `call` started now. A waiter cancelled does not cancel the call the others wait for."""

    def __init__(self, run: Runner, what: str) -> None:
        self._run = run
        self._what = what
        self._calls: dict[Hashable, asyncio.Task[Any]] = {}

    async def wait(self, key: Hashable, call: Callable[[], Any]) -> Any:
        return await asyncio.shield(self.start(key, call))

    def start(self, key: Hashable, call: Callable[[], Any]) -> asyncio.Task[Any]:
        """The call for `key` in flight on this loop, or `call` started now. Its failure is
        logged once, and raised to every caller waiting for it."""
        loop = asyncio.get_running_loop()
        task = self._calls.get(key)
        # Another loop's call (a test client's, say) cannot be awaited here.
        if task is not None and not task.done() and task.get_loop() is loop:
            return task
        task = loop.create_task(self._run(call))
        self._calls[key] = task
        task.add_done_callback(functools.partial(self._finished, key))
        return task

    def _finished(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        # Retrieved here so that a failure nobody awaited is logged once rather than
        # reported as never retrieved; the callers waiting get the error themselves.
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed: %r", self._what, task.exception())

    def in_flight(self) -> int:
        return sum(1 for task in self._calls.values() if not task.done())
