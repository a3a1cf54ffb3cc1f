"""The poll's and the credits' reads on PostgreSQL, on the event loop: psycopg's async
connections, in autocommit, a few per process, and the reads of the same moment together.

Through SQLAlchemy a poll's read was a worker thread's BEGIN, SELECT and COMMIT: three
round trips, and the thread hop cost more CPU than the rest of the poll. In autocommit
the lone SELECT is a transaction of its own (one round trip, one snapshot, as before
under READ COMMITTED) and the loop awaits it. Even so a round trip was most of a poll's
CPU, so reads that arrive while two statements are out wait for the next one, which
reads all their rows at once (`kreaserve.db.coalesce`; `id = ANY(...)`, each row then
given only to a read of its own account). psycopg prepares the statements on each
connection after their fifth use.

The connections belong to the event loop that opened them (a test client may run the
app on several loops, one after another: each gets its own). At most `size` are open
(four: at most two statements of each read are out at a time); a read waits for one
past that. A connection that fails is closed, with the idle ones (a server restart
kills them all), and the read, which changes nothing, is tried once more on a new one;
a read that fails again, or cannot connect, answers `ON_THREAD` so that the caller
reads the usual way (where a database that is down answers the API's 503). A statement
cancelled midway closes its connection, whose state is then unknown; connections older
than `RECYCLE_SECONDS` are closed when handed back, as the engine's are.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine, Table, any_, bindparam, event, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect

from kreaserve.db.coalesce import Coalescer
from kreaserve.db.models import Account, Task
from kreaserve.db.task_row import ON_THREAD, LoopReads, listeners

#: Connections are not kept longer than this (seconds), as the engine's pool does.
RECYCLE_SECONDS = 1800


@dataclass
class _Pool:
    loop: asyncio.AbstractEventLoop
    tasks: Coalescer[str, Sequence[Any]]
    balances: Coalescer[int, Sequence[Any]]
    idle: list[tuple[psycopg.AsyncConnection, float]] = field(default_factory=list)
    open: int = 0
    freed: asyncio.Condition = field(default_factory=asyncio.Condition)


def _many(dialect: Dialect, table: Table, *columns: Any) -> str:
    """SELECT `columns` (all when none) of the rows whose id is in the list `ids`."""
    chosen = select(*columns) if columns else select(table)
    ids = bindparam("ids", type_=ARRAY(table.c.id.type))
    return str(chosen.where(table.c.id == any_(ids)).compile(dialect=dialect))


class PostgresTaskRead(LoopReads):
    """The reads on PostgreSQL: up to `size` autocommit connections per event loop."""

    def __init__(self, engine: Engine, size: int = 4) -> None:
        super().__init__(engine.dialect)
        tasks: Table = Task.__table__  # type: ignore[assignment]
        accounts: Table = Account.__table__  # type: ignore[assignment]
        self.tasks_sql = _many(engine.dialect, tasks)
        self.balances_sql = _many(
            engine.dialect,
            accounts,
            accounts.c.id,
            accounts.c.balance_units,
            accounts.c.reserved_units,
        )
        self._id = list(tasks.columns).index(tasks.c.id)
        self._account = list(tasks.columns).index(tasks.c.account_id)
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
            pool = _Pool(loop, Coalescer(self._tasks), Coalescer(self._balances))
            self._pool = pool
        return self._pool

    async def get(self, account_id: int, task_id: str) -> Task | None | str:
        """The account's task, None, or `ON_THREAD` (read with the polls of the moment)."""
        row = await self._current().tasks.one(task_id)
        if row is None or isinstance(row, str):
            return row
        return self.convert(row) if row[self._account] == account_id else None

    async def balance(self, account_id: int) -> tuple[int, int] | None | str:
        """(balance_units, reserved_units), None, or `ON_THREAD`."""
        row = await self._current().balances.one(account_id)
        if row is None or isinstance(row, str):
            return row
        return int(row[1]), int(row[2])

    async def _tasks(self, ids: list[str]) -> dict[str, Sequence[Any]] | str:
        rows = await self._rows(self.tasks_sql, {"ids": ids})
        return rows if isinstance(rows, str) else {row[self._id]: row for row in rows}

    async def _balances(self, ids: list[int]) -> dict[int, Sequence[Any]] | str:
        rows = await self._rows(self.balances_sql, {"ids": ids})
        return rows if isinstance(rows, str) else {row[0]: row for row in rows}

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
        rows = await self._rows(sql, params)
        return rows if isinstance(rows, str) else (rows[0] if rows else None)

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[Any] | str:
        """The rows, or `ON_THREAD` when PostgreSQL did not answer."""
        pool = self._current()
        for _ in range(2):
            try:
                held = await self._take(pool)
            except psycopg.Error:
                return ON_THREAD
            try:
                cursor = await held[0].execute(sql, params)
                rows = await cursor.fetchall()
            except psycopg.Error:
                await self._close(pool, held[0])
                # The idle ones most likely died with it (a server restart, a failover):
                # closed too, so that the retry runs on a new connection.
                await self._close_idle(pool)
                continue  # a connection that died while idle: once more, on a new one
            except BaseException:
                await asyncio.shield(self._close(pool, held[0]))
                raise
            await self._give_back(pool, held)
            for listener in listeners:
                listener(sql)
            return rows
        return ON_THREAD

    async def _close_idle(self, pool: _Pool) -> None:
        async with pool.freed:
            idle, pool.idle = pool.idle, []
        for connection, _ in idle:
            await self._close(pool, connection)

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
