"""The poll's read (one task of one account, by id) as a raw DB-API statement, made on
the event loop where the database allows it.

A poll is most of the API's traffic, and through SQLAlchemy Core in a worker thread its
one primary-key read cost more CPU than everything else it does: the thread hop (a
futex wake, two context switches and a GIL hand-over each way) and Core's execute and
result machinery. Here the statement is compiled once from the table (the same columns,
converted by the same result processors, so the task is what `task_queue.get` returns)
and sent straight to the driver.

SQLite (a file, in WAL mode): each thread that reads here has a connection of its own,
`query_only`, with no busy timeout. A lone SELECT by primary key reads one snapshot and
waits for no writer, in tens of microseconds, so it runs on the event loop. Should
SQLite answer anything but rows (busy during a WAL recovery, an I/O error), `get` says
so (`ON_THREAD`) and the caller reads the usual way, in a thread, where failures map to
the API's 503. The statement is stepped to its end, so no read transaction outlives it
(an open one would hold back checkpoints).

PostgreSQL: psycopg's own async connections (`kreaserve.db.pg_read`). A SQLite database
in memory: `ON_THREAD` always.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import sqlite as sqlite_dialect

from kreaserve.db.pg_read import PostgresTaskRead
from kreaserve.db.task_row import ON_THREAD, LoopReads, listeners

__all__ = [
    "ON_THREAD",
    "LoopRead",
    "NoLoopRead",
    "PostgresTaskRead",
    "SQLiteTaskRead",
    "listeners",
    "loop_read",
]


class SQLiteTaskRead(LoopReads):
    """The reads on a SQLite file: one `query_only` connection per reading thread."""

    def __init__(self, path: str) -> None:
        super().__init__(sqlite_dialect.dialect(paramstyle="named"))
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # timeout=0: busy is answered at once (the caller then reads in a thread).
            connection = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA query_only=ON")
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    async def _row(self, sql: str, params: dict[str, Any]) -> Sequence[Any] | None | str:
        """The first row, None, or `ON_THREAD` when SQLite did not answer with rows (a
        coroutine only to match `PostgresTaskRead`: it never waits)."""
        try:
            rows = self._connection().execute(sql, params).fetchall()
        except sqlite3.Error:
            return ON_THREAD
        for listener in listeners:
            listener(sql)
        return rows[0] if rows else None

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for connection in connections:
            connection.close()
        self._local = threading.local()


class NoLoopRead(LoopReads):
    """Databases read in a thread only (SQLite in memory)."""

    def __init__(self) -> None:
        super().__init__(sqlite_dialect.dialect(paramstyle="named"))

    async def _row(self, sql: str, params: dict[str, Any]) -> Sequence[Any] | None | str:
        return ON_THREAD

    async def aclose(self) -> None:
        pass


LoopRead = SQLiteTaskRead | PostgresTaskRead | NoLoopRead


def loop_read(engine: Engine) -> LoopRead:
    """The loop read for `engine`'s database."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return PostgresTaskRead(engine)
    if (
        url.get_backend_name() == "sqlite"
        and url.database
        and url.database != ":memory:"
        and not url.query  # URI filenames and their options: read as the engine does
    ):
        return SQLiteTaskRead(url.database)
    return NoLoopRead()
