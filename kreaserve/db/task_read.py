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

Other databases: `ON_THREAD` always (see `kreaserve.db.pg_read` for PostgreSQL's own).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from sqlalchemy import Engine, Table, bindparam, select
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Dialect

from kreaserve.db.models import Task
from kreaserve.db.rows import detached

#: `get`'s answer when this read must be made in a thread instead.
ON_THREAD: Final = "on_thread"

#: Called with the SQL of each statement sent here (tests count a poll's statements).
listeners: list[Callable[[str], None]] = []


def task_statement(dialect: Dialect) -> str:
    """SELECT every column of the task, with `:task_id` and `:account_id` (named) or
    `%(task_id)s` (pyformat) parameters, as `dialect`'s driver takes them."""
    table: Table = Task.__table__  # type: ignore[assignment]
    statement = select(table).where(
        table.c.id == bindparam("task_id"), table.c.account_id == bindparam("account_id")
    )
    return str(statement.compile(dialect=dialect))


def row_converter(dialect: Dialect) -> Callable[[Sequence[Any]], Task]:
    """A driver row (the statement's columns, in order) -> a detached `Task`, through each
    column type's result processor for `dialect` (booleans and JSON on SQLite)."""
    table: Table = Task.__table__  # type: ignore[assignment]
    names = [column.key for column in table.columns]
    processors = [
        (index, processor)
        for index, column in enumerate(table.columns)
        if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))
    ]

    def convert(row: Sequence[Any]) -> Task:
        values = list(row)
        for index, processor in processors:
            values[index] = processor(values[index])
        return detached(Task, dict(zip(names, values, strict=True)))

    return convert


class SQLiteTaskRead:
    """The read on a SQLite file: one `query_only` connection per reading thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        dialect = sqlite_dialect.dialect(paramstyle="named")
        self.sql = task_statement(dialect)
        self.convert = row_converter(dialect)
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

    def get(self, account_id: int, task_id: str) -> Task | None | str:
        """The account's task, None, or `ON_THREAD` when SQLite did not answer with rows."""
        params = {"task_id": task_id, "account_id": account_id}
        try:
            rows = self._connection().execute(self.sql, params).fetchall()
        except sqlite3.Error:
            return ON_THREAD
        for listener in listeners:
            listener(self.sql)
        return self.convert(rows[0]) if rows else None

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for connection in connections:
            connection.close()
        self._local = threading.local()


class NoLoopRead:
    """Databases read in a thread only (SQLite in memory)."""

    def get(self, account_id: int, task_id: str) -> Task | None | str:
        return ON_THREAD

    def close(self) -> None:
        pass


def loop_read(engine: Engine) -> SQLiteTaskRead | NoLoopRead:
    """The loop read for `engine`'s database."""
    url = engine.url
    if (
        url.get_backend_name() == "sqlite"
        and url.database
        and url.database != ":memory:"
        and not url.query  # URI filenames and their options: read as the engine does
    ):
        return SQLiteTaskRead(url.database)
    return NoLoopRead()
