"""The poll's read on PostgreSQL, on the event loop: psycopg's async connections, in
autocommit, a few per process.

Through SQLAlchemy a poll's read was a worker thread's BEGIN, SELECT and COMMIT: three
round trips, and the thread hop cost more CPU than the rest of the poll. In autocommit
the lone SELECT is a transaction of its own (one round trip, one snapshot, as before
under READ COMMITTED) and the loop awaits it. psycopg prepares the statement on each
connection after its fifth use.

The connections belong to the event loop that opened them (a test client may run the
app on several loops, one after another: each gets its own). At most `size` are open;
a read waits for one past that. A connection that fails is closed and the read, which
changes nothing, is tried once more on a new one; a read that fails again, or cannot
connect, answers `ON_THREAD` so that the caller reads the usual way (where a database
that is down answers the API's 503). A read cancelled midway (the client went away)
closes its connection, whose state is then unknown; connections older than
`RECYCLE_SECONDS` are closed when handed back, as the engine's are.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine, event

from kreaserve.db.task_row import ON_THREAD, LoopReads, listeners

#: Connections are not kept longer than this (seconds), as the engine's pool does.
RECYCLE_SECONDS = 1800


@dataclass
class _Pool:
    loop: asyncio.AbstractEventLoop
    idle: list[tuple[psycopg.AsyncConnection, float]] = field(default_factory=list)
    open: int = 0
    freed: asyncio.Condition = field(default_factory=asyncio.Condition)


class PostgresTaskRead(LoopReads):
    """The reads on PostgreSQL: up to `size` autocommit connections per event loop."""

    def __init__(self, engine: Engine, size: int = 8) -> None:
        super().__init__(engine.dialect)
        url = engine.url.set(drivername="postgresql")
        self.conninfo = url.render_as_string(hide_password=False)
        self.size = size
        self._pool: _Pool | None = None
        #: every connection open, closed without a loop when the engine is disposed, when
        #: another loop reads, or when this is collected (psycopg warns of one left open)
        self._open: set[psycopg.AsyncConnection] = set()
        opened = self._open
        event.listen(engine, "engine_disposed", lambda _engine: _finish(opened))
        weakref.finalize(self, _finish, opened)

    def _current(self) -> _Pool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool.loop is not loop:
            _finish(self._open)  # another loop's connections are of no use here
            self._pool = _Pool(loop)
        return self._pool

    async def _take(self, pool: _Pool) -> tuple[psycopg.AsyncConnection, float]:
        async with pool.freed:
            while not pool.idle and pool.open >= self.size:
                await pool.freed.wait()
            if pool.idle:
                return pool.idle.pop()
            pool.open += 1
        try:
            connection = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except BaseException:
            await self._lost(pool)
            raise
        self._open.add(connection)
        return connection, time.monotonic()

    async def _give_back(self, pool: _Pool, held: tuple[psycopg.AsyncConnection, float]) -> None:
        if time.monotonic() - held[1] > RECYCLE_SECONDS:
            await self._close(pool, held[0])
            return
        async with pool.freed:
            pool.idle.append(held)
            pool.freed.notify()

    async def _lost(self, pool: _Pool) -> None:
        async with pool.freed:
            pool.open -= 1
            pool.freed.notify()

    async def _row(self, sql: str, params: dict[str, Any]) -> Sequence[Any] | None | str:
        """The first row, None, or `ON_THREAD` when PostgreSQL did not answer."""
        pool = self._current()
        for _ in range(2):
            try:
                held = await self._take(pool)
            except psycopg.Error:
                return ON_THREAD
            try:
                cursor = await held[0].execute(sql, params)
                row = await cursor.fetchone()
            except psycopg.Error:
                await self._close(pool, held[0])
                continue  # a connection that died while idle: once more, on a new one
            except BaseException:
                await asyncio.shield(self._close(pool, held[0]))
                raise
            await self._give_back(pool, held)
            for listener in listeners:
                listener(sql)
            return row
        return ON_THREAD

    async def _close(self, pool: _Pool, connection: psycopg.AsyncConnection) -> None:
        self._open.discard(connection)
        try:
            await connection.close()
        finally:
            await self._lost(pool)

    async def aclose(self) -> None:
        """Close the connections (at the app's shutdown)."""
        pool, self._pool = self._pool, None
        if pool is not None and pool.loop is asyncio.get_running_loop():
            for connection, _ in pool.idle:
                self._open.discard(connection)
                await connection.close()
        _finish(self._open)


def _finish(connections: set[psycopg.AsyncConnection]) -> None:
    """Close connections without their event loop (libpq's own close)."""
    for connection in list(connections):
        if not connection.closed:
            connection.pgconn.finish()
    connections.clear()
